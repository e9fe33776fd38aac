"""Classification throughput of a model folder on this machine; prints JSON and a summary line.

Usage: ``python bench/classify.py [--model NAME] [--cells N] [--repeats R]``.

- ``cells_per_s``: :meth:`Classifier.probabilities` on N classifier-domain crops of the default
  crop size (resize to the model input, preprocessing, batched forward passes over the model's
  ``test_time_views``, averaging, calibration).
- ``bare_predict_cells_per_s``: ``keras_model.predict`` on the same forward passes (every view
  of every cell) as ready float32 tensors at the model's input size, made outside the timing.
- ``overhead``: how much slower the pipeline is than the bare predict (target <= 0.20).
- ``single_view_cells_per_s``: the pipeline with one view per cell, for the cost of the views.
- ``onnx_cells_per_s``: the pipeline on ONNX Runtime (what the app and the CLI use on a CPU),
  ``onnx_speedup`` over Keras and ``onnx_max_abs_dp``, the largest difference of a calibrated
  probability between the two on these cells (must be <= 1e-3).

The figures above ``onnx_*`` are Keras' (``predict_on_batch``).

The crops are real cells cut by the pipeline from synthetic smears (no data needed). Times are
medians of R runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from leukemia_core.classify import Classifier, dihedral_views
from leukemia_core.cropping import crop_cells
from leukemia_core.models.folder import load_model
from leukemia_core.models.inputs import model_inputs
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_demo_smear


def crops(n: int) -> list[np.ndarray]:
    smear = make_demo_smear()
    cells = [c.crop for c in crop_cells(smear.image, segment_wbc(smear.image))]
    return [cells[i % len(cells)] for i in range(n)]


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder name (default: the active model)")
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    classifier = Classifier(load_model(args.model))
    batch = crops(args.cells)
    config = classifier.model.config
    plain = model_inputs(batch, config.input_spec)  # the model's declared input path
    ready = np.concatenate(dihedral_views(plain, config.test_time_views))
    keras_model = classifier.model.keras_model
    pipeline = median_seconds(lambda: classifier.probabilities(batch), args.repeats)
    bare = median_seconds(
        lambda: keras_model.predict(ready, batch_size=classifier.batch_size, verbose=0),
        args.repeats,
    )
    one_view = Classifier(replace(classifier.model, config=replace(config, test_time_views=1)))
    single = median_seconds(lambda: one_view.probabilities(batch), args.repeats)
    onnx = Classifier(classifier.model, runtime="onnx")
    onnx_seconds = median_seconds(lambda: onnx.probabilities(batch), args.repeats)
    max_dp = np.abs(onnx.probabilities(batch) - classifier.probabilities(batch)).max()
    result = {
        "model": config.name,
        "architecture": config.architecture,
        "input": config.input_spec.to_dict(),
        "test_time_views": config.test_time_views,
        "cells": args.cells,
        "batch_size": classifier.batch_size,
        "cells_per_s": args.cells / pipeline,
        "bare_predict_cells_per_s": args.cells / bare,
        "overhead": pipeline / bare - 1.0,
        "single_view_cells_per_s": args.cells / single,
        "onnx_cells_per_s": args.cells / onnx_seconds,
        "onnx_speedup": pipeline / onnx_seconds,
        "onnx_max_abs_dp": float(max_dp),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"{config.name}: {result['cells_per_s']:.1f} cells/s through the pipeline "
        f"({config.test_time_views} views each; {result['single_view_cells_per_s']:.1f} with one), "
        f"{result['bare_predict_cells_per_s']:.1f} cells/s bare predict, overhead "
        f"{100 * result['overhead']:+.0f}% (target <= +20%); ONNX Runtime "
        f"{result['onnx_cells_per_s']:.1f} cells/s ({result['onnx_speedup']:.1f}x, max |dp| "
        f"{max_dp:.0e})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
