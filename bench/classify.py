"""Classification throughput of a model folder on this machine; prints JSON and a summary line.

Usage: ``python bench/classify.py [--model NAME | --architecture NAME [--input-size N]]
[--device auto|cpu|gpu] [--cells N] [--repeats R]``.

- ``cells_per_s``: :meth:`Classifier.probabilities` on N classifier-domain crops of the default
  crop size (resize to the model input, preprocessing, batched forward passes over the model's
  ``test_time_views``, averaging, calibration).
- ``bare_predict_cells_per_s``: ``keras_model.predict`` on the same forward passes (every view
  of every cell) as ready float32 tensors at the model's input size, made outside the timing.
- ``overhead``: how much slower the pipeline is than the bare predict (target <= 0.20).
- ``single_view_cells_per_s``: the pipeline with one view per cell, for the cost of the views.
- ``onnx_cells_per_s``: the pipeline on ONNX Runtime (what the app and the CLI use on a CPU),
  ``onnx_speedup`` over Keras and ``onnx_max_abs_dp``, the largest difference of a calibrated
  probability between the two on these cells (must be <= 1e-3). Not measured on a GPU.

The figures above ``onnx_*`` are Keras' (``predict_on_batch``).

``--architecture`` (e.g. ``efficientnet_b3 --input-size 300``) times an untrained network of that
architecture instead of a model folder (random weights: speed only, one view per cell).
``--device gpu`` runs TensorFlow on the GPU with mixed precision (float16 compute) for such a
network, and stops with a message on a machine where TensorFlow sees no GPU; ``cpu`` hides the
GPU; ``auto`` (default) uses one when present.

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
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def crops(n: int) -> list[np.ndarray]:
    from leukemia_core.cropping import crop_cells
    from leukemia_core.segmentation import segment_wbc
    from leukemia_core.synthetic import make_demo_smear

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


def untrained_model(architecture: str, input_size: int | None, root: Path, mixed: bool):
    """A model folder of ``architecture`` with random weights (for speed only)."""
    import keras

    from leukemia_core.models import build_classifier
    from leukemia_core.models.architectures import get_architecture
    from leukemia_core.models.folder import load_model
    from leukemia_core.models.writing import save_model_folder

    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    spec = get_architecture(architecture)
    model = build_classifier(architecture, input_size=input_size, weights=None)
    size = int(model.input_shape[1])
    config = {"architecture": architecture, "input_size": size,
              "preprocessing": spec.preprocessing, "class_names": ["blast", "normal"],
              "calibration": {"temperature": 1.0, "threshold": 0.5, "uncertain_low": 0.4,
                              "uncertain_high": 0.6},
              "gradcam_layer": spec.gradcam_layer,
              "training": {"data": "none: random weights, for a speed bench"}}  # fmt: skip
    save_model_folder(model, architecture, config, metrics={}, card="# bench\n", root=root)
    return load_model(architecture, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder name (default: the active model)")
    parser.add_argument("--architecture", help="time an untrained network of this architecture")
    parser.add_argument("--input-size", type=int, help="with --architecture (default: its own)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.model and args.architecture:
        parser.error("give --model or --architecture, not both")
    os.environ["LEUKEMIA_DEVICE"] = args.device  # read when leukemia_core is first imported
    from leukemia_core.models.folder import load_model
    from leukemia_core.models.onnx_runtime import tensorflow_sees_gpu

    on_gpu = tensorflow_sees_gpu()
    if args.device == "gpu" and not on_gpu:
        print("--device gpu: TensorFlow sees no GPU on this machine (check the driver and the "
              "CUDA build of TensorFlow with nvidia-smi); run with --device cpu.",
              file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory() as folder:
        if args.architecture:  # its random weights' converted graph is not worth caching
            os.environ["LEUKEMIA_CACHE_DIR"] = folder
            model = untrained_model(args.architecture, args.input_size, Path(folder), on_gpu)
        else:
            model = load_model(args.model)
        return bench(model, args.cells, args.repeats, on_gpu)


def bench(model, n_cells: int, repeats: int, on_gpu: bool) -> int:
    from leukemia_core.classify import Classifier, dihedral_views
    from leukemia_core.models.inputs import model_inputs
    from leukemia_core.models.onnx_runtime import OnnxUnavailableError

    classifier = Classifier(model)
    batch = crops(n_cells)
    config = classifier.model.config
    plain = model_inputs(batch, config.input_spec)  # the model's declared input path
    ready = np.concatenate(dihedral_views(plain, config.test_time_views))
    keras_model = classifier.model.keras_model
    pipeline = median_seconds(lambda: classifier.probabilities(batch), repeats)
    bare = median_seconds(
        lambda: keras_model.predict(ready, batch_size=classifier.batch_size, verbose=0),
        repeats,
    )
    one_view = Classifier(replace(classifier.model, config=replace(config, test_time_views=1)))
    single = median_seconds(lambda: one_view.probabilities(batch), repeats)
    onnx_figures = {"onnx_cells_per_s": None, "onnx_speedup": None, "onnx_max_abs_dp": None,
                    "onnx_unavailable": "a GPU run" if on_gpu else None}  # fmt: skip
    onnx = None
    if not on_gpu:  # ONNX Runtime runs the network on a CPU only
        try:
            onnx = Classifier(classifier.model, runtime="onnx")
        except OnnxUnavailableError as error:
            onnx_figures["onnx_unavailable"] = str(error)
    if onnx is not None:
        onnx_seconds = median_seconds(lambda: onnx.probabilities(batch), repeats)
        max_dp = np.abs(onnx.probabilities(batch) - classifier.probabilities(batch)).max()
        onnx_figures.update(onnx_cells_per_s=n_cells / onnx_seconds, onnx_max_abs_dp=float(max_dp),
                            onnx_speedup=pipeline / onnx_seconds)  # fmt: skip
    result = {
        "model": config.name,
        "architecture": config.architecture,
        "input": config.input_spec.to_dict(),
        "test_time_views": config.test_time_views,
        "cells": n_cells,
        "batch_size": classifier.batch_size,
        "cells_per_s": n_cells / pipeline,
        "bare_predict_cells_per_s": n_cells / bare,
        "overhead": pipeline / bare - 1.0,
        "single_view_cells_per_s": n_cells / single,
        **onnx_figures,
        "device": "gpu (mixed precision for --architecture)" if on_gpu else "cpu",
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"{config.name}: {result['cells_per_s']:.1f} cells/s through the pipeline "
        f"({config.test_time_views} views each; {result['single_view_cells_per_s']:.1f} with one), "
        f"{result['bare_predict_cells_per_s']:.1f} cells/s bare predict, overhead "
        f"{100 * result['overhead']:+.0f}% (target <= +20%) on the {result['device']}"
        + (f"; ONNX Runtime {result['onnx_cells_per_s']:.1f} cells/s ({result['onnx_speedup']:.1f}x,"
           f" max |dp| {result['onnx_max_abs_dp']:.0e})" if result["onnx_cells_per_s"] else
           f"; ONNX Runtime not used: {result['onnx_unavailable']}")
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
