"""pipeline.analyze and the readers refuse what they cannot use with a message that says what
arrived and what to pass instead (found by a probe of bad inputs, 2026-12-06)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from leukemia_core.errors import NotAnImageError, SettingError
from leukemia_core.imaging import prepare_field, read_for_analysis
from leukemia_core.io import read_image
from leukemia_core.pipeline import AnalysisError, analyze
from leukemia_core.synthetic import make_smear


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=5).image


def test_the_same_picture_twice_in_a_sample_is_analysed_once(field):
    analysis = analyze([field, field.copy(), field[::-1].copy()], None, names=["a", "b", "c"])
    assert [f.name for f in analysis.fields] == ["a", "c"]
    (repeat,) = analysis.failures
    assert repeat.name == "b" and "'b' shows the same field as 'a'" in repeat.message
    again = analyze([field, field], None, names=["a", "a"]).failures[0].message
    assert again.startswith("'a' was given twice: it was analysed once")
    once = analyze([field], None)
    assert len(analysis.field_cells(0)) == len(once.cells)
    assert len(analysis.cells) == 2 * len(once.cells)  # the mirrored field is another picture


def test_the_case_record_says_which_uploaded_image_was_left_out(field, tmp_path):
    """A walk saw the "same field" message on the Analyze page and nowhere after: the case
    record and its report did not say that the upload held a second file."""
    from leukemia_core.accounts import Role, User
    from leukemia_core.review import Review
    from leukemia_core.store import CaseStore

    analysis = analyze([field, field.copy()], None, names=["a.jpg", "a-export.png"])
    store = CaseStore(tmp_path / "cases.sqlite3")
    review = Review(analysis, sample_id="S-1")
    review.save(store, user=User("Dr. A", frozenset({Role.REVIEWER})))
    (created,) = [a for a in store.load_case(review.case_id).audit if a.action == "created"]
    assert "left out of the upload: 'a-export.png' shows the same field as 'a.jpg'" in (
        created.note
    )


@pytest.mark.parametrize(
    ("images", "names", "words"),
    [
        (["/data/field.jpg"], None, r"image 1 is a str, not an image array: read files with "
                                    r"leukemia_core\.imaging\.read_for_analysis"),
        ([None], ["slide 7"], "slide 7 is a NoneType, not an image array"),
        ("two", ["a"], "1 names for 3 images: give one name per image"),
    ],
)  # fmt: skip
def test_analyze_says_what_it_takes(field, images, names, words):
    images = [field] * 3 if images == "two" else images
    with pytest.raises(AnalysisError, match=words):
        analyze(images, None, names=names)


@pytest.mark.parametrize("max_pixels", [0, -5, 100, 2.5, True])
def test_a_pixel_budget_below_one_small_image_is_refused(field, max_pixels):
    with pytest.raises(SettingError, match="max_pixels must be a whole number of at least 4096"):
        prepare_field(field, "f", max_pixels=max_pixels)


def test_readers_name_the_real_problem(tmp_path, field):
    with pytest.raises(NotAnImageError, match="The image path is empty"):
        read_image("")
    with pytest.raises(FileNotFoundError, match="does not exist: check the path"):
        read_for_analysis(tmp_path / "nowhere.png")
    text = tmp_path / "field.png"
    text.write_bytes(b"\x89PNG")
    with open(text) as stream, pytest.raises(TypeError, match=r"open it with open\(path, 'rb'\)"):
        read_image(stream)
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(field).save(buffer, format="PNG")
    (tmp_path / "ok.png").write_bytes(buffer.getvalue())
    from_path = read_for_analysis(tmp_path / "ok.png")
    from_bytes = read_for_analysis(buffer.getvalue(), "ok.png")
    assert from_path.name == from_bytes.name == "ok.png"
    assert np.array_equal(from_path.rgb, from_bytes.rgb)


def test_a_greyscale_picture_is_read_with_a_note_that_its_colours_are_missing(field):
    from PIL import Image

    grey, colour = io.BytesIO(), io.BytesIO()
    Image.fromarray(field).convert("L").save(grey, format="PNG")
    Image.fromarray(field).save(colour, format="PNG")
    assert any("greyscale image" in note for note in read_image(grey.getvalue()).notes)
    assert not any("greyscale" in note for note in read_image(colour.getvalue()).notes)


def test_one_field_saved_again_as_a_jpeg_or_smaller_is_analysed_once(field):
    """A walk counted Im013_1 twice when it came as the JPEG and the same JPEG saved again at
    quality 90: other pixels, one field, every cell counted twice."""
    from PIL import Image

    def resaved(rgb, quality, scale=1.0):
        size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        buffer = io.BytesIO()
        Image.fromarray(rgb).resize(size).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    other = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=6).image
    images = [field, resaved(field, 90), resaved(field, 75, 0.5), other]
    analysis = analyze(images, None, names=["a", "a-q90", "a-small", "b"])
    assert [f.name for f in analysis.fields] == ["a", "b"]
    assert [f.name for f in analysis.failures] == ["a-q90", "a-small"]


@pytest.mark.data
def test_two_different_cut_out_cells_are_never_taken_for_one_picture(shared_data):
    """Cut-out cells on black differ little at a glance (C-NMC UID_5_1_2 and UID_H11_1_1 by a
    mean of 1.5 levels in a 32-px view): in single-cell mode only the very same picture is a
    repeat."""
    folder = shared_data / "cnmc"
    paths = [next(folder.rglob(f"{stem}.bmp")) for stem in ("UID_5_1_2_all", "UID_H11_1_1_hem")]
    cells = [read_image(p).rgb for p in paths]
    analysis = analyze([*cells, cells[0]], None, mode="cells", names=["a", "b", "a again"])
    assert [f.name for f in analysis.fields] == ["a", "b"]
    assert [f.name for f in analysis.failures] == ["a again"]
