"""Batch analysis of an archive: the local engine against Ray with 1 and 2 workers; prints JSON.

Usage: ``python bench/batch.py [--fields N] [--workers 1 2] [--model NAME]``.

N fields (default 200) alternate ALL-IDB1 (2592x1944) and BCCD (640x480) fields of
``../shared/data``, repeated when there are fewer. Each engine runs ``python -m leukemia_core
analyze`` in a fresh process into a fresh folder, so the times include starting the process,
loading the model and (Ray) starting a local instance and its workers.

- ``seconds`` / ``fields_per_s``: wall time of the whole command and its throughput.
- ``same_rows_as_local``: the same cells in the same order with every column equal but the
  probability, and ``max_abs_dp``, the largest probability difference (target <= 1e-4).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PROBABILITY = 6  # column of blast_probability in cells.csv


def archive(n: int) -> list[Path]:
    """N fields alternating the two datasets, repeated when there are fewer."""
    idb = sorted((DATA / "all_idb1" / "images").glob("*.jpg"))
    bccd = sorted((DATA / "bccd" / "images").glob("*.jpg"))
    if not idb or not bccd:
        raise SystemExit(f"ALL-IDB1 and BCCD fields are needed under {DATA}")
    pairs = [p for pair in zip(cycle(idb), bccd, strict=False) for p in pair]
    return list(islice(cycle(pairs), n))


def run(paths: list[Path], out: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "leukemia_core", "analyze", *map(str, paths), "--out",
               str(out), *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra) or 'local'} failed:\n{done.stderr[-3000:]}")
    return seconds


def rows(out: Path) -> list[list[str]]:
    with open(out / "cells.csv", newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def compare(got: list[list[str]], want: list[list[str]]) -> tuple[bool, float]:
    if len(got) != len(want):
        return False, float("nan")
    same, worst = True, 0.0
    for a, b in zip(got[1:], want[1:], strict=True):
        same &= a[:PROBABILITY] == b[:PROBABILITY] and a[PROBABILITY + 1 :] == b[PROBABILITY + 1 :]
        if a[PROBABILITY] and b[PROBABILITY]:  # an image without cells: a row with none
            worst = max(worst, abs(float(a[PROBABILITY]) - float(b[PROBABILITY])))
    return same, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", help="model folder name (default: the active model)")
    args = parser.parse_args(argv)
    paths = archive(args.fields)
    model = ["--model", args.model] if args.model else []
    engines = {"local": model}
    for n in args.workers:
        engines[f"ray_{n}_workers"] = [*model, "--engine", "ray", "--num-workers", str(n)]
    result = {"fields": len(paths), "engines": {},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for name, extra in engines.items():
            out = Path(folder) / name
            seconds = run(paths, out, extra)
            figures = {"seconds": round(seconds, 1),
                       "fields_per_s": round(len(paths) / seconds, 3),
                       "cells": json.loads((out / "summary.json").read_text())["cells_found"]}  # fmt: skip
            if name != "local":
                same, worst = compare(rows(out), rows(Path(folder) / "local"))
                figures |= {"same_rows_as_local": same, "max_abs_dp": worst}
            result["engines"][name] = figures
            print(f"{name}: {figures}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
