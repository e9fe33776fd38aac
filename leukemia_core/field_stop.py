"""The black surround of a field photographed through an eyepiece or a phone adapter.

A round field stop leaves the smear inside a circle and black outside it. Black is darker than
anything stained, so it joins every threshold search (cells versus glass, the red-cell scale,
the stain estimate) as the darkest "cells" of the field: a review saw 17 white cells become 10
and the red cells read three times too large with 2% of a field black. The surround is painted
the glass colour before those measures, and a cell it cuts is a border cell (neither counted
nor classified as whole), as one cut by the image edge is.
"""

from __future__ import annotations

import cv2
import numpy as np

from leukemia_core.colour import background_colour

SURROUND_MAX_LEVEL = 40  # brightest channel: a field stop stays below it, stained cells do not
MIN_SURROUND_SHARE = 0.002  # of the picture, each dark region touching its edge
MIN_GLASS_LEVEL = 120  # the rest must be a lit field: an underexposed one is not cut out
EDGE_MARGIN = 0.01  # of the picture's larger side: the soft rim of the stop, painted too
_FIND_SIDE = 800  # the regions are found on a view this large (fast), then refined


def dark_surround(image: np.ndarray) -> np.ndarray | None:
    """The black region around the field (with its soft rim), or None when there is none.

    Only dark regions that touch the picture's edge and are large count; dark pixels inside
    the field (a black nucleus, ink) never do.
    """
    found = _surround(image)
    return None if found is None else found[0]


def without_surround(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image with its black surround painted the glass colour, the surround or None)``."""
    found = _surround(image)
    if found is None:
        return image, None
    outside, glass = found
    painted = image.copy()
    painted[outside] = np.clip(np.rint(glass), 0, 255).astype(np.uint8)
    return painted, outside


def cut_by_surround(cell_labels: np.ndarray, outside: np.ndarray, margin: int) -> set[int]:
    """Ids of the cells within ``margin`` pixels of the surround (cut by the field stop)."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    near = cv2.dilate(outside.astype(np.uint8), disc).astype(bool)
    return {int(k) for k in np.unique(cell_labels[near]) if k}


def _surround(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(the surround at full size, the glass colour of the rest)``, found on a small view."""
    height, width = image.shape[:2]
    rim = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if not (
        rim.max(axis=1) < SURROUND_MAX_LEVEL
    ).any():  # the usual field: nothing dark at its edge
        return None
    step = max(1, round(max(height, width) / _FIND_SIDE))
    small = np.ascontiguousarray(image[::step, ::step])
    dark = (small.max(axis=2) < SURROUND_MAX_LEVEL).astype(np.uint8)
    if dark.mean() < MIN_SURROUND_SHARE:
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    edge = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    big = [k for k in range(1, n) if k in edge
           and stats[k, cv2.CC_STAT_AREA] >= MIN_SURROUND_SHARE * dark.size]  # fmt: skip
    if not big:
        return None
    outside = np.isin(labels, big)
    if outside.mean() > 0.9:  # nearly all black: nothing to analyse, said elsewhere
        return None
    glass = background_colour(small[~outside][:, None])
    if glass.max() < MIN_GLASS_LEVEL:
        return None
    margin = max(1, round(EDGE_MARGIN * max(height, width) / step))  # grown on the small view
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate(outside.astype(np.uint8), disc)
    full = cv2.resize(grown, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    return full, glass
