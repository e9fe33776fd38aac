"""A field as the camera lit it: the black surround of an eyepiece, and light that falls off.

A round field stop leaves the smear inside a circle and black outside it. Black is darker than
anything stained, so it joins every threshold search (cells versus glass, the red-cell scale,
the stain estimate) as the darkest "cells" of the field: a review saw 17 white cells become 10
and the red cells read three times too large with 2% of a field black. The surround is painted
the glass colour before those measures, and a cell it cuts is a border cell (neither counted
nor classified as whole), as one cut by the image edge is.

Light that falls off towards the corners (vignetting, common with phone adapters) makes the
glass there as dark as red cells: with corners at 80% of the centre's light a BCCD field read
its red cells 1.6 times too large. Where the glass's own brightness, fitted as a smooth surface,
falls below :data:`MAX_FALLOFF` of its brightest, the field is divided by that surface. The
development fields fall to 0.78-0.93 and are left as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

from leukemia_core.colour import background_colour

SURROUND_MAX_LEVEL = 40  # brightest channel: a field stop stays below it, stained cells do not
MIN_SURROUND_SHARE = 0.002  # of the picture, each dark region touching its edge
LIT_FIELD_GLASS_LEVEL = 120  # the rest must be a lit field: an underexposed one is not cut out
EDGE_MARGIN = 0.01  # of the picture's larger side: the soft rim of the stop, painted too
_FIND_SIDE = 800  # the regions are found on a view this large (fast), then refined
MAX_FALLOFF = 0.75  # darkest glass over brightest, fitted, below which the light is evened
_LIGHT_SIDE = 320  # the lighting is fitted on a view this large
_GRID = 16  # blocks per side whose brightest pixels (glass) the lighting is fitted to
_GLASS_PERCENTILE = 95
_NO_GLASS = 0.93  # a block this far below the fit holds no glass (cells cover it): refitted without


SURROUND_NOTE = (
    "a dark surround (an eyepiece's or a camera adapter's round field stop) was "
    "left out of the measures; cells it cuts are border cells, not counted"
)
EVENED_NOTE = (
    "the light falls off towards the edges of this field (vignetting): it was "
    "evened for finding cells; the crops keep the picture's own pixels"
)


def even_field(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """``(the field with its black surround painted as glass and its light evened, the surround
    or None, notes saying what was done)``: what segmentation and the quality checks measure
    (crops keep the pixels)."""
    image, outside = without_surround(image)
    notes = () if outside is None else (SURROUND_NOTE,)
    gain = _light_falloff(image)
    if gain is not None:
        image = np.clip(image.astype(np.float32) / gain[..., None], 0, 255).astype(np.uint8)
        notes += (EVENED_NOTE,)
    return image, outside, notes


def _light_falloff(image: np.ndarray) -> np.ndarray | None:
    """The glass's brightness over its brightest, at full size, where it falls below
    :data:`MAX_FALLOFF`; None for an evenly lit field."""
    height, width = image.shape[:2]
    step = max(1, round(max(height, width) / _LIGHT_SIDE))  # light varies slowly: a small view
    view = cv2.resize(image, (max(1, width // step), max(1, height // step)),
                      interpolation=cv2.INTER_NEAREST)  # fmt: skip
    bright = view.max(axis=2).astype(np.float32)
    rows, cols = bright.shape[0] // _GRID, bright.shape[1] // _GRID
    if rows < 4 or cols < 4:  # too small a picture to tell light from cells
        return None
    blocks = bright[: rows * _GRID, : cols * _GRID].reshape(_GRID, rows, _GRID, cols)
    glass = np.percentile(blocks.transpose(0, 2, 1, 3).reshape(_GRID, _GRID, -1),
                          _GLASS_PERCENTILE, axis=2).ravel()  # fmt: skip
    centres = (np.arange(_GRID) + 0.5) / _GRID * 2 - 1
    design = _quadratic(*np.meshgrid(centres, centres))
    keep = np.ones(glass.size, bool)
    for _ in range(3):
        coefficients = np.linalg.lstsq(design[keep], glass[keep], rcond=None)[0]
        keep = glass >= _NO_GLASS * (design @ coefficients)
    side = np.linspace(-1, 1, 2 * _GRID)  # the fitted surface, fine enough to judge and scale
    surface = (_quadratic(*np.meshgrid(side, side)) @ coefficients).reshape(side.size, side.size)
    if surface.max() <= 0:
        return None
    relative = np.clip(surface / surface.max(), 0.2, 1.0).astype(np.float32)
    if relative.min() >= MAX_FALLOFF:
        return None
    return cv2.resize(relative, (width, height), interpolation=cv2.INTER_CUBIC).clip(0.2, 1.0)


def _quadratic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x.ravel(), y.ravel()
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)


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
    dark_rim = rim.max(axis=1) < SURROUND_MAX_LEVEL
    if not dark_rim.any():  # the usual field: nothing dark at its edge
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
    if glass.max() < LIT_FIELD_GLASS_LEVEL:
        return None
    margin = max(1, round(EDGE_MARGIN * max(height, width) / step))  # grown on the small view
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate(outside.astype(np.uint8), disc)
    full = cv2.resize(grown, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    return full, glass
