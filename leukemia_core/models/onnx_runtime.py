"""The classifier's forward pass on ONNX Runtime: the same network, faster on a CPU.

On two CPU cores ONNX Runtime runs EfficientNet-Lite0 about 2x faster than Keras'
``predict_on_batch`` (``bench/classify.py``). Keras stays the model's home: training, Grad-CAM
and the weights file are Keras; the ONNX graph is derived from the loaded weights by ``tf2onnx``
and kept in a cache keyed by the weights' SHA-256, the input size and the converter's version
(``$LEUKEMIA_CACHE_DIR``, default ``~/.cache/leukemia-screen``; the newest :data:`KEEP_GRAPHS`
graphs are kept), so only the first load of a model pays the conversion (seconds). A network
that cannot be run this way (EfficientNet-B3: tf2onnx leaves its input normalisation's
statistics as graph inputs) leaves a ``.keras-only`` note with the reason, so later loads skip
the attempt.

Every load is verified, as a model folder is: a fixed probe batch goes through both runtimes and
the ONNX graph is used only when every calibrated blast probability agrees within
:data:`PROBE_TOLERANCE` and the pooled features (the out-of-domain check's input) within
:data:`FEATURE_TOLERANCE`. A graph that does not convert, a missing ``onnxruntime`` or a
disagreement raises :class:`OnnxUnavailableError` saying why; ``runtime="auto"`` then keeps Keras.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukemia_core.calibration import blast_probability
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.outputs import write_bytes_atomic

if TYPE_CHECKING:  # Keras is imported by the caller; here for annotations only
    import keras

PROBE_TOLERANCE = 1e-3
"""Largest |difference| of a calibrated blast probability allowed between the two runtimes."""

FEATURE_TOLERANCE = 1e-3
"""Largest |difference| of a pooled feature, relative to the largest feature, allowed."""

OPSET = 17
CONVERT_TIMEOUT_S = 600
KEEP_GRAPHS = 8  # converted graphs kept in the cache (about 13 MB each for Lite0)
REFUSED_SUFFIX = ".keras-only"  # a note that these weights run on Keras, and why
CACHE_ENV_VAR = "LEUKEMIA_CACHE_DIR"
PROBE_CROPS = 6

Outputs = tuple[np.ndarray, np.ndarray]  # (logits, pooled features) of one batch


class OnnxUnavailableError(LeukemiaCoreError):
    """The ONNX runtime cannot run this model here (not installed, not convertible, or not
    matching Keras on the probe batch)."""


class OnnxTransientError(OnnxUnavailableError):
    """The conversion may work another time (it timed out on a busy machine, or the converter
    was killed): unlike a refusal, it is not remembered for these weights."""


@dataclass(frozen=True)
class Forward:
    """One way to run the network: ``predict(batch) -> (logits, features)``.

    Attributes:
        runtime: ``keras`` or ``onnx``.
        predict: the forward pass on a preprocessed ``(N, S, S, 3)`` float32 batch.
        note: why this runtime, in words (shown with the model).
    """

    runtime: str
    predict: Callable[[np.ndarray], Outputs]
    note: str


def cache_dir() -> Path:
    """Where converted graphs are kept: ``$LEUKEMIA_CACHE_DIR`` or ``~/.cache/leukemia-screen``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured).expanduser() if configured else Path.home() / ".cache/leukemia-screen"


def keras_forward(outputs_model: keras.Model, note: str = "Keras") -> Forward:
    """The forward pass on Keras' compiled graph."""

    def predict(batch: np.ndarray) -> Outputs:
        # predict_on_batch runs a compiled graph; calling the model eagerly costs up to 2x.
        logits, features = outputs_model.predict_on_batch(batch)
        return np.asarray(logits), np.asarray(features)

    return Forward("keras", predict, note)


def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow has a GPU to run on (after ``LEUKEMIA_DEVICE`` was applied)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def onnx_forward(
    outputs_model: keras.Model, weights_sha256: str, input_size: int, temperature: float,
    probe: np.ndarray | None = None, retry_refused: bool = False,
) -> Forward:  # fmt: skip
    """The ONNX Runtime forward pass of ``outputs_model``, verified against it on a probe batch.

    Weights (at this temperature) that failed conversion or the probe are remembered and run on
    Keras without trying again, unless ``retry_refused`` (ONNX asked for by name); a timeout
    or a killed converter is not remembered.

    Args:
        outputs_model: the Keras model with outputs ``(logits, pooled features)``.
        weights_sha256: the weights' checksum (the cache key).
        input_size: side of the model's input.
        temperature: the model's calibration temperature (probabilities are compared).
        probe: preprocessed crops to compare on; default a fixed random batch.

    Raises:
        OnnxUnavailableError: onnxruntime or tf2onnx missing, conversion failed, or the outputs
            differ by more than :data:`PROBE_TOLERANCE` / :data:`FEATURE_TOLERANCE`.
    """
    path = _cache_path(weights_sha256, input_size)
    # the probe compares calibrated probabilities: a recalibration may pass where this failed
    refused = path.parent / f"{path.stem}-T{temperature:.6g}{REFUSED_SUFFIX}"
    reason = None if retry_refused else _read(refused)
    if reason is not None:  # a network this runtime failed before: not again
        raise OnnxUnavailableError(f"{reason.decode()} (an earlier load found this)")
    if probe is None:
        probe = np.random.default_rng(0).uniform(-1, 1, (PROBE_CROPS, input_size, input_size, 3))
    probe = probe.astype(np.float32)
    reference = keras_forward(outputs_model).predict(probe)
    cached = _read(path)
    if cached is not None:
        try:
            return _verified(cached, outputs_model, probe, reference, temperature)
        except OnnxUnavailableError:
            with contextlib.suppress(OSError):  # damaged, or not this model's: convert again
                path.unlink(missing_ok=True)
    try:
        try:
            graph = _convert(outputs_model, input_size)
        except OSError as error:  # no room for the temporary copy, the converter not runnable:
            # this machine's trouble, not the model's, nor the --out folder's (it was blamed)
            raise OnnxTransientError(f"the ONNX conversion could not run ({error})") from error
        forward = _verified(graph, outputs_model, probe, reference, temperature)
    except OnnxTransientError:
        raise
    except OnnxUnavailableError as error:  # the same weights would fail the same way
        _store(refused, str(error).splitlines()[0].encode())
        raise
    _store(path, graph)  # only a verified graph is kept
    with contextlib.suppress(OSError):
        refused.unlink(missing_ok=True)
    return forward


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # none yet, or removed by another process a moment ago
        return None


def _verified(
    graph: bytes, outputs_model: keras.Model, probe: np.ndarray, reference: Outputs,
    temperature: float,
) -> Forward:  # fmt: skip
    """The forward pass of ``graph`` if it matches Keras' ``reference`` outputs on ``probe``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.inter_op_num_threads = 1  # one chain of layers; the cores go to each layer
    try:
        session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # any failure means "use Keras", said why
        raise OnnxUnavailableError(f"ONNX Runtime refused the converted graph: {error}") from error
    inputs = [i.name for i in session.get_inputs()]
    if len(inputs) != 1:  # e.g. a normalisation layer's statistics left out as inputs
        raise OnnxUnavailableError(f"the converted graph wants {len(inputs)} inputs ({inputs})")
    order = _output_order(session, outputs_model)

    def predict(batch: np.ndarray) -> Outputs:
        outputs = session.run(None, {inputs[0]: np.ascontiguousarray(batch, np.float32)})
        return outputs[order[0]], outputs[order[1]]

    try:
        candidate = predict(probe)
    except Exception as error:  # any failure means "use Keras", said why
        raise OnnxUnavailableError(f"ONNX Runtime failed on the probe batch: {error}") from error
    dp, dfeature = _disagreement(reference, candidate, temperature)
    if dp > PROBE_TOLERANCE or dfeature > FEATURE_TOLERANCE:
        raise OnnxUnavailableError(
            f"ONNX Runtime and Keras disagree on the probe batch (max |dp| {dp:.1e}, features "
            f"{dfeature:.1e}; allowed {PROBE_TOLERANCE:.0e} and {FEATURE_TOLERANCE:.0e})"
        )
    return Forward("onnx", predict, f"ONNX Runtime, verified against Keras (max |dp| {dp:.0e})")


def _disagreement(
    reference: Outputs, candidate: Outputs, temperature: float
) -> tuple[float, float]:
    """Max |dp| of calibrated probabilities and max relative |d feature| between two passes."""
    (ref_logits, ref_features), (logits, features) = reference, candidate
    dp = np.abs(blast_probability(logits, temperature) - blast_probability(ref_logits, temperature))
    scale = max(float(np.abs(ref_features).max()), 1e-6)
    return float(dp.max()), float(np.abs(features - ref_features).max()) / scale


def _output_order(session, outputs_model: keras.Model) -> tuple[int, int]:
    """Indices of the logits and the features among the session's outputs (by their width)."""
    widths = [(output.shape or [None])[-1] for output in session.get_outputs()]
    logits_width, features_width = (int(o.shape[-1]) for o in outputs_model.outputs)
    if (
        not all(isinstance(w, int) for w in widths)  # a symbolic or unknown width
        or logits_width == features_width
        or sorted(widths) != sorted([logits_width, features_width])
    ):
        raise OnnxUnavailableError(f"unexpected ONNX outputs of widths {widths}")
    return widths.index(logits_width), widths.index(features_width)


def _cache_path(weights_sha256: str, input_size: int) -> Path:
    """Where this model's graph is cached; raises when the converter or runtime is missing."""
    try:
        import onnxruntime  # noqa: F401 - only whether it is there
        import tf2onnx
    except ImportError as error:
        raise OnnxUnavailableError(
            f"{error.name} is not installed; pip install -r requirements.txt"
        ) from error
    name = f"{weights_sha256}-{input_size}-tf2onnx{tf2onnx.__version__}-op{OPSET}.onnx"
    return cache_dir() / name


def _store(path: Path, data: bytes) -> None:
    """Write ``data`` atomically and keep the :data:`KEEP_GRAPHS` newest graphs."""
    with contextlib.suppress(OSError):  # a read-only or full cache only costs a conversion
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
        for pattern in ("*.onnx", f"*{REFUSED_SUFFIX}"):
            kept = sorted(path.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
            for old in kept[:-KEEP_GRAPHS]:
                old.unlink(missing_ok=True)


def _convert(outputs_model: keras.Model, input_size: int) -> bytes:
    """The ONNX graph of ``outputs_model``, converted in a child process: tf2onnx leaves about
    1 GB of heap behind, which the app's process would keep until it restarts."""
    with tempfile.TemporaryDirectory() as folder:
        model_path, graph_path = Path(folder) / "outputs.keras", Path(folder) / "graph.onnx"
        outputs_model.save(model_path)
        command = [
            sys.executable,
            "-m",
            __name__,
            str(model_path),
            str(input_size),
            str(graph_path),
        ]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                                 cwd=Path(__file__).parents[2])  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise OnnxTransientError(f"tf2onnx took over {CONVERT_TIMEOUT_S} s") from error
        if run.returncode < 0:  # killed (out of memory, a restart): may work another time
            raise OnnxTransientError(f"tf2onnx was stopped by signal {-run.returncode}")
        if run.returncode != 0 or not graph_path.is_file():
            why = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise OnnxUnavailableError(f"tf2onnx could not convert the model: {why}")
        return graph_path.read_bytes()


def _convert_here(model_path: str, input_size: int, graph_path: str) -> None:
    """The child's side of :func:`_convert`."""
    import keras
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    outputs_model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    spec = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="crops")]
    function = tf.function(lambda x: outputs_model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    Path(graph_path).write_bytes(proto.SerializeToString())


if __name__ == "__main__":
    _convert_here(sys.argv[1], int(sys.argv[2]), sys.argv[3])
