"""Field quality checks: is this field fit to be counted?

Each check measures one thing a hematologist looks at before trusting a field, in units that do
not depend on the microscope (red-cell diameters, the reference stain):

- focus: the width of red-cell edges (a blurred edge is wide), in red-cell diameters;
- stain: red-cell optical density against the reference stain (over- or under-stained), and the
  colour cast (how far the red cells' hue is from the reference);
- exposure: the bare glass's brightness (a picture taken too dark);
- magnification: the red-cell diameter in pixels, against the range the tool was built for;
- white cells: too many per red cell means red cells were taken for white cells;
- thick area: cells cover nearly all the glass, or red cells run together into one mass (a thick
  area, an agglutinate, or blur), so white cells hide and sizes are unreliable;
- red cells: none could be made out (badly out of focus, blank, not a smear).

A field with any warning has its cells sent to review (:func:`leukemia_core.pipeline.analyze`).
The limits were set on the development datasets; ``python bench/quality.py`` measures how often
each check fires on clean and degraded real fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from leukemia_core.colour import WEAK_PURPLE, foreground, is_grey, nucleus_score
from leukemia_core.illumination import even_field
from leukemia_core.resampling import resize
from leukemia_core.stain import UNDEREXPOSED_GLASS_LEVEL, normalise_stain

if TYPE_CHECKING:  # types imports QualityWarning from here
    from leukemia_core.types import Segmentation

WORKING_RED_CELL_DIAMETER = 24.0  # px: the view edges are measured on
FOCUS = "focus"
STAIN = "stain"
COLOUR_CAST = "colour cast"
MAGNIFICATION = "magnification"
WHITE_CELLS = "white cells"
THICK_AREA = "thick area"
NO_RED_CELLS = "red cells"
EXPOSURE = "exposure"


@dataclass(frozen=True)
class QualityLimits:
    """Where each check starts to warn.

    Attributes:
        max_edge_blur: Red-cell edge width (Gaussian sigma) in red-cell diameters (the lower
            size estimate); 95% of sharp development fields (BCCD, ALL-IDB1) measure below it.
        density_range: Red-cell optical density relative to the reference stain.
        max_colour_cast: Spread of the per-channel stain gains, in powers of two (1 = one
            channel needs twice the correction of another); development fields reach 1.4.
        max_glass_tint: log2 of the glass's brightest over its dimmest channel (white
            balance); development fields reach 0.1, the bluish microscope 0.7.
        min_glass_level: Mean brightness (of 255) of the bare glass; development fields
            measure 107 and more. A dimmer field is brightened for finding cells
            (:data:`leukemia_core.stain.UNDEREXPOSED_GLASS_LEVEL`), but the classifier sees its cells
            as dark as they were photographed.
        red_cell_diameter_range: Red-cell diameters (input pixels) the segmentation and the
            classifier support. The development fields measure 44-120 px (deepbionet 44 the
            least, ALL-IDB1 62, BCCD 70); fields shrunk to 34 px lowered a blast's probability
            from 0.83 to 0.12, and at 17 px blasts were called normal with confidence, so
            below 30 px the field's cells go to review (12 px before: the segmentation's
            floor, not the classifier's).
        max_white_cells_per_red_cell: White cells per red-cell area of glass.
        max_cover: Share of the field covered by cells.
        max_merged_red_cells: Share of the red-cell area in its largest connected mass; 98% of
            BCCD fields (dense, some agglutinated) and every clean bench field (at most 0.44)
            measure below it, blur of 0.15 red-cell diameters merges them to 0.96-0.98. (The
            scale already falls back to its peak estimate above ``scale.CONFLUENT_SHARE``.)
    """

    max_edge_blur: float = 0.09
    density_range: tuple[float, float] = (0.4, 3.5)
    max_colour_cast: float = 2.0
    max_glass_tint: float = 1.0
    min_glass_level: float = UNDEREXPOSED_GLASS_LEVEL
    red_cell_diameter_range: tuple[float, float] = (30.0, 250.0)
    max_white_cells_per_red_cell: float = 0.1
    max_cover: float = 0.9
    max_merged_red_cells: float = 0.85


DEFAULT_LIMITS = QualityLimits()


@dataclass(frozen=True)
class QualityWarning:
    """One failed check: which, its measured value, the limit, and what it means for the user."""

    check: str
    value: float
    limit: float
    message: str


def check_field(
    image: np.ndarray, segmentation: Segmentation, limits: QualityLimits = DEFAULT_LIMITS
) -> tuple[QualityWarning, ...]:
    """Every check that fails on one segmented field (empty when the field looks fit)."""
    image, _, _ = even_field(image)  # measured as the segmentation measured it
    diameter = segmentation.red_cell_diameter_px
    if diameter <= 0:  # heavy blur, a blank slide or no smear at all: nothing to measure by
        return (QualityWarning(NO_RED_CELLS, 0.0, 0.0,
            "No red cells could be made out: the field is badly out of focus, blank, or not a "
            "blood smear. Nothing in it can be counted reliably; capture it again. If these are "
            "images of one cell each, analyse them as single cells."),)  # fmt: skip
    warnings = []
    low, high = limits.red_cell_diameter_range
    if not low <= diameter <= high:
        warnings.append(QualityWarning(MAGNIFICATION, diameter, low if diameter < low else high,
            f"Magnification outside the supported range: red cells are {diameter:.0f} px wide "
            f"(supported {low:.0f}-{high:.0f} px). "
            + ("Use the camera's full-resolution image or a 40x-100x objective: too few pixels "
               "per cell make blasts look like normal cells." if diameter < low else
               "Use a 40x-100x objective or reduce the image.")
            + " Cell sizes and the counts may be wrong."))  # fmt: skip
    stain = segmentation.stain
    # Blur merges red cells, which inflates the usual size estimate and would hide the blur
    # itself; the lower estimate holds better (bench/quality.py).
    ruler = segmentation.low_red_cell_diameter_px or diameter
    scale = min(1.0, WORKING_RED_CELL_DIAMETER / ruler)
    small = resize(image, scale)
    if stain is not None:
        small = normalise_stain(small, stain)
    cells = foreground(small)
    blur = edge_blur(small, cells, ruler * scale)
    if blur is not None and blur > limits.max_edge_blur:
        # Below the working size the image has fewer pixels per cell than the check is made
        # at: a small or downscaled image blurs edges as a bad focus does, and refocusing
        # would not help.
        advice = ("Refocus and capture the field again." if ruler >= WORKING_RED_CELL_DIAMETER
                  else f"Red cells are only {ruler:.0f} px wide, so the image may simply be too "
                  "small or downscaled: use the camera's full-resolution image, and refocus "
                  "if it is still blurred.")  # fmt: skip
        warnings.append(QualityWarning(FOCUS, blur, limits.max_edge_blur,
            "Out of focus: cell edges are blurred, so white cells may be missed or merged. "
            + advice))  # fmt: skip
    if is_grey(image):  # said as what it is: a grey field read as "over-stained 5.8 times"
        warnings.append(QualityWarning(STAIN, 0.0, 0.0,
            "No colour: a greyscale picture has none of the stain's colours that tell white "
            "cells from red cells and blasts from normal cells; photograph or export the smear "
            "in colour."))  # fmt: skip
    else:
        warnings += _stain_warnings(stain, limits)
    cover = float(cells.mean())
    if cover > limits.max_cover:
        warnings.append(QualityWarning(THICK_AREA, cover, limits.max_cover,
            f"Thick area: cells cover {cover:.0%} of the field and overlap, so white cells can "
            "hide under red cells. Move to the thinner monolayer near the feathered edge."))  # fmt: skip
    elif segmentation.red_cells_merged_share > limits.max_merged_red_cells:
        warnings.append(QualityWarning(THICK_AREA, segmentation.red_cells_merged_share,
            limits.max_merged_red_cells,
            "Thick area or blur: the red cells run together into one mass, so white cells can "
            "hide under them and cell sizes are unreliable. Check the focus, or move to the "
            "thinner monolayer near the feathered edge."))  # fmt: skip
    red_cell_areas = image.shape[0] * image.shape[1] / (np.pi * diameter**2 / 4)
    density = segmentation.n_cells / max(red_cell_areas, 1.0)
    if density > limits.max_white_cells_per_red_cell:
        warnings.append(QualityWarning(WHITE_CELLS, density, limits.max_white_cells_per_red_cell,
            f"{segmentation.n_cells} white cells found, far more than blood holds per red cell: "
            "red cells or debris were probably taken for white cells (unusual stain or "
            "lighting). Check the outlines before trusting the count."))  # fmt: skip
    return tuple(warnings)


def edge_blur(image: np.ndarray, cells: np.ndarray, diameter: float) -> float | None:
    """Width (Gaussian sigma) of red-cell edges in red-cell diameters; None without edges.

    A step of height ``h`` blurred by ``sigma`` has its steepest gradient ``h / (sigma *
    sqrt(2 pi))`` where it crosses mid-level, which is where the cells-versus-glass threshold
    puts the outline. So ``sigma`` follows from the contrast and the gradient on the outline,
    whatever the stain or exposure. White-cell edges are left out (they are not steps).
    """
    green = cv2.GaussianBlur(image[..., 1].astype(np.float32), (0, 0), 0.5)
    if cells.all() or not cells.any():
        return None
    contrast = abs(float(np.median(green[~cells]) - np.median(green[cells])))
    inner = cv2.erode(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    purple = cv2.dilate(
        (nucleus_score(image) > WEAK_PURPLE).astype(np.uint8), np.ones((5, 5), np.uint8)
    )
    outline = cells & ~inner & ~purple.astype(bool)
    if outline.sum() < 50 or contrast < 5:
        return None
    gx = cv2.Sobel(green, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(green, cv2.CV_32F, 0, 1, ksize=3) / 8
    steepest = float(np.median(np.hypot(gx, gy)[outline]))
    return contrast / (np.sqrt(2 * np.pi) * max(steepest, 1e-3)) / diameter


def _stain_warnings(stain, limits: QualityLimits) -> list[QualityWarning]:
    if stain is None:
        return []
    out = []
    glass = float(np.mean(stain.glass_rgb))
    if glass < limits.min_glass_level:
        out.append(QualityWarning(EXPOSURE, glass, limits.min_glass_level,
            f"Underexposed: the bare glass is only {glass / 255:.0%} as bright as white, so the "
            "classifier sees cells darker than it learned and faint cells may be missed. Raise "
            "the lamp or the camera's exposure and capture the field again."))  # fmt: skip
    low, high = limits.density_range
    if stain.density_ratio is not None and not low <= stain.density_ratio <= high:
        word = "Under-stained or overexposed" if stain.density_ratio < low else "Over-stained"
        out.append(QualityWarning(STAIN, stain.density_ratio, low if stain.density_ratio < low
            else high, f"{word}: red cells are {stain.density_ratio:.1f} times as dense as the "
            "reference stain. Check staining and exposure; the classifier may misjudge cells."))  # fmt: skip
    if stain.glass_tint > limits.max_glass_tint:
        out.append(QualityWarning(COLOUR_CAST, stain.glass_tint, limits.max_glass_tint,
            "Tinted light: the bare glass is not white (lamp, filter or white balance), so the "
            "classifier sees other colours than it learned. Set the camera's white balance on "
            "bare glass."))  # fmt: skip
    elif stain.colour_cast > limits.max_colour_cast:
        out.append(QualityWarning(COLOUR_CAST, stain.colour_cast, limits.max_colour_cast,
            "Strong colour cast (lamp, filter or white balance): colours differ from the stain "
            "the classifier learned, so its calls are less reliable. Set the camera's white "
            "balance on bare glass."))  # fmt: skip
    return out
