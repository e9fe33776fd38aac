"""``python -m train.evaluate COMMAND ...``: quality figures as one JSON object on stdout.

Progress goes to stderr, so ``> result.json`` captures only the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.evaluate import segmentation as seg_eval


def _progress(done: int, total: int, name: str) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:40]:<40}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wbc = commands.add_parser("wbc", help="WBC detection and masks on a BCCD-layout folder")
    wbc.add_argument(
        "--bccd", type=Path, required=True, help="folder with images/, annotations/, masks/"
    )
    smears = commands.add_parser("smears", help="blast detection on ALL-IDB1-layout fields")
    smears.add_argument("--all-idb1", type=Path, required=True, help="folder with images/ and xyc/")
    crops = commands.add_parser("crops", help="centre-cell masks on ALL-IDB2-layout crops")
    crops.add_argument(
        "--all-idb2", type=Path, required=True, help="folder with images/ and masks/"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "wbc":
        folder, run = args.bccd, seg_eval.evaluate_wbc
    elif args.command == "smears":
        folder, run = args.all_idb1, seg_eval.evaluate_smears
    else:
        folder, run = args.all_idb2, seg_eval.evaluate_crops
    if not (folder / "images").is_dir():
        print(
            f"error: {folder} has no images/ folder; see --help for the expected layout.",
            file=sys.stderr,
        )
        return 2
    result = {"command": args.command, "data": str(folder), **run(folder, progress=_progress)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
