"""Heatmaps, the out-of-domain warning, roles, reload, sign-off details and split/merge, driven
through AppTest by widget key.

Fixtures ``db``, ``app_models`` and ``demo_png`` are in conftest, helpers in apptest_kit.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from apptest_kit import (
    APP,
    REVIEWER,
    TIMEOUT_S,
    accept_all,
    analyze,
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
from conftest import log_in
from streamlit.testing.v1 import AppTest

from leukemia_core.models.writing import write_config
from leukemia_core.store import CaseStore
from leukemia_core.synthetic import make_demo_smear
from ui.state import DRAWN_CUT_KEY
from ui.workspace import CURRENT_KEY, CUT_WORDS, ONE_BY_ONE, SHOWN_KEY, decision_button_key


@pytest.fixture(autouse=True)
def _apptest_runs_the_navigation_script(apptest_navigation):
    """Every page test here runs the app's navigation (see conftest.apptest_navigation)."""


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
    mirrored = png(np.ascontiguousarray(make_demo_smear().image[:, ::-1]))  # no cached maps
    analyze(at, [("heat.png", mirrored)])
    n_cells = len(session_of(at).cells)
    go(at, "review")

    def gallery_urls() -> list[str]:
        return [url for image in at.image if image.captions and "cell" in image.captions[0]
                for url in image.value]  # fmt: skip

    plain = gallery_urls()
    assert len(plain) == n_cells
    at.segmented_control(key=SHOWN_KEY).set_value("Heatmap").run()
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
    assert (
        at.segmented_control(key=SHOWN_KEY).value == "Heatmap"
        and at.slider(key="gradcam_opacity").value == 0.8
    )

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


def action_box(at: AppTest):
    """The outline editor's Action box (its key changes with every applied action)."""
    (box,) = [b for b in at.selectbox if b.label == "Action"]
    return box


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
    assert any(c.startswith("**tiny-ood**: ") for c in outside)  # the name a picker may cut
    assert not any(word in c for c in outside for word in ("sha256", "p ≥", "|dp|"))
    analyze(at, [("cast.png", png(cast))])
    warnings = [w.value for w in at.warning if "training data" in w.value]
    assert len(warnings) == 1 and "These cells differ from the training data" in warnings[0]
    assert "review every cell" in warnings[0]
    session = session_of(at)
    assert session.domain.warned and metric(at, "Uncertain") == str(session.n_uncertain)
    assert metric(at, "Blasts") == "0" and session.count().n_counted == 0
    assert at.table[0].value["Unlike training data"].tolist() == ["yes"]
    save_case(at)
    assert any("differ from the training data" in w.value for w in at.warning)  # review page
    assert CaseStore(tmp_path / "cases.sqlite3").load_case(session.case_id).domain.warned

    # a field like the training data in a sample that is not: its row says why it is reviewed
    at = start()
    shifted = np.roll(cast, 7, axis=1)  # another field of the cast smear (not the same pixels)
    analyze(at, [("cast.png", png(cast)), ("cast-2.png", png(shifted)), ("field.png", demo_png)])
    assert session_of(at).domain.warned
    assert at.table[0].value["Unlike training data"].tolist() == [
        "yes",
        "yes",
        "no, but the sample is",
    ]

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
    details_box(again, "comment", case_id, "open").input("Repeat with a fresh smear").run()
    details_box(again, "patient", case_id, "open").input("MRN\n77").run()
    again.button(key="save_comment").click().run()
    assert any("one line of at most 64" in e for e in errors(again))  # refused, nothing kept
    assert CaseStore(db).load_case(case_id).patient_id == ""
    details_box(again, "patient", case_id, "open").input("MRN-77").run()
    again.button(key="save_comment").click().run()
    assert not errors(again)
    record = CaseStore(db).load_case(case_id)
    assert (record.comment, record.patient_id) == ("Repeat with a fresh smear", "MRN-77")
    assert [a.action for a in record.audit[-2:]] == ["comment", "patient id"]
    go(again, "cases")
    again.text_input(key="case_search").input("mrn-7").run()
    assert list(again.table[0].value["Patient"]) == ["MRN-77"]
    go(again, "report")
    html = downloads[f"RELOAD-1_v1_draft_{case_id[:8]}_report.html"].decode()
    assert "Repeat with a fresh smear" in html and "<td>Patient id</td><td>MRN-77</td>" in html


def test_signing_keeps_unsaved_details_and_the_next_sample_gets_its_own_id(db, demo_png):
    at = start()
    at.text_input(key="sample_id").input("ACC-7").run()
    analyze(at, [("field.png", demo_png)])
    assert session_of(at).sample_id == "ACC-7"
    assert at.text_input(key="sample_id").value == ""  # the box is for the next sample
    (note,) = [t.value for t in at.success if "the results are below" in t.value]
    assert note.startswith("Sample ACC-7: ") and not at.toast  # a box: a toast hid figures
    save_case(at)
    case_id = session_of(at).case_id
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    accept_all(at)
    # typed on the Case page but never saved with "Save for the report": signing keeps them
    go(at, "case")
    details_box(at, "patient", case_id, "open").input("MRN-9").run()
    details_box(at, "comment", case_id, "open").input("Signed straight away").run()
    assert any("Signing also saves" in c.value for c in at.main.caption)
    at.button(key="sign").click().run()
    assert not errors(at)
    record = CaseStore(db).load_case(case_id)
    assert record.is_signed
    assert (record.patient_id, record.comment) == ("MRN-9", "Signed straight away")
    # and the signed page shows what was signed, in read-only boxes
    signed_box = details_box(at, "comment", case_id, "signed")
    assert signed_box.value == "Signed straight away" and signed_box.disabled
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


def details_box(at, kind: str, case_id: str, status: str):
    """The Case page's patient id or comment box (keyed by case, status and stored details)."""
    boxes = at.text_area if kind == "comment" else at.text_input
    return next(b for b in boxes if b.key.startswith(f"case_{kind}_{case_id}_{status}_"))


def test_logout_takes_the_case_out_of_the_address(db, demo_png):
    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="OUT-1")
    assert "case" in at.query_params
    at.button(key="logout").click().run()
    assert "case" not in at.query_params  # the next account to log in here starts clean
    assert [i.value for i in at.info] == ["You are logged out."]
    assert any("research use only" in c.value for c in at.caption)
    again = log_in(at, "Dr. Next", ("signer",)).run()
    assert "review_session" not in again.session_state or session_of(again) is None


def test_a_second_signer_signs_details_the_first_one_saw_or_signs_first(db, demo_png, monkeypatch):
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
    details_box(second, "comment", case_id, "open").input("Added after the first signature").run()
    assert second.button(key="sign").disabled  # not signed in passing: saved (and seen) first
    assert any("before the second signature" in c.value for c in second.main.caption)
    second.button(key="save_comment").click().run()
    record = CaseStore(db).load_case(case_id)  # the first signer did not see the new comment
    assert record.first_signed_by is None and record.audit[-1].action == "first signature withdrawn"
    second.button(key="sign").click().run()
    assert CaseStore(db).load_case(case_id).first_signed_by == "Dr. Second"
    go(at, "case").button(key="sign").click().run()  # the first signer signs what is there now
    record = CaseStore(db).load_case(case_id)
    assert record.is_signed and record.signed_by == REVIEWER
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
    go(at, "review")  # the gallery: no cell open, so the editor starts at the flagged clump
    (picked,) = [b for b in at.selectbox if str(b.key).startswith("outline_cell_0_")]
    assert picked.value == clump.cell_id  # (it opened on a border cell: "Pick another cell")
    go(at, "review", view=ONE_BY_ONE)
    at.session_state[CURRENT_KEY] = clump.key  # as a click on its number in the field view does
    at.run()
    (picked,) = [b for b in at.selectbox if str(b.key).startswith("outline_cell_0_")]
    assert picked.value == clump.cell_id  # the outline editor starts at the open cell
    action_box(at).set_value("Split into 3 cells").run()
    at.button(key="outline_apply_0").click().run()
    assert not at.exception and not errors(at), errors(at)
    session = session_of(at)
    pieces = [c for c in session.cells if c.origin == f"split of {clump.cell_id}"]
    assert len(pieces) == 3 and len(session.cells) == n_before + 2
    assert at.session_state[CURRENT_KEY] == pieces[0].key  # review goes on with the pieces
    assert any(f"Cell {clump.cell_id} split into cells" in s.value for s in at.success)
    assert action_box(at).value is None  # chosen afresh: no repeat split
    assert at.button(key="outline_apply_0").disabled
    at.run()  # the next click: still nothing chosen (the browser kept a popped box's value)
    assert action_box(at).value is None and at.button(key="outline_apply_0").disabled
    # the pieces wait side by side: labelling one leads to the next
    at.button(key=decision_button_key("blast", pieces[0].key)).click().run()
    assert at.session_state[CURRENT_KEY] == pieces[1].key
    assert all(c.blast_probability is not None for c in pieces)  # classified like the others
    stored = {c.key: c for c in CaseStore(db).load_case(session.case_id).cells}
    assert all(stored[c.key].overlay is not None for c in pieces)  # Grad-CAM for the report
    # The pieces enter the count (or the review queue) at once: two more cells in the tally.
    assert shown(at) == before + 2
    go(at, "case")
    (trail,) = at.dataframe
    assert "split" in trail.value.to_string()
    go(at, "review")
    (picked,) = [b for b in at.selectbox if str(b.key).startswith("outline_cell_0_")]
    picked.set_value(pieces[0].cell_id).run()
    action_box(at).set_value("Undo the split or merge that made it").run()
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
    assert action_box(at).value == CUT_WORDS
    at.button(key="outline_apply_0").click().run()
    assert not at.exception and not errors(at), errors(at)
    cut_out, rest = [c for c in session_of(at).cells if c.origin == f"split of {clump.cell_id}"]
    assert cut_out.mask()[549 - cut_out.bbox[1], 976 - cut_out.bbox[0]]
    assert rest.mask()[467 - rest.bbox[1], 934 - rest.bbox[0]]
    assert DRAWN_CUT_KEY not in at.session_state and at.session_state[CURRENT_KEY] == cut_out.key
    assert shown(at) == before + 1
    # Merge the two pieces back: the nearest cell is offered first (cell 1, a far border cell,
    # was, and the merge was refused off screen)
    action_box(at).set_value("Merge with another cell").run()
    (with_box,) = [b for b in at.selectbox if str(b.key).startswith("outline_other_0_")]
    assert with_box.value == rest.cell_id
    at.button(key="outline_apply_0").click().run()
    assert not at.exception and not errors(at), errors(at)
    (merged,) = [c for c in session_of(at).cells if c.origin.startswith("merge of")]
    assert merged.origin == f"merge of {cut_out.cell_id}+{rest.cell_id}"
    assert shown(at) == before
    accept_all(at)
    for key in keys_labelled(at, "uncertain"):
        relabel(at, key, "normal")
    go(at, "case")
    at.button(key="sign").click().run()
    assert session_of(at).is_signed, errors(at)
    go(at, "review", view=ONE_BY_ONE)
    at.session_state[CURRENT_KEY] = merged.key  # a cell inside the field (a border cell has none)
    at.run()
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


def test_a_warned_sample_with_warned_fields_gets_one_warning_box_naming_them():
    """Two boxes for one finding pushed the cell under review below the fold at 800 px."""

    def page():
        from types import SimpleNamespace as NS

        from ui.common import domain_warning

        field = lambda name, warned: NS(name=name, domain=NS(warned=warned))  # noqa: E731
        session = NS(has_model=True, cells=[object()],
                     domain=NS(warned=True, message="These cells differ from the training data."),
                     fields=[field("a.png", True), field("b.png", False)])  # fmt: skip
        domain_warning(session)

    at = AppTest.from_function(page).run()
    (box,) = [w.value for w in at.warning]
    assert box.startswith("These cells differ") and "The fields least like it: a.png." in box
    assert "b.png" not in box
