"""A field as the camera lit it: black outside an eyepiece's round stop, light falling off."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from leukemia_core.illumination import (
    EVENED_NOTE,
    MAX_FALLOFF,
    SURROUND_NOTE,
    dark_surround,
    even_field,
)
from leukemia_core.io import read_image
from leukemia_core.quality import check_field
from leukemia_core.segmentation import segment_wbc
from leukemia_core.single_cell import single_cell_crop

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _through_a_stop(rgb: np.ndarray, black_share: float) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` inside a centred circle leaving ``black_share`` of it black, and the circle."""
    height, width = rgb.shape[:2]
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(xx - width / 2, yy - height / 2)
    radius = np.quantile(distance, 1 - black_share)
    inside = distance <= radius
    return np.where(inside[..., None], rgb, 0).astype(np.uint8), inside


def _whole_cells(segmentation) -> dict[int, tuple[float, float]]:
    border = set(segmentation.border_cell_ids)
    centres = {}
    for k in np.unique(segmentation.cell_labels):
        if k and k not in border:
            ys, xs = np.nonzero(segmentation.cell_labels == k)
            centres[int(k)] = (xs.mean(), ys.mean())
    return centres


def _check_field_through_a_stop(rgb: np.ndarray, black_share: float) -> None:
    framed, inside = _through_a_stop(rgb, black_share)
    before, after = segment_wbc(rgb), segment_wbc(framed)
    assert after.red_cell_diameter_px == pytest.approx(before.red_cell_diameter_px, rel=0.05)
    # every whole cell well inside the stop is found again, and none is found in the black
    found = list(_whole_cells(after).values())
    well_inside = [c for k, c in _whole_cells(before).items()
                   if not ((before.cell_labels == k) & ~_shrunk(inside)).any()]  # fmt: skip
    for x, y in well_inside:
        assert min(np.hypot(x - fx, y - fy) for fx, fy in found) < 0.25 * after.red_cell_diameter_px
    assert all(inside[int(y), int(x)] for x, y in found)
    # a cell the stop cuts is a border cell, never counted whole
    for k in set(np.unique(after.cell_labels)) - {0}:
        if ((after.cell_labels == k) & ~inside).any():
            assert k in after.border_cell_ids
    assert SURROUND_NOTE in after.notes and SURROUND_NOTE not in before.notes
    assert {w.check for w in check_field(framed, after)} <= {
        w.check for w in check_field(rgb, before)
    }


def _shrunk(inside: np.ndarray) -> np.ndarray:
    """The stop less its soft rim (what the segmentation paints with the black)."""
    margin = round(0.03 * max(inside.shape))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return cv2.erode(inside.astype(np.uint8), disc).astype(bool)


@pytest.mark.parametrize("black_share", [0.02, 0.08])
def test_a_bccd_field_through_a_round_stop_keeps_its_cells_scale_and_warnings(black_share):
    """A review saw 7.6% black corners leave this field with no white cell and an
    "over-stained" warning (red cells read 25 times too dense)."""
    rgb = np.asarray(Image.open(SAMPLES / "fields" / "BloodImage_00020.jpg").convert("RGB"))
    _check_field_through_a_stop(rgb, black_share)


@pytest.mark.data
@pytest.mark.parametrize("black_share", [0.02, 0.08])
def test_an_all_idb1_field_through_a_round_stop_keeps_its_blasts(shared_data, black_share):
    """Im012_1 with 1.7% of it black lost 7 of its 17 white cells and read its red cells 188 px
    wide instead of 67."""
    path = shared_data / "all_idb1" / "images" / "Im012_1.jpg"
    _check_field_through_a_stop(np.asarray(Image.open(path).convert("RGB")), black_share)


def test_dark_pixels_inside_a_field_or_an_underexposed_field_are_no_surround():
    rgb = np.asarray(Image.open(SAMPLES / "fields" / "BloodImage_00000.jpg").convert("RGB"))
    assert dark_surround(rgb) is None
    inked = rgb.copy()
    inked[200:260, 300:360] = 0  # a black mark away from the edges
    assert dark_surround(inked) is None
    dim = (rgb * 0.3).astype(np.uint8)  # underexposed: its red cells are dark, not a stop
    assert dark_surround(dim) is None


def test_a_cell_cut_out_on_a_transparent_background_is_read_as_a_cut_out():
    """Saved with transparency (segmentation tools' export) it read as glass on white, and
    "no white cell was found in the middle"."""
    on_black = np.asarray(Image.open(SAMPLES / "cells" / "UID_H6_1_1_hem.png").convert("RGB"))
    alpha = np.where(on_black.max(axis=2) > 12, 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([on_black, alpha]), "RGBA").save(buffer, "PNG")
    loaded = read_image(buffer.getvalue(), name="cell.png").rgb
    assert single_cell_crop(loaded).method == single_cell_crop(on_black).method == "cutout"
    np.testing.assert_array_equal(single_cell_crop(loaded).crop, single_cell_crop(on_black).crop)


def _vignetted(rgb: np.ndarray, corners: float) -> np.ndarray:
    """``rgb`` lit as a lens that falls off from 40% of the way out to ``corners`` at them."""
    height, width = rgb.shape[:2]
    yy, xx = np.mgrid[:height, :width]
    r = np.hypot(xx - width / 2, yy - height / 2) / np.hypot(width / 2, height / 2)
    gain = 1 - (1 - corners) * np.clip((r - 0.4) / 0.6, 0, 1) ** 2
    return np.clip(rgb * gain[..., None], 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["BloodImage_00000.jpg", "BloodImage_00020.jpg"])
@pytest.mark.parametrize("corners", [0.8, 0.7, 0.6])
def test_a_crowded_field_whose_light_falls_off_keeps_its_red_cell_scale(name, corners):
    """With corners at 80% of the centre's light, BCCD fields read their red cells 1.6 times
    too large (86 -> 134 px), and at 60% lost their white cell to a magnification warning."""
    rgb = np.asarray(Image.open(SAMPLES / "fields" / name).convert("RGB"))
    before, after = segment_wbc(rgb), segment_wbc(_vignetted(rgb, corners))
    assert after.red_cell_diameter_px == pytest.approx(before.red_cell_diameter_px, rel=0.15)
    assert len(_whole_cells(after)) == len(_whole_cells(before))


def test_an_evenly_lit_field_is_measured_as_it_is():
    """The development fields' glass falls off to 0.78-0.93: left alone, so their figures hold."""
    rgb = np.asarray(Image.open(SAMPLES / "fields" / "BloodImage_00000.jpg").convert("RGB"))
    evened, outside, notes = even_field(rgb)
    assert evened is rgb and outside is None and notes == ()
    dim = _vignetted(rgb, MAX_FALLOFF - 0.15)
    lit, _, notes = even_field(dim)
    assert notes == (EVENED_NOTE,)  # the field's notes say what was done

    def glass(image, rows, cols):  # the brightest pixels of a patch: its glass
        return np.percentile(image[rows, cols].max(axis=2), 95)

    corner, centre = (slice(0, 80), slice(0, 80)), (slice(200, 280), slice(280, 360))
    assert glass(dim, *corner) < 0.75 * glass(dim, *centre)
    assert glass(lit, *corner) > 0.9 * glass(lit, *centre)  # the corners' glass lit again
