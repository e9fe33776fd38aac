"""Batched blast classification of classifier-domain crops with calibration and abstention."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from leukemia_core.calibration import blast_probability
from leukemia_core.counting import CellLabel
from leukemia_core.models.config import check_test_time_views
from leukemia_core.models.folder import LoadedModel
from leukemia_core.models.inputs import model_inputs
from leukemia_core.models.onnx_runtime import (
    Forward,
    OnnxUnavailableError,
    keras_forward,
    onnx_forward,
    tensorflow_sees_gpu,
)
from leukemia_core.runtime import RUNTIMES

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class CellPrediction:
    """What the model says about one cell.

    Attributes:
        blast_probability: Calibrated probability that the cell is a leukemic blast.
        label: ``blast``, ``normal`` or ``uncertain`` (inside the model's review band).
    """

    blast_probability: float
    label: CellLabel

    @property
    def uncertain(self) -> bool:
        return self.label == CellLabel.UNCERTAIN


def dihedral_view(images: np.ndarray, index: int) -> np.ndarray:
    """View ``index`` (0-7) of ``(N, H, W, C)`` square images: 0-3 are quarter turns, 4-7 the
    same turns of the mirror image."""
    mirrored = images[:, :, ::-1] if index >= 4 else images
    return np.ascontiguousarray(np.rot90(mirrored, index % 4, axes=(1, 2)))


def dihedral_views(images: np.ndarray, n_views: int) -> list[np.ndarray]:
    """The first ``n_views`` (1, 4 or 8) :func:`dihedral_view` of the images."""
    check_test_time_views(n_views)
    return [dihedral_view(images, index) for index in range(n_views)]


def view_averaged_logits(
    predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, n_views: int
) -> np.ndarray:
    """Mean of ``predict`` over the first ``n_views`` dihedral views of a preprocessed batch.

    The views are made one at a time, so a batch never needs more than one extra copy.
    """
    return view_averaged_outputs(lambda views: (predict(views),), batch, n_views)[0]


def view_averaged_outputs(
    predict: Callable[[np.ndarray], Sequence[np.ndarray]], batch: np.ndarray, n_views: int
) -> tuple[np.ndarray, ...]:
    """The mean of each of a multi-output ``predict`` over the first ``n_views`` dihedral views.

    The views are made one at a time, so a batch never needs more than one extra copy.
    """
    check_test_time_views(n_views)
    totals = [np.asarray(o, dtype=np.float64) for o in predict(batch)]
    for index in range(1, n_views):
        for total, output in zip(totals, predict(dihedral_view(batch, index)), strict=True):
            total += np.asarray(output, dtype=np.float64)
    return tuple((total / n_views).astype(np.float32) for total in totals)


@dataclass(frozen=True)
class CellOutputs:
    """What one forward pass gives per crop.

    Attributes:
        logits: ``(N, 2)`` raw logits (averaged over the test-time views).
        features: ``(N, F)`` pooled backbone features (the ``head_pool`` layer), averaged over
            the same views; the out-of-domain check compares them with the training cells'.
    """

    logits: np.ndarray
    features: np.ndarray


class Classifier:
    """A loaded model ready to label crops; holds no state between calls, so sessions can share it.

    Example:
        >>> classifier = Classifier(load_model())  # doctest: +SKIP
        >>> classifier.probabilities([cell.crop for cell in cells])  # doctest: +SKIP
    """

    def __init__(
        self, model: LoadedModel, batch_size: int = DEFAULT_BATCH_SIZE, runtime: str = "keras"
    ):
        """``runtime``: one of :data:`~leukemia_core.runtime.RUNTIMES`; ``auto``
        picks ONNX Runtime on a CPU when it matches Keras on a probe batch, else Keras (the
        choice and its reason are in :attr:`forward`)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime is {runtime!r}; use one of {RUNTIMES}")
        self.model = model
        self.batch_size = batch_size
        keras_model = model.keras_model
        # One pass gives the logits and the pooled features the out-of-domain check needs.
        self._outputs = keras.Model(
            keras_model.input,
            [keras_model.get_layer("logits").output, keras_model.get_layer("head_pool").output],
        )
        self.forward = self._choose_forward(runtime)

    def _choose_forward(self, runtime: str) -> Forward:
        if runtime == "keras":
            return keras_forward(self._outputs)
        if runtime == "auto" and tensorflow_sees_gpu():
            return keras_forward(self._outputs, "Keras (TensorFlow uses the GPU)")
        config = self.model.config
        try:
            return onnx_forward(self._outputs, config.sha256, config.input_size,
                                config.calibration.temperature,
                                retry_refused=runtime == "onnx")  # fmt: skip
        except OnnxUnavailableError as error:
            if runtime == "onnx":
                raise OnnxUnavailableError(
                    f"{error}. Use runtime auto or keras (--runtime) to run it on Keras."
                ) from error
            return keras_forward(self._outputs, f"Keras ({str(error).splitlines()[0]})")

    @property
    def runtime(self) -> str:
        """``keras`` or ``onnx``: what runs the network."""
        return self.forward.runtime

    @property
    def input_size(self) -> int:
        return self.model.config.input_size

    def logits(
        self, crops: Sequence[np.ndarray] | np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``(N, 2)`` raw logits of crops (any size; resized to the model's input).

        With ``test_time_views`` > 1 in the model's config, the logits are averaged over the
        crop's quarter turns (and mirror images), as the model was calibrated.
        """
        return self.outputs(crops, progress).logits

    def outputs(
        self, crops: Sequence[np.ndarray] | np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> CellOutputs:  # fmt: skip
        """Logits and pooled features from one forward pass per view (see :meth:`logits`)."""
        config = self.model.config
        out, features = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = model_inputs(crops[start : start + self.batch_size], config.input_spec)
            logits, pooled = view_averaged_outputs(self.forward.predict, batch,
                                                   config.test_time_views)  # fmt: skip
            out.append(logits)
            features.append(pooled)
            if progress:
                progress(min(start + self.batch_size, len(crops)), len(crops))
        if not out:
            width = self._outputs.outputs[1].shape[-1]
            return CellOutputs(np.zeros((0, 2), np.float32), np.zeros((0, width), np.float32))
        return CellOutputs(np.concatenate(out), np.concatenate(features))

    def probabilities(self, crops, progress=None) -> np.ndarray:
        """Calibrated blast probability per crop."""
        return blast_probability(
            self.logits(crops, progress), self.model.config.calibration.temperature
        )


def label_probability(p: float, model: LoadedModel) -> CellPrediction:
    """The label a calibrated probability gets under the model's threshold and review band."""
    calibration = model.config.calibration
    # A probability that is no number (a broken input or runtime) is no call: both comparisons
    # below are False for NaN, which would have read as normal.
    if not math.isfinite(p) or calibration.uncertain_low <= p < calibration.uncertain_high:
        label = CellLabel.UNCERTAIN
    else:
        label = CellLabel.BLAST if p >= calibration.threshold else CellLabel.NORMAL
    return CellPrediction(float(p), label)
