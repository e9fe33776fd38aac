"""What a lab files from a case: the report, the CSV and the JSON say the same thing as the
record, name their sample on every page, and keep nothing a second reader needs out of sight."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from leukemia_core.case_export import case_json, cells_csv
from leukemia_core.counting import blast_percent_figure, count_blasts, percent_text
from leukemia_core.report import case_report_html, download_stem
from leukemia_core.report_signoff import page_css
from leukemia_core.store import CaseStore
from leukemia_core.store_rows import SignOffBlockedError
from leukemia_core.types import Cell, Field

DAMAGED_NOTE = "damaged image: results unreliable: the lower 30% of the picture is flat grey"


def _cells(labels, field_index=0, reviewed=True):
    return [
        Cell(
            i + 1,
            (2 * i, 0, 2 * i + 4, 4),
            (2 * i + 2.0, 2.0),
            crop=np.full((5, 5, 3), i % 250, np.uint8),
            field_index=field_index,
            blast_probability=0.9 if label == "blast" else 0.1,
            model_label=label,
            reviewed=reviewed,
        )
        for i, label in enumerate(labels)
    ]


def _case(store, labels, sample="S-1", reviewed=True, fields=None):
    fields = fields or [Field(0, "f0.png", np.zeros((48, 64, 3), np.uint8))]
    return store.create_case(sample, fields, _cells(labels, reviewed=reviewed),
                             model_name="lite0_blast_v2", model_checksum="sha256:ab",
                             thresholds={}, created_by="pipeline")  # fmt: skip


@pytest.fixture
def store(tmp_path):
    return CaseStore(tmp_path / "cases.sqlite3")


def test_a_bidi_override_in_a_file_name_cannot_reverse_the_printed_cell_numbers(store):
    """ "cell 10" printed as "cell 01" after U+202E in an uploaded file's name."""
    field = Field(0, "Im012_1\u202e.jpg\nx", np.zeros((48, 64, 3), np.uint8))
    assert field.name == "Im012_1?.jpg?x"
    record = store.load_case(_case(store, ["blast"] * 2, fields=[field]))
    assert record.fields[0].name == "Im012_1?.jpg?x"
    page = case_report_html(record)
    assert "\u202e" not in page and "\u202e" not in cells_csv(record).decode()


def test_every_page_names_its_sample_by_both_ends_and_both_signers(store):
    """Two slides of one series printed the same cut id on every page; two-signer cases named
    the second signer only."""
    ids = ["HOSP-HEMATOLOGY-2026-12-07-PATIENT-00042-SLIDE-A-MAY-GRUNWALD-G1",
           "HOSP-HEMATOLOGY-2026-12-07-PATIENT-00042-SLIDE-B-MAY-GRUNWALD-G1"]  # fmt: skip
    margins = []
    for sample in ids:
        record = store.load_case(_case(store, ["normal"] * 3, sample=sample))
        text = re.search(r"@top-left \{ content: \"(.*?)\";", page_css(record)).group(1)
        margins.append(re.sub(r"\\([0-9a-f]+) ", lambda m: chr(int(m.group(1), 16)), text))
    assert margins[0] != margins[1] and all(m.startswith("Sample HOSP-") for m in margins)
    assert all(m.split(" · ")[0].endswith("G1") for m in margins)
    case_id = _case(store, ["blast"] * 3 + ["normal"], sample="TWO")
    assert store.sign_case(case_id, reviewer="Dr. A", second_signer_at_percent=20) is False
    store.sign_case(case_id, reviewer="Dr. B", second_signer_at_percent=20)
    top_right = re.search(r"@top-right \{ content: \"(.*?)\";", page_css(store.load_case(case_id)))
    said = re.sub(r"\\([0-9a-f]+) ", lambda m: chr(int(m.group(1), 16)), top_right.group(1))
    assert said == "SIGNED by Dr. A and Dr. B"


def test_a_long_sample_id_wraps_in_the_title_instead_of_shrinking_the_page():
    from leukemia_core.report_style import REPORT_CSS

    assert "h1, h3 { overflow-wrap: anywhere; }" in REPORT_CSS


def test_field_notes_size_and_scale_are_kept_and_reach_every_export(store):
    """A damaged field's note, a possible clump and the downscaling were lost once saved."""
    image = np.zeros((48, 64, 3), np.uint8)
    fields = [Field(0, "big.jpg", image, (4780, 3346), 64 / 4780, notes=(DAMAGED_NOTE,))]
    record = store.load_case(_case(store, ["blast", "normal"], fields=fields))
    (field,) = record.fields
    assert field.original_size == (4780, 3346) and field.scale == pytest.approx(64 / 4780)
    assert field.notes == (DAMAGED_NOTE,)
    page = case_report_html(record)
    assert "<h2>Field notes</h2>" in page and "flat grey" in page
    rows = list(csv.DictReader(io.StringIO(cells_csv(record).decode())))
    assert {r["field_warnings"] for r in rows} == {"damaged file"}
    (stored,) = json.loads(case_json(record))["fields"]
    assert stored["notes"] == [DAMAGED_NOTE] and stored["original_size"] == [4780, 3346]
    assert stored["scale"] == pytest.approx(64 / 4780)


def test_the_reviewers_changes_stay_among_the_cells_shown_when_blasts_fill_the_page(store):
    """60 model blasts, 3 of them overridden to normal: the report showed 48 blasts and none of
    the overrides a second reader checks."""
    case_id = _case(store, ["blast"] * 60)
    for cell_id in (58, 59, 60):
        store.relabel_cell(case_id, 0, cell_id, "normal", reviewer="Dr. A")
    page = case_report_html(store.load_case(case_id))
    assert page.count("model: blast → reviewer: normal") == 3
    assert "the reviewer's changes first, then blasts" in page
    assert "<h3>Blast (45 of 57 shown)</h3>" in page


def test_a_provisional_report_and_json_say_which_calls_nobody_has_looked_at(store):
    record = store.load_case(_case(store, ["blast", "blast", "normal"], reviewed=False))
    page = case_report_html(record)
    assert page.count("blast (the model&#x27;s call, not reviewed yet)") == 2
    assert "<h2>Blast count (current labels, provisional)</h2>" in page
    assert "<th>Now</th>" in page and "<th>Reviewer</th>" not in page
    document = json.loads(case_json(record))
    assert document["provisional"] is True and document["n_unreviewed"] == 3


def test_a_case_with_nothing_counted_is_signed_only_with_a_comment_saying_why(store):
    case_id = _case(store, ["not_wbc", "excluded"])
    with pytest.raises(SignOffBlockedError, match="write in the case's comment why"):
        store.sign_case(case_id, reviewer="Dr. A")
    store.set_case_details(case_id, reviewer="Dr. A", comment="Inadequate: no cells in focus")
    assert store.sign_case(case_id, reviewer="Dr. A")
    page = case_report_html(store.load_case(case_id))
    assert "no result: no cell counted (2 found); the comment says why" in page


def test_a_reopened_and_resigned_version_says_what_it_amends(store):
    first = _case(store, ["blast"] * 3 + ["normal"])
    store.sign_case(first, reviewer="Dr. A")
    second = store.reopen_case(first, reviewer="Dr. B", reason="cell 1 is a monocyte")
    store.relabel_cell(second, 0, 1, "normal", reviewer="Dr. B")
    draft = case_report_html(store.load_case(second))  # every cell reviewed, not signed
    assert "NOT SIGNED — draft, every cell reviewed, not signed yet; WOULD AMEND version 1" in draft
    assert "its result will replace that one" in draft and "AMENDS" not in draft
    assert "awaiting the second signer" not in draft and "not reviewed and signed" not in draft
    store.sign_case(second, reviewer="Dr. B")
    record = store.load_case(second)
    page = case_report_html(record)
    assert "AMENDS version 1 (signed by Dr. A at " in page
    assert "3 of 4 cells blasts, 75.0%)" in page
    assert "its result replaces that one" in page
    amends = json.loads(case_json(record))["amends"]
    assert (amends["version"], amends["signed_by"], amends["n_blasts"]) == (1, "Dr. A", 3)
    assert "AMENDS" not in case_report_html(store.load_case(first))


def test_the_exports_carry_the_comment_model_and_signature(store):
    case_id = _case(store, ["blast", "normal"])
    store.set_case_details(case_id, reviewer="Dr. A", comment="=cmd|' /C calc'!A0")
    draft = store.load_case(case_id)
    rows = list(csv.DictReader(io.StringIO(cells_csv(draft).decode())))
    assert {(r["model_name"], r["signed_by"], r["signed_at_utc"]) for r in rows} == {
        ("lite0_blast_v2", "", "")}  # fmt: skip
    store.sign_case(case_id, reviewer="=Dr. A")
    signed = store.load_case(case_id)
    rows = list(csv.DictReader(io.StringIO(cells_csv(signed).decode())))
    assert {r["signed_by"] for r in rows} == {"'=Dr. A"}  # no formula in a spreadsheet
    assert {r["signed_at_utc"] for r in rows} == {signed.signed_at}
    assert json.loads(case_json(signed))["comment"] == "=cmd|' /C calc'!A0"


def test_a_percentage_just_below_a_whole_percent_never_prints_as_it(store):
    """9.96% printed as "10.0%" beside a one-signer sign-off at a lab's 10% level."""
    assert blast_percent_figure(100 * 24 / 241) == "9.96"
    assert percent_text(count_blasts(24, 241)) == "9.96%"
    assert blast_percent_figure(12.5) == "12.5" and blast_percent_figure(10.0) == "10.0"
    assert blast_percent_figure(100 * 10 / 201) == "4.98"  # still kept below the 5% level


def test_download_names_say_draft_or_signed_and_never_collide(store):
    a, b = _case(store, ["normal"], sample="S 1/2"), _case(store, ["normal"], sample="S_1_2")
    stems = [download_stem(store.load_case(c)) for c in (a, b)]
    assert stems[0] != stems[1] and stems[0].startswith("S_1_2_v1_draft_")
    store.sign_case(a, reviewer="Dr. A")
    assert download_stem(store.load_case(a)) == f"S_1_2_v1_signed_{a[:8]}"
    assert download_stem(store.load_case(_case(store, ["normal"], sample="-rf"))).startswith("rf_")


def test_a_page_of_cells_accepted_at_once_is_one_audit_row_and_long_notes_are_cut(store):
    case_id = _case(store, ["normal"] * 30, reviewed=False)
    store.set_case_details(case_id, reviewer="Dr. A", comment="x" * 2000)
    keys = [(0, i) for i in range(1, 31) if i != 7]
    store.mark_reviewed(case_id, keys, reviewer="Dr. A")
    page = case_report_html(store.load_case(case_id))
    audit = page.split("<h2>Audit trail</h2>")[1]
    assert "<td>1–6, 8–30</td>" in audit
    assert "(2,000 characters in the record)" in audit and "x" * 301 not in audit


def test_a_field_without_cells_still_has_its_row_in_the_csv(store):
    notes = ((), (), (DAMAGED_NOTE,))
    fields = [
        Field(i, f"f{i}.png", np.zeros((48, 64, 3), np.uint8), notes=notes[i]) for i in range(3)
    ]
    case_id = store.create_case("S-9", fields, _cells(["blast", "normal"], field_index=1),
                                model_name="lite0_blast_v2", model_checksum="sha256:ab",
                                thresholds={}, created_by="pipeline")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(cells_csv(store.load_case(case_id)).decode())))
    assert [(r["field_number"], r["cell_id"], r["label"]) for r in rows] == [
        ("1", "", ""), ("2", "1", "blast"), ("2", "2", "normal"), ("3", "", "")]  # fmt: skip
    assert {r["sample_id"] for r in rows} == {"S-9"}
    assert all(r["research_use"].startswith("research use only") for r in rows)
    assert [r["field_warnings"] for r in rows] == ["", "", "", "damaged file"]


def test_the_result_line_says_when_too_few_cells_were_counted(store):
    """'0.0% blasts: 0 of 2 cells counted' under a green SIGNED read as a clean result."""
    few = case_report_html(store.load_case(_case(store, ["normal", "normal"], sample="S-2")))
    assert "0 of 2 cells counted (too few for a reliable percentage" in few
    enough = case_report_html(store.load_case(_case(store, ["normal"] * 100, sample="S-3")))
    assert "0 of 100 cells counted" in enough and "too few for a reliable" not in enough
