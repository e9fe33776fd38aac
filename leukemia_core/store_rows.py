"""Rows of the case database from and to the core's :class:`Field` and :class:`Cell`.

A cell column holds the cell attribute of the same name; only attributes that are no plain value
(box, centroid, outline, images, labels) have a codec here, so a new plain attribute of
:class:`~leukemia_core.types.Cell` needs only its column (a migration in
:mod:`leukemia_core.store_schema`). Every value is checked on the way in: a case is stored
whole or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from leukemia_core.domain import DomainAssessment
from leukemia_core.imaging import png_bytes, rgb_from_png
from leukemia_core.quality import QualityWarning
from leukemia_core.store_digest import (
    AUDIT_CHAINED,
    case_digest,
    chain_hash,
    fields_digest,
    image_sha256,
    state_matches,
)
from leukemia_core.store_errors import CaseChangedError as CaseChangedError
from leukemia_core.store_errors import CaseInputError as CaseInputError
from leukemia_core.store_errors import CaseNotFoundError as CaseNotFoundError
from leukemia_core.store_errors import CaseNotReopenableError as CaseNotReopenableError
from leukemia_core.store_errors import CaseSignedError as CaseSignedError
from leukemia_core.store_errors import CaseStoreError as CaseStoreError
from leukemia_core.store_errors import CellNotFoundError as CellNotFoundError
from leukemia_core.store_errors import SignOffBlockedError as SignOffBlockedError
from leukemia_core.store_errors import damaged_database as damaged_database
from leukemia_core.store_errors import server_trouble as server_trouble
from leukemia_core.store_errors import unreadable_value
from leukemia_core.store_errors import unusable_database as unusable_database
from leukemia_core.store_schema import (
    ALTERED_OUTSIDE,
    outline_from_json,
    outline_json,
)
from leukemia_core.types import REVIEWER_EDITABLE, Cell, CellLabel, Field

_VALID_LABELS = ", ".join(label.value for label in CellLabel)
_EMPTY_FIELD_GREY = 235  # shown for a field stored without its image
_CELL_SPECIAL = {"field_index", "cell_id", "bbox", "centroid", "outline", "crop", "overlay",
                 "model_label", "label"}  # fmt: skip


class StorePart:
    """Base of the case store's parts (reads, edits, sign-off, reshape): what each uses of
    :class:`~leukemia_core.store.CaseStore`, which provides it."""

    def _transaction(self, *, write: bool) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by CaseStore

    def _case(self, conn: sqlite3.Connection, case_id: object, *, open_only: bool) -> sqlite3.Row:
        raise NotImplementedError  # provided by CaseStore

    def _settle_outside_changes(self, case_id: object, expected_token: int | None) -> None:
        """Put a change made outside the app on record in a transaction of its own before a
        write that checks the reader's token: the token check refusing (and rolling back) the
        write must not take that record with it, or every try would be refused again."""
        if expected_token is not None:
            with self._transaction(write=True) as conn:
                self._case(conn, case_id, open_only=True)


def whole(value: object, what: str) -> int:
    try:
        if not isinstance(value, bool):
            return operator.index(value)
    except TypeError:
        pass
    raise CaseInputError(f"{what} must be a whole number, got {value!r} ({type(value).__name__}).")


def label_value(value: object, what: str) -> str:
    try:
        return CellLabel(str(value).strip().lower()).value
    except ValueError:
        raise CaseInputError(
            f"{what} {value!r} is not a cell label; expected one of: {_VALID_LABELS}."
        ) from None


def text(value: object, what: str, fix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CaseInputError(f"{what} is empty or not text (got {value!r}); {fix}.")
    return value.strip()


def domain_json(domain: DomainAssessment | None, where: str = "domain") -> str | None:
    if domain is not None and not isinstance(domain, DomainAssessment):
        raise CaseInputError(f"{where} is a {type(domain).__name__}; pass a DomainAssessment "
                             "or None.")  # fmt: skip
    return None if domain is None else json.dumps(domain.to_dict(), allow_nan=False)


def domain_from_json(value: str | None) -> DomainAssessment | None:
    """The stored assessment; None for none, or for text that is no assessment (changed
    outside the app: the audit chain reports that, and the case still opens)."""
    try:
        return None if value is None else DomainAssessment.from_dict(json.loads(value))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _notes_from_json(value: str) -> tuple[str, ...]:
    """A field's stored notes; text that is no list of notes (changed outside the app: the
    audit chain reports it) reads as one note saying so, and the case still opens."""
    try:
        notes = json.loads(value)
        if isinstance(notes, list) and all(isinstance(n, str) for n in notes):
            return tuple(notes)
    except (ValueError, TypeError):
        pass
    return ("The notes stored with this field cannot be read.",)


def _image_png(image: object, where: str) -> bytes | None:
    if image is None:
        return None
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise CaseInputError(
            f"{where} must be an (H, W, 3) uint8 RGB array or None, got "
            f"{array.dtype} {array.shape}."
        )
    # zlib level 1: a 2592x1944 field encodes in 0.35 s instead of 0.58 s (level 3) for a file
    # 5% larger; saving a case is the slowest click of the review, and PNG stays lossless.
    return png_bytes(array, compression=1)


def field_row(index: int, entry: Field) -> dict[str, Any]:
    """The ``fields`` row of one field (its position in the case is its index)."""
    where = f"Field {index}"
    if not isinstance(entry, Field):
        raise CaseInputError(f"{where} is a {type(entry).__name__}; pass Field objects.")
    image = _image_png(entry.image, f"{where} image")
    return {"field_index": index, "name": str(entry.name), "width": entry.width,
            "height": entry.height, "image_png": image, "image_sha256": image_sha256(image),
            "domain": domain_json(entry.domain, f"{where} domain"),
            "quality": json.dumps([dataclasses.asdict(w) for w in entry.quality]),
            "notes": json.dumps([str(note) for note in entry.notes]),
            "original_width": int(entry.original_size[0]),
            "original_height": int(entry.original_size[1]), "scale": float(entry.scale)}  # fmt: skip


def field_from_row(row: sqlite3.Row) -> Field:
    if row["image_png"]:
        image = rgb_from_png(row["image_png"])
    else:
        image = np.full((row["height"], row["width"], 3), _EMPTY_FIELD_GREY, np.uint8)
    quality = read_stored(lambda text: tuple(QualityWarning(**w) for w in json.loads(text)),
                          row["quality"], f"Field {row['field_index'] + 1}'s quality checks")  # fmt: skip
    size = (row["original_width"], row["original_height"]) if row["original_width"] else None
    return Field(row["field_index"], row["name"], image, size, row["scale"],
                 notes=_notes_from_json(row["notes"]), domain=domain_from_json(row["domain"]),
                 quality=quality)  # fmt: skip


def cell_row(position: int, cell: Cell, n_fields: int) -> dict[str, Any]:
    """The ``cells`` row of one cell (without ``case_id``), every value checked."""
    where = f"Cell {position}"
    if not isinstance(cell, Cell):
        raise CaseInputError(f"{where} is a {type(cell).__name__}; pass Cell objects.")
    where = f"Cell {position} (field {cell.field_index!r}, cell id {cell.cell_id!r})"
    field_index = whole(cell.field_index, f"{where}: field_index")
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
    x0, y0, x1, y1 = (whole(v, f"{where}: bbox value") for v in bbox)
    row = {"field_index": field_index, "cell_id": whole(cell.cell_id, f"{where}: cell_id"),
           "x0": x0, "y0": y0, "x1": x1, "y1": y1,
           "centroid_x": float(centroid[0]), "centroid_y": float(centroid[1]),
           "outline": outline_json(cell.outline),
           "crop_png": _image_png(cell.crop, f"{where} crop"),
           "overlay_png": _image_png(cell.overlay, f"{where} overlay"),
           "model_label": label_value(cell.model_label, f"{where}: model_label"),
           "label": label_value(cell.label, f"{where}: label")}  # fmt: skip
    row |= {
        "crop_sha256": image_sha256(row["crop_png"]),
        "overlay_sha256": image_sha256(row["overlay_png"]),
    }
    for spec in dataclasses.fields(Cell):
        if spec.name not in _CELL_SPECIAL:
            row[spec.name] = _plain(getattr(cell, spec.name), spec.name, where)
    return row


def _plain(value: Any, name: str, where: str) -> Any:
    """A plain cell attribute as an SQLite value, with the range checks the record relies on."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return int(value)
    number = int(value) if isinstance(value, int | np.integer) else float(value)
    if not math.isfinite(number):
        raise CaseInputError(f"{where}: {name} must be a finite number or None, got {number}.")
    if name == "blast_probability" and not 0.0 <= number <= 1.0:
        raise CaseInputError(f"{where}: blast_probability must be between 0 and 1 or None, "
                             f"got {number}.")  # fmt: skip
    if name == "domain_score" and number < 0:
        raise CaseInputError(f"{where}: domain_score must be 0 or more or None, got {number}.")
    return number


def cell_from_row(row: sqlite3.Row) -> Cell:
    """The :class:`Cell` a ``cells`` row holds."""
    plain = {}
    for spec in dataclasses.fields(Cell):
        if spec.name not in _CELL_SPECIAL:
            value = row[spec.name]
            plain[spec.name] = bool(value) if spec.type in ("bool", bool) else value
    crop, overlay = row["crop_png"], row["overlay_png"]
    where = f"Cell {row['cell_id']} of field {row['field_index'] + 1}"
    return Cell(
        cell_id=row["cell_id"],
        bbox=(row["x0"], row["y0"], row["x1"], row["y1"]),
        centroid=(row["centroid_x"], row["centroid_y"]),
        outline=read_stored(outline_from_json, row["outline"], f"{where}: its outline"),
        crop=rgb_from_png(crop) if crop else None,
        overlay=rgb_from_png(overlay) if overlay else None,
        field_index=row["field_index"],
        model_label=stored_label(row["model_label"], f"{where}: the model's label"),
        label=stored_label(row["label"], f"{where}: its label"),
        **plain,
    )


def stored_label(value: object, what: str) -> CellLabel:
    """A label as stored; one no label is was written outside the app."""
    return read_stored(CellLabel, value, what)


def read_stored(parse, value: object, what: str):
    """``parse(value)`` of a stored value; a value it cannot read was written outside the app."""
    try:
        return parse(value)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise unreadable_value(what, value) from error


# ---- writing rows: time stamps, names and the chained audit trail ---------------------------
def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def minute_text(timestamp: str | None) -> str:
    """A stored UTC time stamp (as :func:`now` writes it) to the minute, as a reader wants it:
    ``2026-12-05 10:28``; "—" for none."""
    return "—" if not timestamp else timestamp[:16].replace("T", " ")


def reviewer_name(value: object) -> str:
    return text(value, "The reviewer name", "enter your name so the audit trail records who did it")


def insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(row)
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})",
                 tuple(row.values()))  # fmt: skip


def audit(
    conn: sqlite3.Connection,
    case: sqlite3.Row,
    action: str,
    who: str,
    note: str,
    *cell: Any,
    state: str | None = None,
) -> int:
    """Appends an audit row, chained to the case's previous one, and returns its id; ``cell`` is
    ``(field_index, cell_id, from_label, to_label)``; ``state`` defaults to the case's digest now.
    Runs inside the caller's write transaction (BEGIN IMMEDIATE), so the next id is this row's."""
    (last_id,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence "
                              "WHERE name = 'audit'").fetchone()  # fmt: skip
    row = dict(zip(AUDIT_CHAINED, (last_id + 1, case["case_id"], case["version"], action, who,
                                   now(), *(cell or (None,) * 4), note), strict=True))  # fmt: skip
    previous = conn.execute(
        "SELECT chain FROM audit WHERE case_id = ? ORDER BY audit_id DESC LIMIT 1",
        (case["case_id"],),
    ).fetchone()
    row["state"] = case_digest(conn, case["case_id"]) if state is None else state
    row["chain"] = chain_hash(previous["chain"] if previous else "", row, row["state"])
    insert(conn, "audit", row)
    return row["audit_id"]


def withdraw_first_signature(conn: sqlite3.Connection, case: sqlite3.Row, who: str,
                             why: str, *cell: Any) -> list[int]:  # fmt: skip
    """After a change, a first signature (of two required) no longer covers the case: it is
    withdrawn, on the record, and the second signer's signature becomes a first one again."""
    if case["first_signed_by"] is None:
        return []
    conn.execute("UPDATE cases SET first_signed_by = NULL, first_signed_at = NULL "
                 "WHERE case_id = ?", (case["case_id"],))  # fmt: skip
    return [audit(conn, case, "first signature withdrawn", who, why, *cell)]


def require_unchanged(conn: sqlite3.Connection, case: sqlite3.Row, expected_token: int | None,
                      doing: str) -> None:  # fmt: skip
    """Refuse ``doing`` (e.g. "signing") when the case's last audit id is not
    ``expected_token``, the one its reader saw: nobody signs or edits what they did not see."""
    if expected_token is None:
        return
    last = conn.execute("SELECT audit_id, action, reviewer, at FROM audit WHERE case_id = ? "
                        "ORDER BY audit_id DESC LIMIT 1", (case["case_id"],)).fetchone()  # fmt: skip
    if last is not None and last["audit_id"] != expected_token:
        raise CaseChangedError(
            f"Not {doing}: case {case['case_id'][:8]} (sample {case['sample_id']!r}) changed "
            f"since you read it (last change: {last['action']} by {last['reviewer'] or 'system'} "
            f"at {minute_text(last['at'])} UTC). Look at it again, then repeat {doing}."
        )


def require_cell_unchanged(conn: sqlite3.Connection, row: sqlite3.Row, expected) -> None:
    """Refuse a reviewer's change to a cell whose stored values differ from ``expected`` (what
    the reviewer saw), naming who changed it last: no call is overwritten unseen."""
    stale = {k: v for k, v in (expected or {}).items() if k in REVIEWER_EDITABLE and row[k] != v}
    if not stale:
        return
    key = (row["case_id"], row["field_index"], row["cell_id"])
    last = conn.execute("SELECT reviewer, at FROM audit WHERE case_id = ? AND field_index = ? "
                        "AND cell_id = ? ORDER BY audit_id DESC LIMIT 1", key).fetchone()  # fmt: skip
    who = f" by {last['reviewer']} at {minute_text(last['at'])} UTC" if last else ""
    raise CaseChangedError(
        f"Cell {row['cell_id']} of field {row['field_index'] + 1} was changed{who} since you "
        f"read it (now {', '.join(f'{k} {row[k]!r}' for k in stale)}); nothing was written. "
        "Look at it again and repeat your call if you still disagree."
    )


def record_outside_changes(conn: sqlite3.Connection, case: sqlite3.Row) -> None:
    """Before the app writes to a case: if the case differs from its last audit row, it was
    changed outside the app; a chained row says so for good, so the write's own row (which
    records the case as it then is) cannot hide it."""
    last = conn.execute("SELECT state FROM audit WHERE case_id = ? ORDER BY audit_id DESC LIMIT 1",
                        (case["case_id"],)).fetchone()  # fmt: skip
    if last is None or last[0] == ALTERED_OUTSIDE:
        return
    # the fields too: adding fields writes their digest afresh, which would hide a field
    # changed before it
    fields_kept = case["fields_sha256"] == fields_digest(conn, case["case_id"])
    if fields_kept and state_matches(conn, case["case_id"], last[0]):
        return
    audit(conn, case, "changed outside the app", "system", "found when the app next wrote to "
          "the case: it differed from its last audit row", state=ALTERED_OUTSIDE)  # fmt: skip
