"""Binary-mask helpers shared by the segmentation stages, the cell type and review."""

from __future__ import annotations

import cv2
import numpy as np


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a boolean mask, like ``scipy.ndimage.binary_fill_holes`` but faster.

    A hole is background not 4-connected to the image border (the scipy default), found with
    one OpenCV flood fill from a padded corner.
    """
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    seeds = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, seeds, (0, 0), 1, flags=4)
    return mask.astype(bool) | (padded[1:-1, 1:-1] == 0)


def outline_mask(outline: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of ``shape`` filled inside the closed ``outline`` (``(K, 2)`` ``(x, y)`` points
    in the mask's pixels); all False for an empty outline."""
    mask = np.zeros(shape, np.uint8)
    if len(outline):
        points = np.round(np.asarray(outline, dtype=np.float64)).astype(np.int32)
        cv2.fillPoly(mask, [points.reshape(-1, 1, 2)], 1)
    return mask.astype(bool)


def touches_border(mask, rows, cols, height, width, margin) -> bool:
    """Whether a box-cropped mask comes within ``margin`` pixels of the image edge."""
    top, left = margin - rows.start, margin - cols.start
    bottom, right = rows.stop - (height - margin), cols.stop - (width - margin)
    return bool(
        (top > 0 and mask[:top].any())
        or (bottom > 0 and mask[-bottom:].any())
        or (left > 0 and mask[:, :left].any())
        or (right > 0 and mask[:, -right:].any())
    )


def smooth_mask(mask: np.ndarray, disk: np.ndarray) -> np.ndarray:
    """Close small gaps, fill holes and drop thin spurs, as an expert's outline would."""
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disk)
    mask = fill_holes(mask).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk).astype(bool)
