"""Downscale an image and its masks alike (one output size, area averaging; masks: nearest), and
map a box found at a working scale back onto the full-resolution image."""

from __future__ import annotations

import cv2
import numpy as np


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """OpenCV ``(width, height)`` of an array of ``shape`` scaled by ``scale`` (at least 1 px)."""
    height, width = shape[:2]
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` with area averaging; ``scale >= 1`` returns the image itself."""
    if scale >= 0.999:
        return image
    return cv2.resize(image, _scaled_size(image.shape, scale), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A boolean mask resized like :func:`resize` resizes its image (nearest neighbour)."""
    if scale >= 0.999:
        return mask
    size = _scaled_size(mask.shape, scale)
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def full_resolution_box(
    box: tuple[slice, slice],
    scale: float,
    full_shape: tuple[int, int],
    small_shape: tuple[int, ...],
    pad: int = 2,
) -> tuple[slice, slice, tuple[slice, slice]]:
    """Rows and columns at full resolution of a working-scale ``box`` padded by ``pad`` working
    pixels, and the working-scale box that covers them."""
    height, width = full_shape
    rows = slice(
        max(0, int((box[0].start - pad) / scale)), min(height, int((box[0].stop + pad) / scale) + 1)
    )
    cols = slice(
        max(0, int((box[1].start - pad) / scale)), min(width, int((box[1].stop + pad) / scale) + 1)
    )
    small = (
        slice(int(rows.start * scale), min(small_shape[0], int(np.ceil(rows.stop * scale)) + 1)),
        slice(int(cols.start * scale), min(small_shape[1], int(np.ceil(cols.stop * scale)) + 1)),
    )
    return rows, cols, small


def upsample_patch(
    mask_small: np.ndarray, rows: slice, cols: slice, small: tuple[slice, slice], scale: float
) -> np.ndarray:
    """A working-scale mask patch (over ``small``) resized smoothly onto the full box."""
    if scale >= 0.999:
        return mask_small[: rows.stop - rows.start, : cols.stop - cols.start]
    patch = cv2.resize(
        mask_small.astype(np.float32),
        None,
        fx=1 / scale,
        fy=1 / scale,
        interpolation=cv2.INTER_LINEAR,
    )
    # Offset between the full box and the upsampled small box (small box starts at a whole pixel).
    dy = round(rows.start - small[0].start / scale)
    dx = round(cols.start - small[1].start / scale)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    out = np.zeros((h, w), dtype=bool)
    view = patch[dy : dy + h, dx : dx + w] > 0.5
    out[: view.shape[0], : view.shape[1]] = view
    return out
