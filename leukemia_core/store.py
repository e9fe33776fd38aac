"""Case record: one screened sample in SQLite, with the reviewer's relabelling and sign-off.

The workflow is that of a digital-morphology lab (CellaVision-like): the model pre-classifies
every detected cell, a reviewer relabels cells, then signs the case. A signed case is frozen;
changing it again means reopening it, which creates a new version pointing at the signed one.
Every change leaves an audit row: who, when (UTC, ISO 8601), from which label to which, and why.

Each public method opens its own short connection and writes in one ``BEGIN IMMEDIATE``
transaction on a WAL database, so Streamlit sessions (threads) and processes can share a file.

Example:
    >>> import pathlib, tempfile
    >>> store = CaseStore(pathlib.Path(tempfile.mkdtemp()) / "cases.sqlite3")
    >>> case_id = store.create_case(
    ...     "S-1", [FieldEntry("field 1", 640, 480)],
    ...     [CellEntry(0, 1, (10, 10, 50, 50), (30.0, 30.0), 0.91, "blast")],
    ...     model_name="demo", model_checksum="sha256:0", thresholds={"blast": 0.5})
    >>> store.relabel_cell(case_id, 0, 1, "normal", reviewer="A. Reviewer")
    >>> store.load_case(case_id).counts().n_blasts
    0
"""

from __future__ import annotations

import json
import math
import operator
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leukemia_core.case_record import (
    STATUS_OPEN,
    STATUS_SIGNED,
    AuditEntry,
    CaseHeader,
    CaseRecord,
    CaseSummary,
    CellEntry,
    CellRecord,
    FieldEntry,
    FieldRecord,
)
from leukemia_core.counting import CellLabel
from leukemia_core.domain import DomainAssessment
from leukemia_core.errors import LeukemiaCoreError

__all__ = [
    "STATUS_OPEN", "STATUS_SIGNED", "AuditEntry", "CaseHeader", "CaseRecord", "CaseStore",
    "CaseSummary", "CellEntry", "CellRecord", "FieldEntry", "FieldRecord",
]  # the record types live in leukemia_core.case_record
DATABASE_ENV_VAR = "LEUKEMIA_CASE_DB"
SCHEMA_VERSION = 2
_BUSY_TIMEOUT_S = 30.0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VALID_LABELS = ", ".join(label.value for label in CellLabel)
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
    parent_id TEXT UNIQUE REFERENCES cases (case_id), sample_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'signed')),
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, model_name TEXT NOT NULL,
    model_checksum TEXT NOT NULL, thresholds TEXT NOT NULL, signed_by TEXT, signed_at TEXT,
    domain TEXT);
CREATE INDEX IF NOT EXISTS cases_by_sample ON cases (sample_id);
CREATE TABLE IF NOT EXISTS fields (
    case_id TEXT NOT NULL REFERENCES cases (case_id), field_index INTEGER NOT NULL,
    name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, image_png BLOB,
    domain TEXT, PRIMARY KEY (case_id, field_index));
CREATE TABLE IF NOT EXISTS cells (
    case_id TEXT NOT NULL, field_index INTEGER NOT NULL, cell_id INTEGER NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    centroid_x REAL NOT NULL, centroid_y REAL NOT NULL, blast_probability REAL,
    model_label TEXT NOT NULL, label TEXT NOT NULL, crop_png BLOB, overlay_png BLOB,
    domain_score REAL, PRIMARY KEY (case_id, field_index, cell_id),
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
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
# Statements from each older schema version to the next; a database is brought up to date step
# by step, each in one transaction, so one written by an earlier release still opens.
_MIGRATIONS = {
    # 1 -> 2: the out-of-domain check (sample and field assessments as JSON, a score per cell).
    1: (
        "ALTER TABLE cases ADD COLUMN domain TEXT",
        "ALTER TABLE fields ADD COLUMN domain TEXT",
        "ALTER TABLE cells ADD COLUMN domain_score REAL",
    ),
}


def _migrate(conn: sqlite3.Connection) -> None:
    """Runs the missing :data:`_MIGRATIONS`; the version is read again inside each transaction,
    so two processes opening an old database at once migrate it once."""
    for version in range(1, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == version:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")


class CaseStoreError(LeukemiaCoreError):
    """The case record could not be read or changed as asked."""


class CaseInputError(CaseStoreError, ValueError):
    """An argument (label, reviewer name, field, cell, ...) cannot be stored as given."""


class CaseNotFoundError(CaseStoreError, LookupError):
    """No case with the given id is in the database."""


class CellNotFoundError(CaseStoreError, LookupError):
    """The case has no cell with the given field index and cell id."""


class CaseSignedError(CaseStoreError):
    """The case is signed and therefore frozen; reopen it to change it."""


class SignOffBlockedError(CaseStoreError):
    """The case cannot be signed yet (cells still labelled uncertain)."""


class CaseNotReopenableError(CaseStoreError):
    """Only a signed case that has not been reopened already can be reopened."""


def default_database_path() -> Path:
    """The case database: ``$LEUKEMIA_CASE_DB`` if set, else ``~/.local/share/leukemia-screen/``.

    The parent folder is created if missing.
    """
    configured = os.environ.get(DATABASE_ENV_VAR, "").strip()
    if configured:
        path = Path(configured).expanduser()
    else:
        path = Path.home() / ".local" / "share" / "leukemia-screen" / "cases.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _label(value: object, what: str) -> str:
    try:
        return CellLabel(str(value).strip().lower()).value
    except ValueError:
        raise CaseInputError(
            f"{what} {value!r} is not a cell label; expected one of: {_VALID_LABELS}."
        ) from None


def _text(value: object, what: str, fix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CaseInputError(f"{what} is empty or not text (got {value!r}); {fix}.")
    return value.strip()


def _reviewer(value: object) -> str:
    return _text(
        value, "The reviewer name", "enter your name so the audit trail records who did it"
    )


def _png(value: object, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray) or bytes(value[:8]) != _PNG_SIGNATURE:
        start = bytes(value[:8]) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise CaseInputError(
            f"{what} must be PNG bytes or None, got {start!r}; encode it with cv2.imencode('.png', "
            "...) or PIL's Image.save(..., format='PNG')."
        )
    return bytes(value)


def _whole(value: object, what: str) -> int:
    try:
        if not isinstance(value, bool):
            return operator.index(value)
    except TypeError:
        pass
    raise CaseInputError(f"{what} must be a whole number, got {value!r} ({type(value).__name__}).")


def _field_row(index: int, entry: FieldEntry) -> tuple[Any, ...]:
    where = f"Field {index}"
    if not isinstance(entry, FieldEntry):
        raise CaseInputError(f"{where} is a {type(entry).__name__}; pass FieldEntry objects.")
    size = (_whole(entry.width, f"{where} width"), _whole(entry.height, f"{where} height"))
    if min(size) < 1:
        raise CaseInputError(f"{where} has size {size[0]} x {size[1]}; both must be 1 or more.")
    domain = entry.domain
    if domain is not None and not isinstance(domain, DomainAssessment):
        raise CaseInputError(f"{where} domain is a {type(domain).__name__}; pass a "
                             "DomainAssessment or None.")  # fmt: skip
    return (index, str(entry.name), *size, _png(entry.image_png, f"{where} image_png"),
            _domain_json(domain))  # fmt: skip


def _domain_json(domain: DomainAssessment | None) -> str | None:
    return None if domain is None else json.dumps(domain.to_dict(), allow_nan=False)


def _domain(text: str | None) -> DomainAssessment | None:
    return None if text is None else DomainAssessment.from_dict(json.loads(text))


def _cell_row(position: int, cell: CellEntry, n_fields: int) -> tuple[Any, ...]:
    where = f"Cell {position}"
    if not isinstance(cell, CellEntry):
        raise CaseInputError(f"{where} is a {type(cell).__name__}; pass CellEntry objects.")
    where = f"Cell {position} (field {cell.field_index!r}, cell id {cell.cell_id!r})"
    field_index = _whole(cell.field_index, f"{where}: field_index")
    if not 0 <= field_index < n_fields:
        raise CaseInputError(
            f"{where}: field_index must be the position of its field, 0 to {n_fields - 1}."
        )
    bbox, centroid = tuple(cell.bbox), tuple(cell.centroid)
    if len(bbox) != 4 or len(centroid) != 2:
        raise CaseInputError(
            f"{where}: bbox must be 4 whole numbers (x0, y0, x1, y1) and centroid 2 numbers "
            f"(x, y), got {cell.bbox!r} and {cell.centroid!r}."
        )
    bbox = tuple(_whole(v, f"{where}: bbox value") for v in bbox)
    probability = cell.blast_probability
    if probability is not None:
        probability = float(probability)
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise CaseInputError(
                f"{where}: blast_probability must be between 0 and 1 or None, got {probability}."
            )
    label = _label(cell.model_label, f"{where}: model_label")
    images = (_png(cell.crop_png, f"{where} crop_png"), _png(cell.overlay_png, f"{where} overlay"))
    centre = (float(centroid[0]), float(centroid[1]))
    cell_id = _whole(cell.cell_id, f"{where}: cell_id")
    score = cell.domain_score
    if score is not None:
        score = float(score)
        if not math.isfinite(score) or score < 0:
            raise CaseInputError(f"{where}: domain_score must be 0 or more or None, got {score}.")
    return (field_index, cell_id, *bbox, *centre, probability, label, label, *images, score)


def _as_dict(row: sqlite3.Row, skip: str = "") -> dict[str, Any]:
    return {key: row[key] for key in row.keys() if key != skip}  # noqa: SIM118 (Row is no dict)


def _audit(
    conn: sqlite3.Connection, case: sqlite3.Row, action: str, who: str, note: str, *cell: Any
) -> None:
    """Appends an audit row; ``cell`` is ``(field_index, cell_id, from_label, to_label)``."""
    conn.execute(
        "INSERT INTO audit (case_id, version, action, reviewer, at, note, field_index, cell_id, "
        "from_label, to_label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (case["case_id"], case["version"], action, who, _now(), note, *(cell or (None,) * 4)),
    )


class CaseStore:
    """The case database; every method is one short transaction, safe across threads/processes.

    Args:
        path: SQLite file; None uses :func:`default_database_path`. Created if missing.

    Raises:
        CaseStoreError: The file is not a case database, or one written by a newer version.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if str(path) == ":memory:":
            raise CaseInputError(
                "Each call opens its own connection, so ':memory:' cannot hold "
                "cases; pass a file path (e.g. under tmp_path in tests)."
            )
        self.path = Path(path).expanduser() if path is not None else default_database_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found > SCHEMA_VERSION:
                    raise CaseStoreError(
                        f"The case database {self.path} has schema version {found}, newer than "
                        f"this app's {SCHEMA_VERSION}; update the app or set {DATABASE_ENV_VAR} "
                        "to another file."
                    )
                if found == 0:
                    conn.executescript(_SCHEMA)
                elif found < SCHEMA_VERSION:
                    _migrate(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as error:
            raise CaseStoreError(
                f"Cannot open {self.path} as a case database ({error}); point {DATABASE_ENV_VAR} "
                "at a case database written by this app or at a new file."
            ) from error

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _case(self, conn: sqlite3.Connection, case_id: object, *, open_only: bool) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (str(case_id),)).fetchone()
        if row is None:
            raise CaseNotFoundError(
                f"No case with id {case_id!r} in {self.path}; pick one from list_cases(), or "
                f"check that {DATABASE_ENV_VAR} points at the right database."
            )
        if open_only and row["status"] == STATUS_SIGNED:
            raise CaseSignedError(
                f"Case {row['case_id']} (sample {row['sample_id']!r}, version {row['version']}) "
                f"was signed by {row['signed_by']} at {row['signed_at']} and is frozen; reopen "
                "it to create a new version that can be changed."
            )
        return row

    def create_case(
        self,
        sample_id: str,
        fields: Sequence[FieldEntry],
        cells: Sequence[CellEntry],
        *,
        model_name: str,
        model_checksum: str,
        thresholds: dict[str, Any],
        created_by: str = "",
        domain: DomainAssessment | None = None,
    ) -> str:
        """Stores a new case (version 1) in one transaction: all of it or nothing.

        Each cell's current label starts as its model label. ``domain`` is the sample's
        out-of-domain assessment (None when none was made).

        Returns:
            The new case id (32 hex digits).

        Raises:
            CaseInputError: An argument cannot be stored (bad label, field index, PNG, ...).
        """
        sample_id = _text(sample_id, "sample_id", "enter the sample (specimen) identifier")
        model_name = _text(model_name, "model_name", "pass the name of the model that labelled")
        if not isinstance(model_checksum, str) or not isinstance(created_by, str):
            raise CaseInputError("model_checksum and created_by must be text (may be empty).")
        if not fields:
            raise CaseInputError("The case has no fields; add at least one field image.")
        if domain is not None and not isinstance(domain, DomainAssessment):
            raise CaseInputError(f"domain is a {type(domain).__name__}; pass a "
                                 "DomainAssessment or None.")  # fmt: skip
        try:
            thresholds_json = json.dumps(dict(thresholds), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise CaseInputError(
                f"thresholds must be a dict of JSON values, got {thresholds!r} ({error})."
            ) from None
        case_id = uuid.uuid4().hex
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT INTO cases (case_id, version, sample_id, status, created_at, created_by, "
                "model_name, model_checksum, thresholds, domain) "
                "VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    case_id,
                    sample_id,
                    STATUS_OPEN,
                    _now(),
                    created_by.strip(),
                    model_name,
                    model_checksum,
                    thresholds_json,
                    _domain_json(domain),
                ),
            )
            for index, entry in enumerate(fields):
                conn.execute(
                    "INSERT INTO fields VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (case_id, *_field_row(index, entry)),
                )
            seen: set[tuple[int, int]] = set()
            for position, cell in enumerate(cells):
                row = _cell_row(position, cell, len(fields))
                if row[:2] in seen:
                    raise CaseInputError(
                        f"Cell {position}: field {row[0]} already has a cell with id {row[1]}; "
                        "cell ids must be unique within a field."
                    )
                seen.add(row[:2])
                conn.execute(
                    f"INSERT INTO cells VALUES ({', '.join('?' * (len(row) + 1))})", (case_id, *row)
                )
            case = self._case(conn, case_id, open_only=True)
            note = f"{len(seen)} cells in {len(fields)} fields labelled by {model_name}"
            _audit(conn, case, "created", created_by.strip(), note)
        return case_id

    def relabel_cell(
        self,
        case_id: str,
        field_index: int,
        cell_id: int,
        new_label: str,
        *,
        reviewer: str,
        note: str = "",
    ) -> None:
        """Sets a cell's current label and records who did it; the same label is a no-op.

        Raises:
            CaseInputError: Empty reviewer name or unknown label.
            CaseNotFoundError, CellNotFoundError: No such case or cell.
            CaseSignedError: The case is signed.
        """
        reviewer = _reviewer(reviewer)
        label = _label(new_label, "new_label")
        field_index, cell_id = _whole(field_index, "field_index"), _whole(cell_id, "cell_id")
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            key = (case["case_id"], field_index, cell_id)
            row = conn.execute(
                "SELECT label FROM cells WHERE case_id = ? AND field_index = ? AND cell_id = ?", key
            ).fetchone()
            if row is None:
                raise CellNotFoundError(
                    f"Case {case['case_id']} has no cell {cell_id!r} in field {field_index!r}; "
                    "use the field index and cell id shown in the case."
                )
            if row["label"] == label:
                return
            conn.execute(
                "UPDATE cells SET label = ? WHERE case_id = ? AND field_index = ? AND cell_id = ?",
                (label, *key),
            )
            cell = (field_index, cell_id, row["label"], label)
            _audit(conn, case, "relabel", reviewer, str(note), *cell)

    def sign_case(self, case_id: str, *, reviewer: str) -> None:
        """Signs and freezes the case.

        Raises:
            CaseInputError: Empty reviewer name.
            CaseNotFoundError: No such case.
            CaseSignedError: Already signed.
            SignOffBlockedError: Cells are still labelled uncertain.
        """
        reviewer = _reviewer(reviewer)
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            (n_uncertain,) = conn.execute(
                "SELECT COUNT(*) FROM cells WHERE case_id = ? AND label = ?",
                (case["case_id"], CellLabel.UNCERTAIN.value),
            ).fetchone()
            if n_uncertain:
                cells = "cell is" if n_uncertain == 1 else "cells are"
                raise SignOffBlockedError(
                    f"Cannot sign case {case['case_id']}: {n_uncertain} {cells} still labelled "
                    "uncertain; they must be reviewed first (label each as blast, normal, "
                    "excluded, not_wbc or border)."
                )
            now = _now()
            conn.execute(
                "UPDATE cases SET status = ?, signed_by = ?, signed_at = ? WHERE case_id = ?",
                (STATUS_SIGNED, reviewer, now, case["case_id"]),
            )
            _audit(conn, case, "signed", reviewer, f"signed at {now}")

    def reopen_case(self, case_id: str, *, reviewer: str) -> str:
        """Copies a signed case into a new open version (same sample, version + 1).

        The new version keeps each cell's model label and current label; the signed original
        stays unchanged.

        Returns:
            The id of the new version.

        Raises:
            CaseInputError: Empty reviewer name.
            CaseNotFoundError: No such case.
            CaseNotReopenableError: The case is not signed, or was already reopened.
        """
        reviewer = _reviewer(reviewer)
        new_id = uuid.uuid4().hex
        with self._transaction(write=True) as conn:
            old = self._case(conn, case_id, open_only=False)
            if old["status"] != STATUS_SIGNED:
                raise CaseNotReopenableError(
                    f"Case {old['case_id']} is not signed, so it can still be changed as it "
                    "is; only signed cases are reopened."
                )
            child = conn.execute(
                "SELECT case_id, version FROM cases WHERE parent_id = ?", (old["case_id"],)
            ).fetchone()
            if child is not None:
                raise CaseNotReopenableError(
                    f"Case {old['case_id']} was already reopened as {child['case_id']} (version "
                    f"{child['version']}); open the latest version instead."
                )
            conn.execute(
                "INSERT INTO cases (case_id, version, parent_id, sample_id, status, created_at, "
                "created_by, model_name, model_checksum, thresholds, domain) SELECT ?, "
                "version + 1, case_id, sample_id, ?, ?, ?, model_name, model_checksum, "
                "thresholds, domain "
                "FROM cases WHERE case_id = ?",
                (new_id, STATUS_OPEN, _now(), reviewer, old["case_id"]),
            )
            for table in ("fields", "cells"):
                columns = [r["name"] for r in conn.execute(f"PRAGMA table_info({table})")][1:]
                names = ", ".join(columns)
                conn.execute(
                    f"INSERT INTO {table} (case_id, {names}) SELECT ?, {names} FROM {table} "
                    "WHERE case_id = ?",
                    (new_id, old["case_id"]),
                )
            new = self._case(conn, new_id, open_only=True)
            note = f"reopened from case {old['case_id']} (version {old['version']})"
            _audit(conn, new, "reopened", reviewer, note)
        return new_id

    def load_case(self, case_id: str) -> CaseRecord:
        """The whole case version, with image bytes and audit trail.

        Raises:
            CaseNotFoundError: No such case.
        """
        with self._transaction(write=False) as conn:
            case = self._case(conn, case_id, open_only=False)
            key = (case["case_id"],)
            fields = conn.execute(
                "SELECT * FROM fields WHERE case_id = ? ORDER BY field_index", key
            ).fetchall()
            cells = conn.execute(
                "SELECT * FROM cells WHERE case_id = ? ORDER BY field_index, cell_id", key
            ).fetchall()
            audit = conn.execute(
                "SELECT * FROM audit WHERE case_id = ? ORDER BY audit_id", key
            ).fetchall()
        plain = {k: v for k, v in _as_dict(case).items() if k not in ("thresholds", "domain")}
        return CaseRecord(
            **plain,
            thresholds=json.loads(case["thresholds"]),
            domain=_domain(case["domain"]),
            fields=tuple(
                FieldRecord(**{**_as_dict(f, skip="case_id"), "domain": _domain(f["domain"])})
                for f in fields
            ),
            cells=tuple(
                CellRecord(
                    field_index=c["field_index"],
                    cell_id=c["cell_id"],
                    bbox=(c["x0"], c["y0"], c["x1"], c["y1"]),
                    centroid=(c["centroid_x"], c["centroid_y"]),
                    blast_probability=c["blast_probability"],
                    model_label=c["model_label"],
                    label=c["label"],
                    crop_png=c["crop_png"],
                    overlay_png=c["overlay_png"],
                    domain_score=c["domain_score"],
                )
                for c in cells
            ),
            audit=tuple(AuditEntry(**_as_dict(a)) for a in audit),
        )

    def list_cases(self, search: str = "", limit: int = 200) -> list[CaseSummary]:
        """Case versions, newest first, with counts of their current labels.

        Args:
            search: Matches part of the sample id (case-insensitive) or the start of a case id.
            limit: Most rows returned, at least 1.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise CaseInputError(f"limit must be a whole number of 1 or more, got {limit!r}.")
        escaped = str(search).strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT c.case_id, c.version, c.parent_id, c.sample_id, c.status, c.created_at, "
                "c.created_by, c.signed_by, c.signed_at, COUNT(x.cell_id) AS n_cells, "
                "COALESCE(SUM(x.label = 'blast'), 0) AS n_blasts, "
                "COALESCE(SUM(x.label IN ('blast', 'normal')), 0) AS n_counted, "
                "COALESCE(SUM(x.label = 'uncertain'), 0) AS n_uncertain "
                "FROM cases AS c LEFT JOIN cells AS x ON x.case_id = c.case_id "
                "WHERE c.sample_id LIKE ? ESCAPE '\\' OR c.case_id LIKE ? ESCAPE '\\' "
                "GROUP BY c.case_id ORDER BY c.created_at DESC, c.rowid DESC LIMIT ?",
                (f"%{escaped}%", f"{escaped.lower()}%", limit),
            ).fetchall()
        return [CaseSummary(**_as_dict(row)) for row in rows]
