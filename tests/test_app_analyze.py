"""Pages before a sample, and the Analyze page, driven through AppTest by widget key.

Fixtures ``db``, ``app_models`` and ``demo_png`` are in conftest, helpers in apptest_kit.
"""

from __future__ import annotations

import re
import shutil
import zlib

import cv2
import numpy as np
import pytest
from apptest_kit import (
    PAGES,
    REVIEWER,
    analyze,
    analyze_sample,
    credits,
    errors,
    go,
    keys_labelled,
    metric,
    png,
    relabel,
    relabel_keys,
    save_case,
    session_of,
    start,
)

from leukemia_core.imaging import prepare_field
from leukemia_core.models.folder import read_config
from leukemia_core.store import CaseStore
from leukemia_core.synthetic import make_demo_smear
from ui.common import DISCLAIMER
from ui.workspace import SHOWN_KEY


@pytest.fixture(autouse=True)
def _apptest_runs_the_navigation_script(apptest_navigation):
    """Every page test here runs the app's navigation (see conftest.apptest_navigation)."""


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
        assert {t.lstrip(".") for t in uploader.allowed_type} == {  # what the core reads
            "jpg", "jpeg", "jpe", "jfif", "png", "tif", "tiff", "bmp", "gif", "webp"}  # fmt: skip
        assert uploader.label.endswith("JPEG, PNG, BMP, TIFF, GIF or WebP")
        # a signer analyses with the lab's active model only (a walk found an adapted version
        # nobody had checked, and a test model of 94 cells, offered to every reviewer)
        assert at.selectbox(key="model").options == ["tiny (active)"]
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
    assert at.segmented_control(key=SHOWN_KEY).disabled
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
    assert [f.name for f in session.fields] == ["BloodImage_00000.jpg", "BloodImage_00020.jpg"]
    assert metric(at, "Images analysed") == "2"
    assert metric(at, "White cells found") == str(len(session.cells))
    assert (
        len(session.field_cells(0)) == len(session.field_cells(1)) == 1
    )  # a neutrophil, a lymphocyte
    assert not session.fields[0].quality and not session.fields[1].quality  # a first try warns of
    # nothing that is not there (a bundled field once read "out of focus")
    table = at.table[0].value
    assert table["Field"].tolist() == [f.name for f in session.fields]
    # every cell found is counted, uncertain (awaiting a label) or left out, and the row says so
    for text, field in zip(table["Cells found"], session.fields, strict=True):
        found, counted, uncertain, left_out = map(int, re.findall(r"\d+", text))
        cells = session.field_cells(field.index)
        assert found == len(cells) == counted + uncertain + left_out
        assert uncertain == sum(c.label == "uncertain" for c in cells)
        assert counted == session.count(field.index).n_counted

    # The drawing is a sample of its own: beside the photographs it would make the whole
    # sample look out of domain, photographs included.
    assert any("a drawing made by this app" in c.value for c in at.caption)
    at.button(key="try_drawing").click().run()
    assert not at.exception and not errors(at)
    drawing = session_of(at)
    assert [f.name for f in drawing.fields] == ["synthetic-demo-smear.png"]
    assert len(drawing.cells) == 9  # 8 white cells and one cut by the border

    at.radio(key="mode").set_value("cells").run()
    assert "try_drawing" not in [b.key for b in at.button]  # a drawing of a field, not a cell
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
    at.segmented_control(key=SHOWN_KEY).set_value(
        "Heatmap"
    ).run()  # Keras (Grad-CAM) in a later run
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
        ("blank.png", png(np.full((480, 640, 3), 232, np.uint8)), "image/png"),
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
    # said once, by the quality warning (a walk read two near-identical messages)
    assert not any("blank.png" in i.value and "No red cells found" in i.value for i in at.info)
    blank = [w.value for w in at.warning if "blank.png" in w.value]
    assert len(blank) == 1 and "No red cells could be made out" in blank[0]
    assert "analyse them as single cells" in blank[0]
    assert metric(at, "Images analysed") == "2"
    assert metric(at, "White cells found") == str(n_demo)
    assert at.table[0].value["Field"].tolist() == ["blank.png", "Field A (demo)"]


def test_a_batch_of_unreadable_files_makes_no_sample_and_keeps_the_open_one(db, demo_png):
    at = start()
    analyze(at, [("field.png", demo_png)])
    sample = session_of(at).sample_id
    analyze(at, [("notes.png", b"field notes, not pixels"), ("cut.png", demo_png[:300])])
    messages = errors(at)
    assert len(messages) == 2 and "notes.png" in messages[0] and "cut.png" in messages[1]
    assert any("no sample was made" in i.value for i in at.info)
    assert session_of(at).sample_id == sample  # no empty sample in its place
    assert not any("0 white cells found" in t.value for t in at.success)
    analyze(at, [("blank.png", png(np.full((480, 640, 3), 232, np.uint8)))])
    assert metric(at, "White cells found") == "0"  # no cells: no word on a domain check
    assert not any("no domain reference" in c.value for c in at.main.caption)


@pytest.mark.slow
def test_a_very_large_field_is_downscaled_with_a_note_not_refused(db):
    demo = make_demo_smear().image
    big = cv2.resize(demo, None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR)  # 20 megapixels
    at = start()
    analyze(at, [("huge.png", png(big))])
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
    at = start(roles=("signer", "model_admin"))  # who may try a model that is not active
    assert at.selectbox(key="model").options == ["tiny (active)", "tiny-b"]
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


def test_a_new_analysis_says_which_unsaved_sample_it_replaced(db, demo_png):
    at = start()
    analyze(at, [("field.png", demo_png)])
    first = session_of(at).sample_id
    at.button(key="try_sample").click().run()
    replaced = [i.value for i in at.info if "was not saved, was replaced by" in i.value]
    assert replaced == [f"Sample {first}, which was not saved, was replaced by "
                        f"{session_of(at).sample_id}; analyse its images again to get it back."]  # fmt: skip
    save_case(at)  # a saved sample is in the case list: replacing it loses nothing
    go(at, "analyze")
    analyze(at, [("field.png", demo_png)])
    assert not [i for i in at.info if "was not saved" in i.value]


def test_the_upload_box_starts_empty_after_an_analysis_and_a_change_of_mode(db, demo_png):
    """One sample's files never join the next one's unseen (a field among single cells)."""
    at = start()
    analyze(at, [("field.png", demo_png)])
    (uploader,) = at.file_uploader
    assert not uploader.value and at.button(key="analyze").disabled
    uploader.set_value([("field.png", demo_png, "image/png")]).run()
    assert not at.button(key="analyze").disabled
    at.radio(key="mode").set_value("cells").run()
    (uploader,) = at.file_uploader
    assert not uploader.value and at.button(key="analyze").disabled


def test_more_fields_are_added_to_the_open_case_keeping_its_labels(db, demo_png, monkeypatch):
    """The count's hint asks for more fields; they go into the case under review, not into a
    second case under the same sample id."""
    from leukemia_core.synthetic import make_smear

    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="S-MORE")
    session = session_of(at)
    first = keys_labelled(at, "uncertain")[0]
    relabel(at, first, "blast")
    n_cells = len(session.cells)
    go(at, "analyze")
    second = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=3).image
    (uploader,) = at.file_uploader
    uploader.set_value([("second.png", png(second), "image/png")]).run()
    at.button(key="add_to_case").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert any("added to S-MORE" in s.value for s in at.success)
    now = session_of(at)
    assert now.case_id == session.case_id and [f.name for f in now.fields] == ["field.png",
                                                                                 "second.png"]  # fmt: skip
    assert len(now.cells) > n_cells
    field, cell = (int(x) for x in first.split("_")[1:])
    assert now.cell(field, cell).label == "blast"  # the review so far is kept
    record = CaseStore(db).load_case(session.case_id)
    assert record.audit[-1].action == "fields added" and record.altered == ()
    assert len(CaseStore(db).list_cases("S-MORE")) == 1  # one case, not two
    assert not any("review queue" in w.value for w in at.warning)
    # the same picture again: refused, said at the top of the page (it was drawn a screen down)
    (uploader,) = at.file_uploader
    uploader.set_value([("second.png", png(second), "image/png")]).run()
    at.button(key="add_to_case").click().run()
    assert any("Nothing was added to S-MORE" in e and "holds already" in e for e in errors(at))
    assert len(session_of(at).fields) == 2
    # a field that makes the sample out of domain: the user is told every cell goes to review
    from leukemia_core.domain import DomainAssessment
    from leukemia_core.labellers import ModelLabeller

    monkeypatch.setattr(ModelLabeller, "assess", lambda self, s: DomainAssessment(3.0, 1.5, len(s)))
    third = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=4).image
    (uploader,) = at.file_uploader
    uploader.set_value([("third.png", png(third), "image/png")]).run()
    at.button(key="add_to_case").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert any("every unreviewed cell of the case is now in the review queue" in w.value
               for w in at.warning)  # fmt: skip
    assert any("**third.png**" in w.value and "differ from the training data" in w.value
               for w in at.warning)  # fmt: skip
    assert all(c.label in ("uncertain", "border") for c in session_of(at).cells
               if not c.reviewed)  # fmt: skip
    go(at, "counts")  # the counts page showed the field's row with no flag
    table = at.table[0].value
    assert table.loc[3, "Scope"] == "Field 3: third.png"
    assert table.loc[3, "Checks"] == "unlike the training data" and table.loc[0, "Checks"] == "—"
    assert any("differ from the training data" in w.value for w in at.warning)


def test_model_details_say_what_a_cell_gets_on_each_side_of_the_review_band():
    """'blast at p ≥ 0.13, uncertain 0.02–0.39' read wrong beside a cell of 0.38 left uncertain."""
    from ui.models import describe

    said = describe(read_config("lite0_blast_v2"))
    assert (
        "called blast at a calibrated probability of 0.39 or more and normal below 0.02; "
        "between the two (around the decision threshold 0.13) sent to review"
    ) in said
