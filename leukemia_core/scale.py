"""Image scale from the image itself: the typical red-cell diameter, and cells versus glass.

Red cells are the one object of near-constant size in every blood smear (about 7.5 µm), so their
diameter in pixels is the ruler for every size threshold of the segmentation.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from leukemia_core.errors import SegmentationError
from leukemia_core.masks import fill_holes

ESTIMATION_SIDE = 640  # px: the coarse view used to estimate the red-cell size
MIN_RADIUS_FRACTION = 0.3  # of the 90th-percentile blob radius (measured on BCCD red-cell boxes)
STRONG_PURPLE = 60.0  # blue minus green above which a pixel is surely chromatin, never a red cell
WEAK_PURPLE = 30.0  # pale chromatin and blue cytoplasm of white cells reach this; red cells rarely
WHITE_CELL_GROWTH = 0.4  # white-cell blobs are grown by this fraction of their radius (cytoplasm)


def nucleus_score(image: np.ndarray) -> np.ndarray:
    """Per-pixel nucleus evidence: blue minus green, float32, about 0-255.

    Romanowsky stains make chromatin blue-purple (high blue, very low green); red cells are
    pink (green slightly below blue at most) and glass is grey.
    """
    rgb = image.astype(np.float32)
    return rgb[..., 2] - rgb[..., 1]


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` with area averaging; ``scale >= 1`` returns the image itself."""
    if scale >= 0.999:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def check_rgb(image: np.ndarray, caller: str) -> None:
    """Raise :class:`SegmentationError` unless ``image`` is an RGB uint8 array of usable size."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise SegmentationError(
            f"{caller} needs an (H, W, 3) RGB array, got {shape}; read files with "
            "leukemia_core.io.read_image, which converts any mode to RGB."
        )
    if image.dtype != np.uint8:
        raise SegmentationError(
            f"{caller} needs uint8 pixels, got {image.dtype}; convert with read_image or "
            "np.clip(x, 0, 255).astype(np.uint8)."
        )
    if min(image.shape[:2]) < 8:
        raise SegmentationError(
            f"The image is {image.shape[1]}x{image.shape[0]} px: too small to hold a cell."
        )


def estimate_red_cell_diameter(image: np.ndarray) -> float | None:
    """Typical red-cell diameter in pixels, or None when no red cells are visible.

    Red cells dominate any smear field, so the weighted median of the largest inscribed-circle
    radius of each red-cell blob is a robust size estimate even when red cells touch in chains.
    """
    check_rgb(image, "estimate_red_cell_diameter")
    scale = min(1.0, ESTIMATION_SIDE / max(image.shape[:2]))
    small = resize(image, scale)
    # White cells are not red cells: leave them out of the size statistics.
    purple = nucleus_score(small) > STRONG_PURPLE
    # Pale chromatin and cytoplasm of white cells must not steer the cells-versus-glass
    # threshold: in a field crowded with blasts (or a crop around one), Otsu would otherwise
    # split white cells from everything else and merge red cells with the glass.
    red_cells = foreground(small, exclude=white_cells(small)) & ~ndi.binary_dilation(
        purple, iterations=2
    )
    if red_cells.mean() < 0.01:
        return None
    filled = fill_holes(red_cells)
    labels, n = ndi.label(filled)
    if n < 3:
        return None
    distance = cv2.distanceTransform(filled.astype(np.uint8), cv2.DIST_L2, 5)
    # The largest inscribed circle of each blob is about one red-cell radius even for chains
    # of touching cells. Weighting by the square root of blob area lets specks (platelets, dust)
    # count less without letting a few large clumps decide (measured on BCCD red-cell boxes).
    radii = np.asarray(ndi.maximum(distance, labels, np.arange(1, n + 1)))
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    usable = radii >= 2.0
    if usable.sum() < 3:
        return None
    # Broken rings and granules make many thin blobs; where enough whole cells exist, count
    # only blobs at least a fraction as wide as the widest ones.
    whole = usable & (radii >= MIN_RADIUS_FRACTION * np.percentile(radii[usable], 90))
    if whole.sum() >= 3:
        usable = whole
    return float(2.0 * _weighted_median(radii[usable], np.sqrt(areas[usable])) / scale)


def white_cells(image: np.ndarray) -> np.ndarray:
    """Pixels of white cells: purple blobs holding surely-chromatin pixels, grown over cytoplasm."""
    score = nucleus_score(image)
    labels, count = ndi.label(score > WEAK_PURPLE)
    if count == 0:
        return np.zeros(score.shape, bool)
    chromatin = np.unique(labels[score > STRONG_PURPLE])
    nuclei = np.isin(labels, chromatin[chromatin > 0])
    if not nuclei.any():
        return nuclei
    distance, (rows, cols) = ndi.distance_transform_edt(~nuclei, return_indices=True)
    nucleus_labels, _ = ndi.label(nuclei)
    radius = np.sqrt(np.bincount(nucleus_labels.ravel()) / np.pi)[nucleus_labels[rows, cols]]
    return distance <= np.maximum(2.0, WHITE_CELL_GROWTH * radius)


def _background_colour(image: np.ndarray) -> np.ndarray:
    """Colour of the bare glass: the median of the brightest, least saturated pixels."""
    rgb = image.reshape(-1, 3).astype(np.float32)
    brightness = rgb.mean(axis=1) - 0.5 * (rgb.max(axis=1) - rgb.min(axis=1))
    bright = rgb[brightness >= np.percentile(brightness, 90)]
    return np.median(bright, axis=0)


def foreground(image: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Cells (of any kind) versus glass, holes such as red-cell pale centres filled.

    Red cells absorb green light, so darkness in the green channel separates them from glass.
    Strongly purple pixels, and ``exclude`` (e.g. :func:`white_cells`), are left out of the
    threshold search: otherwise, in a field with many blasts, Otsu would split nuclei from
    everything else instead of cells from glass.
    """
    background = _background_colour(image)
    darkness = cv2.GaussianBlur(background[1] - image[..., 1].astype(np.float32), (0, 0), 1.0)
    purple = nucleus_score(image) > STRONG_PURPLE
    values = darkness[~(purple if exclude is None else purple | exclude)]
    if values.size < 100 or np.ptp(values) < 8:
        return purple
    threshold = max(float(threshold_otsu(values)), 6.0)
    mask = (darkness > threshold) | purple
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return fill_holes(mask)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
