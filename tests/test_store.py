"""Tests of leukemia_core.store: atomic cases, relabel audit, sign-off, reopen, search, concurrency."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from leukemia_core.counting import summarize_labels
from leukemia_core.domain import DomainAssessment
from leukemia_core.imaging import png_bytes, rgb_from_png
from leukemia_core.quality import QualityWarning
from leukemia_core.report import case_report_html
from leukemia_core.store import (
    DATABASE_ENV_VAR,
    SCHEMA_VERSION,
    CaseChangedError,
    CaseInputError,
    CaseNotFoundError,
    CaseNotReopenableError,
    CaseSignedError,
    CaseStore,
    CaseStoreError,
    Cell,
    CellNotFoundError,
    Field,
    SignOffBlockedError,
    default_database_path,
)

VALID_LABELS = "blast, normal, uncertain, excluded, not_wbc, border"
THRESHOLDS = {"blast_probability": 0.5, "uncertain_band": [0.35, 0.65]}


def img(value: int, size: int = 6) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def field(name: str, width: int = 64, height: int = 48, value: int = 0, **kw) -> Field:
    return Field(0, name, np.full((height, width, 3), value, np.uint8), **kw)


def cell(field_index: int, cell_id: int, label: str, probability: float | None = 0.5, **kw):
    box = (10 * cell_id, 5, 10 * cell_id + 8, 13)
    centre = (10 * cell_id + 4.0, 9.0)
    outline = np.array([box[:2], (box[2] - 1, box[1]), (box[2] - 1, box[3] - 1)], np.float32)
    return Cell(cell_id, box, centre, kw.pop("outline", outline), field_index=field_index,
                blast_probability=probability, model_label=label, **kw)  # fmt: skip


def cells_for(labels_by_field: list[list[str]], reviewed: bool = True) -> list[Cell]:
    """Cells already reviewed (accepted) unless asked otherwise: most tests are not about that."""
    return [
        cell(f, i + 1, label, crop=img(i), reviewed=reviewed)
        for f, labels in enumerate(labels_by_field)
        for i, label in enumerate(labels)
    ]


def new_case(
    store: CaseStore, labels_by_field: list[list[str]], sample_id: str = "S-1", reviewed=True
) -> str:
    fields = [field(f"field-{f}.png") for f in range(len(labels_by_field))]
    return store.create_case(
        sample_id,
        fields,
        cells_for(labels_by_field, reviewed),
        model_name="cnmc-demo",
        model_checksum="sha256:abc",
        thresholds=THRESHOLDS,
        created_by="pipeline",
    )


def row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        tables = ("cases", "fields", "cells", "audit")
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


@pytest.fixture
def store(tmp_path: Path) -> CaseStore:
    return CaseStore(tmp_path / "cases.sqlite3")


def test_create_and_load_round_trip(store: CaseStore):
    fields = [field("a.png", 16, 16, 200), field("b.png", 32, 32)]
    cells = [
        cell(0, 1, "blast", 0.93, crop=img(1), overlay=img(2), reviewed=True, cell_area_px=40),
        cell(0, 2, "Normal ", 0.04),
        cell(1, 1, "uncertain", None, touches_border=True, nucleus_area_px=7),
    ]
    case_id = store.create_case(
        "S-42", fields, cells, model_name="m", model_checksum="c", thresholds=THRESHOLDS,
        created_by="tech",
    )  # fmt: skip
    record = store.load_case(case_id)
    assert len(case_id) == 32 and int(case_id, 16) >= 0
    assert (record.version, record.parent_id, record.status) == (1, None, "open")
    assert (record.sample_id, record.model_name, record.thresholds) == ("S-42", "m", THRESHOLDS)
    assert [f.index for f in record.fields] == [0, 1]
    assert [f.image.tolist() for f in record.fields] == [img(200, 16).tolist(), img(0, 32).tolist()]
    assert list(record.cells) == cells  # every attribute (outline, images, flags) as stored
    assert [(c.field_index, c.cell_id, c.label) for c in record.cells] == [
        (0, 1, "blast"),
        (0, 2, "normal"),
        (1, 1, "uncertain"),
    ]
    first = record.cells[0]
    assert (first.bbox, first.centroid, first.blast_probability) == (
        (10, 5, 18, 13),
        (14.0, 9.0),
        0.93,
    )
    assert np.array_equal(first.crop, img(1)) and np.array_equal(first.overlay, img(2))
    assert record.cells[2].blast_probability is None
    assert all(c.label == c.model_label and not c.changed_by_reviewer for c in record.cells)
    assert [(a.action, a.reviewer) for a in record.audit] == [("created", "tech")]
    assert record.audit[0].note == "3 cells in 2 fields labelled by m"
    one = store.create_case("S-43", fields[:1], cells[:1], model_name="m", model_checksum="c",
                            thresholds=THRESHOLDS, created_by="tech")  # fmt: skip
    assert store.load_case(one).audit[0].note == "1 cell in 1 field labelled by m"
    # cells 2 of field 0 and 1 of field 1 await review: the reading says so
    assert record.counts() == summarize_labels(["blast", "normal", "uncertain"], n_unreviewed=2)
    assert record.field_counts() == (
        summarize_labels(["blast", "normal"], n_unreviewed=1),
        summarize_labels(["uncertain"], n_unreviewed=1),
    )


def test_failure_on_the_last_cell_leaves_no_case(store: CaseStore):
    with pytest.raises(
        ValueError, match=f"'lymphoblast\\?' is not a cell label; expected one of: {VALID_LABELS}"
    ):
        cell(0, 9, "lymphoblast?")  # a cell cannot even hold an unknown label
    cells = [*cells_for([["blast", "normal", "normal"]]), cell(0, 9, "normal", 1.5)]
    with pytest.raises(CaseInputError, match="blast_probability must be between 0 and 1"):
        store.create_case(
            "S-1", [field("a", 9, 9)], cells, model_name="m", model_checksum="", thresholds={},
            created_by="tech",
        )  # fmt: skip
    assert row_counts(store.path) == {"cases": 0, "fields": 0, "cells": 0, "audit": 0}
    assert store.list_cases() == []


@pytest.mark.parametrize(
    ("sample_id", "fields", "cells", "thresholds", "match"),
    [
        ("", 1, [], {}, "sample_id is empty"),
        ("S", 0, [], {}, "has no fields"),
        ("S", 1, [], {"t": object()}, "thresholds must be a dict of JSON values"),
        (
            "S",
            1,
            [cell(1, 1, "blast")],
            {},
            r"field_index must be the position of its field, 0 to 0",
        ),
        ("S", 1, [cell(0, 1, "blast"), cell(0, 1, "normal")], {}, "already has a cell with id 1"),
        ("S", 1, [cell(0, 1, "blast", 1.5)], {}, "blast_probability must be between 0 and 1"),
        ("S", 1, [cell(0, 1, "blast", crop=np.zeros((4, 4)))], {}, "crop must be an \\(H, W, 3\\)"),
        ("S", 1, [Cell(1, (1, 2, 3), (0, 0), model_label="blast")], {}, "bbox must be 4 whole"),
        (
            "S",
            1,
            [Cell(1.5, (1, 2, 3, 4), (0, 0), model_label="blast")],
            {},
            "cell_id must be a whole",
        ),
        ("S", 1, ["blast"], {}, "Cell 0 is a str; pass Cell objects"),
    ],
)
def test_create_case_refuses_bad_input_and_writes_nothing(
    store, sample_id, fields, cells, thresholds, match
):
    field_list = [field("a", 9, 9)] * fields
    with pytest.raises(CaseInputError, match=match):
        store.create_case(
            sample_id, field_list, cells, model_name="m", model_checksum="", thresholds=thresholds,
            created_by="tech",
        )  # fmt: skip
    assert row_counts(store.path)["cases"] == 0


def test_numpy_integers_are_accepted(store: CaseStore):
    entry = Cell(
        np.int32(3),
        tuple(np.array([1, 2, 5, 6])),
        (1.5, 2.5),
        field_index=np.int64(0),
        blast_probability=np.float32(0.25),
        model_label="normal",
        cell_area_px=np.int64(12),
    )
    case_id = store.create_case(
        "S",
        [field("a", 9, 9)],
        [entry],
        model_name="m",
        model_checksum="",
        thresholds={},
        created_by="tech",
    )
    store.relabel_cell(case_id, np.int64(0), np.int64(3), "blast", reviewer="R")
    assert store.load_case(case_id).cells[0].label == "blast"


def test_relabel_records_audit_and_changes_counts(store: CaseStore):
    case_id = new_case(store, [["blast", "normal", "normal", "normal"]])
    before = store.load_case(case_id)
    store.relabel_cell(case_id, 0, 2, " BLAST ", reviewer="  Dr. Ana Ruiz ", note="nucleoli")
    after = store.load_case(case_id)
    assert (before.counts().n_blasts, after.counts().n_blasts) == (1, 2)
    assert after.model_counts() == before.counts()
    assert [c.changed_by_reviewer for c in after.cells] == [False, True, False, False]
    entry = after.audit[-1]
    assert (entry.case_id, entry.version, entry.action, entry.reviewer) == (
        case_id,
        1,
        "relabel",
        "Dr. Ana Ruiz",
    )
    assert (entry.field_index, entry.cell_id, entry.from_label, entry.to_label, entry.note) == (
        0,
        2,
        "normal",
        "blast",
        "nucleoli",
    )
    when = datetime.fromisoformat(entry.at)
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


def test_relabel_to_the_same_label_is_a_no_op(store: CaseStore):
    case_id = new_case(store, [["blast", "normal"]])
    store.relabel_cell(case_id, 0, 1, "blast", reviewer="R")
    assert len(store.load_case(case_id).audit) == 1


@pytest.mark.parametrize(
    ("args", "reviewer", "error", "match"),
    [
        (("nope", 0, 1, "blast"), "R", CaseNotFoundError, "No case with id 'nope'.*list_cases"),
        ((None, 0, 99, "blast"), "R", CellNotFoundError, "has no cell 99 in field 0"),
        ((None, 3, 1, "blast"), "R", CellNotFoundError, "has no cell 1 in field 3"),
        ((None, 0, 1, "blast"), "  ", CaseInputError, "reviewer name is empty.*enter your name"),
        ((None, 0, 1, "blast"), None, CaseInputError, "reviewer name is empty"),
        (
            (None, 0, 1, "myeloblast"),
            "R",
            ValueError,
            f"'myeloblast' is not a cell label; expected one of: {VALID_LABELS}",
        ),
        (
            (None, "0", 1, "blast"),
            "R",
            CaseInputError,
            "field_index must be a whole number, got '0'",
        ),
    ],
)
def test_relabel_errors(store, args, reviewer, error, match):
    case_id = new_case(store, [["normal"]])
    args = (args[0] or case_id, *args[1:])
    with pytest.raises(error, match=match):
        store.relabel_cell(*args, reviewer=reviewer)
    assert len(store.load_case(case_id).audit) == 1


def test_sign_is_blocked_while_cells_are_uncertain(store: CaseStore):
    case_id = new_case(store, [["blast", "uncertain"], ["uncertain", "normal"]])
    with pytest.raises(
        SignOffBlockedError,
        match=f"case {case_id[:8]}: 2 cells are still labelled uncertain; they must be reviewed "
        "first .label each one",
    ) as refused:
        store.sign_case(case_id, reviewer="R")
    assert case_id not in str(refused.value)  # a short id a person can read, not 32 characters
    store.relabel_cell(case_id, 0, 2, "normal", reviewer="R")
    with pytest.raises(SignOffBlockedError, match="1 cell is still labelled uncertain"):
        store.sign_case(case_id, reviewer="R")
    assert store.load_case(case_id).status == "open"
    store.relabel_cell(case_id, 1, 1, "excluded", reviewer="R")
    store.sign_case(case_id, reviewer="Dr. Bo")
    record = store.load_case(case_id)
    assert (record.status, record.signed_by, record.is_signed) == ("signed", "Dr. Bo", True)
    assert datetime.fromisoformat(record.signed_at).utcoffset().total_seconds() == 0
    assert (record.audit[-1].action, record.audit[-1].reviewer) == ("signed", "Dr. Bo")
    assert record.audit[-1].note == "blasts 33.3% of 3 cells; record frozen"  # what was signed


def test_sign_needs_a_reviewer_and_a_case(store: CaseStore):
    case_id = new_case(store, [["normal"]])
    with pytest.raises(CaseInputError, match="reviewer name is empty"):
        store.sign_case(case_id, reviewer="")
    with pytest.raises(CaseNotFoundError, match="No case with id 'missing'"):
        store.sign_case("missing", reviewer="R")


def test_signed_case_is_frozen(store: CaseStore):
    case_id = new_case(store, [["blast", "normal"]])
    store.sign_case(case_id, reviewer="Dr. A")
    frozen = store.load_case(case_id)
    with pytest.raises(CaseSignedError, match=r"signed by Dr\. A at .* is frozen; reopen it"):
        store.relabel_cell(case_id, 0, 1, "normal", reviewer="R")
    with pytest.raises(CaseSignedError, match="is frozen"):
        store.sign_case(case_id, reviewer="Dr. A")
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="signed"):
        conn.execute("UPDATE cells SET label = 'normal' WHERE case_id = ?", (case_id,))
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="kept"):
        conn.execute("DELETE FROM cases WHERE case_id = ?", (case_id,))
    assert store.load_case(case_id) == frozen


def test_reopen_creates_a_new_version_and_keeps_the_signed_one(store: CaseStore):
    case_id = new_case(store, [["blast", "uncertain"], ["normal"]], sample_id="S-7")
    store.relabel_cell(case_id, 0, 2, "normal", reviewer="R")
    store.sign_case(case_id, reviewer="Dr. A")
    signed = store.load_case(case_id)

    new_id = store.reopen_case(case_id, reviewer="Dr. B", reason="cell 2 is a blast after all")
    reopened = store.load_case(new_id)
    assert new_id != case_id
    assert (reopened.version, reopened.parent_id, reopened.sample_id) == (2, case_id, "S-7")
    assert (reopened.status, reopened.signed_by, reopened.created_by) == ("open", None, "Dr. B")
    assert reopened.cells == signed.cells  # labels, model labels and images copied
    assert reopened.fields == signed.fields
    assert [(a.action, a.case_id, a.version) for a in reopened.audit] == [("reopened", new_id, 2)]
    # the reason first, then where from: a table column cut the reason after a 32-character id
    assert reopened.audit[0].note.startswith("cell 2 is a blast after all")
    assert f"(reopened from version 1 (case {case_id[:8]})" in reopened.audit[0].note

    store.relabel_cell(new_id, 0, 1, "normal", reviewer="Dr. B")
    old = store.load_case(case_id)
    assert replace(old, superseded_by=None) == signed  # unchanged, but it says it was replaced
    assert (old.superseded_by.case_id, old.superseded_by.version) == (new_id, 2)
    assert reopened.superseded_by is None and signed.superseded_by is None
    assert "SUPERSEDED by version 2" in case_report_html(old)
    # not shown as a valid signature: neither the status nor the page margins in green
    assert '<span class="unsigned">SIGNED by' in case_report_html(old)
    margin = re.compile(r"@top-right \{[^}]*color: #(\w+); font-weight")
    assert margin.search(case_report_html(old))[1] == "b00020"
    assert margin.search(case_report_html(signed))[1] == "0b6b2b"
    assert store.load_case(new_id).counts().n_blasts == 0

    with pytest.raises(
        CaseNotReopenableError, match=f"already reopened as {new_id} \\(version 2\\)"
    ):
        store.reopen_case(case_id, reviewer="Dr. C")
    with pytest.raises(CaseNotReopenableError, match="is not signed"):
        store.reopen_case(new_id, reviewer="Dr. C")
    with pytest.raises(CaseNotFoundError):
        store.reopen_case("0" * 32, reviewer="Dr. C")


def test_list_cases_newest_first_with_counts_and_search(store: CaseStore):
    first = new_case(store, [["blast", "normal", "uncertain", "border"]], sample_id="ALL-2024-001",
                     reviewed=False)  # fmt: skip
    second = new_case(store, [["normal"], ["blast", "blast"]], sample_id="all-2024-002")
    third = new_case(store, [["normal"]], sample_id="CTRL_9")
    listed = store.list_cases()
    assert [s.case_id for s in listed] == [third, second, first]
    summary = listed[2]
    assert (summary.n_cells, summary.n_blasts, summary.n_counted, summary.n_uncertain) == (
        4,
        1,
        2,
        1,
    )
    assert (summary.version, summary.status, summary.sample_id) == (1, "open", "ALL-2024-001")
    assert summary.n_unreviewed == 3  # the border cell needs no review
    store.edit_cell(first, 0, 1, reviewed=True, reviewer="Dr. A")  # accepted as it is
    assert store.list_cases("001")[0].n_unreviewed == 2
    assert [s.case_id for s in store.list_cases("all-2024")] == [second, first]
    assert [s.case_id for s in store.list_cases(second[:6])] == [second]
    assert [s.case_id for s in store.list_cases(" 001 ")] == [first]
    # A separator matches any separator, as a lab types ids ("HEM 24 0101" for "HEM-24-0101"),
    # and nothing else: no SQL wildcard.
    assert [s.case_id for s in store.list_cases("ALL 2024 001")] == [first]
    assert [s.case_id for s in store.list_cases("ctrl-9")] == [third]
    assert store.list_cases("ALLx2024") == [] and store.list_cases("%") == []
    assert [s.case_id for s in store.list_cases(limit=1)] == [third]
    with pytest.raises(CaseInputError, match="limit must be a whole number of 1 or more, got 0"):
        store.list_cases(limit=0)


def test_two_threads_write_different_cases_without_mixing(store: CaseStore):
    barrier = threading.Barrier(2)
    made: dict[str, list[tuple[str, list[str]]]] = {"A": [], "B": []}
    errors: list[BaseException] = []

    def work(tag: str, label: str) -> None:
        try:
            barrier.wait()
            for i in range(6):
                labels = [label] * (3 + i)
                case_id = new_case(store, [labels], sample_id=f"{tag}-{i}")
                store.relabel_cell(case_id, 0, 1, "excluded", reviewer=tag)
                made[tag].append((case_id, ["excluded", *labels[1:]]))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=a) for a in (("A", "blast"), ("B", "normal"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for tag, cases in made.items():
        assert len(cases) == 6
        for case_id, labels in cases:
            record = store.load_case(case_id)
            assert record.sample_id.startswith(f"{tag}-")
            assert [c.label for c in record.cells] == labels
            assert [a.reviewer for a in record.audit] == ["pipeline", tag]
    assert len(store.list_cases()) == 12


_WORKER = """
import sys
import numpy as np
from leukemia_core.store import CaseStore, Cell, Field
store = CaseStore(sys.argv[1])
for i in range(5):
    cells = [Cell(k, (0, 0, 4, 4), (2.0, 2.0), blast_probability=0.5, model_label=sys.argv[3])
             for k in range(1, 4 + i)]
    case_id = store.create_case(f"{sys.argv[2]}-{i}", [Field(0, "f", np.zeros((8, 8, 3), np.uint8))],
                                cells, model_name="m", model_checksum="", thresholds={},
                                created_by="tech")
    print(case_id)
"""


def test_two_processes_share_one_database(tmp_path: Path):
    path = tmp_path / "shared.sqlite3"
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), tag, label],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag, label in (("P", "blast"), ("Q", "normal"))
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    store = CaseStore(path)
    for (out, _), label in zip(outputs, ("blast", "normal"), strict=True):
        ids = out.split()
        assert len(ids) == 5
        for i, case_id in enumerate(ids):
            assert [c.label for c in store.load_case(case_id).cells] == [label] * (3 + i)


def test_database_path_comes_from_the_environment(tmp_path: Path, monkeypatch):
    target = tmp_path / "deep" / "dir" / "lab.sqlite3"
    monkeypatch.setenv(DATABASE_ENV_VAR, str(target))
    assert default_database_path() == target
    assert target.parent.is_dir()
    assert CaseStore().path == target and target.is_file()


def test_default_database_path_is_under_home(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "share" / "leukemia-screen" / "cases.sqlite3"
    assert default_database_path() == expected
    assert expected.parent.is_dir()


def test_schema_is_versioned_and_in_wal_mode(store: CaseStore):
    new_case(store, [["blast"]])
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert len(CaseStore(store.path).list_cases()) == 1  # reopening keeps the data


def test_refuses_newer_schema_and_non_databases(tmp_path: Path):
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(
        CaseStoreError, match=f"newer than this app.s {SCHEMA_VERSION}; update the app"
    ):
        CaseStore(newer)
    junk = tmp_path / "notes.sqlite3"
    junk.write_text("not a database " * 100)
    with pytest.raises(
        CaseStoreError, match=f"Cannot open .*notes.sqlite3 as a case database.*{DATABASE_ENV_VAR}"
    ):
        CaseStore(junk)


def test_thresholds_are_stored_as_json(store: CaseStore):
    case_id = new_case(store, [["normal"]])
    with sqlite3.connect(store.path) as conn:
        stored = conn.execute(
            "SELECT thresholds FROM cases WHERE case_id = ?", (case_id,)
        ).fetchone()[0]
    assert json.loads(stored) == THRESHOLDS


# ---- schema migrations ----------------------------------------------------------------------
# The schema of release 1 (user_version 1), frozen here: a database it wrote must still open.
_SCHEMA_V1 = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
    parent_id TEXT UNIQUE REFERENCES cases (case_id), sample_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'signed')),
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, model_name TEXT NOT NULL,
    model_checksum TEXT NOT NULL, thresholds TEXT NOT NULL, signed_by TEXT, signed_at TEXT);
CREATE INDEX IF NOT EXISTS cases_by_sample ON cases (sample_id);
CREATE TABLE IF NOT EXISTS fields (
    case_id TEXT NOT NULL REFERENCES cases (case_id), field_index INTEGER NOT NULL,
    name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, image_png BLOB,
    PRIMARY KEY (case_id, field_index));
CREATE TABLE IF NOT EXISTS cells (
    case_id TEXT NOT NULL, field_index INTEGER NOT NULL, cell_id INTEGER NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    centroid_x REAL NOT NULL, centroid_y REAL NOT NULL, blast_probability REAL,
    model_label TEXT NOT NULL, label TEXT NOT NULL, crop_png BLOB, overlay_png BLOB,
    PRIMARY KEY (case_id, field_index, cell_id),
    FOREIGN KEY (case_id, field_index) REFERENCES fields (case_id, field_index));
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL REFERENCES cases (case_id),
    version INTEGER NOT NULL, action TEXT NOT NULL, reviewer TEXT NOT NULL, at TEXT NOT NULL,
    field_index INTEGER, cell_id INTEGER, from_label TEXT, to_label TEXT, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_case ON audit (case_id);
CREATE TRIGGER IF NOT EXISTS signed_cells_are_frozen BEFORE UPDATE ON cells
    WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
CREATE TRIGGER IF NOT EXISTS signed_cases_are_frozen BEFORE UPDATE ON cases
    WHEN OLD.status = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
CREATE TRIGGER IF NOT EXISTS cases_are_kept BEFORE DELETE ON cases
    BEGIN SELECT RAISE(ABORT, 'case records are kept, never deleted'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are never changed'); END;
PRAGMA user_version = 1;
COMMIT;
"""


def test_a_database_of_the_previous_release_opens_and_gains_the_domain_columns(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_SCHEMA_V1)
    conn.executescript(
        "BEGIN; INSERT INTO cases VALUES ('c1', 1, NULL, 'S-OLD', 'open', '2026-01-01T00:00:00', "
        "'tech', 'old-model', 'sha', '{}', NULL, NULL); "
        "INSERT INTO fields VALUES ('c1', 0, 'f.png', 64, 48, NULL); "
        "INSERT INTO cells VALUES ('c1', 0, 1, 1, 2, 9, 9, 5.0, 5.0, 0.9, 'blast', 'blast', NULL, "
        "NULL); COMMIT;"
    )
    conn.close()
    store = CaseStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
        columns = [r[1] for r in conn.execute("PRAGMA table_info(cells)")]
        assert {"domain_score", "outline", "reviewed"} <= set(columns)
    old = store.load_case("c1")
    assert old.sample_id == "S-OLD" and old.domain is None and old.fields[0].domain is None
    assert old.cells[0].domain_score is None and old.counts().n_blasts == 1
    store.relabel_cell("c1", 0, 1, "normal", reviewer="A")  # the migrated case still works
    assert store.load_case("c1").counts().n_blasts == 0
    CaseStore(path)  # opening again migrates nothing twice
    assert len(store.list_cases()) == 1
    new_case(store, [["blast"]])  # and new cases are stored alongside


def test_field_notes_are_kept_with_the_case_and_their_change_outside_shows(store: CaseStore):
    """A possible clump's note, or how a damaged file was read, was gone once the case was
    saved (the Analyze page dropped the clump note after fields were added)."""
    clump = "Cell 6 is several times the size of this field's other white cells"
    damaged = "the file ends early: the missing rows are grey"
    case_id = store.create_case(
        "S-N", [field("a.png", notes=(clump,)), field("b.png")], [cell(0, 1, "uncertain")],
        model_name="m", model_checksum="", thresholds={}, created_by="tech",
    )  # fmt: skip
    store.add_fields(case_id, [field("c.png", value=7, notes=(damaged,))], [], reviewer="tech",
                     domain=None, model_checksum="")  # fmt: skip
    record = store.load_case(case_id)
    assert [f.notes for f in record.fields] == [(clump,), (), (damaged,)]
    assert record.altered == ()
    store.relabel_cell(case_id, 0, 1, "normal", reviewer="tech")
    store.sign_case(case_id, reviewer="tech")
    reopened = store.load_case(store.reopen_case(case_id, reviewer="tech"))
    assert [f.notes for f in reopened.fields] == [(clump,), (), (damaged,)]
    assert reopened.altered == ()
    for notes in ("[]", '["a note nobody wrote"]', "not json"):  # cleared, added, garbled
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE fields SET notes = ? WHERE case_id = ? AND field_index = ?",
                         (notes, reopened.case_id, 2 if notes == "[]" else 0))  # fmt: skip
        changed = store.load_case(reopened.case_id)
        assert changed.altered != ()
        with sqlite3.connect(store.path) as conn:  # put back for the next change
            for index, kept in enumerate(reopened.fields):
                conn.execute("UPDATE fields SET notes = ? WHERE case_id = ? AND field_index = ?",
                             (json.dumps(list(kept.notes)), reopened.case_id, index))  # fmt: skip
    assert store.load_case(reopened.case_id).altered == ()
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE fields SET notes = 'not json' WHERE case_id = ?", (reopened.case_id,))
    assert store.load_case(reopened.case_id).fields[0].notes == (
        "The notes stored with this field cannot be read.",)  # fmt: skip


def test_domain_assessments_and_cell_scores_are_stored_and_kept_on_reopen(store: CaseStore):
    warned, fine = DomainAssessment(3.2, 1.8, 2), DomainAssessment(1.1, 1.8, 1)
    fields = [field("a.png", domain=warned), field("b.png", domain=fine)]
    cells = [cell(0, 1, "uncertain", domain_score=3.0), cell(0, 2, "uncertain", domain_score=3.4),
             cell(1, 1, "normal", domain_score=1.1)]  # fmt: skip
    sample = DomainAssessment(3.0, 1.8, 3)
    case_id = store.create_case("S-D", fields, cells, model_name="m", model_checksum="",
                                thresholds={}, domain=sample, created_by="tech")  # fmt: skip
    record = store.load_case(case_id)
    assert record.domain == sample and record.domain.warned
    assert [f.domain for f in record.fields] == [warned, fine]
    # the case list says what sent the cells to review (a walk saw no flag there)
    (listed,) = store.list_cases("S-D")
    assert listed.out_of_domain and listed.n_fields_out_of_domain == 1
    assert listed.n_fields_failing_quality == 0
    # one field unlike the training data in a sample that resembles it: the list says which
    mixed = store.create_case("S-F", fields, cells, model_name="m", model_checksum="",
                              thresholds={}, domain=DomainAssessment(1.2, 1.8, 3),
                              created_by="tech")  # fmt: skip
    (listed,) = store.list_cases(mixed[:8])
    assert not listed.out_of_domain and listed.n_fields_out_of_domain == 1
    blur = QualityWarning("focus", 9.0, 4.0, "Out of focus.")
    plain = store.create_case("S-Q", [field("c.png", quality=(blur,))], [cell(0, 1, "normal")],
                              model_name="m", model_checksum="", thresholds={},
                              created_by="tech")  # fmt: skip
    (listed,) = store.list_cases(plain[:8])
    assert not listed.out_of_domain and listed.n_fields_failing_quality == 1
    assert [c.domain_score for c in record.cells] == [3.0, 3.4, 1.1]
    for c in record.cells:
        store.relabel_cell(case_id, c.field_index, c.cell_id, "normal", reviewer="A")
    store.mark_reviewed(case_id, [c.key for c in record.cells], reviewer="A")
    store.sign_case(case_id, reviewer="A")
    reopened = store.load_case(store.reopen_case(case_id, reviewer="A"))
    assert reopened.domain == sample and [f.domain for f in reopened.fields] == [warned, fine]
    assert [c.domain_score for c in reopened.cells] == [3.0, 3.4, 1.1]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"domain": {"score": 2}}, "domain is a dict; pass a DomainAssessment"),
        ({"cells": [cell(0, 1, "normal", domain_score=float("nan"))]}, "domain_score must be"),
        ({"fields": [field("a", 4, 4, domain=2.0)]}, "Field 0 domain is a float"),
    ],
)
def test_bad_domain_values_are_refused(store: CaseStore, kwargs, words):
    values = {"fields": [field("a", 4, 4)], "cells": [], **kwargs}
    with pytest.raises(CaseInputError, match=words):
        store.create_case("S", values.pop("fields"), values.pop("cells"), model_name="m",
                          model_checksum="", thresholds={}, created_by="tech", **values)  # fmt: skip


# ---- the database of the release before the one-cell model (schema 2) ----------------------
# tests/fixtures/cases_release2.sqlite3 was written by that release (commit f004996): a case
# with 5 cells relabelled, signed, reopened as version 2 and relabelled again; the JSON beside
# it is what that release's load_case returned (image bytes as SHA-256).
FIXTURES = Path(__file__).parent / "fixtures"


def _png_digest(image: np.ndarray | None) -> str | None:
    if image is None:
        return None
    return hashlib.sha256(png_bytes(image)).hexdigest()


def _release_copy(tmp_path: Path, release: int) -> tuple[Path, dict]:
    """A copy of the database a release wrote (at its own schema version) and what it loaded."""
    path = tmp_path / f"release{release}.sqlite3"
    shutil.copy(FIXTURES / f"cases_release{release}.sqlite3", path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == release
    return path, json.loads((FIXTURES / f"cases_release{release}.json").read_text())


def test_a_database_of_release_2_migrates_without_loss(tmp_path: Path):
    path, expected = _release_copy(tmp_path, 2)
    store = CaseStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(s.case_id for s in store.list_cases()) == sorted(expected)
    for case_id, old in expected.items():
        record = store.load_case(case_id)
        assert {k: getattr(record, k) for k in old["header"]} == old["header"]
        assert record.thresholds == old["thresholds"]
        assert (None if record.domain is None else record.domain.to_dict()) == old["domain"]
        # The trail, row for row, then one row each from schemas 5, 6 and 7 (new columns, digest).
        old_rows, upgrades = record.audit[: len(old["audit"])], record.audit[len(old["audit"]) :]
        assert [a.__dict__ for a in old_rows] == old["audit"]
        assert [(a.action, a.cell_id, a.note[:17]) for a in upgrades] == [
            ("schema upgraded", None, "database schema 5"),
            ("schema upgraded", None, "database schema 6"),
            ("schema upgraded", None, "database schema 7"),
        ]
        assert record.altered == ()
        fields = [{"field_index": f.index, "name": f.name, "width": f.width, "height": f.height,
                   "image_png": hashlib.sha256(png_bytes(f.image, 1)).hexdigest(),
                   "domain": None if f.domain is None else f.domain.to_dict()}
                  for f in record.fields]  # fmt: skip
        assert [f["image_png"] is not None for f in old["fields"]] == [True] * len(fields)
        assert [{**f, "image_png": None} for f in fields] == [
            {**f, "image_png": None} for f in old["fields"]
        ]
        assert all(f.image.shape == (f.height, f.width, 3) for f in record.fields)
        cells = [{"field_index": c.field_index, "cell_id": c.cell_id, "bbox": list(c.bbox),
                  "centroid": list(c.centroid), "blast_probability": c.blast_probability,
                  "model_label": c.model_label.value, "label": c.label.value,
                  "domain_score": c.domain_score} for c in record.cells]  # fmt: skip
        assert cells == [{k: v for k, v in c.items() if not k.endswith("_png")}
                         for c in old["cells"]]  # fmt: skip
        for c, o in zip(record.cells, old["cells"], strict=True):
            assert (c.crop is None) == (o["crop_png"] is None)
            assert (c.overlay is None) == (o["overlay_png"] is None)
            # Outlines come from the stored crops: inside the box, about the cell's size.
            x0, y0, x1, y1 = c.bbox
            assert (
                len(c.outline) >= 4 and c.outline[:, 0].min() >= x0 and c.outline[:, 1].max() <= y1
            )
            assert 0.4 < c.mask().sum() / ((x1 - x0) * (y1 - y0)) <= 1.0
            assert c.reviewed  # every cell was relabelled (and the first version signed)
    # Decoded images are the stored ones: re-encoding the crop gives identical pixels.
    first = store.load_case(next(iter(expected))).cells[0]
    assert np.array_equal(rgb_from_png(png_bytes(first.crop)), first.crop)
    # The migrated cases keep working: the open version takes a change, the signed one refuses.
    open_id = next(k for k, v in expected.items() if v["header"]["status"] == "open")
    signed_id = next(k for k, v in expected.items() if v["header"]["status"] == "signed")
    assert store.relabel_cell(open_id, 0, 2, "blast", reviewer="D. Reviewer") is not None
    with pytest.raises(CaseSignedError):
        store.relabel_cell(signed_id, 0, 2, "blast", reviewer="D. Reviewer")
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="signed"):
        conn.execute("UPDATE cells SET label = 'normal' WHERE case_id = ?", (signed_id,))
    CaseStore(path)  # opening again migrates nothing twice
    assert len(store.load_case(open_id).audit) == len(expected[open_id]["audit"]) + 4
    assert [store.load_case(k).altered for k in expected] == [(), ()]  # chained as migrated


# tests/fixtures/cases_release5.sqlite3 was written by the release before patient ids (schema 5,
# commit cfe35b0, by tests/fixtures/make_cases_release5.py): sample R5-0001 relabelled, given a
# comment, signed and reopened; sample R5-0002 saved only. The JSON is what it loaded then.
def test_a_database_of_release_5_gains_patient_ids_and_keeps_every_case(tmp_path: Path):
    path, expected = _release_copy(tmp_path, 5)
    store = CaseStore(path)
    assert sorted(s.case_id for s in store.list_cases()) == sorted(expected)
    for case_id, old in expected.items():
        record = store.load_case(case_id)
        assert (record.sample_id, record.version, record.status, record.comment) == (
            old["sample_id"],
            old["version"],
            old["status"],
            old["comment"],
        )
        assert [c.label.value for c in record.cells] == old["labels"]
        rows = [[a.action, a.reviewer, a.cell_id] for a in record.audit]
        assert rows == [*old["audit"], *[["schema upgraded", "system", None]] * 2]  # 6, 7
        assert record.patient_id == "" and record.altered == ()
    signed_id, reopened_id, saved_id = expected
    store.set_case_details(reopened_id, patient_id=" P-123 ", reviewer="D. Reviewer")
    with pytest.raises(CaseSignedError):
        store.set_case_details(signed_id, patient_id="P-123", reviewer="D. Reviewer")
    record = store.load_case(reopened_id)
    assert record.patient_id == "P-123" and record.altered == ()
    assert (record.audit[-1].action, record.audit[-1].note) == ("patient id", "none -> P-123")
    assert [c.case_id for c in store.list_cases("p-12")] == [reopened_id]
    assert store.load_case(saved_id).patient_id == ""
    CaseStore(path)  # opening again migrates nothing twice
    assert len(store.load_case(saved_id).audit) == len(expected[saved_id]["audit"]) + 2


def test_a_database_of_schema_9_gets_its_account_events_chained_as_they_stood(tmp_path: Path):
    from leukemia_core.accounts import Accounts
    from leukemia_core.store_schema import MIGRATIONS

    path = tmp_path / "v9.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for version in range(9):
            MIGRATIONS[version](conn)
        conn.execute("PRAGMA user_version = 9")
        conn.execute("INSERT INTO users VALUES ('ana', 'h', 'signer', '2026-12-01', 'x', 1)")
        for event in ("created", "disabled"):
            conn.execute("INSERT INTO account_events (at, user_name, event) VALUES "
                         "('2026-12-01', 'ana', ?)", (event,))  # fmt: skip
    accounts = Accounts(path)
    assert accounts.altered() == ()
    assert [e["event"] for e in accounts.events()] == ["schema upgraded", "disabled", "created"]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE users SET disabled = 0")
    assert accounts.altered()


def test_an_upgrade_never_hides_a_change_made_outside_the_app_before_it(tmp_path: Path):
    path, expected = _release_copy(tmp_path, 5)
    _, reopened_id, saved_id = expected
    with sqlite3.connect(path) as conn:  # raw SQL on the release-5 file, no audit row
        conn.execute("UPDATE cells SET label = 'blast' WHERE case_id = ?", (saved_id,))
    store = CaseStore(path)
    (problem,) = [p for p in store.load_case(saved_id).altered if "(schema upgraded)" in p]
    assert "changed outside the app" in problem
    assert store.load_case(reopened_id).altered == ()  # the untouched case stays clean
    store.relabel_cell(saved_id, 0, 1, "normal", reviewer="D. Reviewer")  # a later app edit
    assert any("(schema upgraded)" in p for p in store.load_case(saved_id).altered)


def test_the_patient_id_is_checked_audited_kept_on_reopen_and_shown_altered(store: CaseStore):
    case_id = new_case(store, [["normal"]])
    for bad in ("x" * 65, "P-1\nP-2", "P\t1"):
        with pytest.raises(CaseInputError, match="one line of at most 64 printable"):
            store.set_case_details(case_id, patient_id=bad, reviewer="R")
    assert store.set_case_details(case_id, patient_id="", reviewer="R") == []  # unchanged: no row
    assert len(store.set_case_details(case_id, patient_id="MRN 0042", reviewer="R")) == 1
    assert store.set_case_details(case_id, patient_id="MRN 0042", reviewer="R") == []
    # both details in one go: one row each; a bad one refuses both, nothing half-written
    with pytest.raises(CaseInputError, match="comment has 4001 characters"):
        store.set_case_details(case_id, patient_id="MRN 7", comment="x" * 4001, reviewer="R")
    assert store.load_case(case_id).patient_id == "MRN 0042"
    assert len(store.set_case_details(case_id, patient_id="MRN 7", comment="ok", reviewer="R")) == 2
    store.sign_case(case_id, reviewer="R")
    reopened = store.load_case(store.reopen_case(case_id, reviewer="R"))
    assert reopened.patient_id == "MRN 7" and reopened.altered == ()
    with sqlite3.connect(store.path) as conn:  # an edit outside the app breaks the chain
        conn.execute("UPDATE cases SET patient_id = 'MRN 9999' WHERE case_id = ?",
                     (reopened.case_id,))  # fmt: skip
    assert store.load_case(reopened.case_id).altered != ()


def test_reviewer_edits_and_the_state_token(store: CaseStore):
    case_id = new_case(store, [["blast", "normal", "uncertain"]], reviewed=False)
    state = store.case_state(case_id)
    assert state.token == store.last_audit_id(case_id) > 0 and state.reviewed == frozenset()
    assert store.mark_reviewed(case_id, [(0, 1), (0, 2)], reviewer="R") != []
    assert store.mark_reviewed(case_id, [(0, 1)], reviewer="R") == []  # already reviewed
    audit_id = store.relabel_cell(case_id, 0, 3, "normal", reviewer="R")
    state = store.case_state(case_id)
    assert state.token == audit_id == store.last_audit_id(case_id)
    assert state.reviewed == {(0, 1), (0, 2), (0, 3)} and state.labels[(0, 3)] == "normal"
    assert [a.action for a in state.audit] == ["created", "reviewed", "reviewed", "relabel"]
    with pytest.raises(CaseInputError, match="the other attributes are the machine's"):
        store.edit_cell(case_id, 0, 1, reviewer="R", blast_probability=0.1)
    assert store.case_state(case_id).token == audit_id  # nothing written


def test_changes_made_outside_the_app_are_refused_or_shown(store: CaseStore):
    case_id = new_case(store, [["blast", "normal", "normal"]])
    store.relabel_cell(case_id, 0, 2, "blast", reviewer="R")
    assert store.load_case(case_id).altered == ()
    signed_id = new_case(store, [["normal"]], sample_id="S-2")
    store.sign_case(signed_id, reviewer="R")
    with sqlite3.connect(store.path) as conn:
        for statement in ("DELETE FROM audit WHERE case_id = ?",
                          "DELETE FROM cells WHERE case_id = ?",
                          "UPDATE fields SET name = 'x' WHERE case_id = ?"):  # fmt: skip
            with pytest.raises(sqlite3.IntegrityError, match=r"kept|signed"):
                conn.execute(statement, (signed_id,))
    # Someone with the file drops the guards and edits: the chain shows it on open.
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER signed_cells_are_frozen")
        conn.execute("UPDATE cells SET label = 'blast' WHERE case_id = ?", (signed_id,))
        conn.execute("UPDATE cells SET label = 'normal' WHERE case_id = ? AND cell_id = 1",
                     (case_id,))  # fmt: skip
    assert any("without an audit row" in p for p in store.load_case(signed_id).altered)
    assert any("without an audit row" in p for p in store.load_case(case_id).altered)
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER audit_is_kept")
        first = conn.execute("SELECT MIN(audit_id) FROM audit WHERE case_id = ?",
                             (case_id,)).fetchone()[0]  # fmt: skip
        conn.execute("DELETE FROM audit WHERE audit_id = ?", (first,))
    altered = store.load_case(case_id).altered
    assert any("does not follow the row before it" in p for p in altered)


def test_a_later_edit_in_the_app_does_not_hide_a_change_made_outside_it(store: CaseStore):
    case_id = new_case(store, [["blast", "normal", "normal"]])
    with sqlite3.connect(store.path) as conn:  # raw SQL, no audit row
        conn.execute("UPDATE cells SET label = 'blast' WHERE case_id = ? AND cell_id = 3",
                     (case_id,))  # fmt: skip
    store.relabel_cell(case_id, 0, 2, "blast", reviewer="R")  # the app writes next
    record = store.load_case(case_id)
    assert [a.action for a in record.audit[-2:]] == ["changed outside the app", "relabel"]
    (problem,) = record.altered
    assert "changed outside the app" in problem and "(changed outside the app)" in problem
    store.relabel_cell(case_id, 0, 1, "normal", reviewer="R")  # and again: marked once, for good
    assert len(store.load_case(case_id).altered) == 1
    assert [a.action for a in store.load_case(case_id).audit].count("changed outside the app") == 1


def test_a_signed_case_changed_outside_the_app_is_not_reopened_into_a_clean_version(
    store: CaseStore,
):
    """A reopen copied the edited cells into a version whose audit trail began clean: signed
    again, the edit passed for reviewed and went out as training data."""
    case_id = new_case(store, [["blast", "blast", "normal"]])
    store.sign_case(case_id, reviewer="R")
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER signed_cells_are_frozen")
        conn.execute("UPDATE cells SET label = 'normal' WHERE case_id = ?", (case_id,))
    with pytest.raises(CaseNotReopenableError, match=r"changed outside the app.*backup"):
        store.reopen_case(case_id, reviewer="R", reason="recount")
    assert store.load_case(case_id).superseded_by is None  # nothing was made


def test_a_field_changed_outside_the_app_stays_on_record_when_fields_are_added(store: CaseStore):
    """Adding fields wrote the fields' digest afresh from the edited rows: the change vanished."""
    case_id = new_case(store, [["blast", "normal"]])
    with sqlite3.connect(store.path) as conn:  # raw SQL, no audit row
        conn.execute("UPDATE fields SET name = 'other.png' WHERE case_id = ?", (case_id,))
    assert store.load_case(case_id).altered
    store.add_fields(case_id, [field("c.png", value=7)], [], reviewer="tech", domain=None,
                     model_checksum=store.load_case(case_id).model_checksum)  # fmt: skip
    record = store.load_case(case_id)
    assert any("changed outside the app" in p for p in record.altered)
    assert "changed outside the app" in [a.action for a in record.audit]


def test_a_case_changed_outside_the_app_is_refused_then_never_signed(store: CaseStore):
    """The second click signed it: the change became a signed result, though reopening such a
    record is refused for that very reason."""
    case_id = new_case(store, [["blast", "normal"]])
    seen = store.case_state(case_id).token
    with sqlite3.connect(store.path) as conn:  # raw SQL, no audit row
        conn.execute("UPDATE cells SET label = 'blast' WHERE case_id = ? AND cell_id = 2",
                     (case_id,))  # fmt: skip
    for doing in ("saving the details", "signing"):
        with pytest.raises(CaseChangedError, match=f"Not {doing}.*changed outside the app"):
            if doing == "signing":
                store.sign_case(case_id, reviewer="R", expected_token=seen)
            else:
                store.set_case_details(case_id, reviewer="R", comment="x", expected_token=seen)
    # The refusal kept the row it cites: the signer looks again and can sign what they see.
    after = store.case_state(case_id).token
    assert after != seen and store.load_case(case_id).audit[-1].action == (
        "changed outside the app"
    )
    with pytest.raises(SignOffBlockedError, match=r"changed outside the app.*backup"):
        store.sign_case(case_id, reviewer="R", expected_token=after)
    assert store.load_case(case_id).status == "open"
    assert store.set_case_details(case_id, reviewer="R", comment="x", expected_token=after)


@pytest.mark.parametrize(
    ("table", "column", "value", "said"),
    [
        ("cells", "label", "Blast", "Cell 1 of field 1: its label"),
        ("cells", "model_label", "foo", "Cell 1 of field 1: the model's label"),
        ("cells", "outline", "nope", "Cell 1 of field 1: its outline"),
        ("fields", "quality", "x", "Field 1's quality checks"),
        ("cases", "thresholds", "x", "its thresholds"),
    ],
)
def test_a_value_no_app_wrote_is_said_as_altered_not_a_bare_error(store, table, column, value,
                                                                    said):  # fmt: skip
    """A label 'Blast' or an outline 'nope' written with SQL raised a bare ValueError on every
    page that opened the case: the user was never told the record was altered."""
    from leukemia_core.store_errors import AlteredRecordError

    case_id = new_case(store, [["blast", "normal"]])
    with sqlite3.connect(store.path) as conn:
        for trigger in [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                                   "type = 'trigger'")]:  # fmt: skip
            conn.execute(f"DROP TRIGGER {trigger}")
        where = " AND cell_id = 1" if table == "cells" else ""
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE case_id = ?{where}", (value, case_id))
    named = re.escape(f"Case {case_id[:8]} (sample 'S-1'): {said}")  # which case to restore
    with pytest.raises(AlteredRecordError, match=f"{named}.*outside the app.*backup"):
        store.load_case(case_id)
    if column == "label":
        with pytest.raises(AlteredRecordError, match="outside the app"):
            store.case_state(case_id)


def test_uncertain_cells_are_not_accepted_unlabelled_and_a_review_taken_back_says_so(
    store: CaseStore,
):
    case_id = new_case(store, [["border", "uncertain", "normal"]], reviewed=False)
    token = store.case_state(case_id).token
    with pytest.raises(CaseInputError, match="uncertain: review it by giving it a label"):
        store.edit_cell(case_id, 0, 2, reviewer="R", reviewed=True)
    assert store.mark_reviewed(case_id, [(0, 2)], reviewer="R") == []  # skipped, not accepted
    assert store.case_state(case_id).token == token  # nothing written
    store.mark_reviewed(case_id, [(0, 3)], reviewer="R")
    store.edit_cell(case_id, 0, 3, reviewer="R", reviewed=False)  # taken back, and said so
    assert [a.action for a in store.load_case(case_id).audit[-2:]] == [
        "reviewed",
        "review withdrawn",
    ]


def test_sign_is_refused_until_every_counted_cell_is_reviewed(store: CaseStore):
    case_id = new_case(store, [["blast", "normal", "border"]], reviewed=False)
    with pytest.raises(SignOffBlockedError, match="2 cells have not been reviewed yet"):
        store.sign_case(case_id, reviewer="R")
    store.relabel_cell(case_id, 0, 1, "normal", reviewer="R")  # a relabel is a review
    with pytest.raises(SignOffBlockedError, match="1 cell has not been reviewed yet"):
        store.sign_case(case_id, reviewer="R")
    store.mark_reviewed(case_id, [(0, 2)], reviewer="R")  # accepting the model's call counts
    assert store.sign_case(case_id, reviewer="R")  # the border cell is never counted


def test_cases_of_sample_match_the_whole_id_only(store: CaseStore):
    first = new_case(store, [["blast"]], sample_id="ACC-1")
    new_case(store, [["normal"]], sample_id="ACC-10")  # contains "ACC-1": another sample
    new_case(store, [["normal"]], sample_id="X_ACC-1")
    again = new_case(store, [["normal"]], sample_id="acc-1")
    assert [c.case_id for c in store.cases_of_sample(" Acc-1 ")] == [again, first]
    assert store.cases_of_sample("ACC-2") == [] and store.cases_of_sample("  ") == []
    umlaut = new_case(store, [["normal"]], sample_id="ÄRZT-5")  # beyond ASCII: casefold
    assert [c.case_id for c in store.cases_of_sample("ärzt-5")] == [umlaut]
    # a full-width id typed on another keyboard is the same id, stored in one spelling
    wide = new_case(store, [["normal"]], sample_id="ＡＣＣ－１")
    assert store.load_case(wide).sample_id == "ACC-1"
    assert [c.case_id for c in store.cases_of_sample("ACC-1")] == [wide, again, first]


def test_a_full_disk_or_a_held_lock_is_a_message_and_nothing_half_written(
    store: CaseStore, tmp_path: Path, monkeypatch
):
    case_id = new_case(store, [["normal", "blast"]])
    before = row_counts(store.path)
    connect = CaseStore._connect

    def full_disk(self):  # SQLite's own "database or disk is full" at the present size
        conn = connect(self)
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(CaseStore, "_connect", full_disk)
    with pytest.raises(CaseStoreError, match=r"disk that holds it is full; free space.*as before"):
        new_case(store, [["normal"] * 40], sample_id="S-2")
    monkeypatch.setattr(CaseStore, "_connect", connect)
    assert row_counts(store.path) == before and len(store.list_cases()) == 1

    monkeypatch.setattr("leukemia_core.store._BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(store.path)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        with pytest.raises(CaseStoreError, match="taking long; try again in a moment"):
            store.relabel_cell(case_id, 0, 1, "blast", reviewer="A")
    finally:
        holder.rollback()
        holder.close()
    assert store.load_case(case_id).cells[0].label == "normal"
    assert store.relabel_cell(case_id, 0, 1, "blast", reviewer="A")  # works once it is free


@pytest.mark.parametrize("sample_id", ["S-1\nPatient: SOMEONE ELSE", "S-\u202eFDP.exe", "S" * 65])
def test_a_sample_id_is_one_short_line_of_printable_characters(store: CaseStore, sample_id):
    with pytest.raises(CaseInputError, match="not one line of at most 64 printable"):
        new_case(store, [["normal"]], sample_id=sample_id)
    assert store.list_cases() == []


def test_an_exported_text_cannot_become_a_formula_in_a_spreadsheet_that_splits_on_semicolons(
    store: CaseStore,
):
    from leukemia_core.case_export import cells_csv

    case_id = new_case(store, [["normal"]], sample_id="S-7;=cmd|' /C calc'!A0")
    text = cells_csv(store.load_case(case_id)).decode()
    row = text.splitlines()[1]
    (cells,) = list(csv.reader([row], delimiter=";"))  # a ';'-splitting spreadsheet, quotes kept
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), cells


def test_a_backup_taken_while_the_app_writes_holds_every_committed_case(
    store: CaseStore, tmp_path: Path, monkeypatch
):
    from leukemia_core.__main__ import main

    signed = new_case(store, [["normal", "blast"]], sample_id="S-BEFORE")
    store.sign_case(signed, reviewer="S. Sig")
    holder = sqlite3.connect(store.path)  # the app, with the database open (its -wal in use)
    holder.execute("SELECT COUNT(*) FROM cases").fetchone()
    try:
        target = store.backup(tmp_path / "backup.sqlite3")
        new_case(store, [["normal"]], sample_id="S-AFTER")
        monkeypatch.setenv("LEUKEMIA_CASE_DB", str(store.path))
        assert main(["backup", str(tmp_path / "later.sqlite3")]) == 0
        assert main(["backup", str(tmp_path / "later.sqlite3")]) == 2  # never overwritten
    finally:
        holder.close()
    copy = CaseStore(target)
    assert [c.sample_id for c in copy.list_cases()] == ["S-BEFORE"]
    record = copy.load_case(signed)
    assert record.is_signed and record.altered == () and record.signed_by == "S. Sig"
    later = CaseStore(tmp_path / "later.sqlite3")
    assert sorted(c.sample_id for c in later.list_cases()) == ["S-AFTER", "S-BEFORE"]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("edit", [
    "UPDATE cases SET created_at = '2020-01-01T00:00:00' WHERE case_id = :id",
    "UPDATE cases SET domain = NULL WHERE case_id = :id",
    "UPDATE cases SET first_signed_by = 'nobody' WHERE case_id = :id",
    "UPDATE fields SET name = 'other.png' WHERE case_id = :id",
    "UPDATE fields SET image_png = (SELECT image_png FROM fields WHERE field_index = 1 AND "
    "case_id = :id) WHERE field_index = 0 AND case_id = :id",
    "UPDATE cells SET crop_png = NULL WHERE case_id = :id AND cell_id = 1",
])  # fmt: skip
def test_what_the_report_shows_is_covered_by_the_audit_chain(store: CaseStore, edit: str):
    """Dates, the out-of-domain result, the first signature, field names and every image are in
    the digest of the rows written from 2026-12-06 (cell labels and details always were)."""
    domain = DomainAssessment(2.5, 1.58, 3)
    case_id = store.create_case(
        "S-1", [field("a.png", value=10), field("b.png", value=200)],
        cells_for([["normal", "blast"], ["normal"]]), model_name="m", model_checksum="sha256:0",
        thresholds=THRESHOLDS, created_by="R", domain=domain,
    )  # fmt: skip
    assert store.load_case(case_id).altered == ()
    with sqlite3.connect(store.path) as conn:
        conn.execute(edit, {"id": case_id})
    assert store.load_case(case_id).altered != ()


def test_an_edit_giving_a_cell_its_own_label_and_reviewed_is_audited(store: CaseStore):
    """edit_cell(label=<its label>, reviewed=True) marked the cell reviewed with no audit row:
    the case then read as changed outside the app, for good."""
    case_id = new_case(store, [["blast", "normal"]], reviewed=False)
    ids = store.edit_cell(case_id, 0, 1, reviewer="R", label="blast", reviewed=True)
    record = store.load_case(case_id)
    assert ids and [a.action for a in record.audit] == ["created", "reviewed"]
    assert record.altered == () and record.cells[0].reviewed
    store.edit_cell(case_id, 0, 1, reviewer="R", label="blast", reviewed=False)
    assert store.load_case(case_id).audit[-1].action == "review withdrawn"
    assert store.load_case(case_id).altered == ()


def test_one_record_with_a_mangled_domain_leaves_the_case_list_and_itself_readable(
    store: CaseStore,
):
    """The case list's out-of-domain flag read every record's JSON: one edited by hand stopped
    the whole list, and opening that case raised a raw JSONDecodeError."""
    good = new_case(store, [["blast", "normal"]], sample_id="GOOD-1")
    bad = new_case(store, [["normal"]], sample_id="TAMPERED-2")
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE fields SET domain = 'warned' WHERE case_id = ?", (bad,))
        conn.execute("UPDATE cases SET domain = '{not json' WHERE case_id = ?", (bad,))
    assert [c.sample_id for c in store.list_cases()] == ["TAMPERED-2", "GOOD-1"]
    record = store.load_case(bad)
    assert record.domain is None and record.altered  # the chain says it was changed
    assert store.load_case(good).altered == ()
