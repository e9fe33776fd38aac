"""python -m train COMMAND: build a crop bank, train, compare and adapt model folders.

Commands:
    bank      turn public datasets into classifier-domain crops plus manifest.csv
    fit       train one architecture on one or more datasets; writes models/<name>/
    calibrate re-fit a model folder's temperature, threshold and review band (weights kept)
    card      re-render models/<name>/card.md from its config.json and metrics.json
    inspect   check datasets for training: layout, cells per class and group, problems
    compare   train several architectures on the same grouped splits and compare them
    promote   make a compared model the active one (models/<name>/ + models/ACTIVE)
    adapt     re-fit a model on a lab's signed cells as a new version <name>-site<k>
    activate  make a model folder the active one (models/ACTIVE)
    domain    fit a model folder's out-of-domain reference (domain.npz) on its own split
    seal      check a model folder's config.json and write its checksum (config_sha256)
    worker    run the queued comparison jobs of the Retrain page (started by the app)

Progress goes to stderr. Research use only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from leukemia_core.cli_parser import WholeNameParser
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models.folder import models_dir, read_config, set_active_model
from leukemia_core.models.writing import seal_config
from leukemia_core.roles import User
from train.adapt_model import adapt_command, add_adapt_arguments
from train.card import model_card
from train.cellbank import SKIPPED_FILE, SOURCES, build_bank
from train.cli_compare import (
    add_compare_arguments,
    add_data_arguments,
    compare_command,
    inspect_command,
)
from train.cli_model import (
    add_calibrate_arguments,
    add_domain_arguments,
    add_fit_arguments,
    calibrate_command,
    domain_command,
    fit_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = WholeNameParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    bank = commands.add_parser("bank", help="classifier-domain crops of public datasets")
    for kind in SOURCES:
        bank.add_argument(f"--{kind}", type=Path, help=f"{kind} folder")
    bank.add_argument("--out", type=Path, required=True, help="output folder")
    bank.add_argument("--size", type=int, default=300, help="crop side in pixels")

    add_fit_arguments(commands.add_parser("fit", help="train a model folder"))
    add_calibrate_arguments(commands.add_parser(
        "calibrate", help="re-fit a model's calibration on its own validation groups"))  # fmt: skip

    card = commands.add_parser("card", help="re-render a model card")
    card.add_argument("name")
    card.add_argument("--models-dir", type=Path)

    add_data_arguments(commands.add_parser("inspect", help="check datasets before training"))
    add_compare_arguments(
        commands.add_parser("compare", help="compare architectures on grouped splits")
    )

    promote = commands.add_parser("promote", help="make a compared model the active one")
    promote.add_argument("run", type=Path, help="run folder of a finished comparison")
    promote.add_argument("architecture")
    promote.add_argument("--name", required=True, help="model folder name")
    promote.add_argument("--models-dir", type=Path)
    promote.add_argument("--despite", default="", metavar="REASON",
                         help="promote a model the checks refuse, for this reason in words "
                              "(kept in its card and the model changes)")  # fmt: skip

    adapt = commands.add_parser("adapt", help="adapt a model to a lab's signed cells (new version)")
    add_adapt_arguments(adapt)

    activate = commands.add_parser("activate", help="make a model folder the active one")
    activate.add_argument("name", help="model folder")
    activate.add_argument("--models-dir", type=Path)

    seal = commands.add_parser("seal", help="check a model's config.json and write its checksum")
    seal.add_argument("name", help="model folder, after a person checked its config.json")
    seal.add_argument("--models-dir", type=Path)

    add_domain_arguments(
        commands.add_parser("domain", help="fit a model's out-of-domain reference")
    )

    worker = commands.add_parser("worker", help="run queued comparison jobs, then exit")
    worker.add_argument("--runs", type=Path, help="jobs folder (default: runs/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bank":
            sources = {k: getattr(args, k) for k in SOURCES if getattr(args, k)}
            if not sources:
                print(
                    f"error: name at least one source (--{' --'.join(SOURCES)}).", file=sys.stderr
                )
                return 2

            def bar(kind):
                progress = tqdm(desc=kind, file=sys.stderr)
                return lambda done, total, name: (setattr(progress, "total", total),
                                                  progress.update(done - progress.n))  # fmt: skip

            manifest = build_bank(sources, args.out, size=args.size, progress=bar)
            skipped = (manifest.parent / SKIPPED_FILE).read_text().splitlines()[1:]
            if skipped:
                print(
                    f"left out {len(skipped)} unreadable image(s); see "
                    f"{manifest.parent / SKIPPED_FILE}",
                    file=sys.stderr,
                )
            print(manifest)
        elif args.command == "fit":
            return fit_command(args)
        elif args.command == "calibrate":
            return calibrate_command(args)
        elif args.command == "inspect":
            return inspect_command(args)
        elif args.command == "compare":
            return compare_command(args)
        elif args.command == "promote":
            from train.promote import promote

            folder = promote(args.run, args.architecture, args.name, root=args.models_dir,
                             user=User.shell(), despite=args.despite)  # fmt: skip
            print(f"promoted {args.architecture} as {folder} (now the active model)")
        elif args.command == "adapt":
            return adapt_command(args)
        elif args.command == "activate":
            set_active_model(args.name, args.models_dir, user=User.shell())
            print(f"{args.name} is now the active model")
        elif args.command == "domain":
            return domain_command(args)
        elif args.command == "seal":
            seal_config(args.name, args.models_dir)
            print(f"{args.name}: config.json checked and sealed (config_sha256 written)")
        elif args.command == "worker":
            from train.job_worker import run_worker

            print(f"worker ran {run_worker(args.runs)} job(s)", file=sys.stderr)
        else:
            root = args.models_dir or models_dir()
            folder = root / read_config(args.name, root).name  # a model name, never a path
            config = json.loads((folder / "config.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "card.md").write_text(model_card(args.name, config, metrics))
    except (LeukemiaCoreError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
