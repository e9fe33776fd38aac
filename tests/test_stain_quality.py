"""Stain normalisation and field quality checks, on synthetic fields with known white cells."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukemia_core.io import read_image
from leukemia_core.quality import (
    COLOUR_CAST,
    EXPOSURE,
    FOCUS,
    MAGNIFICATION,
    NO_RED_CELLS,
    STAIN,
    THICK_AREA,
    check_field,
)
from leukemia_core.segmentation import SegmentationParams, segment_wbc
from leukemia_core.stain import REFERENCE_RED_CELL_OD, estimate_stain
from leukemia_core.synthetic import make_smear


def _assert_one_detection_per_wbc(smear, segmentation) -> None:
    """Each true white cell has exactly one detected cell within 0.4 red-cell diameters."""
    labels = segmentation.cell_labels
    detected = [np.argwhere(labels == k).mean(axis=0)[::-1] for k in range(1, labels.max() + 1)]
    assert len(detected) == len(smear.wbcs), (len(detected), len(smear.wbcs))
    for cell in smear.wbcs:
        near = [
            p for p in detected if np.hypot(*(p - cell.center)) < 0.4 * smear.red_cell_diameter_px
        ]
        assert len(near) == 1, (cell, near)


def _other_microscope(image: np.ndarray, density_gains, lamp) -> np.ndarray:
    """The same field under another stain and lamp: optical density scaled per channel against
    the glass (Beer-Lambert), then a lamp tint multiplied in."""
    glass = np.percentile(image.reshape(-1, 3), 99, axis=0).astype(np.float32)
    density = -np.log10(np.clip(image.astype(np.float32), 1, None) / glass)
    restained = glass * 10.0 ** (-density * np.asarray(density_gains, np.float32))
    return np.clip(restained * np.asarray(lamp, np.float32), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def smear():
    return make_smear(480, 640, n_wbc=4, n_touching_pairs=0, n_rbc=70, seed=3)


# A bluish field as on the other microscope of issue 17: red cells absorb red light instead of
# green, under a cyan lamp; and a greenish, dim camera.
BLUE_FIELD = ((2.5, 1.2, 0.5), (0.6, 0.9, 1.1))
GREEN_FIELD = ((0.8, 1.6, 0.6), (0.85, 1.0, 0.7))


@pytest.mark.parametrize("look", [BLUE_FIELD, GREEN_FIELD], ids=["blue", "green"])
def test_another_microscopes_colours_find_the_same_white_cells(smear, look):
    shifted = _other_microscope(smear.image, *look)
    _assert_one_detection_per_wbc(smear, segment_wbc(shifted))


def test_without_normalisation_the_blue_field_goes_wrong(smear):
    """The check above can fail: the raw rule misreads the blue field."""
    shifted = _other_microscope(smear.image, *BLUE_FIELD)
    raw = segment_wbc(shifted, SegmentationParams(normalise_stain=False))
    # Under the bluish lamp blue-minus-green calls every red cell purple.
    assert raw.n_cells > 3 * len(smear.wbcs)
    with pytest.raises(AssertionError):
        _assert_one_detection_per_wbc(smear, raw)


def test_stain_estimate_of_a_reference_field_needs_little_correction(smear):
    estimate = estimate_stain(smear.image, reference_od=estimate_stain(smear.image).red_cell_od)
    assert estimate.gains == pytest.approx((1.0, 1.0, 1.0), abs=0.01)
    blue = estimate_stain(_other_microscope(smear.image, *BLUE_FIELD))
    assert blue.gains[0] < 0.6 and blue.colour_cast > 1.0  # red density is brought down
    assert len(REFERENCE_RED_CELL_OD) == 3


def test_a_clean_field_passes_every_check(smear):
    assert check_field(smear.image, segment_wbc(smear.image)) == ()


def test_a_blurred_field_is_out_of_focus(smear):
    blurred = cv2.GaussianBlur(smear.image, (0, 0), 0.2 * smear.red_cell_diameter_px)
    warnings = check_field(blurred, segment_wbc(blurred))
    assert FOCUS in {w.check for w in warnings}
    message = next(w.message for w in warnings if w.check == FOCUS)
    assert "Out of focus" in message and message.endswith("Refocus and capture the field again.")
    # The same blur in a small copy (red cells under the check's 24 px): the advice names the
    # image's size first, since a downscaled image blurs edges as bad focus does
    small = cv2.resize(blurred, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)
    (focus,) = [w for w in check_field(small, segment_wbc(small)) if w.check == FOCUS]
    assert re.search(r"Red cells are only (1\d|2[0-3]) px wide, so the image may simply be too small",
                     focus.message)  # fmt: skip
    assert "Refocus and capture" not in focus.message


def test_red_cells_running_together_are_a_thick_area():
    thick = make_smear(480, 640, n_wbc=4, n_touching_pairs=0, n_rbc=220, seed=1).image
    segmentation = segment_wbc(thick)
    assert segmentation.red_cells_merged_share > 0.85
    warnings = [w for w in check_field(thick, segmentation) if w.check == THICK_AREA]
    assert warnings and "run together" in warnings[0].message


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pairs", [0, 1])
def test_a_thick_field_gets_the_right_scale_or_a_warning(seed, pairs):
    """220 overlapping 40 px red cells: where the scale still goes wrong (5 of these 12 fields
    after stain normalisation), the field must say so, sending its cells to review."""
    smear = make_smear(480, 640, n_rbc=220, n_touching_pairs=pairs, seed=seed)
    segmentation = segment_wbc(smear.image)
    checks = {w.check for w in check_field(smear.image, segmentation)}
    right = abs(segmentation.red_cell_diameter_px / smear.red_cell_diameter_px - 1) <= 0.15
    assert right or checks & {THICK_AREA, NO_RED_CELLS, MAGNIFICATION}, (
        segmentation.red_cell_diameter_px,
        checks,
    )


def test_a_thumbnail_is_outside_the_supported_magnification(smear):
    small = cv2.resize(smear.image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    assert MAGNIFICATION in {w.check for w in check_field(small, segment_wbc(small))}


def test_red_cells_under_30_px_are_below_what_the_classifier_supports(smear):
    """At 17 px a field's blasts were called normal with confidence, with no warning (the floor
    was the segmentation's 12 px); the development fields measure 44 px and more."""
    assert MAGNIFICATION not in {
        w.check for w in check_field(smear.image, segment_wbc(smear.image))
    }
    small = cv2.resize(smear.image, None, fx=0.625, fy=0.625, interpolation=cv2.INTER_AREA)
    segmentation = segment_wbc(small)
    assert 20 < segmentation.red_cell_diameter_px < 30
    (warning,) = [w for w in check_field(small, segmentation) if w.check == MAGNIFICATION]
    assert "full-resolution image" in warning.message and warning.limit == 30


def test_a_greyscale_field_is_said_to_have_no_colour_not_to_be_over_stained(smear):
    """A grey picture read "Over-stained: red cells are 5.8 times as dense as the reference"."""
    grey = np.repeat(cv2.cvtColor(smear.image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    warnings = check_field(grey, segment_wbc(grey))
    said = " ".join(w.message for w in warnings)
    assert "No colour: a greyscale picture" in said
    assert "Over-stained" not in said and "colour cast" not in said.lower()


def test_a_tinted_lamp_is_a_colour_cast(smear):
    tinted = np.clip(smear.image * np.array([0.35, 0.8, 1.0]), 0, 255).astype(np.uint8)
    assert COLOUR_CAST in {w.check for w in check_field(tinted, segment_wbc(tinted))}


SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "fields"


def test_underexposed_fields_keep_their_white_cells_and_say_they_are_dark():
    """At 0.3 of its exposure a bundled BCCD field lost its white cell with no warning. Every
    dark copy is warned; of the 4 white cells (2 fields, 2 exposures) one may be lost: the
    second field's cell is faint and comes and goes with the exposure (bench/quality.py has
    the figures on 20 annotated fields: no cell lost)."""
    found = 0
    for name in ("BloodImage_00000.jpg", "BloodImage_00020.jpg"):
        field = read_image(SAMPLES / name).rgb
        clean = segment_wbc(field)
        assert clean.n_cells == 1 and EXPOSURE not in {w.check for w in check_field(field, clean)}
        for exposure in (0.4, 0.25):
            dark = np.rint(field * exposure).astype(np.uint8)
            darkened = segment_wbc(dark)
            found += darkened.n_cells
            assert darkened.red_cell_diameter_px == pytest.approx(
                clean.red_cell_diameter_px, rel=0.15
            )
            said = {w.check: w.message for w in check_field(dark, darkened)}
            assert said[EXPOSURE].startswith("Underexposed: the bare glass is only"), said
            assert "Over-stained" not in " ".join(said.values())
    assert found >= 3


@pytest.mark.data
def test_an_all_idb1_field_one_stop_under_keeps_its_blasts(shared_data):
    """One stop under, Im012_1 kept none of its 17 white cells and was called over-stained."""
    field = read_image(shared_data / "all_idb1" / "images" / "Im012_1.jpg").rgb
    dark = np.rint(field * 0.5).astype(np.uint8)
    clean, darkened = segment_wbc(field), segment_wbc(dark)
    assert abs(darkened.n_cells - clean.n_cells) <= 1 and clean.n_cells >= 15
    checks = {w.check for w in check_field(dark, darkened)}
    assert EXPOSURE in checks and STAIN not in checks
