"""leukemia_core.imaging: fitting large images for analysis, outlines, views and PNG round trips."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from leukemia_core import errors
from leukemia_core.cropping import crop_cells
from leukemia_core.imaging import (
    ANALYSIS_MAX_PIXELS,
    cell_view,
    display_copy,
    mask_outline,
    png_bytes,
    prepare_field,
    read_for_analysis,
    rgb_from_png,
    side_by_side,
)
from leukemia_core.io import GREY_NOTE
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_demo_smear, make_smear


def _encode(rgb: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def huge_png_header(side: int = 100_000) -> bytes:
    """A PNG whose header claims ``side`` x ``side`` RGB pixels (a decompression bomb)."""
    ihdr = b"IHDR" + side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    chunk = len(ihdr[4:]).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


@pytest.fixture(scope="module")
def demo():
    return make_demo_smear()


def test_a_field_within_the_budget_is_kept_as_it_is(demo):
    prepared = prepare_field(demo.image, "demo.png", input_size=224)
    assert prepared.rgb is demo.image
    assert prepared.scale == 1.0 and prepared.notes == ()
    assert prepared.original_size == (1024, 768)


def test_a_large_field_goes_down_to_the_models_scale_with_a_note(demo):
    big = cv2.resize(demo.image, None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR)  # 20 MP
    prepared = prepare_field(big, "big.png", input_size=64, max_pixels=ANALYSIS_MAX_PIXELS)
    # red cells are 34 * 5 = 170 px; the model's scale puts them at 0.9 * 64 / 1.2 = 48 px
    assert prepared.scale == pytest.approx(48 / 170, rel=0.08)
    assert prepared.original_size == (5120, 3840)
    assert prepared.rgb.shape[1] == round(5120 * prepared.scale)
    (note,) = prepared.notes
    assert "'big.png' is 5120×3840 px" in note and "model's scale" in note
    assert "Cell positions refer to the downscaled image" in note
    # the cells are all still there at the model's scale
    assert segment_wbc(prepared.rgb).n_cells == segment_wbc(demo.image).n_cells


def test_without_a_model_only_the_pixel_budget_applies(demo):
    big = cv2.resize(demo.image, None, fx=3, fy=3)  # 7 MP
    prepared = prepare_field(big, "big.png", max_pixels=2_000_000)
    assert prepared.rgb.shape[0] * prepared.rgb.shape[1] <= 2_000_000
    assert "analysis limit of 2 megapixels" in prepared.notes[0]


@pytest.mark.parametrize("stain", [(90, 40, 160), (90, 90, 90)], ids=["colour", "greyscale"])
def test_a_huge_jpeg_is_decoded_reduced_not_refused(stain):
    rgb = np.full((7000, 9000, 3), 225, np.uint8)  # 63 MP: over read_image's 60 MP limit
    rgb[3000:3400, 4000:4400] = stain
    data = _encode(rgb, "JPEG", quality=70)
    prepared = read_for_analysis(data, "scan.jpg", input_size=224)
    assert prepared.original_size == (9000, 7000)
    assert prepared.rgb.shape[0] * prepared.rgb.shape[1] <= ANALYSIS_MAX_PIXELS
    assert prepared.scale == pytest.approx(prepared.rgb.shape[1] / 9000)
    assert any("decoded at 1/2" in note for note in prepared.notes)
    # one story of the file's size: the downscaling note speaks of the file, not the decode
    smaller = read_for_analysis(data, "scan.jpg", input_size=224, max_pixels=8_000_000)
    (downscaled,) = [n for n in smaller.notes if "downscaled" in n]
    assert "is 9000×7000 px (63 megapixels)" in downscaled and " in all to " in downscaled
    # the greyscale warning of smaller files, on this path too
    assert (GREY_NOTE in prepared.notes) == (len(set(stain)) == 1)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", errors.EmptyFileError, r"'f' is empty \(0 bytes\)"),
        (
            b"field notes, not pixels",
            errors.NotAnImageError,
            r"not an image file \(it holds text, not a picture\).*JPEG, PNG, BMP, TIFF, GIF or WebP",
        ),
        (bytes(range(200, 256)) * 4, errors.NotAnImageError, "first bytes match no picture format"),
        ("truncated", errors.TruncatedImageError, "ends before its pixel data"),
        ("bomb", errors.ImageTooLargeError, "over the limit"),
    ],
)
def test_bad_files_raise_typed_errors_naming_the_file(data, error, match):
    if data == "truncated":
        full = _encode(make_smear(240, 320, seed=1).image, "JPEG")
        data = full[: len(full) // 2]
    elif data == "bomb":
        data = huge_png_header()
    with pytest.raises(error, match=match):
        read_for_analysis(data, "f", input_size=224)


def test_png_round_trip_is_lossless(demo):
    assert np.array_equal(rgb_from_png(png_bytes(demo.image)), demo.image)
    with pytest.raises(errors.NotAnImageError, match="could not be decoded"):
        rgb_from_png(b"not a png")


def test_outline_follows_the_mask_and_the_cell_gives_the_mask_back(demo):
    segmentation = segment_wbc(demo.image)
    cells = crop_cells(demo.image, segmentation)
    assert cells
    for cell in cells:
        x0, y0, x1, y1 = cell.bbox
        truth = segmentation.cell_labels[y0:y1, x0:x1] == cell.cell_id
        outline = mask_outline(truth, cell.bbox[:2])
        assert outline.shape[1] == 2 and len(outline) >= 4
        assert outline[:, 0].min() >= x0 and outline[:, 0].max() <= x1 - 1
        assert outline[:, 1].min() >= y0 and outline[:, 1].max() <= y1 - 1
        recovered = cell.mask()
        assert recovered.shape == truth.shape
        union = (recovered | truth).sum()
        assert (recovered & truth).sum() / union > 0.9  # IoU after the outline round trip
    assert mask_outline(np.zeros((5, 5), bool)).shape == (0, 2)


def test_cell_view_draws_the_outline_on_the_neighbourhood(demo):
    segmentation = segment_wbc(demo.image)
    cell = crop_cells(demo.image, segmentation)[0]
    plain = cell_view(demo.image, cell.bbox, np.zeros((0, 2), np.float32), size=128)
    drawn = cell_view(demo.image, cell.bbox, cell.outline, size=128)
    assert plain.shape == drawn.shape == (128, 128, 3)
    changed = np.any(plain != drawn, axis=2)
    assert 0.02 < changed.mean() < 0.4  # a line, not a fill
    green_minus_red = lambda view: view[changed][:, 1].astype(int) - view[changed][:, 0]  # noqa: E731
    assert green_minus_red(drawn).mean() > green_minus_red(plain).mean() + 50  # a green outline


def test_side_by_side_and_display_copy_sizes():
    a = np.zeros((300, 300, 3), np.uint8)
    b = np.full((50, 50, 3), 255, np.uint8)
    joined = side_by_side([a, b], size=100, gap=4)
    assert joined.shape == (100, 204, 3)
    assert joined[:, :100].max() == 0 and joined[:, 104:].min() == 255
    small, scale = display_copy(np.zeros((1944, 2592, 3), np.uint8), max_side=1296)
    assert small.shape == (972, 1296, 3) and scale == 0.5
    same, one = display_copy(a, max_side=1000)
    assert same is a and one == 1.0
