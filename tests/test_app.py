"""Every page and the main flows, driven through streamlit's AppTest by widget key.

The model is the real tiny CNN of ``conftest.tiny_models_dir`` (random weights), with its
calibration set from its own outputs on the demo smear so that the demo's cells get every label
(normal, uncertain, blast): nothing returns fixed numbers. Each test gets its own case database.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import log_in
from PIL import Image
from streamlit.testing.v1 import AppTest

from leukemia_core import pipeline
from leukemia_core.accounts import User
from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.imaging import prepare_field
from leukemia_core.models.folder import load_model, read_config, set_active_model
from leukemia_core.models.writing import write_config
from leukemia_core.report import RESEARCH_USE_STATEMENT
from leukemia_core.review import Review
from leukemia_core.store import CaseStore
from leukemia_core.synthetic import make_demo_smear
from ui.common import DISCLAIMER
from ui.state import DRAWN_CUT_KEY
from ui.workspace import CURRENT_KEY, CUT_WORDS, GALLERY, ONE_BY_ONE, VIEW_KEY

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT_S = 180  # one run may analyse several fields on 2 shared CPU cores
REVIEWER = "Dr. A. Reviewer"
PAGES = ("analyze", "review", "counts", "case", "cases", "report")


@pytest.fixture(autouse=True)
def _apptest_runs_the_navigation_script(apptest_navigation):
    """Every page test here runs the app's navigation (see conftest.apptest_navigation)."""


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo_png() -> bytes:
    return _png(make_demo_smear().image)


@pytest.fixture(scope="module")
def app_models(tiny_models_dir, tmp_path_factory) -> Path:
    """Models ``tiny`` (calibrated on the demo smear so that it gets every label) and ``tiny-b``."""
    root = tmp_path_factory.mktemp("app_models")
    for name in ("tiny", "tiny-b"):
        shutil.copytree(tiny_models_dir / "tiny", root / name)
    classifier = Classifier(load_model("tiny", root))
    field = prepare_field(make_demo_smear().image, "demo.png")
    session = analyze_sample([field], classifier, sample_id="calibration")
    p = sorted(c.blast_probability for c in session.cells if c.model_label != CellLabel.BORDER)
    m = len(p) // 2  # p[:m-1] normal, p[m-1] and p[m] uncertain, p[m+1:] blast
    calibration = {"temperature": 1.0, "threshold": (p[m - 1] + p[m]) / 2,
                   "uncertain_low": (p[m - 2] + p[m - 1]) / 2,
                   "uncertain_high": (p[m] + p[m + 1]) / 2}  # fmt: skip
    config_path = root / "tiny" / "config.json"
    config = json.loads(config_path.read_text())
    write_config(root / "tiny", {**config, "calibration": calibration})
    set_active_model("tiny", root, user=User.shell())
    return root


@pytest.fixture
def db(app_models, monkeypatch, tmp_path) -> Path:
    """A fresh case database; the app uses the test models."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(app_models))
    path = tmp_path / "cases.sqlite3"
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(path))
    return path


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
    views = [r for r in at.radio if r.key == VIEW_KEY]  # none before a sample is analysed
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
    at.file_uploader(key="upload").set_value(
        [(name, data, "image/png") for name, data in files]
    ).run()
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


# ---- pages without a sample -----------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_banner_and_a_clear_start(db, page):
    at = go(start(), page)
    assert at.warning[0].value == DISCLAIMER
    assert not errors(at)
    assert at.title[0].value
    assert any(f"Logged in as **{REVIEWER}**" in m.value for m in at.sidebar.markdown)
    if page == "analyze":
        assert at.button(key="try_sample").label == "Try the sample images"
        assert at.button(key="analyze").disabled  # nothing uploaded yet
        uploader = at.file_uploader(key="upload")
        assert uploader.accept_multiple_files
        assert {t.lstrip(".") for t in uploader.allowed_type} == {"jpg", "jpeg", "png", "tif",
                                                                  "tiff", "bmp"}  # fmt: skip
        assert at.selectbox(key="model").options == ["tiny", "tiny-b"]
        assert len(at.metric) == 0
    elif page == "cases":
        assert "No cases saved yet" in at.info[0].value
    else:
        assert any("analyze a sample" in i.value or "save the case" in i.value for i in at.info)


def test_without_any_model_the_app_says_how_to_get_one_and_still_finds_cells(db, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(db.parent / "no-models-here"))
    at = start()
    info = " ".join(i.value for i in at.info)
    assert "No classifier model is installed" in info and "python -m train fit" in info
    assert "LEUKEMIA_MODELS_DIR" in info
    assert "No classifier model installed" in " ".join(w.value for w in at.sidebar.warning)
    at.button(key="try_sample").click().run()
    assert not at.exception and not errors(at)
    session = session_of(at)
    assert session.model_name is None and len(session.cells) > 0
    assert metric(at, "Blasts") == "0"
    assert int(metric(at, "Uncertain")) == session.n_uncertain > 0
    go(at, "review")
    assert at.toggle(key="gradcam_on").disabled
    assert any("need a classifier model" in c.value for c in at.caption)
    save_case(at)
    key = keys_labelled(at, "uncertain")[0]
    relabel(at, key, "blast")  # the reviewer labels what the machine could not
    assert metric(at, "Blasts") == "1" and metric(at, "Cells counted") == "1"


# ---- analysis -------------------------------------------------------------------------------
def test_sample_buttons_analyse_bundled_fields_and_cells_with_credits(db):
    at = start()
    assert "BCCD" in credits(at) and "MIT" in credits(at)
    at.button(key="try_sample").click().run()
    assert not at.exception and not errors(at)
    session = session_of(at)
    assert [f.name for f in session.fields] == [
        "BloodImage_00000.jpg", "BloodImage_00006.jpg", "synthetic-demo-smear.png"]  # fmt: skip
    assert metric(at, "Images analysed") == "3"
    assert metric(at, "White cells found") == str(len(session.cells))
    assert len(session.field_cells(0)) == len(session.field_cells(1)) == 1  # one neutrophil each
    assert at.table[0].value["Field"].tolist() == [f.name for f in session.fields]

    at.radio(key="mode").set_value("cells").run()
    assert "C-NMC" in credits(at) and "CC BY 3.0" in credits(at)
    at.button(key="try_sample").click().run()
    assert not at.exception and not errors(at)
    session = session_of(at)
    assert session.mode == "cells" and len(session.fields) == len(session.cells) == 4
    assert {f.name for f in session.fields} == {
        "UID_3_1_1_all.png", "UID_4_1_2_all.png", "UID_H11_1_1_hem.png", "UID_H6_1_1_hem.png"}  # fmt: skip
    assert metric(at, "White cells found") == "4"
    go(at, "review")
    assert len(relabel_keys(at)) == 4


def test_app_runs_leave_keras_alone_and_the_model_keeps_working(db, monkeypatch):
    """Streamlit clears Keras' session after every run (a full garbage collection and
    TensorFlow's kernel cache: 0.17 s a rerun); the app, whose models are loaded once, stops it."""
    import keras

    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: cleared.append(1))
    at = start()
    at.button(key="try_sample").click().run()
    go(at, "review")
    at.toggle(key="gradcam_on").set_value(True).run()  # Keras (Grad-CAM) in a later run
    assert not at.exception and not errors(at)
    assert cleared == []
    assert session_of(at).cells[0].blast_probability is not None


def _huge_png_header(side: int = 100_000) -> bytes:
    ihdr = b"IHDR" + side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    chunk = (13).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_bad_files_get_clear_messages_and_the_rest_of_the_batch_is_analysed(db, demo_png):
    n_demo = len(analyze_sample([prepare_field(make_demo_smear().image, "d")], None,
                                sample_id="x").cells)  # fmt: skip
    at = start()
    at.file_uploader(key="upload").set_value([
        ("notes.png", b"these are field notes, not pixels", "image/png"),
        ("empty.jpg", b"", "image/jpeg"),
        ("cut.png", demo_png[: len(demo_png) // 3], "image/png"),
        ("bomb.png", _huge_png_header(), "image/png"),
        ("blank.png", _png(np.full((480, 640, 3), 232, np.uint8)), "image/png"),
        ("field.png", demo_png, "image/png"),
    ]).run()  # fmt: skip
    at.text_input(key="field_name_5_field.png").input("Field A (demo)").run()
    at.button(key="analyze").click().run()
    assert not at.exception
    messages = errors(at)
    assert len(messages) == 4
    for name, words in (("notes.png", "not an image file"), ("empty.jpg", "is empty"),
                        ("cut.png", "ends before its pixel data"), ("bomb.png", "over the limit")):  # fmt: skip
        assert any(name in m and words in m for m in messages), (name, messages)
    assert any("blank.png" in i.value and "No red cells found" in i.value for i in at.info)
    assert metric(at, "Images analysed") == "2"
    assert metric(at, "White cells found") == str(n_demo)
    assert at.table[0].value["Field"].tolist() == ["blank.png", "Field A (demo)"]


@pytest.mark.slow
def test_a_very_large_field_is_downscaled_with_a_note_not_refused(db):
    demo = make_demo_smear().image
    big = cv2.resize(demo, None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR)  # 20 megapixels
    at = start()
    analyze(at, [("huge.png", _png(big))])
    assert not errors(at)
    notes = [i.value for i in at.info if "huge.png" in i.value]
    assert notes and "downscaled" in notes[0] and "model's scale" in notes[0]
    session = session_of(at)
    assert session.fields[0].original_size == (5120, 3840) and session.fields[0].scale < 0.5
    found = len(analyze_sample([prepare_field(demo, "d")], None, sample_id="x").cells)
    assert metric(at, "White cells found") == str(found)


def test_the_model_is_loaded_before_the_first_sample_and_damaged_weights_stop_analysis(
    db, app_models, tmp_path, monkeypatch
):
    at = start()  # the Analyze page loads (and warms up) the default model as it opens
    assert not errors(at) and not at.button(key="try_sample").disabled
    root = tmp_path / "models"
    shutil.copytree(app_models / "tiny", root / "tiny")
    weights = root / "tiny" / "model.keras"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # damaged on disk
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(root))
    at = start()
    assert any("tiny" in e for e in errors(at)), errors(at)
    assert at.button(key="try_sample").disabled  # nothing is analysed with a broken model
    at.file_uploader(key="upload").set_value([("f.png", b"x", "image/png")]).run()
    assert at.button(key="analyze").disabled


def test_the_chosen_model_labels_the_sample_and_is_recorded(db, demo_png, app_models):
    at = start()
    at.selectbox(key="model").set_value("tiny-b").run()
    analyze(at, [("field.png", demo_png)])
    session = session_of(at)
    assert session.model_name == "tiny-b"
    assert session.model_checksum == read_config("tiny-b", app_models).sha256
    assert session.calibration["threshold"] == 0.5  # tiny-b keeps the default calibration
    save_case(at, sample_id="S-MODEL")
    record = CaseStore(db).load_case(session_of(at).case_id)
    assert (record.model_name, record.model_checksum) == ("tiny-b", session.model_checksum)
    assert record.thresholds["model_calibration"]["threshold"] == 0.5
    assert record.thresholds["model_calibration"]["test_time_views"] == 1


# ---- review, counts, sign-off, reopen, export -----------------------------------------------
def test_review_reclassify_recount_sign_reopen_and_export(db, demo_png, downloads):
    at = start()
    analyze(at, [("field.png", demo_png)])
    session = session_of(at)
    n_cells, start_count = len(session.cells), session.count()
    assert session.n_uncertain == 2  # by the calibration of app_models
    assert metric(at, "Uncertain") == "2"

    go(at, "review")
    assert len(relabel_keys(at)) == n_cells
    uncertain = keys_labelled(at, "uncertain")
    assert relabel_keys(at)[:2] == sorted(uncertain, key=relabel_keys(at).index)  # queue first
    assert at.segmented_control(key=uncertain[0]).disabled  # nothing is recorded before saving
    assert at.button(key="review_save_case").label == "Save case"
    assert any(f"Saved as **{REVIEWER}**" in c.value for c in at.main.caption)  # the account
    assert session_of(at).case_id is None

    save_case(at, sample_id="S-0042")
    session = session_of(at)
    assert session.case_id and session.status == "open" and session.sample_id == "S-0042"
    assert not at.segmented_control(key=uncertain[0]).disabled

    relabel(at, uncertain[0], "blast")  # one click: every count follows
    assert int(metric(at, "Blasts")) == start_count.n_blasts + 1
    assert int(metric(at, "Cells counted")) == start_count.n_counted + 1
    assert metric(at, "Uncertain") == "1"
    go(at, "counts")
    assert int(metric(at, "Blasts")) == start_count.n_blasts + 1
    table = at.table[0].value
    assert table.loc[0, "Scope"] == "Whole sample"
    assert table.loc[0, "Blasts"] == start_count.n_blasts + 1
    assert table.loc[0, "Uncertain"] == 1
    assert "1 of" in at.main.caption[-1].value  # one cell relabelled by the reviewer

    go(at, "case")  # signing waits for every cell (the store refuses it too: test_store)
    assert at.button(key="sign").disabled
    assert any("1 cell is still uncertain" in w.value for w in at.warning)

    go(at, "review")
    relabel(at, uncertain[1], "normal")
    assert metric(at, "Uncertain") == "0"
    go(at, "counts")  # every cell labelled, but not every one reviewed: still provisional
    assert any(i.value.startswith("Provisional: ") for i in at.info) and not at.error
    go(at, "case")
    assert at.button(key="sign").disabled
    assert any("have not been reviewed yet" in w.value for w in at.warning)
    accept_all(at)
    assert not any("not reviewed yet" in c.value for c in at.main.caption)
    go(at, "counts")
    assert not any(i.value.startswith("Provisional: ") for i in at.info)
    go(at, "case")
    at.button(key="sign").click().run()
    assert not errors(at)
    assert any(f"Signed by **{REVIEWER}**" in s.value for s in at.success)
    record = CaseStore(db).load_case(session.case_id)
    assert record.is_signed and record.signed_by == REVIEWER
    changes = [(a.action, a.reviewer, a.from_label, a.to_label) for a in record.audit
               if a.action != "reviewed"]  # fmt: skip
    accepted = [a for a in record.audit if a.action == "reviewed"]
    assert len(accepted) == n_cells - 2 - len([c for c in record.cells if c.label == "border"])
    assert changes == [("created", REVIEWER, None, None),
                       ("relabel", REVIEWER, "uncertain", "blast"),
                       ("relabel", REVIEWER, "uncertain", "normal"),
                       ("signed", REVIEWER, None, None)]  # fmt: skip
    go(at, "review")
    assert all(at.segmented_control(key=k).disabled for k in relabel_keys(at))  # frozen

    go(at, "report")
    assert not errors(at)
    stem = "S-0042_v1"
    html = downloads[f"{stem}_report.html"].decode()
    assert RESEARCH_USE_STATEMENT in html and f"Signed by {REVIEWER}" in html
    rows = list(csv.DictReader(io.StringIO(downloads[f"{stem}_cells.csv"].decode())))
    assert len(rows) == n_cells
    labels = {(int(r["field_index"]), int(r["cell_id"])): r["label"] for r in rows}
    assert labels == {c.key: c.label.value for c in session_of(at).cells}
    assert sum(r["changed_by_reviewer"] == "true" for r in rows) == 2
    document = json.loads(downloads[f"{stem}_case.json"])
    assert document["status"] == "signed" and document["counts"]["n_blasts"] == (
        start_count.n_blasts + 1)  # fmt: skip

    go(at, "case")
    at.button(key="reopen").click().run()
    assert not errors(at)
    reopened = session_of(at)
    assert reopened.version == 2 and reopened.status == "open" and reopened.case_id != (
        record.case_id)  # fmt: skip
    assert CaseStore(db).load_case(record.case_id).is_signed  # the signed version stays
    go(at, "review")
    relabel(at, uncertain[0], "normal")
    assert CaseStore(db).load_case(reopened.case_id).counts().n_blasts == start_count.n_blasts


def test_one_cell_at_a_time_labels_accepts_moves_on_and_never_reshuffles(db, demo_png):
    """The keyboard workspace (issue 13): its buttons carry B/N/W/X/Space/arrows; a decision
    moves on to the next cell waiting for review; the queue keeps its order throughout."""
    at = start()
    analyze(at, [("field.png", demo_png)])
    go(at, "review", view=ONE_BY_ONE)
    shortcuts = {b.key: b.proto.shortcut for b in at.button if b.key and b.key.startswith(
        ("decide_", "workspace_"))}  # fmt: skip
    assert shortcuts == {"decide_blast": "b", "decide_normal": "n", "decide_not_wbc": "w",
                         "decide_excluded": "x", "decide_accept": "space",
                         "workspace_previous": "left", "workspace_next": "right"}  # fmt: skip
    assert at.button(key="decide_blast").disabled  # nothing is recorded before saving
    save_case(at, sample_id="S-KEYS")
    go(at, "review", view=ONE_BY_ONE)
    session = session_of(at)
    queue = session.queue()
    first = at.session_state[CURRENT_KEY]
    assert first == queue[0] and session.cell(*first).label == "uncertain"  # uncertain first
    assert at.button(key="decide_accept").disabled  # an uncertain cell needs a call
    at.button(key="decide_blast").click().run()
    assert session.cell(*first).label == "blast" and session.cell(*first).reviewed
    assert at.session_state[CURRENT_KEY] == queue[1]  # moved on
    at.button(key="workspace_previous").click().run()
    assert at.session_state[CURRENT_KEY] == first
    at.button(key="workspace_next").click().run()
    reviewed = 1
    while session.n_unreviewed:
        cell = session.cell(*at.session_state[CURRENT_KEY])
        assert not cell.reviewed
        decision = "decide_normal" if cell.label == "uncertain" else "decide_accept"
        at.button(key=decision).click().run()
        assert not at.exception and not errors(at), errors(at)
        assert session.cell(*cell.key).reviewed and session.queue() == queue
        reviewed += 1
    assert reviewed == len(queue) and metric(at, "Uncertain") == "0"
    assert at.session_state[CURRENT_KEY] == cell.key  # nothing left: it stays
    assert not any(i.value.startswith("Provisional: ") for i in at.info)
    record = CaseStore(db).load_case(session.case_id)
    assert [a.action for a in record.audit].count("reviewed") == len(queue) - 2
    assert [(a.from_label, a.to_label) for a in record.audit if a.action == "relabel"] == [
        ("uncertain", "blast"), ("uncertain", "normal")]  # fmt: skip
    go(at, "case")
    at.button(key="sign").click().run()
    assert not errors(at) and CaseStore(db).load_case(session.case_id).is_signed


def test_case_list_finds_opens_and_reopens_earlier_cases(db, demo_png):
    first = start()
    analyze(first, [("field.png", demo_png)])
    save_case(first, sample_id="ALPHA-1")
    alpha = session_of(first)
    for key in keys_labelled(first, "uncertain"):
        relabel(first, key, "normal")
    accept_all(first)
    go(first, "case").button(key="sign").click().run()
    assert session_of(first).is_signed
    second = start()
    second.button(key="try_sample").click().run()
    save_case(second, sample_id="BETA-2")

    at = go(start("Dr. B"), "cases")
    assert at.table[0].value["Sample"].tolist() == ["BETA-2", "ALPHA-1"]  # newest first
    at.text_input(key="case_search").input("alpha").run()
    assert at.table[0].value["Sample"].tolist() == ["ALPHA-1"]
    assert at.selectbox(key="case_pick").value == alpha.case_id
    at.button(key="open_case").click().run()
    opened = session_of(at)
    assert opened.case_id == alpha.case_id and opened.is_signed
    assert opened.count() == session_of(first).count()
    assert [c.key for c in opened.cells] == [c.key for c in alpha.cells]

    at.button(key="reopen_case").click().run()
    assert not errors(at)
    reopened = session_of(at)
    assert reopened.version == 2 and reopened.status == "open"
    go(at, "review")
    assert not errors(at)
    assert not at.segmented_control(key=relabel_keys(at)[0]).disabled
    go(at, "cases")
    listed = at.table[0].value
    alpha_rows = listed[listed["Sample"] == "ALPHA-1"]["Status"].tolist()
    assert alpha_rows == ["v2 open", "v1 signed (reopened)"]


def test_two_tabs_never_mix_their_cells(db, demo_png):
    one, two = start(), start()
    analyze(one, [("field.png", demo_png)])
    two.button(key="try_sample").click().run()
    save_case(one, sample_id="TAB-1")
    save_case(two, sample_id="TAB-2")
    before_two = session_of(two).count()
    relabel(one, keys_labelled(one, "uncertain")[0], "blast")
    go(two, "counts")
    assert session_of(two).count() == before_two
    store = CaseStore(db)
    cases = {c.sample_id: store.load_case(c.case_id) for c in store.list_cases()}
    assert len(cases["TAB-1"].cells) == len(session_of(one).cells)
    assert len(cases["TAB-2"].cells) == len(session_of(two).cells)
    assert [a.action for a in cases["TAB-2"].audit] == ["created"]
    assert cases["TAB-2"].counts() == before_two

    # a third tab opens TAB-1: a change made in one tab shows in the other on its next run
    three = go(start("Dr. C"), "cases")
    three.text_input(key="case_search").input("TAB-1").run()
    three.button(key="open_case").click().run()
    go(three, "review")
    relabel(three, keys_labelled(three, "uncertain")[0], "normal")
    go(one, "review")
    assert any("changed in another window" in i.value for i in one.info)
    assert [c.label for c in session_of(one).cells] == [c.label for c in session_of(three).cells]
    assert session_of(one).n_uncertain == 0


def test_a_long_queue_is_paged_and_single_cells_need_no_model(db, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(db.parent / "no-models-here"))
    cell = (Path(__file__).resolve().parents[1] / "samples/cells/UID_3_1_1_all.png").read_bytes()
    at = start()
    at.radio(key="mode").set_value("cells").run()
    analyze(at, [(f"cell-{i:02d}.png", cell) for i in range(45)])
    assert metric(at, "White cells found") == "45" and metric(at, "Uncertain") == "45"
    go(at, "review")
    assert len(relabel_keys(at)) == 40  # the first page of the uncertain queue
    at.number_input(key="page_uncertain").set_value(2).run()
    assert relabel_keys(at) == [f"relabel_{i}_1" for i in range(40, 45)]


# ---- explanations ---------------------------------------------------------------------------
def test_heatmaps_for_the_whole_gallery_in_one_batched_cached_call(db, monkeypatch):
    import leukemia_core.explain as explain

    calls = []
    original = explain.compute_heatmaps

    def counted(model, crops, **kwargs):
        calls.append((len(crops), kwargs["method"], kwargs.get("score_maps")))
        return original(model, crops, **kwargs)

    monkeypatch.setattr(explain, "compute_heatmaps", counted)
    at = start()
    mirrored = _png(np.ascontiguousarray(make_demo_smear().image[:, ::-1]))  # no cached maps
    analyze(at, [("heat.png", mirrored)])
    n_cells = len(session_of(at).cells)
    go(at, "review")

    def gallery_urls() -> list[str]:
        return [url for image in at.image if image.captions and "cell" in image.captions[0]
                for url in image.value]  # fmt: skip

    plain = gallery_urls()
    assert len(plain) == n_cells
    at.toggle(key="gradcam_on").set_value(True).run()
    assert not errors(at)
    with_maps = gallery_urls()
    assert len(with_maps) == n_cells and set(with_maps).isdisjoint(plain)
    at.slider(key="gradcam_opacity").set_value(0.8).run()
    assert set(gallery_urls()).isdisjoint(with_maps)
    for method in ("gradcam++", "scorecam"):
        at.selectbox(key="gradcam_method").set_value(method).run()
        assert not errors(at) and len(gallery_urls()) == n_cells
    at.selectbox(key="gradcam_method").set_value("gradcam").run()  # cached: no new call
    assert calls == [(n_cells, "gradcam", 8), (n_cells, "gradcam++", 8), (n_cells, "scorecam", 8)]
    go(go(at, "counts"), "review")  # the settings outlive a page switch
    assert at.toggle(key="gradcam_on").value and at.slider(key="gradcam_opacity").value == 0.8

    save_case(at)  # the record keeps the overlays the reviewer saw
    record = CaseStore(db).load_case(session_of(at).case_id)
    assert all(c.overlay is not None for c in record.cells)
    assert len(calls) == 3


def test_a_recalibrated_model_is_loaded_again(tiny_models_dir, tmp_path, monkeypatch):
    """`python -m train calibrate` changes config.json, not the weights: the app must notice."""
    from ui.models import get_classifier

    shutil.copytree(tiny_models_dir / "tiny", tmp_path / "tiny")
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tmp_path))
    first = get_classifier("tiny")
    assert get_classifier("tiny") is first  # loaded once per process
    path = tmp_path / "tiny" / "config.json"
    values = json.loads(path.read_text())
    values["calibration"]["threshold"] = 0.52
    write_config(tmp_path / "tiny", {**values, "test_time_views": 4})
    second = get_classifier("tiny")
    assert second is not first
    assert second.model.config.calibration.threshold == 0.52
    assert second.model.config.test_time_views == 4


# ---- out-of-domain warning ------------------------------------------------------------------
def test_a_colour_shifted_sample_is_warned_and_sent_to_review_a_normal_one_is_not(
    ood_models_dir, monkeypatch, tmp_path, demo_png
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(ood_models_dir))
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(tmp_path / "cases.sqlite3"))
    demo = make_demo_smear().image
    cast = np.clip(demo * np.array([1.0, 0.8, 0.7]), 0, 255).astype(np.uint8)
    at = start()
    # the first screen says what the model is in words; numbers and hashes wait in its details
    (details,) = [e for e in at.expander if e.label == "Model details"]
    assert any("out-of-domain warning above a median score of" in c.value for c in details.caption)
    assert any("sha256" in c.value and "Network run by" in c.value for c in details.caption)
    details_text = {c.value for c in details.caption}
    outside = [c.value for c in at.main.caption if c.value not in details_text]
    assert any(" network" in c and "marked uncertain for your review" in c for c in outside)
    assert not any(word in c for c in outside for word in ("sha256", "p ≥", "|dp|"))
    analyze(at, [("cast.png", _png(cast))])
    warnings = [w.value for w in at.warning if "training data" in w.value]
    assert len(warnings) == 1 and "These cells differ from the training data" in warnings[0]
    assert "review every cell" in warnings[0]
    session = session_of(at)
    assert session.domain.warned and metric(at, "Uncertain") == str(session.n_uncertain)
    assert metric(at, "Blasts") == "0" and session.count().n_counted == 0
    assert at.table[0].value["Unlike the training cells"].tolist() == ["yes: review every cell"]
    save_case(at)
    assert any("differ from the training data" in w.value for w in at.warning)  # review page
    assert CaseStore(tmp_path / "cases.sqlite3").load_case(session.case_id).domain.warned

    at = start()
    analyze(at, [("field.png", demo_png)])
    assert not [w.value for w in at.warning if "training data" in w.value]
    assert any("resemble the training data" in c.value for c in at.caption)
    assert not session_of(at).domain.warned


def test_a_model_without_a_domain_reference_says_so(db, demo_png):
    at = start()
    assert any("no out-of-domain check" in c.value for c in at.caption)
    analyze(at, [("field.png", demo_png)])
    assert session_of(at).domain is None
    assert any("no domain reference" in c.value for c in at.caption)


def test_a_reviewer_saves_and_relabels_but_the_sign_button_is_a_signers(db, demo_png):
    at = start("R. Eviewer", ("reviewer",))
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="ROLE-1")
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    go(at, "case")
    assert at.button(key="sign").disabled
    assert any("may review but not sign" in m.value for m in at.main.markdown)
    record = CaseStore(db).load_case(session_of(at).case_id)
    assert {a.reviewer for a in record.audit} == {"R. Eviewer"} and not record.is_signed


def test_a_reload_brings_the_open_case_back_and_a_comment_and_patient_id_reach_the_report(
    db, demo_png, downloads
):
    at = start()
    analyze(at, [("field.png", demo_png)])
    assert "case" not in at.query_params  # nothing saved yet
    save_case(at, sample_id="RELOAD-1")
    case_id = session_of(at).case_id
    assert at.query_params["case"] in (case_id, [case_id])
    # a reload is a new browser session with the same address (and a new login)
    again = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT_S), REVIEWER, ("signer",))
    again.query_params["case"] = case_id
    again.run()
    assert not again.exception
    assert session_of(again).case_id == case_id and session_of(again).sample_id == "RELOAD-1"
    go(again, "review")
    assert len(relabel_keys(again)) == len(session_of(at).cells)
    # the reloaded case takes a comment and a patient id on the Case page; the report shows them
    go(again, "case")
    again.text_area(key=f"case_comment_{case_id}").input("Repeat with a fresh smear").run()
    again.text_input(key=f"case_patient_{case_id}").input("MRN\n77").run()
    again.button(key="save_comment").click().run()
    assert any("one line of at most 64" in e for e in errors(again))  # refused, nothing kept
    assert CaseStore(db).load_case(case_id).patient_id == ""
    again.text_input(key=f"case_patient_{case_id}").input("MRN-77").run()
    again.button(key="save_comment").click().run()
    assert not errors(again)
    record = CaseStore(db).load_case(case_id)
    assert (record.comment, record.patient_id) == ("Repeat with a fresh smear", "MRN-77")
    assert [a.action for a in record.audit[-2:]] == ["comment", "patient id"]
    go(again, "cases")
    again.text_input(key="case_search").input("mrn-7").run()
    assert list(again.table[0].value["Patient"]) == ["MRN-77"]
    go(again, "report")
    html = downloads["RELOAD-1_v1_report.html"].decode()
    assert "Repeat with a fresh smear" in html and "<td>Patient id</td><td>MRN-77</td>" in html


def test_signing_keeps_unsaved_details_and_the_next_sample_gets_its_own_id(db, demo_png):
    at = start()
    at.text_input(key="sample_id").input("ACC-7").run()
    analyze(at, [("field.png", demo_png)])
    assert session_of(at).sample_id == "ACC-7"
    assert at.text_input(key="sample_id").value == ""  # the box is for the next sample
    (note,) = [t.value for t in at.toast]  # the results lie below the upload box
    assert note.startswith("Sample ACC-7: ") and "the results are below" in note
    save_case(at)
    case_id = session_of(at).case_id
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    accept_all(at)
    # typed on the Case page but never saved with "Save for the report": signing keeps them
    go(at, "case")
    at.text_input(key=f"case_patient_{case_id}").input("MRN-9").run()
    at.text_area(key=f"case_comment_{case_id}").input("Signed straight away").run()
    assert any("Signing also saves" in c.value for c in at.main.caption)
    at.button(key="sign").click().run()
    assert not errors(at)
    record = CaseStore(db).load_case(case_id)
    assert record.is_signed
    assert (record.patient_id, record.comment) == ("MRN-9", "Signed straight away")
    assert [a.action for a in record.audit[-3:]] == ["comment", "patient id", "signed"]
    # the next sample starts without the signed one's id; reusing it is warned before saving
    go(at, "analyze").button(key="try_sample").click().run()
    assert session_of(at).sample_id != "ACC-7"
    go(at, "review")
    assert at.text_input(key="review_sample_id").value == session_of(at).sample_id
    assert not [w for w in at.warning if "already has a case" in w.value]
    at.text_input(key="review_sample_id").input(" acc-7").run()
    (warned,) = [w.value for w in at.warning if "already has a case" in w.value]
    assert "ACC-7" in warned and "version 1, signed" in warned


def test_logout_takes_the_case_out_of_the_address(db, demo_png):
    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="OUT-1")
    assert "case" in at.query_params
    at.button(key="logout").click().run()
    assert "case" not in at.query_params  # the next account to log in here starts clean
    again = log_in(at, "Dr. Next", ("signer",)).run()
    assert "review_session" not in again.session_state or session_of(again) is None


def test_a_second_signer_signs_details_the_first_one_saw(db, demo_png, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "0")  # every case needs two
    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="TWO-1")
    case_id = session_of(at).case_id
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    accept_all(at)
    go(at, "case").button(key="sign").click().run()
    assert CaseStore(db).load_case(case_id).first_signed_by == REVIEWER
    second = start("Dr. Second")
    second.query_params["case"] = case_id
    go(second.run(), "case")
    assert not second.button(key="sign").disabled
    second.text_area(key=f"case_comment_{case_id}").input("Added after the first signature").run()
    assert second.button(key="sign").disabled  # not signed in passing: saved (and seen) first
    assert any("before the second signature" in c.value for c in second.main.caption)
    second.button(key="save_comment").click().run()
    second.button(key="sign").click().run()
    record = CaseStore(db).load_case(case_id)
    assert record.is_signed and record.signed_by == "Dr. Second"
    assert record.comment == "Added after the first signature"


@pytest.mark.data
def test_split_a_fused_clump_of_a_real_field_undo_and_a_signed_case_refuses(db, shared_data):
    """ALL-IDB1 Im013_1: three pressed expert blasts, (976, 549), (934, 467) and (842, 505),
    outlined as one cell."""
    at = start()
    field = shared_data / "all_idb1" / "images" / "Im013_1.jpg"
    analyze(at, [(field.name, field.read_bytes())])
    save_case(at, sample_id="IDB-13")
    session = session_of(at)
    (clump,) = [c for c in session.cells if c.bbox[0] <= 976 < c.bbox[2]
                and c.bbox[1] <= 549 < c.bbox[3]
                and c.mask()[549 - c.bbox[1], 976 - c.bbox[0]]]  # fmt: skip
    n_before = len(session.cells)

    def shown(at: AppTest) -> int:
        return int(metric(at, "Cells counted")) + int(metric(at, "Uncertain"))

    before = shown(at)
    go(at, "review", view=ONE_BY_ONE)
    at.session_state[CURRENT_KEY] = clump.key  # as a click on its number in the field view does
    at.run()
    (picked,) = [b for b in at.selectbox if str(b.key).startswith("outline_cell_0_")]
    assert picked.value == clump.cell_id  # the outline editor starts at the open cell
    at.selectbox(key="outline_action_0").set_value("Split into 3 cells").run()
    at.button(key="outline_apply_0").click().run()
    assert not at.exception and not errors(at), errors(at)
    session = session_of(at)
    pieces = [c for c in session.cells if c.origin == f"split of {clump.cell_id}"]
    assert len(pieces) == 3 and len(session.cells) == n_before + 2
    assert at.session_state[CURRENT_KEY] == pieces[0].key  # review goes on with the pieces
    assert any(f"Cell {clump.cell_id} split into cells" in s.value for s in at.success)
    assert all(c.blast_probability is not None for c in pieces)  # classified like the others
    # The pieces enter the count (or the review queue) at once: two more cells in the tally.
    assert shown(at) == before + 2
    go(at, "case")
    (trail,) = at.dataframe
    assert "split" in trail.value.to_string()
    go(at, "review")
    (picked,) = [b for b in at.selectbox if str(b.key).startswith("outline_cell_0_")]
    picked.set_value(pieces[0].cell_id).run()
    at.selectbox(key="outline_action_0").set_value("Undo the split or merge that made it").run()
    at.button(key="outline_apply_0").click().run()
    assert not errors(at) and len(session_of(at).cells) == n_before
    assert session_of(at).cell(*clump.key).label != "replaced"
    # A lasso drawn around one blast in the field view: its callback keeps the outline for the
    # cell it cuts (``_offer_cut``), and the outline editor offers that cut first.
    go(at, "review", view=ONE_BY_ONE)
    lasso = tuple((976 + 40 * np.cos(a), 549 + 40 * np.sin(a)) for a in np.linspace(0, 6.2, 20))
    at.session_state[DRAWN_CUT_KEY] = (session_of(at).case_id, 0, clump.cell_id, lasso)
    at.session_state[CURRENT_KEY] = clump.key
    at.run()
    assert at.selectbox(key="outline_action_0_drawn").value == CUT_WORDS
    at.button(key="outline_apply_0").click().run()
    assert not at.exception and not errors(at), errors(at)
    cut_out, rest = [c for c in session_of(at).cells if c.origin == f"split of {clump.cell_id}"]
    assert cut_out.mask()[549 - cut_out.bbox[1], 976 - cut_out.bbox[0]]
    assert rest.mask()[467 - rest.bbox[1], 934 - rest.bbox[0]]
    assert DRAWN_CUT_KEY not in at.session_state and at.session_state[CURRENT_KEY] == cut_out.key
    assert shown(at) == before + 1
    accept_all(at)
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    go(at, "case")
    at.button(key="sign").click().run()
    assert session_of(at).is_signed, errors(at)
    go(at, "review")
    assert at.button(key="outline_apply_0").disabled  # a signed case refuses it
    signed_at = session_of(at).signed_at  # shown to the minute, not the stored microseconds
    (frozen,) = [s.value for s in at.success if "the record is frozen" in s.value]
    assert f"at {signed_at[:10]} {signed_at[11:16]} UTC;" in frozen and "+00:00" not in frozen


def test_the_5_and_20_percent_words_sit_beside_the_bars_not_over_them():
    from leukemia_core.counting import count_blasts
    from ui.figures import counts_chart

    figure = counts_chart([("Whole sample", count_blasts(12, 13)), ("Field 1", count_blasts(3, 3))])
    words = {a.text: a for a in figure.layout.annotations}
    assert set(words) == {"5% investigate", "20% WHO acute leukemia"}
    for annotation in words.values():  # right of the plot area, level with its dashed line
        assert (annotation.xref, annotation.x, annotation.xanchor) == ("paper", 1.0, "left")
    assert words["5% investigate"].y == 5 and words["20% WHO acute leukemia"].y == 20
    assert figure.layout.margin.r >= 180  # room for them ("20% WHO acute leukemia" was cut at 150)
