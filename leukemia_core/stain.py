"""Stain and illumination of a smear field, and its normalisation to the reference stain.

Microscopes and stains differ: a bluish lamp makes red cells look as blue as chromatin, a greenish
camera hides purple nuclei. Two facts hold on every Romanowsky-stained field and give a ruler:
the bare glass is colourless, and red cells are the most common object. So the field is first
white-balanced on its glass, then each channel's optical density (Beer-Lambert) is scaled so that
the red cells get the reference red-cell density (:data:`REFERENCE_RED_CELL_OD`). Segmentation
runs on the normalised field; the classifier keeps the original pixels.

The same estimate is the evidence for the stain checks of :mod:`leukemia_core.quality`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leukemia_core.colour import background_colour, red_cell_pixels
from leukemia_core.resampling import resize
from leukemia_core.scale import ESTIMATION_SIDE

# Median optical density (R, G, B; log10) of red cells: the median of the medians of BCCD,
# ALL-IDB1, ALL-IDB2 and deepbionet (40 fields each), measured by `python -m train.evaluate lodo`
# ("reference_in_sample"), which also reports every figure with each dataset left out of it.
REFERENCE_RED_CELL_OD = (0.0607, 0.1203, 0.1014)
MIN_RED_CELL_PIXELS = 100  # fewer red-cell pixels give no trustworthy density: white balance only
# Per-channel density gains are kept within these bounds (x0.1 to x5): beyond, the estimate is
# more likely wrong (no red cells, a crop filled by one cell) than the stain that far off.
GAIN_LIMITS = (0.1, 5.0)
# Haemoglobin and eosin absorb green light most: red cells of every development and test set
# absorb green at least 0.87 times as much as blue (crops of one cell: 0.59). An estimate below
# this did not find red cells (a crop filled by one cell, or no smear): white balance only.
MIN_GREEN_TO_BLUE_DENSITY = 0.75
# A field whose glass is dimmer than UNDEREXPOSED_GLASS_LEVEL (of 255) is underexposed: its normalised
# copy gets the glass at BRIGHTENED_GLASS_LEVEL (about the development sets' median). The
# segmentation's thresholds are colour differences in grey levels, and a picture taken one stop
# under halves them all: development fields kept 28% of their white cells, at two stops under 4%
# (`python bench/quality.py`, exposure rows); brightened only to 100, a BCCD field at 0.3 of its
# exposure still lost its white cell. The development fields' glass measures 107 and more
# (ALL-IDB1's dimmest), so none is brightened; densities are unchanged.
UNDEREXPOSED_GLASS_LEVEL = 100.0
BRIGHTENED_GLASS_LEVEL = 160.0


@dataclass(frozen=True)
class StainEstimate:
    """What the field's glass and red cells look like, and the correction that follows.

    Attributes:
        glass_rgb: Colour of the bare glass (0-255 per channel).
        red_cell_od: Median optical density of red-cell pixels after white balance, or None
            when too few red cells were found.
        gains: Per-channel optical-density gains that map ``red_cell_od`` onto the reference.
    """

    glass_rgb: tuple[float, float, float]
    red_cell_od: tuple[float, float, float] | None
    gains: tuple[float, float, float]

    @property
    def colour_cast(self) -> float:
        """How far the red cells' hue is from the reference: the spread of log2 gains."""
        logs = np.log2(self.gains)
        return float(logs.max() - logs.min())

    @property
    def glass_tint(self) -> float:
        """How far the glass is from white: log2 of its brightest over its dimmest channel."""
        return float(np.log2(max(self.glass_rgb) / max(min(self.glass_rgb), 1.0)))

    @property
    def density_ratio(self) -> float | None:
        """Red-cell optical density over the reference's (1 = as dense as the reference)."""
        if self.red_cell_od is None:
            return None
        return float(sum(self.red_cell_od) / sum(REFERENCE_RED_CELL_OD))


def estimate_stain(
    image: np.ndarray, reference_od: tuple[float, float, float] = REFERENCE_RED_CELL_OD
) -> StainEstimate:
    """Glass colour, red-cell density and the gains that normalise them (see module docstring)."""
    small = resize(image, min(1.0, ESTIMATION_SIDE / max(image.shape[:2])))
    glass = np.clip(background_colour(small), 1.0, 255.0)
    white = _apply(small, glass, np.ones(3))
    # Red cells are told from white ones on the white-balanced view: on the raw one a bluish
    # lamp makes every red cell "purple".
    red = red_cell_pixels(white)
    if red.sum() < MIN_RED_CELL_PIXELS:
        return StainEstimate(_triple(glass), None, (1.0, 1.0, 1.0))
    density = -np.log10(np.clip(white[red].astype(np.float32), 1.0, None) / _target(glass))
    red_od = np.clip(np.median(density, axis=0), 1e-3, None)
    if red_od[1] < MIN_GREEN_TO_BLUE_DENSITY * red_od[2]:
        return StainEstimate(_triple(glass), None, (1.0, 1.0, 1.0))
    gains = np.clip(np.asarray(reference_od) / red_od, *GAIN_LIMITS)
    return StainEstimate(_triple(glass), _triple(red_od), _triple(gains))


def normalise_stain(image: np.ndarray, estimate: StainEstimate) -> np.ndarray:
    """The field with white glass and reference-stained red cells, uint8 RGB."""
    return _apply(image, np.asarray(estimate.glass_rgb), np.asarray(estimate.gains))


def _apply(image: np.ndarray, glass: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Per-channel lookup: white-balance on ``glass``, then scale optical density by ``gains``.

    The glass keeps its mean brightness (raised to :data:`BRIGHTENED_GLASS_LEVEL` in an
    underexposed field), so the intensity thresholds of the segmentation keep their meaning.
    """
    target = _target(glass)
    values = np.arange(256, dtype=np.float32)
    tables = []
    for channel in range(3):
        density = -np.log10(np.clip(values, 1.0, None) / glass[channel])
        tables.append(np.clip(target * 10.0 ** (-gains[channel] * density), 0, 255))
    table = np.stack(tables, axis=-1).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(np.ascontiguousarray(image), table)


def _target(glass: np.ndarray) -> float:
    level = float(np.mean(glass))
    return level if level >= UNDEREXPOSED_GLASS_LEVEL else BRIGHTENED_GLASS_LEVEL


def _triple(values) -> tuple[float, float, float]:
    return tuple(round(float(v), 4) for v in values)
