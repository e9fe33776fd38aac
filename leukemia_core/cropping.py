"""Per-cell records and crops in the classifier's domain (C-NMC style: cell on black)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

from leukemia_core.errors import SettingError
from leukemia_core.imaging import mask_outline
from leukemia_core.types import Cell, CellLabel, Segmentation

DEFAULT_CROP_SIZE = 300
CROP_SIZE_RANGE = (32, 1024)  # smallest and largest side of a classifier crop, in px
# The classifier crop spans this many red-cell diameters, so cell size stays visible to the
# classifier (blasts are larger than lymphocytes) whatever the camera's magnification.
CROP_FIELD_RED_CELLS = 3.0

_OUTLINE_COLOURS = {
    "cell": (40, 200, 40),
    "nucleus": (255, 210, 0),
    "border": (150, 150, 150),
}


def check_crop_size(size: object) -> int:
    """``size`` if it is a whole number within :data:`CROP_SIZE_RANGE`.

    Raises:
        SettingError: Otherwise, saying what arrived and the range.
    """
    low, high = CROP_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not low <= size <= high:
        raise SettingError(
            f"crop size is {size!r}; use a whole number of pixels from {low} to {high} "
            f"(default {DEFAULT_CROP_SIZE})."
        )
    return int(size)


def crop_cells(
    image: np.ndarray,
    segmentation: Segmentation,
    *,
    size: int = DEFAULT_CROP_SIZE,
) -> list[Cell]:
    """One :class:`Cell` per segmented white cell, with its crops.

    The classifier crop follows the C-NMC 2019 convention (the domain of most public training
    data): the cell centred on a square black canvas, everything outside its mask black, at a
    fixed physical scale (like C-NMC's fixed magnification): the square spans
    :data:`CROP_FIELD_RED_CELLS` red-cell diameters; larger cells are shrunk to fit.

    Args:
        image: ``(H, W, 3)`` RGB uint8 field the segmentation was computed on.
        segmentation: Result of :func:`leukemia_core.segmentation.segment_wbc`.
        size: Side of the classifier crop in pixels.

    Returns:
        Cells in label order, not yet labelled (``border`` when cut by the image edge, else
        ``uncertain``); field index 0.

    Raises:
        SettingError: ``size`` is outside :data:`CROP_SIZE_RANGE`.
    """
    size = check_crop_size(size)
    if image.shape[:2] != segmentation.cell_labels.shape:
        raise ValueError(
            f"image is {image.shape[:2]} but the segmentation is {segmentation.cell_labels.shape}; "
            "crop the same image that was segmented."
        )
    border = set(segmentation.border_cell_ids)
    scale = crop_scale(segmentation.red_cell_diameter_px, size)
    cells = []
    boxes = ndi.find_objects(segmentation.cell_labels)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        rows, cols = box
        cell_mask = segmentation.cell_labels[box] == index
        ys, xs = np.nonzero(cell_mask)
        bbox = (cols.start, rows.start, cols.stop, rows.stop)
        cells.append(
            Cell(
                cell_id=index,
                bbox=bbox,
                centroid=(float(xs.mean() + cols.start), float(ys.mean() + rows.start)),
                outline=mask_outline(cell_mask, bbox[:2]),
                crop=masked_square_crop(image[box], cell_mask, size, scale=scale),
                cell_area_px=int(cell_mask.sum()),
                nucleus_area_px=int((segmentation.nucleus_labels[box] == index).sum()),
                touches_border=index in border,
                model_label=CellLabel.BORDER if index in border else CellLabel.UNCERTAIN,
            )
        )
    return cells


def crop_scale(red_cell_diameter_px: float, size: int = DEFAULT_CROP_SIZE) -> float | None:
    """Crop pixels per field pixel for a field with this red-cell diameter (None if unknown)."""
    if not red_cell_diameter_px or red_cell_diameter_px <= 0:
        return None
    return size / (CROP_FIELD_RED_CELLS * red_cell_diameter_px)


def masked_square_crop(
    patch: np.ndarray, mask: np.ndarray, size: int, margin: float = 0.05, scale: float | None = None
) -> np.ndarray:
    """Cell pixels on black, centred in a ``size`` square.

    Args:
        patch: RGB pixels of the cell's bounding box.
        mask: Bool cell mask of the same box.
        size: Side of the output square.
        margin: Fraction of the side kept free on each edge.
        scale: Output pixels per input pixel (see :func:`crop_scale`); a cell that would not fit
            is shrunk to fit. None scales the cell to fill the square.
    """
    cell = np.where(mask[..., None], patch, 0).astype(np.uint8)
    height, width = mask.shape
    side = max(height, width)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = cell
    fit = max(1, round(size * (1 - 2 * margin)))
    inner = fit if scale is None else max(1, min(fit, round(side * scale)))
    interpolation = cv2.INTER_AREA if side > inner else cv2.INTER_LINEAR
    resized = cv2.resize(canvas, (inner, inner), interpolation=interpolation)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    offset = (size - inner) // 2
    out[offset : offset + inner, offset : offset + inner] = resized
    return out


def draw_overlay(
    image: np.ndarray, segmentation: Segmentation, *, thickness: int | None = None
) -> np.ndarray:
    """The field with cell outlines (green; grey when cut by the border), nuclei (yellow) and ids."""
    out = image.copy()
    thickness = thickness or max(1, round(max(image.shape[:2]) / 600))
    border = set(segmentation.border_cell_ids)
    for labels, kind in (
        (segmentation.nucleus_labels, "nucleus"),
        (segmentation.cell_labels, "cell"),
    ):
        for index, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None:
                continue
            mask = (labels[box] == index).astype(np.uint8)
            contours, _ = cv2.findContours(
                mask,
                cv2.RETR_EXTERNAL,
                cv2.CHAIN_APPROX_SIMPLE,
                offset=(box[1].start, box[0].start),
            )
            colour = _OUTLINE_COLOURS["border" if index in border and kind == "cell" else kind]
            cv2.drawContours(out, contours, -1, colour, thickness)
            if kind == "cell":
                cv2.putText(
                    out,
                    str(index),
                    (box[1].start, max(12, box[0].start - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness + 0.2,
                    colour,
                    thickness,
                )
    return out
