"""Case record: one screened sample in SQLite, with the reviewer's relabelling and sign-off.

The workflow is that of a digital-morphology lab (CellaVision-like): the model pre-classifies
every detected cell, a reviewer relabels cells, then signs the case. A signed case is frozen;
changing it again means reopening it, which creates a new version pointing at the signed one.
Every change leaves an audit row: who, when (UTC, ISO 8601), from which label to which, and why.
The workflow's order (save, review, sign, reopen) is :mod:`leukemia_core.review`'s; this module
keeps the record whole: each method checks what it stores and refuses what the record forbids.

Each public method opens its own short connection and writes in one ``BEGIN IMMEDIATE``
transaction on a WAL database, so Streamlit sessions (threads) and processes can share a file.
The schema and its migrations are in :mod:`leukemia_core.store_schema`; the cell edits, reads,
sign-off and split/merge are mixins in ``store_edits``, ``store_reads``, ``store_signoff`` and
``store_reshape``.

Example:
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> store = CaseStore(pathlib.Path(tempfile.mkdtemp()) / "cases.sqlite3")
    >>> case_id = store.create_case(
    ...     "S-1", [Field(0, "field 1", np.zeros((48, 64, 3), np.uint8))],
    ...     [Cell(1, (10, 10, 50, 50), (30.0, 30.0), blast_probability=0.91, model_label="blast")],
    ...     model_name="demo", model_checksum="sha256:0", thresholds={"blast": 0.5},
    ...     created_by="A. Reviewer")
    >>> store.relabel_cell(case_id, 0, 1, "normal", reviewer="A. Reviewer") > 0
    True
    >>> store.load_case(case_id).counts().n_blasts
    0
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from leukemia_core.case_record import (
    STATUS_OPEN,
    STATUS_SIGNED,
    AuditEntry,
    CaseHeader,
    CaseRecord,
    CaseState,
    CaseSummary,
)
from leukemia_core.domain import DomainAssessment
from leukemia_core.store_digest import fields_digest
from leukemia_core.store_edits import CaseEdits
from leukemia_core.store_fields import CaseFields
from leukemia_core.store_files import create_private
from leukemia_core.store_reads import CaseReads
from leukemia_core.store_reshape import CaseReshape
from leukemia_core.store_rows import (
    CaseChangedError,
    CaseInputError,
    CaseNotFoundError,
    CaseNotReopenableError,
    CaseSignedError,
    CaseStoreError,
    CellNotFoundError,
    SignOffBlockedError,
    audit,
    cell_row,
    damaged_database,
    domain_json,
    field_row,
    insert,
    now,
    record_outside_changes,
    reviewer_name,
    server_trouble,
    text,
    unusable_database,
)
from leukemia_core.store_schema import SCHEMA_VERSION, migrate
from leukemia_core.store_signoff import CaseSignoff
from leukemia_core.types import Cell, Field

__all__ = [
    "SCHEMA_VERSION",
    "STATUS_OPEN",
    "STATUS_SIGNED",
    "AuditEntry",
    "CaseChangedError",
    "CaseHeader",
    "CaseInputError",
    "CaseNotFoundError",
    "CaseNotReopenableError",
    "CaseRecord",
    "CaseSignedError",
    "CaseState",
    "CaseStore",
    "CaseStoreError",
    "CaseSummary",
    "Cell",
    "CellNotFoundError",
    "Field",
    "SignOffBlockedError",
]  # the record types live in leukemia_core.case_record, rows in leukemia_core.store_rows
DATABASE_ENV_VAR = "LEUKEMIA_CASE_DB"
_BUSY_TIMEOUT_S = 30.0
MAX_SAMPLE_ID = 64  # one line, as the patient id (store_signoff.MAX_PATIENT_ID)


def default_database_path(*, create_folder: bool = True) -> Path:
    """The case database: ``$LEUKEMIA_CASE_DB`` if set, else ``~/.local/share/leukemia-screen/``.

    The parent folder is created if missing (unless ``create_folder`` is False).
    """
    configured = os.environ.get(DATABASE_ENV_VAR, "").strip()
    if configured:
        path = Path(configured).expanduser()
    else:
        path = Path.home() / ".local" / "share" / "leukemia-screen" / "cases.sqlite3"
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL; two processes creating it at once may see it locked for a
    moment (the switch takes no busy handler), so wait as a write would."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _file_id(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode); None when there is none."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


class CaseStore(CaseEdits, CaseReads, CaseSignoff, CaseReshape, CaseFields):
    """The case database; every method is one short transaction, safe across threads/processes.

    Args:
        path: SQLite file; None uses :func:`default_database_path`.
        create: Create the database if missing. Commands that only read or copy an existing
            one pass False, so a mistyped path is an error, not a new empty database.
        upgrade: Bring a database of an older release to this one's schema (the app does). A
            backup passes False: a copy taken before an update must still open in the release
            that wrote it, and the file is left exactly as it was found.

    Raises:
        CaseStoreError: The file is not a case database, or one written by a newer version,
            or (``create=False``) there is no file.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, create: bool = True,
        upgrade: bool = True,
    ) -> None:  # fmt: skip
        if str(path) == ":memory:":
            raise CaseInputError(
                "Each call opens its own connection, so ':memory:' cannot hold "
                "cases; pass a file path (e.g. under tmp_path in tests)."
            )
        if path is None:
            self.path = default_database_path(create_folder=create)
        else:
            self.path = Path(path).expanduser()
        wal = self.path.with_name(self.path.name + "-wal")  # holds all of a new one, at first
        if not create and not (self.path.is_file() and (self.path.stat().st_size or (
                wal.is_file() and wal.stat().st_size))):  # fmt: skip
            what = "Only an empty file is" if self.path.is_file() else "No case database"
            raise CaseStoreError(
                f"{what} at {self.path}. Check the path (and the spelling of "
                f"{DATABASE_ENV_VAR}, which the app's server uses too); the app creates the "
                "database on its first start."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            create_private(self.path)
            conn = self._connect()
            try:
                # Read before anything is changed: a newer database or another program's is
                # refused as it was found (switching it to WAL first changed it).
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]  # fmt: skip
                if tables and (not found or "cases" not in tables):
                    raise CaseStoreError(
                        f"{self.path} is another program's SQLite database (tables "
                        f"{', '.join(tables[:5]) or 'none'}), not a case database, and is left "
                        f"as it is; point {DATABASE_ENV_VAR} at a case database or at a new "
                        "file."
                    )
                if found > SCHEMA_VERSION:
                    raise CaseStoreError(
                        f"The case database {self.path} has schema version {found}, newer than "
                        f"this app's {SCHEMA_VERSION}; update the app or set {DATABASE_ENV_VAR} "
                        "to another file."
                    )
                if upgrade or not tables:
                    _use_wal(conn)
                    if found < SCHEMA_VERSION:
                        migrate(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as error:
            if server_trouble(error):  # the file may be fine: its disk, lock or rights are not
                raise unusable_database(self.path, error, "opened") from error
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
        """One transaction; an SQLite failure (full disk, busy, read-only) rolls it back and
        becomes a :class:`CaseStoreError` that says what to do."""
        file = _file_id(self.path)
        try:
            conn = self._connect()
        except sqlite3.OperationalError as error:
            raise unusable_database(self.path, error, "opened") from error
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                self._same_file(file, write)
                yield conn
                self._same_file(file, write)
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if conn.in_transaction:
                conn.rollback()
            raise unusable_database(self.path, error, "written" if write else "read") from error
        except sqlite3.DatabaseError as error:
            if type(error) is not sqlite3.DatabaseError:  # a refusal (a trigger's): said above
                raise
            if conn.in_transaction:
                conn.rollback()
            raise damaged_database(self.path, error) from error  # "disk image is malformed"
        finally:
            conn.close()

    def _same_file(self, file: tuple[int, int] | None, write: bool) -> None:
        """A write goes to the file at the database's path, or nowhere: a restore that put a
        backup in its place meanwhile left this connection on the file set aside, where a
        signature was written, reported done, and lost."""
        if write and _file_id(self.path) != file:
            raise CaseStoreError(
                f"The case database {self.path} was replaced (restored from a backup) while "
                "this change was being made; nothing was written. Do it again on the case as "
                "it now is."
            )

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
        if open_only:  # about to be written to: a change made outside the app stays on record
            record_outside_changes(conn, row)
        return row

    def create_case(
        self,
        sample_id: str,
        fields: Sequence[Field],
        cells: Sequence[Cell],
        *,
        model_name: str,
        model_checksum: str,
        thresholds: dict[str, Any],
        created_by: str,
        domain: DomainAssessment | None = None,
        left_out: Sequence[str] = (),
    ) -> str:
        """Stores a new case (version 1) in one transaction: all of it or nothing; ``left_out``
        (why each image of the upload was not analysed: a repeat, unreadable) goes into the
        "created" audit row, so the record says what the sample did not include.

        Fields are stored in the given order (their position is their index); each cell is
        stored as it is (model label, current label, reviewed flag, outline, crop, ...).
        ``domain`` is the sample's out-of-domain assessment (None when none was made).

        Returns:
            The new case id (32 hex digits).

        Raises:
            CaseInputError: An argument cannot be stored (bad label, field index, image, ...).
        """
        sample_id = text(sample_id, "sample_id", "enter the sample (specimen) identifier")
        # one spelling of one id: a full-width "Ｓ-1" typed on another keyboard is "S-1"
        sample_id = unicodedata.normalize("NFKC", sample_id)
        if len(sample_id) > MAX_SAMPLE_ID or not sample_id.isprintable():
            raise CaseInputError(
                f"The sample id {sample_id[:80]!r} is not one line of at most {MAX_SAMPLE_ID} "
                "printable characters; enter the specimen identifier your laboratory uses."
            )
        model_name = text(model_name, "model_name", "pass the name of the model that labelled")
        created_by = reviewer_name(created_by)
        if not isinstance(model_checksum, str):
            raise CaseInputError("model_checksum must be text (may be empty).")
        if not fields:
            raise CaseInputError("The case has no fields; add at least one field image.")
        try:
            thresholds_json = json.dumps(dict(thresholds), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise CaseInputError(
                f"thresholds must be a dict of JSON values, got {thresholds!r} ({error})."
            ) from None
        case = {"case_id": uuid.uuid4().hex, "version": 1, "sample_id": sample_id,
                "status": STATUS_OPEN, "created_at": now(), "created_by": created_by,
                "model_name": model_name, "model_checksum": model_checksum,
                "thresholds": thresholds_json, "domain": domain_json(domain)}  # fmt: skip
        field_rows = [field_row(index, entry) for index, entry in enumerate(fields)]
        cell_rows, seen = [], set()
        for position, cell in enumerate(cells):
            row = cell_row(position, cell, len(fields))
            key = (row["field_index"], row["cell_id"])
            if key in seen:
                raise CaseInputError(
                    f"Cell {position}: field {key[0]} already has a cell with id {key[1]}; "
                    "cell ids must be unique within a field."
                )
            seen.add(key)
            cell_rows.append(row)
        case_id = case["case_id"]
        with self._transaction(write=True) as conn:
            insert(conn, "cases", case)
            for row in field_rows:
                insert(conn, "fields", {"case_id": case_id, **row})
            for row in cell_rows:
                insert(conn, "cells", {"case_id": case_id, **row})
            conn.execute("UPDATE cases SET fields_sha256 = ? WHERE case_id = ?",
                         (fields_digest(conn, case_id), case_id))  # fmt: skip
            stored = self._case(conn, case_id, open_only=True)
            n_cells, n_fields = len(seen), len(fields)
            note = (f"{n_cells} cell{'s' * (n_cells != 1)} in {n_fields} field"
                    f"{'s' * (n_fields != 1)} labelled by {model_name}")  # fmt: skip
            if left_out:
                note += "; left out of the upload: " + " ".join(left_out)
            audit(conn, stored, "created", created_by, note)
        return case_id
