"""Reading the case database: whole cases, their state without images, the case list.

:class:`CaseReads` is the read half of :class:`leukemia_core.store.CaseStore` (which adds the
connection handling and the writes); every read is one short transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import unicodedata
from contextlib import closing
from pathlib import Path
from typing import Any

from leukemia_core.case_record import (
    REVIEW_ACTIONS,
    AuditEntry,
    CaseHeader,
    CaseRecord,
    CaseState,
    CaseSummary,
)
from leukemia_core.store_digest import (
    AUDIT_CHAINED,
    chain_hash,
    changed_images,
    digest_of_fields,
    state_matches,
)
from leukemia_core.store_errors import AlteredRecordError
from leukemia_core.store_files import new_private_file
from leukemia_core.store_rows import (
    CaseInputError,
    StorePart,
    cell_from_row,
    domain_from_json,
    field_from_row,
    read_stored,
    stored_label,
    unusable_database,
)
from leukemia_core.store_schema import ALTERED_OUTSIDE, PSEUDONYM_KEY
from leukemia_core.types import REVIEWER_EDITABLE, CellLabel, live

_SEPARATORS = " -/._"  # in a search, each matches any one of them


def _child(conn: sqlite3.Connection, case_id: str) -> CaseHeader | None:
    row = conn.execute(f"SELECT {', '.join(HEADER_COLUMNS)} FROM cases WHERE parent_id = ?",
                       (case_id,)).fetchone()  # fmt: skip
    return None if row is None else CaseHeader(**{k: row[k] for k in HEADER_COLUMNS})


def _spaced(column: str) -> str:
    """SQL for ``column`` with every separator a space (as the search is made)."""
    for separator in _SEPARATORS[1:]:
        column = f"REPLACE({column}, '{separator}', ' ')"
    return column


HEADER_COLUMNS = ("case_id", "version", "parent_id", "sample_id", "status", "created_at",
                  "created_by", "signed_by", "signed_at", "first_signed_by",
                  "first_signed_at", "patient_id")  # fmt: skip


# One line per case version with counts of its current labels; {where} picks the cases.
_SUMMARIES = (
    "SELECT c.case_id, c.version, c.parent_id, c.sample_id, c.status, c.created_at, "
    "c.created_by, c.signed_by, c.signed_at, c.first_signed_by, c.first_signed_at, "
    "c.patient_id, "
    "COALESCE(SUM(x.label != 'replaced'), 0) AS n_cells, "
    "COALESCE(SUM(x.label = 'blast'), 0) AS n_blasts, "
    "COALESCE(SUM(x.label IN ('blast', 'normal')), 0) AS n_counted, "
    "COALESCE(SUM(x.label = 'uncertain'), 0) AS n_uncertain, "
    # the rule of Cell.awaits_review: border and replaced cells are never reviewed
    "COALESCE(SUM(x.reviewed = 0 AND x.label NOT IN ('border', 'replaced')), 0) AS n_unreviewed, "
    # what sent fields to review, for the list: the sample or a field unlike the training data,
    # or a field that failed a quality check
    # (json_valid first: one record altered outside the app must not stop the whole list)
    "COALESCE(CASE WHEN json_valid(c.domain) THEN json_extract(c.domain, '$.warned') END, 0) "
    "AS out_of_domain, "
    "(SELECT COUNT(*) FROM fields AS f WHERE f.case_id = c.case_id AND COALESCE(CASE WHEN "
    "json_valid(f.domain) THEN json_extract(f.domain, '$.warned') END, 0)) "
    "AS n_fields_out_of_domain, "
    "(SELECT COUNT(*) FROM fields AS f WHERE f.case_id = c.case_id AND f.quality NOT IN "
    "('', '[]')) AS n_fields_failing_quality "
    "FROM cases AS c LEFT JOIN cells AS x ON x.case_id = c.case_id "
    "WHERE {where} GROUP BY c.case_id ORDER BY c.created_at DESC, c.rowid DESC LIMIT ?"
)


# Who reviewed cells in the versions a case was reopened from (its parent, their parent, ...).
_EARLIER_REVIEWERS = (
    "WITH RECURSIVE earlier(case_id, parent_id) AS ("
    "SELECT case_id, parent_id FROM cases WHERE case_id = (SELECT parent_id FROM cases "
    "WHERE case_id = ?) UNION ALL SELECT c.case_id, c.parent_id FROM cases AS c "
    "JOIN earlier AS e ON c.case_id = e.parent_id) "
    "SELECT DISTINCT a.version, a.reviewer FROM audit AS a JOIN earlier AS e "
    f"ON a.case_id = e.case_id WHERE a.action IN ({', '.join('?' * len(REVIEW_ACTIONS))}) "
    "ORDER BY a.version, a.reviewer"
)


def as_dict(row: sqlite3.Row, skip: str = "") -> dict[str, Any]:
    return {key: row[key] for key in row.keys() if key != skip}  # noqa: SIM118 (Row is no dict)


def database_contents(conn: sqlite3.Connection) -> dict[str, int]:
    """Samples, case versions, signed versions and accounts of an open case database."""
    samples, versions, signed = conn.execute(
        "SELECT COUNT(DISTINCT sample_id), COUNT(*), COALESCE(SUM(status = 'signed'), 0) FROM cases"
    ).fetchone()
    has_users = conn.execute(  # an older release's file (a backup before an update) has none
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users'").fetchone()  # fmt: skip
    (accounts,) = conn.execute("SELECT COUNT(*) FROM users").fetchone() if has_users else (0,)
    return {"samples": samples, "case_versions": versions, "signed": signed, "accounts": accounts}


@contextlib.contextmanager
def _naming_the_case(case: sqlite3.Row):
    """An unreadable stored value names its case and sample: the page that met it drops the
    case from its address, and the administrator needs to know which one to restore."""
    try:
        yield
    except AlteredRecordError as error:
        raise AlteredRecordError(
            f"Case {case['case_id'][:8]} (sample {case['sample_id']!r}): {error}"
        ) from error


class CaseReads(StorePart):
    """Reads of the case database (mixed into :class:`~leukemia_core.store.CaseStore`)."""

    def load_case(self, case_id: str) -> CaseRecord:
        """The whole case version, with its images and audit trail.

        Raises:
            CaseNotFoundError: No such case.
        """
        with self._transaction(write=False) as conn:
            case = self._case(conn, case_id, open_only=False)
            fields, cells, audit_rows = case_rows(conn, case["case_id"])
            audit = _audit_entries(audit_rows)
            altered = self._alterations(conn, case, fields, cells, audit_rows)
            newer = _child(conn, case["case_id"])
            amends = None
            if case["parent_id"]:  # the signed version this one was reopened from
                row = conn.execute(_SUMMARIES.format(where="c.case_id = ?"),
                                   (case["parent_id"], 1)).fetchone()  # fmt: skip
                amends = None if row is None else CaseSummary(**as_dict(row))
            earlier = conn.execute(_EARLIER_REVIEWERS, (case["case_id"], *REVIEW_ACTIONS))
            earlier = tuple((row["version"], row["reviewer"]) for row in earlier)
        plain = {k: v for k, v in as_dict(case).items()
                 if k not in ("thresholds", "domain", "fields_sha256")}  # fmt: skip
        with _naming_the_case(case):
            cells = [cell_from_row(c) for c in cells]
            thresholds = read_stored(json.loads, case["thresholds"], "its thresholds")
            fields = tuple(field_from_row(f) for f in fields)
        return CaseRecord(
            **plain,
            thresholds=thresholds,
            domain=domain_from_json(case["domain"]),
            fields=fields,
            cells=live(cells),
            replaced=tuple(c for c in cells if c.label == CellLabel.REPLACED),
            audit=audit,
            altered=altered,
            superseded_by=newer,
            amends=amends,
            earlier_reviewers=earlier,
        )

    def pseudonym_key(self) -> bytes:
        """This database's own random key for the pseudonyms that exports give patients and
        samples (the same id gets the same pseudonym in every export of this database)."""
        with self._transaction(write=False) as conn:
            (value,) = conn.execute("SELECT value FROM installation WHERE key = ?",
                                    (PSEUDONYM_KEY,)).fetchone()  # fmt: skip
        return bytes.fromhex(value)

    def newer_version(self, case_id: str) -> CaseHeader | None:
        """The version a signed case was reopened as (None: not reopened); one small query,
        for pages that show a signed case without loading it whole."""
        with self._transaction(write=False) as conn:
            return _child(conn, str(case_id))

    def case_state(self, case_id: str) -> CaseState:
        """Status, reviewer-editable cell attributes and audit trail of a case (no images).

        Raises:
            CaseNotFoundError: No case with this id.
        """
        editable = sorted(REVIEWER_EDITABLE)
        with self._transaction(write=False) as conn:
            case = self._case(conn, case_id, open_only=False)
            cells = conn.execute(
                f"SELECT field_index, cell_id, {', '.join(editable)} FROM cells WHERE case_id = ?",
                (case["case_id"],),
            ).fetchall()
            audit = _audit_entries(_audit_query(conn, case["case_id"]))
        edits = {}
        for c in cells:
            values = {name: c[name] for name in editable}
            where = f"Cell {c['cell_id']} of field {c['field_index'] + 1}: its label"
            with _naming_the_case(case):
                values.update(label=stored_label(values["label"], where),
                              reviewed=bool(values["reviewed"]))  # fmt: skip
            edits[(c["field_index"], c["cell_id"])] = values
        return CaseState(**{k: case[k] for k in HEADER_COLUMNS}, edits=edits, audit=audit)

    def backup(self, target: str | os.PathLike) -> Path:
        """A consistent copy of the whole database at ``target`` (a new file), taken with
        SQLite's online backup while the app may be writing; a plain file copy can miss the
        newest changes (kept in the ``-wal`` file beside it). Checked before it is kept.

        Raises:
            CaseInputError: ``target`` exists, or its folder does not.
            CaseStoreError: The copy failed or does not read back whole.
        """
        target = Path(target).expanduser()
        if target.exists() or not target.parent.is_dir():
            raise CaseInputError(
                f"{target} {'exists' if target.exists() else 'is in a folder that does not exist'}"
                "; give a new file name in an existing folder (backups are never overwritten)."
            )
        partial = target.with_name(target.name + ".partial")
        if not os.access(target.parent, os.W_OK):  # a write-protected stick, a read-only share
            raise CaseInputError(f"The backup cannot be written in {target.parent} (read-only, "
                                 "or no permission): choose a folder this account can write "
                                 "to.")  # fmt: skip
        try:
            new_private_file(partial)
            with closing(sqlite3.connect(self.path, timeout=30)) as source, closing(
                sqlite3.connect(partial)
            ) as copy:  # fmt: skip
                source.backup(copy)
                # One self-contained file: readable on read-only storage, no -wal to lose.
                copy.execute("PRAGMA journal_mode = DELETE")
                (check,) = copy.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"the copy fails SQLite's integrity check: {check}")
            os.replace(partial, target)
        except sqlite3.Error as error:
            if _target_at_fault(error, target.parent, self.path):
                raise CaseInputError(
                    f"The backup could not be written to {target} ({error}); check the target "
                    "disk's free space and that this account can write there."
                ) from error
            raise unusable_database(self.path, error, "backed up") from error
        except PermissionError as error:  # e.g. a scratch file another account left there
            raise CaseInputError(
                f"The backup could not be written to {target}: this account may not write or "
                f"replace {error.filename or partial} ({error.strerror}); choose another folder "
                "or file name, or remove that file as its owner."
            ) from error
        except OSError as error:  # the copy's disk filled up, or went read-only
            raise CaseInputError(
                f"The backup could not be written to {target} ({error.strerror or error}); "
                "check the target disk's free space and that it can be written."
            ) from error
        finally:
            with contextlib.suppress(OSError):  # a read-only target refuses this too
                partial.unlink(missing_ok=True)
        return target

    def contents(self) -> dict[str, int]:
        """What the database holds, in words a backup report can use: samples, case versions
        (each reopening adds one), signed versions and accounts."""
        with self._transaction(write=False) as conn:
            return database_contents(conn)

    def last_audit_id(self, case_id: str) -> int:
        """The newest audit id of a case: it changes with every change to the case (0: none)."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT MAX(audit_id) FROM audit WHERE case_id = ?", (str(case_id),)
            ).fetchone()
        return int(row[0] or 0)

    @staticmethod
    def _alterations(
        conn: sqlite3.Connection, case: sqlite3.Row, fields, cells, rows
    ) -> tuple[str, ...]:
        """What the audit chain says was changed outside the app (empty when nothing was),
        checked on the ``fields``, ``cells`` and audit ``rows`` already read."""
        case_id = case["case_id"]
        problems, previous = [], ""
        for row in rows:
            values = dict(row)
            if chain_hash(previous, values, values["state"]) != values["chain"]:
                problems.append(
                    f"audit row {values['audit_id']} ({values['action']} by "
                    f"{values['reviewer']}) does not follow the row before it: a row was "
                    "changed or removed"
                )
            if values["state"] == ALTERED_OUTSIDE:
                problems.append(
                    f"before audit row {values['audit_id']} ({values['action']}) the case "
                    "differed from what its audit trail recorded: it was changed outside the app"
                )
            previous = values["chain"]
        if not rows:
            problems.append("the case has no audit trail")
        elif not state_matches(conn, case_id, rows[-1]["state"]):
            problems.append("the case's labels or details differ from what its last audit row "
                            "recorded: they were changed without an audit row")  # fmt: skip
        problems += [f"{what} differs from the one recorded with it: it was replaced outside "
                     "the app" for what in changed_images({"fields": fields, "cells": cells})]  # fmt: skip
        if case["fields_sha256"] != digest_of_fields(fields):
            problems.append("the fields (names, sizes, warnings or images) differ from those "
                            "recorded when the case was made: changed outside the app")  # fmt: skip
        return tuple(problems)

    def cases_of_sample(self, sample_id: str) -> list[CaseSummary]:
        """Every case version saved under exactly this sample id (ignoring case and the
        spaces around it), newest first: two samples must not share an accession number."""
        wanted = _id_key(sample_id)
        if not wanted:
            return []
        with self._transaction(write=False) as conn:
            # casefold in Python: SQLite's lower() and LIKE fold ASCII letters only
            every = conn.execute("SELECT case_id, sample_id FROM cases")
            ids = [case_id for case_id, sample in every if _id_key(sample) == wanted]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = conn.execute(_SUMMARIES.format(where=f"c.case_id IN ({marks})"),
                                (*ids, len(ids))).fetchall()  # fmt: skip
        return [CaseSummary(**as_dict(row)) for row in rows]

    def list_cases(self, search: str = "", limit: int = 200) -> list[CaseSummary]:
        """Case versions, newest first, with counts of their current labels.

        Args:
            search: Matches part of the sample id or the patient id (case-insensitive), or the
                start of a case id; a space, hyphen, slash, dot or underscore in it matches any
                one of them ("HEM 24 0101" finds "HEM-24-0101").
            limit: Most rows returned, at least 1.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise CaseInputError(f"limit must be a whole number of 1 or more, got {limit!r}.")
        escaped = "".join(
            " " if c in _SEPARATORS else "\\" + c if c in "%_\\" else c for c in str(search).strip()
        )
        with self._transaction(write=False) as conn:
            where = (f"{_spaced('c.sample_id')} LIKE ? ESCAPE '\\' OR "
                     f"{_spaced('c.patient_id')} LIKE ? ESCAPE '\\' OR c.case_id LIKE ? ESCAPE '\\'")  # fmt: skip
            rows = conn.execute(
                _SUMMARIES.format(where=where),
                (f"%{escaped}%", f"%{escaped}%", f"{escaped.lower()}%", limit),
            ).fetchall()
        return [CaseSummary(**as_dict(row)) for row in rows]


def _id_key(sample_id: object) -> str:
    """A sample id as two spellings of one id compare: full-width and ligature forms folded
    (NFKC; ids saved before that rule are folded here), case and outer spaces ignored."""
    return unicodedata.normalize("NFKC", str(sample_id)).strip().casefold()


def case_rows(conn: sqlite3.Connection, case_id: str) -> tuple[list, list, list]:
    """A case's field, cell and audit rows, whole and in order (what :meth:`CaseReads.
    _alterations` checks)."""
    key = (case_id,)
    fields = conn.execute("SELECT * FROM fields WHERE case_id = ? ORDER BY field_index",
                          key).fetchall()  # fmt: skip
    cells = conn.execute("SELECT * FROM cells WHERE case_id = ? ORDER BY field_index, cell_id",
                         key).fetchall()  # fmt: skip
    return fields, cells, _audit_query(conn, case_id).fetchall()


def _audit_query(conn: sqlite3.Connection, case_id: str) -> sqlite3.Cursor:
    return conn.execute("SELECT * FROM audit WHERE case_id = ? ORDER BY audit_id", (case_id,))


def _audit_entries(rows) -> tuple[AuditEntry, ...]:
    return tuple(AuditEntry(**{k: a[k] for k in AUDIT_CHAINED}) for a in rows)


def _target_at_fault(error: sqlite3.Error, folder: Path, database: Path) -> bool:
    """Whether a failed backup is the target's doing (its disk full or read-only), not the
    case database's, which the usual message would blame."""
    said = str(error).lower()
    if "readonly" in said or "read-only" in said:
        return True
    try:
        small = shutil.disk_usage(folder).free < 2 * database.stat().st_size + (1 << 20)
    except OSError:
        return False
    return "full" in said and small
