"""Bring a single-cell image (C-NMC, ALL-IDB2, CellaVision crop, ...) into the classifier domain.

Two kinds of single-cell images exist: cells already cut out on black (the C-NMC 2019
convention) and crops of a stained field with the cell of interest in the middle and its
neighbours around it. The first needs only re-centring; the second is segmented like a field and
the cell in the middle is kept. Either way the result is the same C-NMC-style crop that
:func:`leukemia_core.cropping.crop_cells` makes for cells found in whole fields, so one classifier
serves both modes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from leukemia_core.cropping import (
    CROP_FIELD_RED_CELLS,
    DEFAULT_CROP_SIZE,
    check_crop_size,
    crop_scale,
    masked_square_crop,
)
from leukemia_core.errors import NoCellError
from leukemia_core.masks import fill_holes
from leukemia_core.scale import check_rgb
from leukemia_core.segmentation import SegmentationParams, segment_wbc

BLACK_LEVEL = 12  # brightest channel value still counted as black background
MIN_BLACK_FRACTION = 0.25  # a cut-out cell leaves at least this much of its image black
NEAR_BLACK_LEVEL = 32  # an image whose 99th percentile of the brightest channel is below: no cell
MIN_CELL_FRACTION = 0.005  # a cut-out cell covers at least this much of its image
# A crop of a stained field shows its cell and at most a neighbour or two whole (ALL-IDB2: at
# most 2), over a few red-cell diameters (CellaVision crops about 8). An image with more whole
# white cells than this, over more red-cell diameters than that, is a field, not a crop (an
# ALL-IDB1 field spans about 37), in an image no smaller than the smallest camera field seen
# (aria, 224 px). Each alone misfires: a crop can hold a neighbour or two, and small
# single-cell images (Zheng, 120 px) fall into pieces and read their red cells too small.
FIELD_LIKE_CELLS = 3
FIELD_LIKE_SPAN = 12.0
FIELD_LIKE_MIN_SIDE = 200
CENTRE_TOLERANCE = 0.25  # the chosen cell lies within this fraction of the image side of the centre
WHOLE_IMAGE = "whole_image"  # the crop method when no cell was found: the image as it is
# A cut-out cell shows no red cells to measure, so its frame is taken to span as many red-cell
# diameters as our own crops do (cropping.CROP_FIELD_RED_CELLS). For C-NMC 2019 (450 px frames
# at one magnification, lymphoid cells 160-250 px across) that means red cells of 150 px, an
# assumption that puts their size in line with lymphocytes measured in smears; our own crops
# pass through unchanged.


@dataclass(frozen=True)
class SingleCellCrop:
    """One cell image in the classifier domain.

    Attributes:
        crop: ``(size, size, 3)`` uint8, the cell centred on black.
        cell_mask: Bool mask of the cell in the input image (all True when no cell was found).
        method: ``"cutout"`` (cell already on black), ``"segmented"`` (centre cell of a
            segmented crop) or :data:`WHOLE_IMAGE` (nothing found; the image was used as it
            is, and the pipeline sends its cell to review).
        notes: Human-readable warnings.
        to_review: The model's call on it is not to be trusted alone (no cell found, or the
            image looks like a whole field): the pipeline sends it to review.
    """

    crop: np.ndarray
    cell_mask: np.ndarray
    method: str
    notes: tuple[str, ...] = ()
    to_review: bool = False


def is_cutout(image: np.ndarray) -> bool:
    """True for a cell on a black background (the C-NMC convention): black corners and margins."""
    black = image.max(axis=2) <= BLACK_LEVEL
    height, width = black.shape
    corners = [black[0, 0], black[0, width - 1], black[height - 1, 0], black[height - 1, width - 1]]
    return sum(map(bool, corners)) >= 3 and black.mean() >= MIN_BLACK_FRACTION


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _centre_cell_id(cell_labels: np.ndarray, excluded: set[int]) -> int:
    """The cell under the image centre, else the nearest one within tolerance (0: none)."""
    height, width = cell_labels.shape
    under = int(cell_labels[height // 2, width // 2])
    if under and under not in excluded:
        return under
    ids = [i for i in np.unique(cell_labels) if i and i not in excluded]
    best, best_distance = 0, CENTRE_TOLERANCE * max(height, width)
    for cell_id in ids:
        ys, xs = np.nonzero(cell_labels == cell_id)
        distance = float(np.hypot(xs.mean() - width / 2, ys.mean() - height / 2))
        if distance < best_distance:
            best, best_distance = int(cell_id), distance
    return best


def single_cell_crop(
    image: np.ndarray,
    *,
    size: int = DEFAULT_CROP_SIZE,
    params: SegmentationParams | None = None,
) -> SingleCellCrop:
    """The cell in the middle of ``image``, as a C-NMC-style crop.

    Args:
        image: ``(H, W, 3)`` RGB uint8 image of one cell (with or without neighbours).
        size: Side of the output crop.
        params: Segmentation tunables for crops that need segmenting.

    Returns:
        A :class:`SingleCellCrop`; when no cell can be found the whole image is resized and
        the note says so, so a user's crop is never dropped silently.

    Raises:
        NoCellError: The image is black or nearly black, or shows only specks on black: there
            is nothing to classify.
        SettingError: ``size`` is outside :data:`~leukemia_core.cropping.CROP_SIZE_RANGE`.
    """
    size = check_crop_size(size)
    check_rgb(image, "single_cell_crop")
    brightest = image.max(axis=2)
    level = float(np.percentile(brightest, 99))
    if level < NEAR_BLACK_LEVEL:
        raise NoCellError(
            f"this image is black or nearly black (99% of its pixels at or below {level:.0f} of "
            f"255, brightest {int(brightest.max())}): there is no cell to classify. Check the "
            "file and the exposure; a cut-out cell must show the stained cell on black."
        )
    if is_cutout(image):
        mask = fill_holes(_largest_component(brightest > BLACK_LEVEL))
        if mask.sum() < MIN_CELL_FRACTION * mask.size:
            raise NoCellError(
                f"this image is black but for specks (the largest covers {int(mask.sum())} "
                f"pixels, {mask.mean():.2%} of the image): there is no cell to classify. Check "
                "the file; a cut-out cell must show the stained cell on black."
            )
        frame_red_cell_px = max(image.shape[:2]) / CROP_FIELD_RED_CELLS
        return _crop(image, mask, size, "cutout", (), frame_red_cell_px)
    segmentation = segment_wbc(image, params)
    border = set(segmentation.border_cell_ids)
    cell_id = _centre_cell_id(segmentation.cell_labels, set())
    if cell_id:
        notes = ("the cell in the middle touches the image border",) if cell_id in border else ()
        n_whole = len(set(np.unique(segmentation.cell_labels)) - border - {0})
        span = max(image.shape[:2]) / max(segmentation.red_cell_diameter_px, 1e-6)
        field_like = (n_whole >= FIELD_LIKE_CELLS and span >= FIELD_LIKE_SPAN
                      and min(image.shape[:2]) >= FIELD_LIKE_MIN_SIDE)  # fmt: skip
        if field_like:  # e.g. a smear field uploaded among single cells
            notes += (f"this image shows {n_whole} whole white cells, more like a smear field than "
                      "one cell: only the cell in the middle was classified, and it was sent to "
                      "review. Analyse fields in the smear-fields mode to count every cell.",)  # fmt: skip
        mask = segmentation.cell_labels == cell_id
        crop = _crop(image, mask, size, "segmented", notes, segmentation.red_cell_diameter_px)
        return replace(crop, to_review=field_like)
    # The segmentation's own notes speak of fields (red cells, magnification): not said here.
    note = (
        "No white cell was found in the middle of this image, so the whole image was classified "
        "as it is and sent to review; check that it shows one stained white cell."
    )
    whole = np.ones(image.shape[:2], dtype=bool)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return SingleCellCrop(resized, whole, WHOLE_IMAGE, (note,), to_review=True)


def _crop(image, mask, size, method, notes, red_cell_px) -> SingleCellCrop:
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop = masked_square_crop(image[box], mask[box], size, scale=crop_scale(red_cell_px, size))
    return SingleCellCrop(crop, mask, method, tuple(notes))
