"""Tests of leukemia_core.report: printable HTML, per-cell CSV and JSON exports of a case."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import re
import sqlite3
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from leukemia_core.case_export import CSV_COLUMNS, case_json, cells_csv
from leukemia_core.counting import count_blasts
from leukemia_core.imaging import rgb_from_png
from leukemia_core.report import RESEARCH_USE_STATEMENT, case_report_html
from leukemia_core.report_cells import flagged_cells
from leukemia_core.store import CaseRecord, CaseStore
from leukemia_core.types import Cell, Field

SAMPLE_ID = "<script>alert(1)</script>"
# field 0: 3 blasts, 7 normal, 1 uncertain, 1 border; field 1: 1 blast, 9 normal (model labels)
FIELD_LABELS = [
    ["blast"] * 3 + ["normal"] * 7 + ["uncertain", "border"],
    ["blast"] + ["normal"] * 9,
]


def pixels(value: int) -> np.ndarray:
    return np.full((5, 5, 3), value, np.uint8)


def ci_text(n_blasts: int, n_counted: int) -> str:
    expected = count_blasts(n_blasts, n_counted)
    return f"{expected.ci_low_percent:.1f}–{expected.ci_high_percent:.1f}%"


@pytest.fixture
def store(tmp_path: Path) -> CaseStore:
    return CaseStore(tmp_path / "cases.sqlite3")


@pytest.fixture
def case_id(store: CaseStore) -> str:
    cells = []
    for f, labels in enumerate(FIELD_LABELS):
        for i, label in enumerate(labels):
            probability = None if label == "border" else (0.9 if label == "blast" else 0.1)
            overlay = pixels(250) if (f, i) == (0, 0) else None
            cells.append(
                Cell(
                    i + 1,
                    (i, 0, i + 4, 4),
                    (i + 2.0, 2.0),
                    crop=pixels(10 * f + i),
                    field_index=f,
                    blast_probability=probability,
                    model_label=label,
                    overlay=overlay,
                    reviewed=True,
                )
            )
    image = np.zeros((48, 64, 3), np.uint8)
    case_id = store.create_case(
        SAMPLE_ID,
        [Field(0, "<b>f0</b>.png", image), Field(1, "=HYPERLINK(1)", image)],
        cells,
        model_name="effnet & co",
        model_checksum="sha256:deadbeef",
        thresholds={"blast_probability": 0.5, "note": "<i>x</i>"},
        created_by="pipeline",
    )
    # reviewer: field 1 cell 2 normal -> blast, note with markup
    store.relabel_cell(case_id, 1, 2, "blast", reviewer="Dr. <Eve>", note="<b>nucleoli</b>")
    return case_id


@pytest.fixture
def record(store: CaseStore, case_id: str) -> CaseRecord:
    return store.load_case(case_id)


def test_html_says_research_use_only_at_top_and_bottom(record: CaseRecord):
    page = case_report_html(record)
    statement = "Research use only — not for diagnosis"
    assert page.count(statement) == 2
    assert page.index(statement) < page.index("Blast count") < page.rindex(statement)
    assert page.startswith("<!DOCTYPE html>") and "@media print" in page


def test_html_escapes_user_strings(record: CaseRecord):
    page = case_report_html(record)
    assert "<script>" not in page and "<Eve>" not in page and "<b>nucleoli" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Dr. &lt;Eve&gt;" in page and "&lt;b&gt;nucleoli&lt;/b&gt;" in page
    assert "effnet &amp; co" in page and "sha256:deadbeef" in page
    assert "&lt;b&gt;f0&lt;/b&gt;.png" in page and "<i>x</i>" not in page


def test_html_counts_match_count_blasts(record: CaseRecord):
    page = case_report_html(record)
    # reviewed: field 0 3/10 (1 uncertain, 1 border left out), field 1 2/10, sample 5/20
    for n_blasts, n_counted in ((5, 20), (3, 10), (2, 10)):
        assert ci_text(n_blasts, n_counted) in page
        assert f"{100 * n_blasts / n_counted:.1f}%" in page
    sample = count_blasts(5, 20, 1, n_uncertain=1)
    assert record.counts() == sample
    assert sample.interpretation in page  # plain text: nothing to escape
    assert sample.hint and sample.hint in page
    # model said 4 of 20
    assert ci_text(4, 20) in page
    # the cell the model left uncertain is no correction of the model when labelled (a walk)
    assert ("1 of the 20 cells the model called were changed by the reviewer; 0 of the 1 it "
            "left uncertain were labelled.") in page  # fmt: skip


def test_html_embeds_flagged_cell_images(record: CaseRecord):
    page = case_report_html(record)
    flagged = flagged_cells(record)
    # 3 blasts + 1 uncertain in field 0; 1 model blast + 1 relabelled in field 1
    assert [(c.field_index, c.cell_id) for c in flagged] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 11),
        (1, 1),
        (1, 2),
    ]
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # every flagged cell as its crop; the one with a heatmap overlay shows it beside the crop
    assert len(uris) == len(flagged) + 1
    embedded = [rgb_from_png(base64.b64decode(uri)) for uri in uris[:3]]
    np.testing.assert_array_equal(embedded[0], pixels(0))  # cell (0, 1): the crop ...
    np.testing.assert_array_equal(embedded[1], pixels(250))  # ... and its overlay beside it
    np.testing.assert_array_equal(embedded[2], pixels(1))
    # how to read a map, said where there is one (a walk read warmth on the black as the cell's)
    assert "Warmth on the black around a cell is not part of the cell" in page
    assert "model: normal → reviewer: blast" in page
    # by final label, blasts first (a walkthrough found the one relabelled blast as card 8 of 10)
    assert page.index("<h3>Blast (5)</h3>") < page.index("<h3>Uncertain (1)</h3>")
    assert page.count('class="blast changed"') == 1
    # the dashed frame of a relabelled card comes after the label colours, which would reset it
    assert page.index("figure.changed {") > page.index("figure.blast {")
    assert "{" not in page.split("<body>")[1]  # no raw JSON: the settings in words
    assert "blast when the calibrated probability is at least" in page or "no model" in page
    limited = case_report_html(record, flagged_limit=2)
    assert limited.count("data:image/png;base64,") == 3
    assert "Showing 2 of 6: the reviewer's changes first, then blasts" in limited
    # a cut section says so in its heading, which read as the blast count (48 beside 59)
    assert "<h3>Blast (2 of 5 shown)</h3>" in limited
    assert "Maps are kept for the cells they were shown for during review (1 of 2 here)" in limited
    # cut after sorting: the blasts of a later field are not pushed out by an earlier field's
    # uncertain or relabelled cells (a review found a report of 53 flagged cells showing none)
    five = case_report_html(record, flagged_limit=5)
    assert re.findall(r"<h3>([^<]*)</h3>", five.split("Flagged cells")[1])[:1] == ["Blast (5)"]
    assert "<h3>Uncertain" not in five


def test_html_sign_off(store: CaseStore, case_id: str, record: CaseRecord):
    assert "NOT SIGNED" in case_report_html(record)
    assert "<td>Reviewed by</td><td>Dr. &lt;Eve&gt;</td>" in case_report_html(record)
    # a draft names its reviewer with what is left, or the name reads as a review of every cell
    first = next(i for i, c in enumerate(record.cells) if c.label != "border")
    cells = list(record.cells)
    cells[first] = dataclasses.replace(cells[first], reviewed=False)
    draft = dataclasses.replace(record, cells=tuple(cells))
    waiting = f"(1 of {sum(c.label != 'border' for c in cells)} cells not reviewed yet)"
    assert f"<td>Reviewed by</td><td>Dr. &lt;Eve&gt; {waiting}</td>" in case_report_html(draft)
    store.relabel_cell(case_id, 0, 11, "normal", reviewer="Dr. A")
    store.sign_case(case_id, reviewer="Dr. Ann Lee")
    signed = store.load_case(case_id)
    page = case_report_html(signed)
    assert "NOT SIGNED" not in page
    minute = signed.signed_at[:16].replace("T", " ")  # to the minute, as a reader wants it
    assert f"Signed by Dr. Ann Lee at {minute} UTC." in page
    assert signed.signed_at not in page  # no seconds and microseconds anywhere
    for action in ("created", "relabel", "signed"):
        assert f"<td>{action}</td>" in page


def test_a_reopened_version_names_who_reviewed_its_cells_in_earlier_versions(
    store: CaseStore, case_id: str
):
    store.relabel_cell(case_id, 0, 11, "normal", reviewer="Dr. <Eve>")  # the uncertain cell
    store.sign_case(case_id, reviewer="Dr. Ann Lee")
    second = store.reopen_case(case_id, reviewer="Dr. Bo", reason="a second look")
    store.sign_case(second, reviewer="Dr. Bo")  # signed again without relabelling a cell
    third = store.reopen_case(second, reviewer="Dr. Cy", reason="a third look")
    store.relabel_cell(third, 0, 1, "normal", reviewer="Dr. Cy")
    assert store.load_case(second).earlier_reviewers == ((1, "Dr. <Eve>"),)
    page = case_report_html(store.load_case(third))
    # this version's reviewer, then version 1's (version 2 reviewed no cell), escaped
    assert "<td>Reviewed by</td><td>Dr. Cy, Dr. &lt;Eve&gt; (version 1)</td>" in page
    assert "<td>Reviewed by</td><td>—</td>" not in case_report_html(store.load_case(second))


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_html_refuses_bad_flagged_limit(record: CaseRecord, limit):
    with pytest.raises(ValueError, match="flagged_limit must be a whole number of 0 or more"):
        case_report_html(record, flagged_limit=limit)


def test_csv_has_one_row_per_cell_and_flags_reviewer_changes(record: CaseRecord):
    data = cells_csv(record)
    assert isinstance(data, bytes)
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(record.cells) == 22
    changed = [(r["field_index"], r["cell_id"]) for r in rows if r["changed_by_reviewer"] == "true"]
    assert changed == [("1", "2")]
    assert {(r["case_status"], r["reviewed"]) for r in rows} == {("open", "true"), ("open", "")}
    assert all((r["reviewed"] == "") == (r["label"] == "border") for r in rows)  # no review
    # a draft's unreviewed cell says so, and a signed case says it is signed
    first, *rest = record.cells
    draft = replace(record, cells=(replace(first, reviewed=False), *rest))
    assert next(csv.DictReader(io.StringIO(cells_csv(draft).decode())))["reviewed"] == "false"
    signed = replace(record, status="signed")
    assert next(csv.DictReader(io.StringIO(cells_csv(signed).decode())))["case_status"] == "signed"
    # the report calls it "Field 2"; the CSV says so beside the library's 0-based index
    assert {(r["field_index"], r["field_number"]) for r in rows} == {("0", "1"), ("1", "2")}
    assert {r["changed_by_reviewer"] for r in rows} == {"true", "false"}
    row = rows[-9]  # field 1, cell 2
    assert (row["model_label"], row["label"], row["blast_probability"]) == (
        "normal",
        "blast",
        "0.1",
    )
    assert (row["x0"], row["y0"], row["x1"], row["y1"], row["centroid_x"]) == (
        "1",
        "0",
        "5",
        "4",
        "3.0",
    )
    assert {r["sample_id"] for r in rows} == {SAMPLE_ID}
    assert {r["case_id"] for r in rows} == {record.case_id} and {r["version"] for r in rows} == {
        "1"
    }
    border = rows[11]
    assert (border["label"], border["blast_probability"]) == ("border", "")
    assert row["field_name"] == "'=HYPERLINK(1)"  # not run as a spreadsheet formula
    assert {r["origin"] for r in rows} == {""}  # every cell the segmentation's
    pieces = replace(record, cells=(replace(first, origin="split of 9"), *rest))
    assert next(csv.DictReader(io.StringIO(cells_csv(pieces).decode())))["origin"] == "split of 9"
    assert "made by the reviewer (split of 9)" in case_report_html(
        replace(pieces, cells=(replace(pieces.cells[0], label="blast"), *rest))
    )


def test_json_round_trips(record: CaseRecord):
    document = json.loads(case_json(record))
    assert document["research_use_only"] == RESEARCH_USE_STATEMENT
    assert (document["case_id"], document["version"], document["sample_id"]) == (
        record.case_id,
        1,
        SAMPLE_ID,
    )
    assert document["thresholds"] == record.thresholds
    assert document["counts"] == asdict(record.counts())
    assert document["model_counts"] == asdict(record.model_counts())
    assert [f["n_blasts"] for f in document["field_counts"]] == [3, 2]
    assert [f["field_number"] for f in document["fields"]] == [1, 2]
    assert len(document["cells"]) == 22
    assert all("crop_png" not in c and "overlay_png" not in c for c in document["cells"])
    assert [c["has_overlay"] for c in document["cells"]].count(True) == 1
    assert [c["cell_id"] for c in document["cells"] if c["changed_by_reviewer"]] == [2]
    assert document["cells"][0]["bbox"] == [0, 0, 4, 4]
    assert [a["action"] for a in document["audit"]] == ["created", "relabel"]
    assert document["audit"][1]["reviewer"] == "Dr. <Eve>"
    assert document["signed_by"] is None and document["status"] == "open"
    assert document["first_signed_by"] is None
    two = replace(record, status="signed", signed_by="Dr. B", signed_at=record.created_at,
                  first_signed_by="Dr. A", first_signed_at=record.created_at)  # fmt: skip
    assert json.loads(case_json(two))["first_signed_by"] == "Dr. A"
    assert "SIGNED by Dr. A and Dr. B at" in case_report_html(two)  # the page header too


def test_the_patient_id_is_in_the_report_and_the_json_escaped(store: CaseStore, case_id: str):
    assert "<td>Patient id</td><td>—</td>" in case_report_html(store.load_case(case_id))
    store.set_case_details(case_id, patient_id="MRN <42> & co", reviewer="Dr. A")
    record = store.load_case(case_id)
    assert "<td>Patient id</td><td>MRN &lt;42&gt; &amp; co</td>" in case_report_html(record)
    assert json.loads(case_json(record))["patient_id"] == "MRN <42> & co"


def test_a_fields_quality_warning_is_in_the_report_the_json_and_the_csv(store: CaseStore):
    from leukemia_core.quality import QualityWarning

    blur = QualityWarning("focus", 0.31, 0.2, "Out of focus: results unreliable.")
    image = np.zeros((48, 64, 3), np.uint8)
    cells = [Cell(1, (1, 1, 5, 5), (3.0, 3.0), crop=pixels(1), field_index=f,
                  blast_probability=0.1, model_label="uncertain") for f in (0, 1)]  # fmt: skip
    case_id = store.create_case(
        "S-Q", [Field(0, "sharp.png", image), Field(1, "blurred.png", image, quality=(blur,))],
        cells, model_name="m", model_checksum="sha256:0", thresholds={}, created_by="R",
    )  # fmt: skip
    record = store.load_case(case_id)
    page = case_report_html(record)
    assert "<h2>Field quality</h2>" in page
    assert "Field 2 (blurred.png): Out of focus: results unreliable." in page
    assert "sharp.png): Out of focus" not in page
    fields_json = json.loads(case_json(record))["fields"]
    assert [f["quality_warnings"] for f in fields_json] == [[], [asdict(blur)]]
    rows = list(csv.DictReader(io.StringIO(cells_csv(record).decode())))
    assert [r["field_warnings"] for r in rows] == ["", "focus"]


def test_the_full_reading_is_given_once_for_the_sample_and_fields_get_their_level(
    record: CaseRecord,
):
    page = case_report_html(record)
    assert page.count("the WHO uses for acute leukemia") == 1  # the whole sample's reading
    assert page.count("at or above 20%</td>") == 3  # the sample and each field: a few words
    counts_table_end = page.index("</table>", page.index("<h2>Blast count"))
    reading = page.index('<p class="reading"><b>Reading:</b>')
    assert counts_table_end < reading < page.index("the WHO uses")  # below it, the page's width


@pytest.mark.parametrize(
    ("calibration", "said", "unsaid"),
    [
        ({"threshold": 0.13, "uncertain_low": 0.02, "uncertain_high": 0.39},
         "called blast at a calibrated probability of 0.39 or more and normal below 0.02; "
         "between the two (around the decision threshold 0.13) sent to review", "at least"),
        ({"threshold": 0.5, "uncertain_low": 0.5, "uncertain_high": 0.5},
         "blast when the calibrated probability is at least 0.50", "review"),
        ({"threshold": 0.66, "uncertain_low": 0.2, "uncertain_high": 0.5},
         "at least 0.66; sent to review between 0.20 and 0.50", "called blast"),
    ],
)  # fmt: skip
def test_the_decision_rule_reads_as_what_each_cell_gets(calibration, said, unsaid):
    """A band holding the threshold once read 'blast at 0.13 or more; review 0.02-0.39'."""
    from leukemia_core.report import _decision_words

    words = _decision_words({"model_calibration": calibration})
    assert said in words and unsaid not in words


def test_the_counts_table_keeps_uncertain_cells_apart_from_those_left_out(record: CaseRecord):
    # as the Counts page does: an uncertain cell awaits a decision, it is not left out
    page = case_report_html(record)
    assert "<th>Cells counted</th><th>Uncertain</th><th>Left out</th>" in page
    row = re.search(r"<tr><td>Whole sample</td>(.*?)</tr>", page).group(1)
    values = [int(v) for v in re.findall(r'<td class="num">(\d+)</td>', row)[:4]]
    n_uncertain = sum(c.label == "uncertain" for c in record.cells)
    count = record.counts()
    assert n_uncertain and values == [
        count.n_blasts, count.n_counted, n_uncertain, count.n_excluded - n_uncertain]  # fmt: skip


def _alter_outside_the_app(path: Path, case_id: str) -> None:
    """What a hand edit of the database does: the signed-case guard dropped, labels changed."""
    with sqlite3.connect(path) as conn:
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'cells'"
        ).fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE cells SET label = 'blast' WHERE case_id = ? AND cell_id <= 6",
                     (case_id,))  # fmt: skip


def test_a_record_altered_outside_the_app_says_so_in_every_export(store: CaseStore, case_id):
    """A signed case edited in the database exported as an ordinary signed result, green."""
    store.relabel_cell(case_id, 0, 11, "normal", reviewer="Dr. A")
    store.sign_case(case_id, reviewer="Dr. A")
    assert store.load_case(case_id).altered == ()
    intact = case_report_html(store.load_case(case_id))
    assert '<p class="signed">' in intact and "changed outside the app" not in intact
    _alter_outside_the_app(store.path, case_id)
    record = store.load_case(case_id)
    assert record.altered
    page = case_report_html(record)
    assert page.count("This record was changed outside the app") == 2  # top and sign-off
    assert 'class="signed"' not in page and "ALTERED OUTSIDE THE APP" in page
    assert "ALTERED OUTSIDE THE APP \\2014  do not use" in page  # every printed page's margin
    document = json.loads(case_json(record))
    assert document["altered"] == list(record.altered) and document["status"] == "signed"
    rows = list(csv.DictReader(io.StringIO(cells_csv(record).decode())))
    assert {r["record_altered"] for r in rows} == {"true"}
    intact_rows = csv.DictReader(io.StringIO(cells_csv(store.load_case(case_id)).decode()))
    assert "record_altered" in intact_rows.fieldnames


def test_a_superseded_version_is_no_current_result_in_any_export(store: CaseStore, case_id):
    store.relabel_cell(case_id, 0, 11, "normal", reviewer="Dr. A")
    store.sign_case(case_id, reviewer="Dr. A")
    current = json.loads(case_json(store.load_case(case_id)))
    assert current["superseded_by"] is None and current["altered"] == []
    newer = store.reopen_case(case_id, reviewer="Dr. B", reason="second look")
    old = store.load_case(case_id)
    sign_off = case_report_html(old).split("<h2>Sign-off</h2>")[1]
    assert sign_off.startswith('<p class="unsigned">Signed by Dr. A at ')
    assert "SUPERSEDED: reopened as version 2" in sign_off and "not the current result" in sign_off
    assert "SUPERSEDED by version 2" in case_report_html(old)  # the status row
    document = json.loads(case_json(old))
    assert document["superseded_by"]["case_id"] == newer
    assert document["superseded_by"]["version"] == 2
    rows = list(csv.DictReader(io.StringIO(cells_csv(old).decode())))
    assert {r["superseded_by_version"] for r in rows} == {"2"}
    assert {r["research_use"] for r in rows} == {"research use only; not for diagnosis"}
    rows = list(csv.DictReader(io.StringIO(cells_csv(store.load_case(newer)).decode())))
    assert {r["superseded_by_version"] for r in rows} == {""}


def test_the_printed_percentage_and_its_level_agree_next_to_a_threshold(store: CaseStore):
    """10 of 201 is 4.975%: the table printed "5.0%" beside "below 5%"."""
    cells = [Cell(i, (0, 0, 4, 4), (2.0, 2.0), crop=pixels(i % 200), blast_probability=0.5,
                  model_label="blast" if i < 10 else "normal", reviewed=True)
             for i in range(201)]  # fmt: skip
    image = np.zeros((48, 64, 3), np.uint8)
    case_id = store.create_case("S-201", [Field(0, "f.png", image)], cells, model_name="m",
                                model_checksum="sha256:0", thresholds={}, created_by="Dr. A")  # fmt: skip
    page = case_report_html(store.load_case(case_id))
    row = re.search(r"<tr><td>Whole sample</td>(.*?)</tr>", page).group(1)
    assert '<td class="num">4.98%</td>' in row
    assert "<td>below 5%, too few cells to rule out 5%</td>" in row  # as the reading says
    assert "5.0%" not in page


def test_single_cell_images_get_no_threshold_level_and_no_row_each(store: CaseStore):
    cells = [Cell(1, (0, 0, 4, 4), (2.0, 2.0), crop=pixels(i), field_index=i,
                  blast_probability=0.9 if i < 3 else 0.1,
                  model_label="blast" if i < 3 else "normal", reviewed=True)
             for i in range(6)]  # fmt: skip
    image = np.zeros((8, 8, 3), np.uint8)
    case_id = store.create_case(
        "S-cells", [Field(i, f"cell{i}.png", image) for i in range(6)], cells, model_name="m",
        model_checksum="sha256:0", thresholds={"mode": "cells",
                                               "blast_percent_thresholds": [5.0, 20.0]}, created_by="Dr. A",
    )  # fmt: skip
    page = case_report_html(store.load_case(case_id))
    assert "<td>no threshold (single cells)</td>" in page and "at or above 20%" not in page
    assert "Field 1: cell0.png" not in page and "blast levels" not in page


def test_long_unbroken_names_wrap_instead_of_pushing_the_counts_off_the_page(record: CaseRecord):
    """Instrument file names without break points cut the CI and Level columns off the A4 PDF
    (the print is checked with Chromium in test_pdf); here the rules that prevent it."""
    from leukemia_core.report_style import REPORT_CSS

    assert "td, p, li, figcaption, h1, h3 { overflow-wrap: anywhere; }" in REPORT_CSS
    long_id = "S" + "_x" * 60
    page = case_report_html(replace(record, sample_id=long_id, patient_id="P" * 80))
    margin = re.search(r"@top-left \{ content: \"(.*?)\";", page).group(1)
    assert len(re.sub(r"\\[0-9a-f]+ ", "_", margin)) < 80  # one short line, cut with an ellipsis


def test_the_level_of_a_small_count_says_it_cannot_rule_out_the_5_percent_level():
    """ "no blasts" for 0 of 4 cells (interval to 49%) read as a negative screen in a walk."""
    from leukemia_core.report import _level

    assert _level(count_blasts(0, 4), False) == "no blasts, too few cells to rule out 5%"
    assert _level(count_blasts(0, 300), False) == "no blasts"
    assert _level(count_blasts(1, 400), False) == "below 5%"
