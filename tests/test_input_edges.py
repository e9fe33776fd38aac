"""Files a lab's cameras and exports produce that the reader got wrong: a TIFF turned twice, a
TIFF page that crashed the decoder, an empty alpha channel, a phone's HEIC, a cut-off JPEG
turned by its EXIF tag, and the ruler of a split's pieces."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from leukemia_core import errors, imaging
from leukemia_core.io import read_image
from leukemia_core.jpeg_check import DAMAGED
from leukemia_core.segmentation import field_red_cell_diameter, segment_wbc
from leukemia_core.synthetic import make_demo_smear, make_smear


def _quadrants() -> np.ndarray:
    rgb = np.zeros((80, 120, 3), np.uint8)
    rgb[:40, :60], rgb[:40, 60:] = (255, 0, 0), (0, 255, 0)
    rgb[40:, :60], rgb[40:, 60:] = (0, 0, 255), (255, 255, 0)
    return rgb


def _saved(rgb: np.ndarray, fmt: str, orientation: int | None = None, **options) -> bytes:
    buffer, image = io.BytesIO(), Image.fromarray(rgb)
    if orientation and fmt == "TIFF":
        options["tiffinfo"] = {274: orientation}
    elif orientation:
        exif = Image.Exif()
        exif[274] = orientation
        options["exif"] = exif
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tiff_is_turned_upright_once_like_a_png_with_the_same_tag(orientation):
    """Pillow turns a TIFF as it loads it; the reader turned it again (sideways, upside down)."""
    tiff = read_image(_saved(_quadrants(), "TIFF", orientation)).rgb
    png = read_image(_saved(_quadrants(), "PNG", orientation)).rgb
    np.testing.assert_array_equal(tiff, png)
    assert not np.array_equal(png, _quadrants()) or orientation == 1


def test_a_tiff_whose_second_page_is_broken_is_a_typed_error_not_a_crash():
    """Pillow raised a bare TypeError ("Missing dimensions"): the segment command died, the
    Analyze page would have stopped the whole upload."""
    data = bytearray(_saved(np.full((80, 120, 3), 120, np.uint8), "TIFF"))
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first : first + 2])[0]
    pointer = first + 2 + 12 * entries  # where the next page's offset is kept
    data += b"\0" * (len(data) % 2)
    data[pointer : pointer + 4] = struct.pack("<I", len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHII", 65000, 3, 1, 0) + struct.pack("<I", 0)
    with pytest.raises(errors.LeukemiaCoreError, match=r"'page\.tif'"):
        read_image(bytes(data), name="page.tif")


def test_an_alpha_channel_empty_everywhere_is_ignored_not_a_black_field():
    rgba = np.dstack([_quadrants(), np.zeros((80, 120), np.uint8)])
    loaded = read_image(_saved(rgba, "PNG"))
    np.testing.assert_array_equal(loaded.rgb, _quadrants())
    assert "transparency channel is empty" in loaded.notes[0]


def test_a_phones_heic_photo_is_named_and_the_way_out_said():
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)
    with pytest.raises(errors.NotAnImageError, match=r"HEIC/HEIF photo.*export it as JPEG"):
        read_image(heic, name="phone.heic")


def test_a_cut_off_jpeg_turned_by_exif_is_flagged_damaged_on_the_reduced_path(monkeypatch):
    """The grey rows of a cut-off file sit at the bottom of the picture as stored; looked for
    after the EXIF turn, they were at a side and the damage went unsaid."""
    monkeypatch.setattr(imaging, "DEFAULT_MAX_PIXELS", 600_000)  # this field takes that path
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (900, 1200, 3), dtype=np.uint8)
    whole = _saved(rgb, "JPEG", 6, quality=90)
    cut = whole[: len(whole) // 2] + b"\xff\xd9"
    prepared = imaging.read_for_analysis(cut, "cut.jpg")
    assert any("decoded at 1/2" in note for note in prepared.notes)
    assert prepared.rgb.shape[0] > prepared.rgb.shape[1]  # still turned upright
    assert any(note.startswith(DAMAGED) for note in prepared.notes)
    intact = imaging.read_for_analysis(whole, "whole.jpg")
    assert not any(note.startswith(DAMAGED) for note in intact.notes)


def test_a_splits_pieces_are_measured_with_the_segmentations_own_ruler():
    """An eyepiece's black surround read red cells 8 times too large for the pieces of a split,
    which were cropped far too small."""
    smear = make_demo_smear().image.copy()
    height, width = smear.shape[:2]
    rows, cols = np.ogrid[:height, :width]
    outside = (rows - height / 2) ** 2 + (cols - width / 2) ** 2 > (0.55 * max(height, width)) ** 2
    smear[outside] = 0
    assert outside.mean() > 0.02
    assert field_red_cell_diameter(smear) == pytest.approx(segment_wbc(smear).red_cell_diameter_px)


def test_a_progressive_jpeg_cut_off_and_closed_is_damaged_and_a_whole_one_is_not():
    """Each scan of a progressive file refines the whole picture: cut off and closed, it decodes
    as a blur with no grey rows, and its blasts were called normal without a word."""
    from leukemia_core.jpeg_check import jpeg_damage

    rgb = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for options in ({"quality": 90}, {"quality": 60, "subsampling": 0}, {"optimize": True}):
        whole = _saved(rgb, "JPEG", progressive=True, **options)
        assert jpeg_damage(whole) is None, options
        scans = [i for i in range(len(whole) - 1) if whole[i : i + 2] == b"\xff\xda"]
        assert len(scans) > 3
        cut = whole[: scans[3]] + b"\xff\xd9"  # three whole scans, then closed
        assert jpeg_damage(cut) == "a progressive JPEG that ends before its last scans"
        prepared = imaging.read_for_analysis(cut, "cut.jpg")
        assert any(note.startswith(DAMAGED) for note in prepared.notes)


def test_small_red_cells_of_a_large_field_are_measured_where_they_do_not_merge():
    """The ruler of a field came from a 640 px view, where red cells under ~7 px merge: a
    3424 px field of 34 px red cells read 47 px, a 70 MP one 49 instead of 32, its blasts
    cropped small and called normal."""
    from leukemia_core.scale import measure_red_cells

    dense = make_smear(480, 640, n_wbc=2, n_touching_pairs=0, n_rbc=160, seed=3)
    assert dense.red_cell_diameter_px == 40
    tiled = np.tile(dense.image, (5, 5, 1))  # 2400 x 3200: red cells 8 px on the view
    assert measure_red_cells(tiled).diameter < 1.25 * 40  # read 90 before


@pytest.mark.data
def test_the_development_fields_keep_their_ruler(shared_data):
    """The closer look changes no ALL-IDB1 field (its largest measure 18 px and more on the
    view), so the segmentation figures measured on them stand."""
    from leukemia_core.scale import ESTIMATION_SIDE, _measured, measure_red_cells

    for path in sorted((shared_data / "all_idb1" / "images").glob("Im0[3-9]*_1.jpg"))[:12]:
        rgb = imaging.read_for_analysis(path.read_bytes(), path.name).rgb
        view = _measured(rgb, ESTIMATION_SIDE / max(rgb.shape[:2]))
        assert measure_red_cells(rgb) == view, path.name
