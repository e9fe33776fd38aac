"""Speed and memory of segmentation + quality checks + cropping; prints JSON and a summary.

Usage: ``python bench/segmentation.py [--field PATH] [--bccd DIR] [--repeats N]``. Without
``--field`` it uses a synthetic 2592x1944 field (the ALL-IDB1 camera size). Each timing runs in
this process after one warm-up call; peak memory is the whole peak resident set size of a fresh
child process that reads, segments and crops the field once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukemia_core.cropping import crop_cells
from leukemia_core.io import read_image
from leukemia_core.quality import check_field
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_smear


def load_field(path: Path | None):
    if path is not None:
        return read_image(path).rgb, str(path)
    smear = make_smear(
        1944, 2592, n_wbc=12, n_touching_pairs=2, n_rbc=900, red_cell_diameter_px=70.0, seed=0
    )
    return smear.image, "synthetic 2592x1944"


def process(rgb) -> None:
    """What the pipeline does to a field before classification."""
    segmentation = segment_wbc(rgb)
    check_field(rgb, segmentation)
    crop_cells(rgb, segmentation)


def time_field(rgb, repeats: int) -> list[float]:
    process(rgb)  # warm-up: first calls pay for lazy imports and allocations
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        process(rgb)
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_memory_mb(field: Path | None) -> float:
    """Peak resident memory (MB) of a fresh process that reads, segments and crops one field.

    An upper bound: it includes the interpreter, numpy/OpenCV/scikit-image and the decoded image.
    """
    code = (
        "import resource, sys; sys.path.insert(0, sys.argv[1]);"
        "from bench.segmentation import load_field;"
        "from bench.segmentation import process;"
        "import pathlib; p = sys.argv[2];"
        "rgb, _ = load_field(pathlib.Path(p) if p else None);"
        "process(rgb);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code, root, str(field or "")],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--field", type=Path, help="a smear field image (default: synthetic)")
    parser.add_argument("--bccd", type=Path, help="BCCD-layout folder: also time its fields")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rgb, name = load_field(args.field)
    seconds = time_field(rgb, args.repeats)
    result = {
        "field": name,
        "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "cores": os.cpu_count(),
        "seconds_median": round(statistics.median(seconds), 3),
        "seconds_min": round(min(seconds), 3),
        "repeats": args.repeats,
        "peak_memory_mb": round(peak_memory_mb(args.field), 1),
    }
    if args.bccd:
        fields = sorted((args.bccd / "images").glob("*.jpg"))[:40]
        per_field = []
        for path in fields:
            image = read_image(path).rgb
            start = time.perf_counter()
            process(image)
            per_field.append(time.perf_counter() - start)
        result["bccd_seconds_per_field_median"] = round(statistics.median(per_field), 3)
        result["bccd_fields_timed"] = len(per_field)
    print(json.dumps(result, indent=2))
    print(
        f"segmentation+quality+cropping {result['size']}: {result['seconds_median']} s median, "
        f"peak RSS {result['peak_memory_mb']} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
