"""Image scale from the image itself: the typical red-cell diameter.

Red cells are the one object of near-constant size in every blood smear (about 7.5 µm), so their
diameter in pixels is the ruler for every size threshold of the segmentation. Also the RGB
uint8 check the segmentation stages start with (:func:`check_rgb`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from leukemia_core.colour import red_cell_pixels
from leukemia_core.errors import SegmentationError
from leukemia_core.masks import fill_holes
from leukemia_core.resampling import resize

ESTIMATION_SIDE = 640  # px: the coarse view used to estimate the red-cell size
# Where red cells measure under MERGING_VIEW_DIAMETER px on that view, they may have merged
# there: the middle CROP_SIDE px of the field are measured at twice the view's resolution, and
# a size SMALLER times the first or less replaces it (ALL-IDB1's largest fields, 2592 px,
# measure 18 px and more on the view and the same in the middle; BCCD and deepbionet are 640 px).
MERGING_VIEW_DIAMETER = 20.0
CROP_SIDE = 2 * ESTIMATION_SIDE
SMALLER = 0.85
PEAK_FOOTPRINT = 15  # px at ESTIMATION_SIDE: about a third of a typical red cell there
MIN_RADIUS_FRACTION = 0.3  # of the 90th-percentile blob radius (measured on BCCD red-cell boxes)
# Distance peaks narrower than this share of the 90th-percentile peak are ridges, not cells:
# broken pallor rings of cells cut by the border, a granulocyte's pink cytoplasm. At 0.3 they
# pulled the low estimate below 0.37 of the expert red-cell boxes in 5% of BCCD fields (and
# 0.37 of the typical estimate on BloodImage_00382, where single platelets then passed the
# white-cell size floor); at 0.5 its 5th percentile is 0.65 of the boxes on BCCD, 0.77 on
# deepbionet, and it stays below the typical estimate (`python bench/red_cell_scale.py`). Not
# in a confluent field: there the cells are the narrower peaks of one mass (MIN_RADIUS_FRACTION).
PEAK_MIN_FRACTION = 0.5
# Red cells of a thick area or agglutinate merge into one blob holding most of the red-cell
# area; its inscribed circle is then a gap-free patch of the smear, not a red cell.
CONFLUENT_SHARE = 0.75


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


@dataclass(frozen=True)
class RedCellScale:
    """What a field's red cells say about its scale.

    Attributes:
        diameter: Typical red-cell diameter in pixels (None without red cells).
        low_diameter: A lower estimate: the median radius at distance-transform peaks. Every red
            cell counts once, so overlapping red cells cannot inflate it, while it tends to read
            small where cells overlap; a size floor meant never to remove a white cell uses it.
        merged_share: Share of the red-cell area in the largest connected mass. Above
            :data:`CONFLUENT_SHARE` the red cells run together (thick area, agglutinate, blur) and
            ``diameter`` is the low estimate, when there is one.
    """

    diameter: float | None
    low_diameter: float | None
    merged_share: float = 0.0


NO_RED_CELLS = RedCellScale(None, None)


def estimate_red_cell_diameter(image: np.ndarray) -> float | None:
    """Typical red-cell diameter in pixels, or None when no red cells are visible."""
    return measure_red_cells(image).diameter


def measure_red_cells(image: np.ndarray) -> RedCellScale:
    """The field's red-cell diameters and how far its red cells run together.

    Red cells dominate any smear field, so the weighted median of the largest inscribed-circle
    radius of each red-cell blob is a robust size estimate even when red cells touch in chains.
    Measured on a view :data:`ESTIMATION_SIDE` px wide, and in a large field whose red cells
    are small on it, again in its middle at twice that resolution.
    """
    check_rgb(image, "measure_red_cells")
    side = max(image.shape[:2])
    first = _measured(image, min(1.0, ESTIMATION_SIDE / side))
    if first.diameter is None or side <= CROP_SIDE:
        return first
    if first.diameter * ESTIMATION_SIDE / side >= MERGING_VIEW_DIAMETER:
        return first
    # Small on the view, red cells merge and read too large (a 3424 px field of 34 px cells
    # read 47 px, its blasts cropped small and called normal): the middle of the field at
    # twice the view's resolution says; a clearly smaller size there is the right one.
    top, left = (image.shape[0] - CROP_SIDE) // 2, (image.shape[1] - CROP_SIDE) // 2
    middle = image[max(0, top) : max(0, top) + CROP_SIDE, max(0, left) : max(0, left) + CROP_SIDE]
    closer = _measured(middle, min(1.0, ESTIMATION_SIDE / max(middle.shape[:2])))
    if closer.diameter is not None and closer.diameter < SMALLER * first.diameter:
        return closer
    return first


def _measured(image: np.ndarray, scale: float) -> RedCellScale:
    """:func:`measure_red_cells` on the view of ``image`` at ``scale``."""
    # White cells are not red cells: leave them out of the size statistics.
    red_cells = red_cell_pixels(resize(image, scale))
    if red_cells.mean() < 0.01:
        return NO_RED_CELLS
    filled = fill_holes(red_cells)
    labels, n = ndi.label(filled)
    if n < 3:
        return NO_RED_CELLS
    distance = cv2.distanceTransform(filled.astype(np.uint8), cv2.DIST_L2, 5)
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    typical = _inscribed_circle_diameter(distance, labels, areas)
    if typical is None:
        return NO_RED_CELLS
    merged = float(areas.max() / areas.sum())
    if merged > CONFLUENT_SHARE:  # one mass: its narrower peaks are the cells in it
        low = _peak_diameter(distance, MIN_RADIUS_FRACTION)
        typical = low if low is not None else typical
    else:
        low = _peak_diameter(distance, PEAK_MIN_FRACTION)
    low = min(typical, low if low is not None else typical)
    return RedCellScale(typical / scale, low / scale, merged)


def _inscribed_circle_diameter(distance, labels, areas) -> float | None:
    # The largest inscribed circle of each blob is about one red-cell radius even for chains
    # of touching cells. Weighting by the square root of blob area lets specks (platelets, dust)
    # count less without letting a few large clumps decide (measured on BCCD red-cell boxes).
    radii = _label_maxima(distance, labels, len(areas))
    usable = radii >= 2.0
    if usable.sum() < 3:
        return None
    # Broken rings and granules make many thin blobs; where enough whole cells exist, count
    # only blobs at least a fraction as wide as the widest ones.
    whole = usable & (radii >= MIN_RADIUS_FRACTION * np.percentile(radii[usable], 90))
    if whole.sum() >= 3:
        usable = whole
    return float(2.0 * _weighted_median(radii[usable], np.sqrt(areas[usable])))


def _peak_diameter(distance: np.ndarray, min_fraction: float) -> float | None:
    """Median diameter at local maxima of the distance transform (one per red cell), of those
    at least ``min_fraction`` of the 90th-percentile one."""
    peaks = (distance == ndi.maximum_filter(distance, size=PEAK_FOOTPRINT)) & (distance >= 2.0)
    labels, n = ndi.label(peaks)
    if n < 3:
        return None
    radii = _label_maxima(distance, labels, n)
    radii = radii[radii >= min_fraction * np.percentile(radii, 90)]
    return float(2.0 * np.median(radii))


def _label_maxima(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Largest value under each label 1..n (ten times faster than ndimage.maximum, which sorts)."""
    maxima = np.zeros(n + 1, dtype=values.dtype)
    np.maximum.at(maxima, labels.ravel(), values.ravel())
    return maxima[1:]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
