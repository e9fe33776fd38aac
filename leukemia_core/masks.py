"""Binary-mask helpers shared by the segmentation stages."""

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
