"""The one crop -> model-input path: crop -> stain-normalised -> resized -> preprocessed.

A model folder declares its path in ``config.json`` (``input_size``, ``preprocessing`` and
``stain_normalisation``), as timm's data config does, and every caller goes through here: the
app's classifier, Grad-CAM, training, evaluation and the benches. Training augmentation acts
between :func:`ready_crops` and :func:`preprocess`, on what the model would otherwise see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from leukemia_core.errors import InvalidImageError
from leukemia_core.models.architectures import PREPROCESSING_SCHEMES, preprocess

# Reference statistics of cell pixels in OpenCV's 8-bit CIELAB (L, a, b): the median over the
# cells of the crop bank of ../shared/data (ALL-IDB, C-NMC, PBC, deepapl, BCCD) of each cell's
# mean and spread. Only ``cell_lab`` uses them.
REFERENCE_LAB_MEAN = (111.0, 157.0, 101.0)
REFERENCE_LAB_STD = (35.0, 12.0, 16.0)
BLACK = 4  # pixels at or below this in every channel are the crop's background
INPUT_SIZE_RANGE = (32, 1024)  # smallest and largest model input side, in px


def _none(crop: np.ndarray) -> np.ndarray:
    return crop


def _cell_pixels(crop: np.ndarray) -> np.ndarray:
    return crop.max(axis=-1) > BLACK


def _grey(crop: np.ndarray) -> np.ndarray:
    """Luminance in all three channels: what is left when stain colour is not trusted."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    grey[~_cell_pixels(crop)] = 0
    return np.repeat(grey[..., None], 3, axis=-1)


def _cell_lab(crop: np.ndarray) -> np.ndarray:
    """Reinhard's colour transfer on the cell pixels only: each CIELAB channel of the cell is
    shifted and scaled to the reference mean and spread; the black background stays black."""
    cell = _cell_pixels(crop)
    if cell.sum() < 16:
        return crop
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    values = lab[cell]
    mean, std = values.mean(axis=0), values.std(axis=0) + 1e-3
    # Spread is only narrowed or widened by up to 2x: a flat cell must not be blown up to noise.
    scale = np.clip(np.asarray(REFERENCE_LAB_STD) / std, 0.5, 2.0)
    lab[cell] = (values - mean) * scale + np.asarray(REFERENCE_LAB_MEAN)
    out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out[~cell] = 0
    # A converted cell pixel may round to black; keep it visible as cell.
    out[cell] = np.maximum(out[cell], BLACK + 1)
    return out


STAIN_NORMALISATIONS = {"none": _none, "grey": _grey, "cell_lab": _cell_lab}


@dataclass(frozen=True)
class InputSpec:
    """How a model turns a cell-on-black crop into its input.

    Attributes:
        input_size: Square side the crop is resized to.
        preprocessing: Key of :data:`~leukemia_core.models.architectures.PREPROCESSING_SCHEMES`.
        stain_normalisation: Key of :data:`STAIN_NORMALISATIONS` (``none``, ``grey``,
            ``cell_lab``), applied to the crop at its own size before resizing.
    """

    input_size: int
    preprocessing: str
    stain_normalisation: str = "none"

    def __post_init__(self) -> None:
        if self.stain_normalisation not in STAIN_NORMALISATIONS:
            raise ValueError(
                f"stain_normalisation is {self.stain_normalisation!r}; use one of "
                f"{', '.join(STAIN_NORMALISATIONS)}."
            )
        if self.preprocessing not in PREPROCESSING_SCHEMES:
            raise ValueError(
                f"preprocessing is {self.preprocessing!r}; use one of "
                f"{', '.join(PREPROCESSING_SCHEMES)}."
            )
        low, high = INPUT_SIZE_RANGE
        if (
            isinstance(self.input_size, bool)
            or not isinstance(self.input_size, int)
            or not low <= self.input_size <= high
        ):
            raise ValueError(
                f"input_size is {self.input_size!r}; use a whole number from {low} to {high}."
            )

    def to_dict(self) -> dict:
        return {"input_size": self.input_size, "preprocessing": self.preprocessing,
                "stain_normalisation": self.stain_normalisation}  # fmt: skip


def check_crop(crop: np.ndarray, index: int) -> np.ndarray:
    """``crop`` as an array if it is RGB uint8 ``(H, W, 3)``; else an InvalidImageError."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise InvalidImageError(
            f"crop {index} is {crop.dtype} of shape {crop.shape}; expected RGB uint8 (H, W, 3) "
            "as made by cropping.crop_cells or single_cell.single_cell_crop."
        )
    return crop


def resize_square(crop: np.ndarray, size: int) -> np.ndarray:
    """``crop`` at ``size`` x ``size`` (area averaging when shrinking, linear when growing)."""
    if crop.shape[:2] == (size, size):
        return crop
    shrink = crop.shape[0] > size
    return cv2.resize(crop, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)  # fmt: skip


def ready_crops(crops: Sequence[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """Crops stain-normalised and resized: ``(N, size, size, 3)`` uint8, before preprocessing."""
    normalise = STAIN_NORMALISATIONS[spec.stain_normalisation]
    out = np.zeros((len(crops), spec.input_size, spec.input_size, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        out[i] = resize_square(normalise(check_crop(crop, i)), spec.input_size)
    return out


def model_inputs(crops: Sequence[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """The float32 batch the model's first layer takes, from cell-on-black crops of any size."""
    return preprocess(ready_crops(crops, spec), spec.preprocessing)
