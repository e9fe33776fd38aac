"""leukemia_core.review: a sample analysed for review, the workflow (save, relabel, accept, sign,
reopen, refresh), counts and the case-record round trip."""

from __future__ import annotations

import io
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import EveryCellABlast
from PIL import Image

from leukemia_core.accounts import PermissionDeniedError, User, parse_roles
from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel, summarize_labels
from leukemia_core.cropping import crop_cells
from leukemia_core.domain import DomainAssessment
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import prepare_field, read_for_analysis
from leukemia_core.labellers import NO_MODEL
from leukemia_core.models.folder import load_model
from leukemia_core.pipeline import MODE_CELLS, ImageFailure, analyze
from leukemia_core.report import case_report_html
from leukemia_core.review import Review, ReviewError
from leukemia_core.segmentation import segment_wbc
from leukemia_core.store import (
    CaseChangedError,
    CaseSignedError,
    CaseStore,
    SignOffBlockedError,
)
from leukemia_core.synthetic import make_demo_smear, make_smear


@pytest.fixture(scope="module")
def classifier(tiny_models_dir):
    return Classifier(load_model("tiny", tiny_models_dir))


@pytest.fixture(scope="module")
def demo():
    return make_demo_smear()


@pytest.fixture(scope="module")
def fields(demo):
    second = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=3)
    return [prepare_field(demo.image, "demo.png"), prepare_field(second.image, "second.png")]


def account(name: str, roles=("signer",)) -> User:
    return User(name.strip(), parse_roles(roles))


def analyze_sample(images, classifier, *, sample_id, **kwargs) -> Review:
    return Review(analyze(images, classifier, **kwargs), sample_id=sample_id)


@pytest.fixture
def store(tmp_path):
    return CaseStore(tmp_path / "cases.sqlite3")


@pytest.fixture
def session(fields, classifier):
    return analyze_sample(fields, classifier, sample_id="S-1")


@pytest.fixture
def saved(session, store):
    session.save(store, user=account("Tech"))
    return session


def test_every_segmented_cell_is_in_the_review_with_the_models_call(session, fields, classifier):
    assert session.model_name == "tiny" and len(session.model_checksum) == 64
    assert session.calibration == classifier.model.config.decision_settings()
    assert (
        session.calibration["test_time_views"] == 1
        and session.calibration["stain_normalisation"] == "none"
    )
    assert [f.name for f in session.fields] == ["demo.png", "second.png"]
    for field, prepared in zip(session.fields, fields, strict=True):
        segmentation = segment_wbc(prepared.rgb)
        cells = session.field_cells(field.index)
        assert [c.cell_id for c in cells] == list(range(1, segmentation.n_cells + 1))
        border = {c.cell_id for c in cells if c.model_label == CellLabel.BORDER}
        assert border == set(segmentation.border_cell_ids)
    crops = [c.crop for c in session.cells if c.model_label != CellLabel.BORDER]
    probabilities = classifier.probabilities(crops)
    inside = [c for c in session.cells if c.model_label != CellLabel.BORDER]
    assert [c.blast_probability for c in inside] == pytest.approx(list(probabilities), abs=1e-6)
    for cell in session.cells:
        assert cell.crop.shape == (300, 300, 3) and session.view(cell).shape == (192, 192, 3)
        assert len(cell.outline) >= 4


def test_the_model_is_named_in_words_in_the_record_and_the_report(saved, store, classifier):
    described = classifier.model.config.description
    assert described.startswith("tiny: ") and "network" in described
    record = store.load_case(saved.case_id)
    assert record.thresholds["model_description"] == described == record.model_words
    assert f"<td>{described}</td>" in case_report_html(record)
    assert Review.from_record(record).thresholds()["model_description"] == described


def test_counts_follow_the_labels_and_a_relabel_changes_every_count_at_once(saved, store):
    session = saved
    labels = [c.label for c in session.cells]
    assert session.count() == summarize_labels(labels)
    assert session.model_count() == session.count()
    assert session.field_counts() == (session.count(0), session.count(1))
    target = session.field_cells(0)[0]
    before = session.count()
    field_before = session.count(0)
    assert session.relabel(store, 0, target.cell_id, "blast", user=account(" Dr. A "))
    change = store.load_case(session.case_id).audit[-1]
    assert change.to_label == "blast" and change.reviewer == "Dr. A"
    assert change.from_label == target.model_label.value
    assert session.cell(*target.key).reviewed and session.audit_token == change.audit_id
    after = session.count()
    newly_counted = target.model_label not in (CellLabel.BLAST, CellLabel.NORMAL)
    assert after.n_blasts == before.n_blasts + (target.model_label != CellLabel.BLAST)
    assert after.n_counted == before.n_counted + newly_counted
    assert session.count(0).n_blasts == field_before.n_blasts + (target.model_label != "blast")
    assert session.count(1) == summarize_labels([c.label for c in session.field_cells(1)])
    assert session.model_count() == before  # what the model said does not move
    assert not session.relabel(store, 0, target.cell_id, "blast", user=account("Dr. A"))  # no-op
    relabels = [a for a in store.load_case(session.case_id).audit if a.action == "relabel"]
    assert len(relabels) == 1 and session.n_changed == 1


@pytest.mark.parametrize(
    ("args", "reviewer", "match"),
    [
        ((0, 1, "blast"), "A as text", "Only a logged-in account may review"),
        ((0, 1, "blast"), "Dr. M", "Dr. M \\(model_admin\\) may not review.*needs the reviewer"),
        ((0, 999, "blast"), "A", "no cell 999 in field 0"),
        ((5, 1, "blast"), "A", "no cell 1 in field 5"),
        ((0, 1, "lymphoma"), "A", "'lymphoma' is not a cell label; expected one of: blast"),
        ((0, 1, "uncertain"), "A", "'uncertain' is set only by the machine"),
        ((0, 1, "Border "), "A", "'border' is set only by the machine"),
    ],
)
def test_bad_relabels_say_what_is_wrong_and_write_nothing(saved, store, args, reviewer, match):
    token = saved.audit_token
    user = {"A as text": "A", "Dr. M": account("Dr. M", ("model_admin",))}.get(reviewer)
    with pytest.raises(LeukemiaCoreError, match=match):
        saved.relabel(store, *args, user=user or account(reviewer))
    assert store.last_audit_id(saved.case_id) == token


def test_only_signers_sign_and_reopen(session, store):
    reviewer = account("R. Eviewer", ("reviewer",))
    session.save(store, user=reviewer)
    for cell in session.cells:
        if cell.label == CellLabel.UNCERTAIN:
            session.relabel(store, *cell.key, "normal", user=reviewer)
    session.accept(store, [c.key for c in session.cells], user=reviewer)
    with pytest.raises(PermissionDeniedError, match="may not sign and reopen cases"):
        session.sign(store, user=reviewer)
    assert not session.is_signed and store.load_case(session.case_id).status == "open"
    session.sign(store, user=account("S. Igner"))
    assert session.signed_by == "S. Igner"
    with pytest.raises(PermissionDeniedError):
        session.reopen(store, user=reviewer, reason="count again")


def test_nothing_is_relabelled_before_the_case_is_saved(session, store):
    with pytest.raises(ReviewError, match="Save the case first"):
        session.relabel(store, *session.cells[0].key, "blast", user=account("A"))
    assert session.count() == session.model_count() and store.list_cases() == []


def test_gallery_puts_the_uncertain_queue_first_and_sorts_by_probability(classifier, fields):
    analysis = analyze(fields, classifier)
    cells = list(analysis.cells)
    for i in (0, 1):  # the machine sends these two to review
        cells[i] = replace(cells[i], model_label="uncertain", label="uncertain")
    session = Review(replace(analysis, cells=tuple(cells)), sample_id="S-1")
    groups = session.groups()
    assert [g.key for g in groups] == ["uncertain", "blast", "normal", "left_out"]
    assert sum(len(g.cells) for g in groups) == len(session.cells)
    for group in groups:
        p = [c.blast_probability for c in group.cells]
        assert p == sorted(p, reverse=True)
    assert len(groups[0].cells) == session.n_uncertain >= 2
    assert {c.label for c in groups[3].cells} <= {"excluded", "not_wbc", "border"}
    queue = session.queue()
    assert queue == tuple(c.key for g in groups for c in g.cells if c.label != "border")
    n = len(groups[0].cells)
    assert queue[:n] == tuple(c.key for c in groups[0].cells)  # uncertain first


def test_cell_by_cell_decisions_keep_every_cell_in_its_place(classifier, fields, store):
    """A relabelled cell stays in its gallery section and queue place (the model's call), so the
    next cell never moves under the pointer; a decision is a relabel or an acceptance."""
    analysis = analyze(fields, classifier)
    calls = ("uncertain", "blast", "normal")  # the tiny model's calls, spread over the labels
    cells = tuple(c if c.label == "border" else replace(c, model_label=calls[i % 3],
                                                        label=calls[i % 3])
                  for i, c in enumerate(analysis.cells))  # fmt: skip
    saved = Review(replace(analysis, cells=cells), sample_id="S-1")
    ana = account("Ana")
    saved.save(store, user=ana)
    queue, sections = saved.queue(), [[c.key for c in g.cells] for g in saved.groups()]
    uncertain = [k for k in queue if saved.cell(*k).label == "uncertain"]
    counted = [k for k in queue if saved.cell(*k).label in ("blast", "normal")]
    with pytest.raises(ReviewError, match="uncertain, so there is no call to accept"):
        saved.decide(store, *uncertain[0], user=ana)
    assert saved.decide(store, *uncertain[0], "blast", user=ana)
    first = counted[0]
    other = "normal" if saved.cell(*first).label == "blast" else "blast"
    assert saved.decide(store, *first, other, user=ana)  # relabel
    assert saved.queue() == queue
    assert [[c.key for c in g.cells] for g in saved.groups()] == sections
    second = counted[1]
    assert saved.decide(store, *second, saved.cell(*second).label, user=ana)  # same: accept
    assert not saved.decide(store, *second, user=ana)  # already reviewed: nothing written
    waiting = [k for k in queue if saved.cell(*k).awaits_review]
    later = [k for k in waiting if queue.index(k) > queue.index(second)]
    assert saved.next_to_review(after=second) == (later or waiting)[0]  # in queue order, wrapping
    actions = [(a.action, a.cell_id) for a in store.load_case(saved.case_id).audit[1:]]
    expected = [("relabel", uncertain[0][1]), ("relabel", first[1]), ("reviewed", second[1])]
    assert actions == expected
    for key in queue:
        if saved.cell(*key).awaits_review:
            saved.decide(store, *key, "normal", user=ana)
    assert saved.n_unreviewed == 0 and saved.next_to_review() is None


def test_without_a_model_every_cell_awaits_the_reviewer(fields, store):
    session = analyze_sample(fields[:1], None, sample_id="S-2")
    assert session.model_name is None and not session.has_model
    assert {c.model_label for c in session.cells} <= {CellLabel.UNCERTAIN, CellLabel.BORDER}
    assert all(c.blast_probability is None for c in session.cells)
    assert session.count().n_counted == 0 and session.n_uncertain > 0
    session.save(store, user=account("A"))
    for cell in session.cells:
        session.relabel(store, *cell.key, "normal", user=account("A"))
    assert session.count().n_counted == len(session.cells) and session.n_uncertain == 0


def test_a_failing_image_is_reported_and_the_rest_analysed(fields, classifier):
    not_rgb = fields[0].__class__(np.zeros((40, 40), np.uint8), "grey.png", (40, 40))
    earlier = ImageFailure("notes.txt", "'notes.txt' is not an image file")
    session = analyze_sample([not_rgb, fields[1]], classifier, sample_id="S-3", failures=[earlier])
    assert [f.name for f in session.failures] == ["notes.txt", "grey.png"]
    assert "RGB" in session.failures[1].message
    assert [f.name for f in session.fields] == ["second.png"] and session.fields[0].index == 0


def test_a_field_without_cells_is_kept_with_its_note(classifier):
    blank = prepare_field(np.full((480, 640, 3), 230, np.uint8), "blank.png")
    session = analyze_sample([blank], classifier, sample_id="S-4")
    assert session.cells == () and len(session.fields) == 1
    # said once, by the field's quality warning (the segmentation's note said it again)
    (warning,) = session.fields[0].quality
    assert "No red cells could be made out" in warning.message
    assert not any("No red cells found" in note for note in session.fields[0].notes)
    assert session.count().percent is None


def test_single_cell_mode_gives_one_cell_per_image(demo, classifier):
    segmentation = segment_wbc(demo.image)
    x0, y0, x1, y1 = next(
        c.bbox for c in crop_cells(demo.image, segmentation) if not c.touches_border
    )
    crop = demo.image[max(0, y0 - 20) : y1 + 20, max(0, x0 - 20) : x1 + 20]
    cutout = np.zeros((200, 200, 3), np.uint8)
    cutout[60:140, 60:140] = (120, 60, 170)
    images = [prepare_field(crop, "context.png"), prepare_field(cutout, "cutout.png")]
    progress = []
    session = analyze_sample(
        images, classifier, sample_id="S-5", mode=MODE_CELLS,
        progress=lambda *args: progress.append(args),
    )  # fmt: skip
    assert session.mode == MODE_CELLS
    assert [(c.field_index, c.cell_id) for c in session.cells] == [(0, 1), (1, 1)]
    assert {args[2] for args in progress} >= {"cropping", "classifying", "counting"}
    assert session.cells[1].bbox == (60, 60, 140, 140)


def test_progress_reports_each_image_and_stage(fields, classifier):
    seen = []
    analyze_sample(fields, classifier, sample_id="S-6", progress=lambda *a: seen.append(a))
    assert {(a[0], a[1]) for a in seen} == {(0, 2), (1, 2)}
    assert [a[2] for a in seen if a[0] == 0][:1] == ["segmenting"]
    assert {a[2] for a in seen} >= {"segmenting", "cropping", "classifying", "counting"}


def test_case_record_round_trip_keeps_cells_labels_and_outlines(session, store):
    overlays = {session.cells[1].key: np.full((300, 300, 3), 7, np.uint8)}
    case_id = session.save(store, user=account("A"), overlays=overlays)
    session.relabel(store, *session.cells[0].key, "not_wbc", user=account("A"))
    record = store.load_case(case_id)
    assert record.thresholds["mode"] == "fields"
    assert record.thresholds["blast_percent_thresholds"] == [5.0, 20.0]
    assert record.model_counts() == session.model_count()  # stored labels start as the model's
    restored = Review.from_record(record)
    assert restored.case_id == case_id and restored.status == "open" and restored.version == 1
    assert [c.key for c in restored.cells] == [c.key for c in session.cells]
    assert restored.count() == session.count()
    for original, back in zip(session.fields, restored.fields, strict=True):
        assert np.array_equal(original.image, back.image)
    for original, back in zip(session.cells, restored.cells, strict=True):
        assert np.array_equal(original.crop, back.crop)
        assert back.blast_probability == pytest.approx(original.blast_probability)
        assert _iou(back.outline, original.outline, original.bbox) > 0.85
        assert (back.label, back.reviewed) == (original.label, original.reviewed)
    assert [c.key for c in restored.cells if c.overlay is not None] == [session.cells[1].key]
    # a change made elsewhere (another tab) is taken by refresh, by the exact audit token
    assert not restored.refresh(store)
    store.relabel_cell(case_id, *session.cells[2].key, "excluded", reviewer="B")
    assert restored.refresh(store) and session.refresh(store)
    assert restored.cell(*session.cells[2].key).label == CellLabel.EXCLUDED
    assert session.cell(*session.cells[2].key).label == CellLabel.EXCLUDED


def test_two_changes_that_cancel_out_elsewhere_are_still_seen(saved, store):
    """Counts alone would miss this (the old check): the token is the last audit id."""
    first, second = saved.cells[:2]
    saved.relabel(store, *first.key, "blast", user=account("A"))
    saved.relabel(store, *second.key, "normal", user=account("A"))
    counts = saved.count()
    # another tab swaps the two: every count stays the same, the labels do not
    store.relabel_cell(saved.case_id, *first.key, "normal", reviewer="B")
    store.relabel_cell(saved.case_id, *second.key, "blast", reviewer="B")
    assert saved.refresh(store)
    assert (saved.cell(*first.key).label, saved.cell(*second.key).label) == ("normal", "blast")
    assert saved.count() == counts and not saved.refresh(store)


def test_accepting_cells_marks_them_reviewed(fields, store):
    saved = analyze_sample(fields, EveryCellABlast(), sample_id="S-3")
    saved.save(store, user=account("Tech"))
    counted = [c for c in saved.cells if c.label != CellLabel.BORDER]  # border: never reviewed
    keys = [c.key for c in counted[:3]]
    assert saved.n_unreviewed == len(counted) and saved.provisional.startswith("Provisional:")
    assert saved.accept(store, keys, user=account("A")) == 3
    assert saved.accept(store, keys, user=account("A")) == 0
    assert saved.n_unreviewed == len(counted) - 3
    now, model = saved.count(), saved.model_count()  # accepting keeps every call
    assert (now.n_blasts, now.n_counted) == (model.n_blasts, model.n_counted) == (11, 11)
    saved.accept(store, [c.key for c in counted], user=account("A"))
    assert saved.n_unreviewed == 0 and saved.provisional is None


def test_an_uncertain_cell_is_decided_with_a_label_never_accepted_undecided(saved, store):
    uncertain = [c for c in saved.cells if c.label == CellLabel.UNCERTAIN]
    assert uncertain  # the tiny model leaves the demo's cells to the reviewer
    assert saved.accept(store, [c.key for c in uncertain], user=account("A")) == 0
    assert saved.n_unreviewed >= len(uncertain) and saved.provisional.startswith("Provisional:")
    saved.relabel(store, *uncertain[0].key, "normal", user=account("A"))
    assert saved.cell(*uncertain[0].key).reviewed


def _iou(a: np.ndarray, b: np.ndarray, bbox) -> float:
    """Overlap of two outlines, filled, inside the box."""
    x0, y0, x1, y1 = bbox
    masks = []
    for outline in (a, b):
        mask = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
        cv2.fillPoly(mask, [np.round(outline - (x0, y0)).astype(np.int32)], 1)
        masks.append(mask.astype(bool))
    return (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()


def test_a_session_without_model_is_stored_under_a_plain_name(fields, store):
    session = analyze_sample(fields[1:], None, sample_id="S-7")
    case_id = session.save(store, user=account("A"))
    assert store.load_case(case_id).model_name == NO_MODEL
    restored = Review.open(store, case_id)
    assert restored.model_name is None
    assert all(cell.blast_probability is None for cell in restored.cells)


def test_signed_sessions_are_frozen_and_records_must_match(session, fields, store):
    case_id = session.save(store, user=account("A"))
    with pytest.raises(SignOffBlockedError):
        session.sign(store, user=account("A"))
    for cell in session.cells:
        if cell.label == CellLabel.UNCERTAIN:
            session.relabel(store, *cell.key, "normal", user=account("A"))
    session.accept(store, [c.key for c in session.cells], user=account("A"))
    session.sign(store, user=account("A"))
    assert session.is_signed and session.signed_by == "A"
    with pytest.raises(CaseSignedError, match="is frozen; reopen"):
        session.relabel(store, *session.cells[0].key, "blast", user=account("A"))
    with pytest.raises(ReviewError, match="Say why you reopen it"):  # the core asks, not the page
        session.reopen(store, user=account("B"), reason="  ")
    new_id = session.reopen(store, user=account("B"), reason="a blast was missed")
    assert (session.case_id, session.version, session.status) == (new_id, 2, "open")
    assert session.relabel(store, *session.cells[0].key, "blast", user=account("B"))
    assert Review.open(store, case_id).is_signed  # the signed version is unchanged
    other = analyze_sample(fields[1:], None, sample_id="S-8")
    other.case_id = case_id
    with pytest.raises(ReviewError, match="holds other cells than the sample on screen"):
        other.refresh(store)


def test_read_for_analysis_feeds_the_session(demo, classifier):
    buffer = io.BytesIO()
    Image.fromarray(demo.image).save(buffer, format="PNG")
    prepared = read_for_analysis(buffer.getvalue(), "demo.png", input_size=32)
    session = analyze_sample([prepared], classifier, sample_id="S-9")
    assert np.array_equal(session.fields[0].image, demo.image)
    assert session.fields[0].original_size == (1024, 768)
    assert session.digest == analyze_sample([prepared], classifier, sample_id="x").digest


def test_a_lab_can_ask_for_a_second_signer_above_a_blast_level(session, store, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "5")
    first, second = account("S. One"), account("S. Two")
    session.save(store, user=first)
    for cell in session.cells:
        if cell.label in (CellLabel.UNCERTAIN, CellLabel.NORMAL):
            session.relabel(store, *cell.key, "blast", user=first)
    assert session.count().percent >= 5
    session.accept(store, [c.key for c in session.cells], user=first)
    assert session.sign(store, user=first) is False  # recorded, not frozen
    assert (session.status, session.first_signed_by) == ("open", "S. One")
    with pytest.raises(SignOffBlockedError, match="another signer must sign it"):
        session.sign(store, user=first)
    assert session.sign(store, user=second) is True and session.signed_by == "S. Two"
    record = store.load_case(session.case_id)
    assert (record.first_signed_by, record.signed_by, record.is_signed) == ("S. One", "S. Two",
                                                                            True)  # fmt: skip
    assert [a.action for a in record.audit][-2:] == ["first signature", "signed"]
    assert "First signed by S. One" in case_report_html(record)


def test_a_change_after_the_first_signature_withdraws_it(session, store, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "0")
    signer = account("S. One")
    session.save(store, user=signer)
    for cell in session.cells:
        if cell.label == CellLabel.UNCERTAIN:
            session.relabel(store, *cell.key, "blast", user=signer)
    session.accept(store, [c.key for c in session.cells], user=signer)
    second = account("R. Two")
    assert session.what_signing_does(signer).startswith("Signing as S. One is the first of two")
    assert not session.sign(store, user=signer)
    assert session.what_signing_does(signer).startswith("You signed first")
    assert session.what_signing_does(second).startswith("Signing as R. Two, the second signer")
    # the cells may be a technician's work: the signer answers for the result (a walk read
    # "confirms that you reviewed every cell" as a signer who had reviewed none)
    assert "every cell has been reviewed and that you checked the result" in (
        session.what_signing_does(second)
    )
    assert "may review but not sign" in session.what_signing_does(account("T", ("reviewer",)))
    assert "not review or sign" in session.what_signing_does(account("V", ("model_admin",)))
    cell = next(c for c in session.cells if c.label == CellLabel.BLAST)
    session.relabel(store, *cell.key, "normal", user=account("R. Two"))
    assert session.first_signed_by is None and not session.is_signed
    assert store.load_case(session.case_id).audit[-1].action == "first signature withdrawn"
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "101")
    with pytest.raises(ReviewError, match="not a blast percentage from 0 to 100"):
        session.sign(store, user=signer)


def _ready_to_sign(review: Review, store, user) -> None:
    for cell in review.cells:
        if cell.label == CellLabel.UNCERTAIN:
            review.relabel(store, *cell.key, "normal", user=user)
    review.accept(store, [c.key for c in review.cells], user=user)


def test_nobody_signs_or_overwrites_what_they_did_not_see(session, store):
    """Two reviewers on one case: a change made after one of them last read it is refused to
    them (signature or relabel), their review then shows it, and a second try goes through."""
    reviewer, signer = account("R. Eve", ("reviewer",)), account("S. Sig")
    session.save(store, user=reviewer)
    _ready_to_sign(session, store, reviewer)
    signer_view = Review.open(store, session.case_id)  # the signer reads the case ...
    cell = next(c for c in session.cells if c.label == CellLabel.NORMAL)
    session.relabel(store, *cell.key, "blast", user=reviewer)  # ... then the reviewer changes it
    with pytest.raises(CaseChangedError, match=r"changed since you read it.*relabel by R\. Eve"):
        signer_view.sign(store, user=signer)
    assert not store.load_case(session.case_id).is_signed
    assert signer_view.cell(*cell.key).label == CellLabel.BLAST  # now shown to the signer
    stale = Review.from_record(store.load_case(session.case_id))
    session.relabel(store, *cell.key, "normal", user=reviewer)  # the reviewer changes mind ...
    with pytest.raises(CaseChangedError, match=f"Cell {cell.cell_id} of field 1 was changed by "
                                               "R. Eve.*nothing was written"):  # fmt: skip
        stale.relabel(store, *cell.key, "excluded", user=signer)  # ... after this view was read
    assert store.load_case(session.case_id).audit[-1].to_label == "normal"
    assert stale.cell(*cell.key).label == CellLabel.NORMAL  # and the stale view caught up
    seen = signer_view.audit_token
    signer_view.refresh(store)
    with pytest.raises(CaseChangedError):  # the page passes the token the signer saw
        signer_view.sign(store, user=signer, seen_token=seen)
    assert signer_view.sign(store, user=signer, seen_token=signer_view.audit_token)
    assert store.load_case(session.case_id).signed_by == "S. Sig"


def test_new_report_details_withdraw_a_first_signature(session, store, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "0")
    first = account("S. One")
    session.save(store, user=first)
    _ready_to_sign(session, store, first)
    assert session.sign(store, user=first, patient_id="P-111") is False
    assert store.load_case(session.case_id).patient_id == "P-111"
    assert session.set_details(store, user=account("R. Two", ("reviewer",)), patient_id="P-999")
    assert session.first_signed_by is None
    record = store.load_case(session.case_id)
    assert [a.action for a in record.audit][-2:] == ["patient id", "first signature withdrawn"]
    assert session.sign(store, user=account("S. Two")) is False  # a first signature again


def test_the_cell_view_outline_takes_the_colour_asked_for(session):
    cell = next(c for c in session.cells if len(c.outline))
    red, green = session.view(cell, (200, 0, 0)), session.view(cell)
    assert red.shape == green.shape == (192, 192, 3)
    is_red = (red[..., 0] == 200) & (red[..., 1] == 0) & (red[..., 2] == 0)
    assert is_red.sum() > 50 and not np.array_equal(red, green)


def test_a_comment_is_kept_for_the_report_and_frozen_with_the_case(saved, store):
    user = account("A")
    assert saved.set_details(store, comment="  Nucleoli in <b>most</b> blasts  ", user=user)
    assert not saved.set_details(
        store, comment="Nucleoli in <b>most</b> blasts", user=user
    )  # unchanged
    record = store.load_case(saved.case_id)
    assert record.comment == "Nucleoli in <b>most</b> blasts" and record.altered == ()
    assert record.audit[-1].action == "comment"
    longer = "Nucleoli in most blasts. " * 20  # 500 characters: the trail keeps them all
    saved.set_details(store, comment=longer, user=user)
    assert store.load_case(saved.case_id).audit[-1].note == longer.strip()
    saved.set_details(store, comment="Nucleoli in <b>most</b> blasts", user=user)
    page = case_report_html(record)
    assert "Nucleoli in &lt;b&gt;most&lt;/b&gt; blasts" in page and "<b>most" not in page
    saved.accept(store, [c.key for c in saved.cells], user=user)
    for cell in saved.cells:
        if cell.label == CellLabel.UNCERTAIN:
            saved.relabel(store, *cell.key, "normal", user=user)
    saved.sign(store, user=user)
    with pytest.raises(CaseSignedError):
        saved.set_details(store, comment="changed after signing", user=user)
    reopened = store.load_case(saved.reopen(store, user=user, reason="patient id"))
    assert reopened.comment == "Nucleoli in <b>most</b> blasts"  # the new version keeps it


def test_a_cell_sent_to_review_with_its_field_says_why():
    from leukemia_core.domain import DomainAssessment
    from leukemia_core.pipeline import Analysis
    from leukemia_core.quality import QualityWarning
    from leukemia_core.types import Cell, Field

    blur = QualityWarning("focus", 0.3, 0.2, "Out of focus: results unreliable.")
    image = np.zeros((40, 40, 3), np.uint8)
    fields = (Field(0, "a.png", image, quality=(blur,)), Field(1, "b.png", image),
              Field(2, "c.png", image, domain=DomainAssessment(3.0, 1.5, 4)))  # fmt: skip
    cells = tuple(Cell(1, (1, 1, 9, 9), (5.0, 5.0), field_index=f, blast_probability=0.01,
                       model_label=label) for f, label in ((0, "uncertain"), (1, "uncertain"),
                                                           (1, "normal"), (2, "uncertain")))  # fmt: skip
    review = Review(Analysis("fields", fields, cells), sample_id="S")
    why = [review.sent_to_review_because(c) for c in cells]
    assert why == ["its field failed a quality check (focus)", "", "",
                   "its field differs from the training data"]  # fmt: skip
    warned = Analysis("fields", fields, cells, domain=DomainAssessment(3.0, 1.5, 4))
    assert Review(warned, sample_id="S").sent_to_review_because(cells[1]) == (
        "the sample differs from the training data")  # fmt: skip


def test_a_split_on_a_stale_view_takes_the_other_reviewers_split_first(saved, store):
    from leukemia_core.reshape import ReshapeError

    other = Review.open(store, saved.case_id)  # a second reviewer reads the case ...
    first, second = [c for c in saved.cells if c.label != CellLabel.BORDER][:2]
    made = saved.split(store, *first.key, user=account("A"))  # ... then the first one splits
    with pytest.raises(ReshapeError, match="was split or merged since you last looked"):
        other.split(store, *first.key, user=account("B"))
    pieces = other.split(store, *second.key, user=account("B"))  # new ids after A's pieces
    assert not {c.key for c in pieces} & {c.key for c in made}
    assert store.load_case(saved.case_id).altered == ()


# ---- more fields for an open case -----------------------------------------------------------
def test_fields_added_to_an_open_case_keep_its_labels_and_are_audited(fields, classifier, store):
    """ "Count at least 60 more cells" led nowhere: fields could not be added to a case, and
    analysing them under the same sample id made a second case."""
    ana = account("Ana", ("reviewer",))
    first = analyze_sample(fields[:1], classifier, sample_id="S-ADD")
    first.save(store, user=ana)
    relabelled = next(c for c in first.cells if c.label != CellLabel.BORDER)
    first.relabel(store, *relabelled.key, "blast", user=ana)
    n_before = len(first.cells)
    more = analyze(fields[1:], classifier)
    added = first.add_fields(store, more, classifier, user=ana)
    assert added == len(more.cells) > 0
    assert [f.name for f in first.fields] == ["demo.png", "second.png"]
    assert [f.index for f in first.fields] == [0, 1]
    assert len(first.cells) == n_before + added
    assert {c.field_index for c in first.cells} == {0, 1}
    assert first.cell(*relabelled.key).label == CellLabel.BLAST  # the review so far is kept
    record = store.load_case(first.case_id)
    assert record.altered == () and len(record.fields) == 2
    assert record.audit[-1].action == "fields added" and "second.png" in record.audit[-1].note
    assert "left out of the upload" not in record.audit[-1].note
    assert [c.key for c in record.cells] == [c.key for c in first.cells]
    # the same picture again, another model's cells, or a signed case: refused, nothing stored
    with pytest.raises(ReviewError, match=r"second\.png is the field second\.png the case holds"):
        first.add_fields(store, more, classifier, user=ana)
    other = replace(more, model_checksum="0" * 64, model_name="other")
    with pytest.raises(ReviewError, match="labelled by other, the case by tiny"):
        first.add_fields(store, other, classifier, user=ana)
    with pytest.raises(PermissionDeniedError):
        first.add_fields(store, more, classifier, user=account("Viewer", ("model_admin",)))
    assert len(store.load_case(first.case_id).fields) == 2


def test_a_window_opened_before_fields_were_added_takes_them_and_adds_none_twice(fields, store):
    """Window B, opened before A added a field, added the same picture again (counted twice)
    and could not refresh at all."""
    ana, bob = account("Ana", ("reviewer",)), account("Bob", ("reviewer",))
    a = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-TWO")
    a.save(store, user=ana)
    b = Review.open(store, a.case_id)
    more = analyze(fields[1:], EveryCellABlast())
    a.add_fields(store, more, EveryCellABlast(), user=ana)
    assert b.refresh(store) and [f.name for f in b.fields] == ["demo.png", "second.png"]
    with pytest.raises(ReviewError, match="the case holds already"):
        b.add_fields(store, more, EveryCellABlast(), user=bob)
    with pytest.raises(LeukemiaCoreError, match="the case holds already"):  # two clicks at once
        store.add_fields(a.case_id, more.fields, more.cells, reviewer="Bob", domain=None,
                         model_checksum=a.model_checksum)  # fmt: skip
    assert len(store.load_case(a.case_id).fields) == 2


def test_accepting_a_call_another_window_has_changed_is_refused_not_dropped(fields, store):
    """A pressed B on a cell her screen showed as the model's blast after Bob had called it
    normal: taken as an accept of a reviewed cell, nothing was written and nothing said."""
    ana, bob = account("Ana", ("reviewer",)), account("Bob", ("reviewer",))
    a = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-STALE")
    a.save(store, user=ana)
    b = Review.open(store, a.case_id)
    first, second = [c for c in a.cells if c.label == CellLabel.BLAST][:2]
    b.relabel(store, *first.key, "normal", user=bob)
    b.relabel(store, *second.key, "normal", user=bob)
    with pytest.raises(LeukemiaCoreError, match="was changed by Bob"):
        a.decide(store, *first.key, "blast", user=ana)
    a = Review.open(store, a.case_id)  # a second stale screen: its batch accept writes nothing
    stale = Review.open(store, a.case_id)
    third = next(c for c in a.cells if c.label == CellLabel.BLAST and not c.reviewed)
    b.relabel(store, *third.key, "excluded", user=bob)
    n_audit = len(store.load_case(a.case_id).audit)
    others = [c.key for c in stale.cells if c.label == CellLabel.BLAST and c.key != third.key]
    with pytest.raises(LeukemiaCoreError, match="changed by Bob"):
        stale.accept(store, [*others, third.key], user=ana)
    assert len(store.load_case(a.case_id).audit) == n_audit


def test_an_undo_after_reopening_brings_back_the_label_signed_before(fields, store):
    """A split made before signing and undone in the reopened version brought the cell back
    with the model's call, unreviewed, not the label it was signed with."""
    ana = account("Ana", ("signer",))
    case = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-UNDO")
    case.save(store, user=ana)
    cell = next(c for c in case.cells if c.label == CellLabel.BLAST and c.cell_area_px > 400)
    case.relabel(store, *cell.key, "normal", user=ana)
    pieces = case.split(store, *cell.key, user=ana, parts=2, labeller=EveryCellABlast())
    for piece in pieces:
        case.relabel(store, *piece.key, "normal", user=ana)
    case.accept(store, [c.key for c in case.cells if c.awaits_review], user=ana)
    case.sign(store, user=ana)
    case.reopen(store, user=ana, reason="the split was wrong")
    case.undo_reshape(store, *pieces[0].key, user=ana)
    back = store.load_case(case.case_id)
    restored = next(c for c in back.cells if c.key == cell.key)
    assert restored.label == CellLabel.NORMAL and restored.reviewed
    assert back.altered == ()


class _WarnedSample(EveryCellABlast):
    """The case's labeller, finding the sample out of domain with the new cells."""

    def assess(self, scores):
        return DomainAssessment(3.0, 1.5, len(scores))


def test_fields_that_make_the_sample_out_of_domain_send_its_held_cells_to_review(fields, store):
    """Only the new cells went to review: the unreviewed calls already in the case still
    counted in the provisional figures of a sample now out of domain."""
    ana = account("Ana", ("reviewer",))
    case = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-OOD")
    case.save(store, user=ana)
    called = [c for c in case.cells if c.label in (CellLabel.BLAST, CellLabel.NORMAL)]
    assert len(called) >= 2
    kept = called[0]
    case.relabel(store, *kept.key, "normal", user=ana)  # a reviewer's label stays
    case.add_fields(store, analyze(fields[1:], EveryCellABlast()), _WarnedSample(), user=ana)
    record = store.load_case(case.case_id)
    held = {c.key: c for c in record.cells if c.field_index == 0}
    assert held[kept.key].label == CellLabel.NORMAL and held[kept.key].reviewed
    for cell in called[1:]:
        assert held[cell.key].label == held[cell.key].model_label == CellLabel.UNCERTAIN
        assert held[cell.key].blast_probability == cell.blast_probability  # the score is kept
    new = [c for c in record.cells if c.field_index == 1]
    assert new and all(c.label in (CellLabel.UNCERTAIN, CellLabel.BORDER) for c in new)
    assert record.domain.warned and record.altered == ()
    note = record.audit[-1].note
    assert f"{len(called) - 1} unreviewed cells already in the case went to review" in note
    sent = [(e.cell_id, e.from_label, e.to_label) for e in record.audit
            if e.action == "sent to review"]  # fmt: skip
    assert sorted(sent) == sorted((c.cell_id, "blast", "uncertain") for c in called[1:])
    assert case.count().n_counted == 1  # only the reviewer's cell is counted until review


def test_a_signed_case_takes_no_more_fields(fields, classifier, store):
    ana = account("Ana", ("signer",))
    case = analyze_sample(fields[:1], classifier, sample_id="S-SIGNED")
    case.save(store, user=ana)
    case.accept(store, [c.key for c in case.cells], user=ana)
    for cell in case.cells:
        if cell.awaits_review:
            case.relabel(store, *cell.key, "normal", user=ana)
    case.sign(store, user=ana)
    with pytest.raises(ReviewError, match="signed: reopen it to add fields"):
        case.add_fields(store, analyze(fields[1:], classifier), classifier, user=ana)
    with pytest.raises(LeukemiaCoreError, match="signed"):  # the store refuses it too
        store.add_fields(case.case_id, [fields[1]], [], reviewer="Ana", domain=None,
                         model_checksum=case.model_checksum)  # fmt: skip


def test_with_nothing_counted_one_signature_freezes_the_record_as_the_page_says(
    fields, store, monkeypatch
):
    """At a second-signer level of 0% and every cell left out, the page said one signature
    freezes the record while the store took 0.0% >= 0 and recorded a first signature only."""
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "0")
    signer = account("S. Igner")
    case = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-NONE")
    case.save(store, user=signer)
    for cell in case.cells:
        if cell.awaits_review:
            case.relabel(store, *cell.key, "excluded", user=signer)
    assert case.count().n_counted == 0
    assert "the record is then frozen" in case.what_signing_does(signer)
    with pytest.raises(SignOffBlockedError, match="comment why"):  # no result, and no reason
        case.sign(store, user=signer)
    case.sign(store, user=signer, comment="Every cell left out: a thick area; smear again.")
    record = store.load_case(case.case_id)
    assert record.is_signed and record.audit[-1].note == "no cells counted; record frozen"


def test_bad_arguments_to_the_review_are_refused_in_words(fields, store):
    """One key for a list, a key of three numbers, parts of "2" or 2.5 and reviewed="no" ended
    in a bare TypeError or cv2.error, or marked the cell reviewed."""
    from leukemia_core.reshape import ReshapeError

    ana = account("Ana", ("reviewer",))
    case = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-BAD")
    case.save(store, user=ana)
    cell = next(c for c in case.cells if c.label == CellLabel.BLAST)
    for keys in (cell.key, [(*cell.key, 1)]):
        with pytest.raises(ReviewError, match=r"\(field index, cell id\) pairs"):
            case.accept(store, keys, user=ana)
    for parts in ("2", 2.5, True):
        with pytest.raises(ReshapeError, match="a whole number"):
            case.split(store, *cell.key, user=ana, parts=parts, labeller=EveryCellABlast())
    with pytest.raises(LeukemiaCoreError, match="reviewed is True or False"):
        store.edit_cell(case.case_id, *cell.key, reviewer="Ana", reviewed="no")
    assert not next(c for c in store.load_case(case.case_id).cells if c.key == cell.key).reviewed


def test_an_image_left_out_of_added_fields_is_named_in_the_audit_trail(fields, store):
    """The "created" row names images left out of the first upload; "fields added" did not."""
    from leukemia_core.pipeline import ImageFailure

    ana = account("Ana", ("reviewer",))
    case = analyze_sample(fields[:1], EveryCellABlast(), sample_id="S-LEFT")
    case.save(store, user=ana)
    more = analyze(fields[1:], EveryCellABlast())
    more = replace(more, failures=(ImageFailure("scan.png", "scan.png is not a picture"),))
    case.add_fields(store, more, EveryCellABlast(), user=ana)
    note = store.load_case(case.case_id).audit[-1].note
    assert "left out of the upload: scan.png is not a picture" in note
