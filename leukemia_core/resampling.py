"""Downscale an image and its masks alike: one output size, area averaging (masks: nearest)."""

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
