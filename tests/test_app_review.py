"""Review, counts, sign-off, reopening and export, driven through AppTest by widget key.

Fixtures ``db``, ``app_models`` and ``demo_png`` are in conftest, helpers in apptest_kit.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from apptest_kit import (
    REVIEWER,
    accept_all,
    analyze,
    errors,
    go,
    keys_labelled,
    metric,
    relabel,
    relabel_keys,
    save_case,
    session_of,
    start,
)

from leukemia_core.report import RESEARCH_USE_STATEMENT
from leukemia_core.review import Review
from leukemia_core.store import CaseStore
from ui.workspace import CURRENT_KEY, ONE_BY_ONE, decision_button_key


@pytest.fixture(autouse=True)
def _apptest_runs_the_navigation_script(apptest_navigation):
    """Every page test here runs the app's navigation (see conftest.apptest_navigation)."""


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
    assert any(f"Saving records you, **{REVIEWER}**," in c.value for c in at.main.caption)
    assert session_of(at).case_id is None

    save_case(at, sample_id="S-0042")
    session = session_of(at)
    assert session.case_id and session.status == "open" and session.sample_id == "S-0042"
    assert not at.segmented_control(key=uncertain[0]).disabled

    relabel(at, uncertain[0], "blast")  # one click: every count follows
    # a click on the model's call shown on an unreviewed card accepts it (a second click on a
    # segmented control deselects: the label stays)
    normal = keys_labelled(at, "normal")[0]
    f, c = map(int, normal.removeprefix("relabel_").split("_"))
    assert not session_of(at).cell(f, c).reviewed
    at.segmented_control(key=normal).set_value(None).run()
    assert session_of(at).cell(f, c).reviewed and session_of(at).cell(f, c).label == "normal"
    assert at.segmented_control(key=normal).value == "normal" and not errors(at)
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
    said = [w.value for w in at.warning if w.value.startswith("Before signing")]
    assert len(said) == 1 and "1 of them still uncertain" in said[0]  # one warning, not two

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
    # the gallery says so too (only the one-cell view did), and its first section no longer
    # asks for labels it has
    assert any(s.value.startswith("Every cell is reviewed") for s in at.success)
    assert any(h.value.startswith("Left uncertain by the model (2; none still to label)")
               for h in at.subheader)  # fmt: skip
    go(at, "counts")
    assert not any(i.value.startswith("Provisional: ") for i in at.info)
    go(at, "case")
    # While the signer looks at the page, another reviewer changes a cell in another tab: the
    # signature is refused, the page shows the change, and the next click signs what it shows.
    other = next(c for c in session.cells if c.label == "normal")
    CaseStore(db).relabel_cell(session.case_id, *other.key, "excluded", reviewer="B. Other")
    at.button(key="sign").click().run()
    assert any("changed since you read it" in e for e in errors(at))
    assert not CaseStore(db).load_case(session.case_id).is_signed
    assert session_of(at).cell(*other.key).label == "excluded"
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
                       ("relabel", "B. Other", "normal", "excluded"),
                       ("signed", REVIEWER, None, None)]  # fmt: skip
    go(at, "review")
    assert all(at.segmented_control(key=k).disabled for k in relabel_keys(at))  # frozen
    go(at, "review", view=ONE_BY_ONE)
    assert any("signed: every cell was reviewed" in c.value for c in at.main.caption)
    assert not any("not reviewed yet" in c.value for c in at.main.caption)
    go(at, "review")

    go(at, "report")
    assert not errors(at)
    stem = f"S-0042_v1_signed_{session_of(at).case_id[:8]}"  # the signed copy, never a draft
    html = downloads[f"{stem}_report.html"].decode()
    assert RESEARCH_USE_STATEMENT in html and f"Signed by {REVIEWER}" in html
    rows = list(csv.DictReader(io.StringIO(downloads[f"{stem}_cells.csv"].decode())))
    assert len(rows) == n_cells
    labels = {(int(r["field_index"]), int(r["cell_id"])): r["label"] for r in rows}
    assert labels == {c.key: c.label.value for c in session_of(at).cells}
    assert sum(r["changed_by_reviewer"] == "true" for r in rows) == 3  # with B. Other's
    document = json.loads(downloads[f"{stem}_case.json"])
    assert document["status"] == "signed" and document["counts"]["n_blasts"] == (
        start_count.n_blasts + 1)  # fmt: skip

    go(at, "case")
    at.button(key="reopen").click().run()  # not without a reason: it asks for one
    assert any("Say why you reopen it" in e for e in errors(at))
    assert session_of(at).is_signed and session_of(at).version == 1
    at.text_input(key="reopen_reason").input("second opinion on cell 3").run()
    at.button(key="reopen").click().run()
    assert not errors(at)
    reopened = session_of(at)
    assert "second opinion on cell 3" in CaseStore(db).load_case(reopened.case_id).audit[-1].note
    assert reopened.version == 2 and reopened.status == "open" and reopened.case_id != (
        record.case_id)  # fmt: skip
    old = CaseStore(db).load_case(record.case_id)
    assert old.is_signed and old.superseded_by.version == 2  # the signed version stays
    state_key = at.session_state  # reopen the old version's Case page: it says it was replaced
    state_key["review_session"] = Review.open(CaseStore(db), record.case_id)
    for page in ("case", "review", "counts", "report"):  # wherever the old version is shown
        go(at, page)
        assert any("Superseded: reopened as version 2" in w.value for w in at.warning), page
        assert not any("Reopen it as a new version" in s.value for s in at.success), page
    go(at, "case")
    assert not [b for b in at.button if b.key == "reopen"]
    state_key["review_session"] = Review.open(CaseStore(db), reopened.case_id)
    go(at, "review")
    relabel(at, uncertain[0], "normal")
    assert CaseStore(db).load_case(reopened.case_id).counts().n_blasts == start_count.n_blasts


def test_one_cell_at_a_time_labels_accepts_moves_on_and_never_reshuffles(db, demo_png):
    """The keyboard workspace (issue 13): its buttons carry B/N/W/X/Space/arrows; a decision
    moves on to the next cell waiting for review; the queue keeps its order throughout."""
    at = start()
    analyze(at, [("field.png", demo_png)])
    go(at, "review", view=ONE_BY_ONE)
    shown = at.session_state[CURRENT_KEY]
    shortcuts = {b.key: b.proto.shortcut for b in at.button if b.key and b.key.startswith(
        ("decide_", "workspace_"))}  # fmt: skip
    buttons = {label: decision_button_key(label, shown)
               for label in ("blast", "normal", "not_wbc", "excluded", "accept")}  # fmt: skip
    assert shortcuts == {buttons["blast"]: "b", buttons["normal"]: "n", buttons["not_wbc"]: "w",
                         buttons["excluded"]: "x", buttons["accept"]: "space",
                         "workspace_previous": "left", "workspace_next": "right"}  # fmt: skip
    assert at.button(key=buttons["blast"]).disabled  # nothing is recorded before saving
    save_case(at, sample_id="S-KEYS")
    go(at, "review", view=ONE_BY_ONE)
    session = session_of(at)
    queue = session.queue()
    first = at.session_state[CURRENT_KEY]
    assert first == queue[0] and session.cell(*first).label == "uncertain"  # uncertain first
    line = f"**Cell {first[1]}** of field 1 (field.png) · P(blast) "  # named as in the gallery
    assert any(m.value.startswith(line) for m in at.main.markdown)
    assert at.button(key=decision_button_key("accept", first)).disabled  # needs a call
    # A press sent while the page still showed this cell, after the workspace had moved on
    # (a second key press during the redraw), is dropped: it labelled the next cell, which
    # nobody had seen, and the signed report carried that label.
    label_before = session.cell(*queue[1]).label
    at.session_state[CURRENT_KEY] = queue[1]
    at.button(key=decision_button_key("blast", first)).click().run()
    assert at.session_state[CURRENT_KEY] == queue[1]
    assert session.cell(*queue[1]).label == label_before and not session.cell(*queue[1]).reviewed
    assert session.cell(*first).label == "uncertain" and not session.cell(*first).reviewed
    at.session_state[CURRENT_KEY] = first
    at.run()
    at.button(key=decision_button_key("blast", first)).click().run()
    assert session.cell(*first).label == "blast" and session.cell(*first).reviewed
    assert at.session_state[CURRENT_KEY] == queue[1]  # moved on
    at.button(key="workspace_previous").click().run()
    assert at.session_state[CURRENT_KEY] == first
    at.button(key="workspace_next").click().run()
    reviewed = 1
    while session.n_unreviewed:
        cell = session.cell(*at.session_state[CURRENT_KEY])
        assert not cell.reviewed
        decision = "normal" if cell.label == "uncertain" else "accept"
        at.button(key=decision_button_key(decision, cell.key)).click().run()
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
    beta, alpha_blasts = at.table[0].value["Blasts"].tolist()
    waiting = session_of(second).n_unreviewed
    assert waiting and beta.endswith(f"provisional: {waiting} not reviewed")  # nobody looked yet
    assert "provisional" not in alpha_blasts  # signed: every cell reviewed
    at.text_input(key="case_search").input("alpha").run()
    assert at.table[0].value["Sample"].tolist() == ["ALPHA-1"]
    assert at.selectbox(key="case_pick").value == alpha.case_id
    at.button(key="open_case").click().run()
    opened = session_of(at)
    assert opened.case_id == alpha.case_id and opened.is_signed
    assert opened.count() == session_of(first).count()
    assert [c.key for c in opened.cells] == [c.key for c in alpha.cells]

    # reopening is a signer's: a reviewer sees the button greyed, with no reason box to fill
    tech = go(start("T. Tech", roles=("reviewer",)), "cases")
    tech.selectbox(key="case_pick").set_value(alpha.case_id).run()
    assert tech.button(key="reopen_case").disabled
    assert "needs the signer role: ask a signer" in tech.button(key="reopen_case").help
    assert "reopen_case_reason" not in [w.key for w in tech.text_input]
    at.text_input(key="reopen_case_reason").input("the patient id was wrong").run()
    at.button(key="reopen_case").click().run()
    assert not errors(at)
    reopened = session_of(at)
    assert reopened.version == 2 and reopened.status == "open"
    # the page ran again: its list, picker and sidebar show the new version, the reason is gone
    assert any("reopened as version 2" in s.value for s in at.success)
    assert at.table[0].value["Status"].tolist()[:1] == [
        "v2 open, every cell reviewed: ready to sign"
    ]
    assert at.selectbox(key="case_pick").value == reopened.case_id
    assert "reopen_case_reason" not in [w.key for w in at.text_input]  # v2 is open: no reopen
    assert any("ALPHA-1" in c.value and c.value.endswith("· open") for c in at.sidebar.caption)
    go(at, "review")
    assert not errors(at)
    assert not at.segmented_control(key=relabel_keys(at)[0]).disabled
    go(at, "cases")
    listed = at.table[0].value
    alpha_rows = listed[listed["Sample"] == "ALPHA-1"]["Status"].tolist()
    assert alpha_rows == ["v2 open, every cell reviewed: ready to sign", "v1 signed (reopened)"]


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
    cell = cv2.imread(str(Path(__file__).resolve().parents[1] / "samples/cells/UID_3_1_1_all.png"))
    # 45 pictures of one cut-out cell, each moved by a pixel (the same picture twice would be
    # analysed once)
    files = [(f"cell-{i:02d}.png", cv2.imencode(".png", np.roll(cell, i, axis=1))[1].tobytes())
             for i in range(45)]  # fmt: skip
    at = start()
    at.radio(key="mode").set_value("cells").run()
    analyze(at, files)
    assert metric(at, "White cells found") == "45" and metric(at, "Uncertain") == "45"
    go(at, "review")
    assert len(relabel_keys(at)) == 40  # the first page of the uncertain queue
    at.number_input(key="page_uncertain").set_value(2).run()
    assert relabel_keys(at) == [f"relabel_{i}_1" for i in range(40, 45)]
    # Hand-picked cells are no differential: their reading names no threshold and asks for no
    # more fields, and says it comes before review while cells wait for a person
    save_case(at)
    for key in relabel_keys(at)[:3]:
        relabel(at, key, "blast")
    relabel(at, relabel_keys(at)[3], "normal")
    go(at, "analyze")
    shown = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning)
    assert "With 41 cells still to review: 3 of 4 single-cell images counted are blasts" in shown
    assert "WHO" not in shown and "more fields" not in shown


def test_accounts_without_the_reviewer_role_are_told_what_to_ask_for(db, demo_png):
    at = start("M. Models", ("model_admin",))  # may analyze, not save or review
    analyze(at, [("field.png", demo_png)])
    go(at, "review")
    assert "review_save_case" not in [b.key for b in at.button]  # no button that is refused
    assert any("saving and reviewing a case needs the reviewer role (an account administrator "
               "gives it on the Accounts page)" in i.value for i in at.info)  # fmt: skip
    boss = go(start("A. Boss", ("admin",)), "review")  # an admin is told to give it themself
    assert any("needs the reviewer role (give it to your account on the Accounts page)"
               in e.value for e in boss.error)  # fmt: skip


def test_quality_warnings_are_in_full_on_analyze_and_folded_on_review(db, demo_png):
    field = cv2.imdecode(np.frombuffer(demo_png, np.uint8), cv2.IMREAD_COLOR)
    blurred = cv2.imencode(".png", cv2.GaussianBlur(field, (0, 0), 8))[1].tobytes()
    at = start()
    analyze(at, [("blurred.png", blurred)])
    (field,) = session_of(at).fields
    assert field.quality  # out of focus
    shown = [w.value for w in at.warning if w.value.startswith("**blurred.png**")]
    assert len(shown) == len(field.quality)
    assert all(text.endswith("Every cell of this field was sent to review.") for text in shown)
    go(at, "review", view=ONE_BY_ONE)  # one closed box: the cell under review stays in sight
    assert not [w for w in at.warning if w.value.startswith("**blurred.png**")]
    (box,) = [e for e in at.expander if "quality warning" in e.label]
    assert (
        box.label.startswith(f"{len(field.quality)} quality warning") and "blurred.png" in box.label
    )
    assert [m.value for m in box.markdown] == [
        f"**blurred.png**: {w.message}" for w in field.quality
    ]


@pytest.mark.parametrize("change", ["disabled", "demoted", "idle"])
def test_a_click_after_the_account_changed_records_nothing(db, demo_png, change):
    """Widget callbacks run before the login check: an account disabled or stripped of the
    reviewer role by an admin, or idle past the timeout, still accepted cells once."""
    from datetime import timedelta

    from leukemia_core.accounts import Accounts

    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="S-GATE")
    case_id = session_of(at).case_id
    before = CaseStore(db).load_case(case_id).audit
    accounts = Accounts()
    if change == "disabled":
        accounts.set_disabled(REVIEWER, True)
    elif change == "demoted":
        accounts.set_roles(REVIEWER, ["model_admin"])
    else:
        at.session_state["login"].last_seen -= timedelta(hours=2)
    keys = [b.key for b in at.button if b.key and b.key.startswith("accept_")]
    at.button(key=keys[0]).click().run()
    assert not at.exception, at.exception
    assert CaseStore(db).load_case(case_id).audit == before  # nothing recorded in her name
    if change != "demoted":
        assert [t.value for t in at.title] == ["Log in"]
    else:
        assert any("may not" in e for e in errors(at)), errors(at)


def test_a_repeat_of_a_call_already_written_moves_on_without_a_changed_error(db, demo_png):
    """Two presses sent together: the second ran on the page's stale view and said "changed by
    you since you read it", leaving the page on the cell just labelled."""
    at = start()
    analyze(at, [("field.png", demo_png)])
    save_case(at, sample_id="S-TWICE")
    go(at, "review", view=ONE_BY_ONE)
    session = session_of(at)
    first = at.session_state[CURRENT_KEY]
    # the first press, written by the same account before this page's second press ran
    CaseStore(db).relabel_cell(session.case_id, *first, "blast", reviewer=REVIEWER)
    at.button(key=decision_button_key("blast", first)).click().run()
    assert not errors(at), errors(at)
    assert at.session_state[CURRENT_KEY] != first and session.cell(*first).label == "blast"
    # a different call written meanwhile is still refused, with who made it
    second = at.session_state[CURRENT_KEY]
    CaseStore(db).relabel_cell(session.case_id, *second, "not_wbc", reviewer="Dr. Other")
    at.button(key=decision_button_key("normal", second)).click().run()
    assert any("since you read it" in e for e in errors(at))
    assert at.session_state[CURRENT_KEY] == second
    # ... and so is an Accept of the label shown, when another label was written meanwhile
    third = next(k for k in session.queue() if k not in (first, second)
                 and session.cell(*k).label != "uncertain")  # fmt: skip
    at.session_state[CURRENT_KEY] = third
    at.run()
    shown = session.cell(*third).label
    other = "excluded" if shown != "excluded" else "not_wbc"
    CaseStore(db).relabel_cell(session.case_id, *third, other, reviewer="Dr. Other")
    at.button(key=decision_button_key("accept", third)).click().run()
    assert any("since you read it" in e for e in errors(at))
    assert at.session_state[CURRENT_KEY] == third
