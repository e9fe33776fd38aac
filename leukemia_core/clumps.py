"""Pressed white cells: split clumps that the working-resolution watershed could not.

Blasts with scant cytoplasm often lie pressed together with flat shared borders, so their joint
nucleus mask has no neck for a distance-transform split. They are told apart by the thin paler
lines between their chromatin, which show only at a finer scale. Granulocytes are not tried: their
nucleus fills a small fraction of the cell, and their lobes would pass for cells.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from leukemia_core.scale import resize


def split_clump(
    patch: np.ndarray,
    cell: np.ndarray,
    nucleus: np.ndarray,
    diameter: float,
    min_part_nucleus_area: float,
    depth: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a nucleus-dense cell into pressed cells along the paler lines between them.

    Dark chromatin cores are found on the green channel (chromatin is darkest there, the thin
    cytoplasm rims between pressed blasts are not), their distance-transform peaks seed a
    watershed over the cell, and parts whose nucleus is too small to be a cell are given back.

    Args:
        patch: RGB uint8 pixels of the cell's box.
        cell: Boolean whole-cell mask in the box.
        nucleus: Boolean nucleus mask in the box.
        diameter: Red-cell diameter in the patch's pixels.
        min_part_nucleus_area: Smallest nucleus a part may keep, in pixels.
        depth: How far (px) a core's distance peak must rise above the neck to count as its own.

    Returns:
        ``[(cell_mask, nucleus_mask), ...]``: one entry when the cell is not split.
    """
    if nucleus.sum() < 2 * min_part_nucleus_area:
        return [(cell, nucleus)]
    # Forty pixels per red cell resolve the pale lines between pressed cells; more only costs time.
    scale = min(1.0, 40.0 / diameter)
    regions = _split_regions(
        resize(patch, scale),
        _rescale_mask(cell, scale),
        _rescale_mask(nucleus, scale),
        diameter * scale,
        min_part_nucleus_area * scale**2,
        depth * scale,
    )
    if regions is None:
        return [(cell, nucleus)]
    if scale < 1.0:
        size = (cell.shape[1], cell.shape[0])
        regions = cv2.resize(regions.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    parts = []
    for k in range(1, int(regions.max()) + 1):
        part_cell, part_nucleus = cell & (regions == k), nucleus & (regions == k)
        if part_nucleus.any():
            parts.append((part_cell, part_nucleus))
    return parts if len(parts) > 1 else [(cell, nucleus)]


def _rescale_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A boolean mask resized like :func:`leukemia_core.scale.resize` resizes its image."""
    if scale >= 0.999:
        return mask
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def _split_regions(patch, cell, nucleus, diameter, min_part_nucleus_area, depth):
    """Watershed regions of a clump (labels 1..k, at most 255), or None when it is one cell."""
    if not nucleus.any():  # the nucleus can vanish when a thin one is shrunk
        return None
    green = cv2.GaussianBlur(patch[..., 1].astype(np.float32), (0, 0), max(0.5, 0.02 * diameter))
    inside = float(np.median(green[nucleus]))
    outside = float(np.median(green[~cell])) if (~cell).any() else 255.0
    core = nucleus & (green < inside + 0.4 * (outside - inside))
    # Nucleoli and pale chromatin make holes inside one nucleus, not lines across it.
    core = ndi.binary_fill_holes(core)
    bridge = max(1, round(0.03 * diameter))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bridge + 1, 2 * bridge + 1))
    core = cv2.morphologyEx(core.astype(np.uint8), cv2.MORPH_OPEN, disk).astype(bool)
    distance = cv2.distanceTransform(core.astype(np.uint8), cv2.DIST_L2, 5)
    markers, count = ndi.label(h_maxima(distance, max(1.0, depth)))
    while 2 <= count < 256:
        regions = watershed(-distance, markers, mask=cell)
        part_nucleus = np.bincount(regions[nucleus], minlength=count + 1)[1:]
        smallest = int(part_nucleus.argmin())
        if part_nucleus[smallest] >= min_part_nucleus_area:
            return regions
        # Give the smallest part back to its neighbours and flood again.
        markers[markers == smallest + 1] = 0
        markers, count = ndi.label(markers > 0)
    return None
