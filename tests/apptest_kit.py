"""AppTest helpers of the page tests (their fixtures ``db``, ``app_models`` and ``demo_png`` are
in conftest): start a logged-in tab, switch pages, analyse, save, accept and relabel by widget key.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from conftest import log_in
from PIL import Image
from streamlit.testing.v1 import AppTest

from leukemia_core import pipeline
from leukemia_core.review import Review
from ui.workspace import GALLERY, VIEW_KEY

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT_S = 180  # one run may analyse several fields on 2 shared CPU cores
REVIEWER = "Dr. A. Reviewer"
PAGES = ("analyze", "review", "counts", "case", "cases", "report")


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- helpers --------------------------------------------------------------------------------
def start(name: str = REVIEWER, roles=("signer",)) -> AppTest:
    """The app in a new tab, logged in as this account (see conftest.log_in)."""
    at = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT_S), name, roles).run()
    assert not at.exception
    return at


def go(at: AppTest, page: str, *, view: str = GALLERY) -> AppTest:
    """Switch to ``page`` (on Review, to ``view``: the gallery unless asked)."""
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    views = [
        r for r in at.segmented_control if r.key == VIEW_KEY
    ]  # none before a sample is analysed
    if page == "review" and views and views[0].value != view:
        views[0].set_value(view).run()
        assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, f"expected one metric {label!r}, got {values}"
    return values[0]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def analyze_sample(images, classifier, *, sample_id: str) -> Review:
    return Review(pipeline.analyze(images, classifier), sample_id=sample_id)


def session_of(at: AppTest) -> Review:
    return at.session_state["review_session"]


def credits(at: AppTest) -> str:
    (text,) = [c.value for c in at.main.caption if c.value.startswith("Sample ")]
    return text


def relabel_keys(at: AppTest) -> list[str]:
    return [w.key for w in at.segmented_control if w.key and w.key.startswith("relabel_")]


def analyze(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    (uploader,) = at.file_uploader  # its key changes after each analysis (it starts empty)
    uploader.set_value([(name, data, "image/png") for name, data in files]).run()
    at.button(key="analyze").click().run()
    assert not at.exception, at.exception
    return at


def save_case(at: AppTest, sample_id: str | None = None) -> AppTest:
    go(at, "review")
    if sample_id:
        at.text_input(key="review_sample_id").input(sample_id).run()
    at.button(key="review_save_case").click().run()
    assert not at.exception and not errors(at), errors(at)
    return at


def accept_all(at: AppTest) -> AppTest:
    """Click every "Accept the label of ..." button of the Review page (what a reviewer does
    after looking at each cell)."""
    go(at, "review")
    for key in [b.key for b in at.button if b.key and b.key.startswith("accept_")]:
        at.button(key=key).click().run()
        assert not at.exception and not errors(at), errors(at)
    return at


def relabel(at: AppTest, key: str, label: str) -> AppTest:
    at.segmented_control(key=key).set_value(label).run()
    assert not at.exception, at.exception
    return at


def keys_labelled(at: AppTest, label: str) -> list[str]:
    session = session_of(at)
    return [
        f"relabel_{c.field_index}_{c.cell_id}" for c in session.cells
        if c.label == label
    ]  # fmt: skip
