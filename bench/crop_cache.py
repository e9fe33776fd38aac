"""What the crop cache saves a comparison job: loading a dataset's cells cold and again; JSON.

Usage: ``python bench/crop_cache.py --data ../shared/data/deepapl [--size 224]``. Times
:func:`train.fit.load_crops` (each cell cut out as the app does, then the model's input path)
three ways: without the cache, with an empty cache (the first job), and with the filled cache
(every later job on the same files and code). The cache goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukemia_core.models.inputs import InputSpec
from train.crop_cache import CropCache
from train.fit import load_crops
from train.inspection import DatasetSource, inspect_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset folder or manifest")
    parser.add_argument("--size", type=int, default=224, help="model input side")
    args = parser.parse_args()
    table, _ = inspect_datasets([DatasetSource(args.data)], verify=True, skip_unreadable=True)
    records, spec = table.records, InputSpec(args.size, "unit")
    with tempfile.TemporaryDirectory() as folder:
        timings = {}
        start = time.perf_counter()
        plain = load_crops(records, spec)
        timings["no_cache_s"] = time.perf_counter() - start
        for run in ("first_job_s", "later_job_s"):
            cache = CropCache(Path(folder))
            start = time.perf_counter()
            cached = load_crops(records, spec, cut=cache.crop)
            timings[run] = time.perf_counter() - start
            assert np.array_equal(cached, plain), "the cache changed a crop"
        stored = sum(p.stat().st_size for p in Path(folder).rglob("*.png"))
    print(json.dumps({"data": str(args.data), "cells": len(records), "input_size": args.size,
                      **{k: round(v, 1) for k, v in timings.items()},
                      "cache_mb": round(stored / 2**20, 1)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
