"""The landing page, driven through streamlit's AppTest by widget key."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from leukemia_core.synthetic import make_demo_smear
from ui.common import NO_CLASSIFIER_NOTE

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT_S = 120  # one run segments a whole field; generous for 2 shared CPU cores
FOUND = "White cells found"
BORDER = "Cut by the border (excluded)"
IMAGE_TYPES = ("jpg", "jpeg", "png", "tif", "tiff", "bmp")
CAPTION = re.compile(r"^cell (\d+) · (\d+) px²( · border, excluded)?$")


@pytest.fixture(scope="module")
def demo_truth() -> tuple[int, int]:
    """(white cells inside the field, white cells cut by the border) of the demo smear."""
    smear = make_demo_smear()
    n_border = len(smear.border_cell_ids)
    return len(smear.wbcs) - n_border, n_border


@pytest.fixture(scope="module")
def demo_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_demo_smear().image).save(buffer, format="PNG")
    return buffer.getvalue()


def _run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    return at.run()


def _metric(at: AppTest, label: str) -> int:
    values = [metric.value for metric in at.metric if metric.label == label]
    assert len(values) == 1, f"expected one metric {label!r}, got {values}"
    return int(values[0])


def _gallery_captions(at: AppTest) -> list[list[str]]:
    """Captions of each cell gallery (images whose captions all name a cell)."""
    return [
        image.captions
        for image in at.image
        if image.captions and all(CAPTION.match(caption) for caption in image.captions)
    ]


def test_page_renders_with_disclaimer_and_no_results():
    at = _run_app()

    assert not at.exception
    assert at.title[0].value == "ALL blast screening — research use only"
    disclaimer = at.warning[0].value
    for words in ("Research use only", "not a diagnosis", "reviewed by a qualified person"):
        assert words in disclaimer
    assert at.button(key="demo").label == "Try the synthetic demo smear"
    uploader = at.file_uploader(key="upload")
    assert uploader.accept_multiple_files
    assert {t.lstrip(".") for t in uploader.allowed_type} == set(IMAGE_TYPES)
    assert [info.value for info in at.info] == [NO_CLASSIFIER_NOTE]
    assert len(at.metric) == 0  # nothing analysed yet
    assert len(at.error) == 0


def test_demo_button_counts_the_synthetic_white_cells(demo_truth):
    n_inside, n_border = demo_truth
    at = _run_app()
    at.button(key="demo").click().run()

    assert not at.exception
    assert len(at.error) == 0
    assert _metric(at, FOUND) == n_inside
    assert _metric(at, BORDER) == n_border
    assert not any("blast" in metric.label.lower() for metric in at.metric)  # no classifier yet
    galleries = _gallery_captions(at)
    assert len(galleries) == 2  # cells in context, classifier crops
    assert galleries[0] == galleries[1]
    assert len(galleries[0]) == n_inside + n_border
    matches = [CAPTION.match(caption) for caption in galleries[0]]
    assert all(matches), galleries[0]
    assert sum(bool(m.group(3)) for m in matches) == n_border

    at.run()  # a later rerun (any widget) keeps the demo on the page
    assert _metric(at, FOUND) == n_inside


def test_each_upload_is_analysed_and_a_bad_file_does_not_stop_the_batch(demo_truth, demo_png):
    n_inside, n_border = demo_truth
    at = _run_app()
    at.file_uploader(key="upload").set_value(
        [
            ("notes.png", b"these are field notes, not pixels", "image/png"),
            ("empty.jpg", b"", "image/jpeg"),
            ("field.png", demo_png, "image/png"),
        ]
    ).run()

    assert not at.exception
    assert [header.value for header in at.subheader] == ["notes.png", "empty.jpg", "field.png"]
    errors = [error.value for error in at.error]
    assert len(errors) == 2
    assert "notes.png" in errors[0]
    assert "empty.jpg" in errors[1]
    assert _metric(at, FOUND) == n_inside
    assert _metric(at, BORDER) == n_border
