"""Digests of a stored case: what the audit chain's ``state`` records, and the images' SHA-256.

A case's digest covers its header, fields and every cell's values, and each image by the
SHA-256 stored beside it, so verifying a case reads no image. The schema and its migrations are
:mod:`leukemia_core.store_schema`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence

IMAGE_DIGESTS = {
    "fields": (("image_png", "image_sha256"),),
    "cells": (("crop_png", "crop_sha256"), ("overlay_png", "overlay_sha256")),
}
"""Per table, each image column and the column holding its SHA-256 (schema 7): the audit
chain's digest covers the digests, and reading a case checks them against the images."""


def image_sha256(data: bytes | None) -> str:
    """The stored digest of an image column ('' for none)."""
    return "" if data is None else hashlib.sha256(data).hexdigest()


def changed_images(rows_by_table: dict[str, Sequence[sqlite3.Row]]) -> list[str]:
    """The images that differ from the SHA-256 stored beside them, in words, among rows already
    read whole (``{"fields": [...], "cells": [...]}``, as a case is loaded)."""
    found = []
    for table, pairs in IMAGE_DIGESTS.items():
        for row in rows_by_table[table]:
            for image, digest in pairs:
                if image_sha256(row[image]) != row[digest]:
                    where = f"field {row['field_index'] + 1}" + (
                        f" cell {row['cell_id']}" if table == "cells" else "")  # fmt: skip
                    found.append(f"the {_IMAGE_WORDS[image]} of {where}")
    return found


AUDIT_CHAINED = ("audit_id", "case_id", "version", "action", "reviewer", "at", "field_index",
                 "cell_id", "from_label", "to_label", "note")  # fmt: skip
"""The audit columns the hash chain covers (``state`` and ``chain`` are the chain itself)."""


DIGEST_HEADER = ("case_id", "version", "parent_id", "sample_id", "status", "created_by",
                 "signed_by", "signed_at", "model_name", "model_checksum", "thresholds",
                 "comment", "patient_id")  # fmt: skip
"""The case columns a case's digest covers (those the database has: older schemas lack some)."""


DIGEST_HEADER_2 = (*DIGEST_HEADER, "created_at", "domain", "first_signed_by", "first_signed_at",
                   "fields_sha256")  # fmt: skip
"""Digest version 2 (audit rows from 2026-12-06) also covers these: the dates, the
out-of-domain result, the first signature and the fields (names, warnings, images) by
``fields_sha256``, and each cell's images by the digests stored beside them
(:data:`IMAGE_DIGESTS`)."""
_VERSION_2 = "2:"  # the prefix of a version-2 ``state``; version 1 states are bare hex
_IMAGES = ("image_png", "crop_png", "overlay_png")
_IMAGE_WORDS = {"image_png": "picture", "crop_png": "cropped image", "overlay_png": "heatmap"}
_LATER_DEFAULTS = {("notes", "[]"), ("original_width", 0), ("original_height", 0), ("scale", 1.0)}


def case_digest(conn: sqlite3.Connection, case_id: str) -> str:
    """What a case says, as the ``state`` of a new audit row: SHA-256 of its header (with its
    dates, out-of-domain result and first signature), its fields and every cell's values, each
    image by its stored SHA-256 (version 2; no image is read, so a write stays fast)."""
    return _VERSION_2 + _digest(conn, case_id, DIGEST_HEADER_2)


def fields_digest(conn: sqlite3.Connection, case_id: str) -> str:
    """SHA-256 of a case's fields (names, sizes, warnings, image digests), kept in
    ``cases.fields_sha256`` when the case is made or fields are added (they change no other
    way), as their images sit before the other columns: reading those on every write would read
    the images."""
    # Every column but the images, in table order: the digest skips the images, and reading
    # them would make every write read every field's picture.
    columns = [row[1] for row in conn.execute("PRAGMA table_info(fields)") if row[1] not in _IMAGES]
    rows = conn.execute(f"SELECT {', '.join(columns)} FROM fields WHERE case_id = ? "
                        "ORDER BY field_index", (case_id,)).fetchall()  # fmt: skip
    return digest_of_fields(rows)


def digest_of_fields(rows: Sequence[sqlite3.Row]) -> str:
    """:func:`fields_digest` of field rows already read whole (``SELECT *``, by field index)."""
    # The defaults of columns added later (schema 8's notes '[]', schema 9's size and scale
    # not known) are left out: a case stored before them keeps its digest, and a value set or
    # cleared outside the app still shows.
    said = [[value for name, value in zip(row.keys(), row, strict=True)  # a Row iterates values
             if name not in ("case_id", *_IMAGES) and (name, value) not in _LATER_DEFAULTS]
            for row in rows]  # fmt: skip
    return hashlib.sha256(json.dumps(said).encode()).hexdigest()


def state_matches(conn: sqlite3.Connection, case_id: str, state: str) -> bool:
    """True when the case still says what ``state`` recorded, by that state's digest version
    (audit rows written before version 2 keep verifying as they were written)."""
    if state.startswith(_VERSION_2):
        return state == case_digest(conn, case_id)
    return state == _digest(conn, case_id, DIGEST_HEADER)


def _digest(conn: sqlite3.Connection, case_id: str, header_columns) -> str:
    """SHA-256 of the case's ``header_columns`` (those the schema has) and every cell's values
    but its images."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(cases)")}
    header = [c for c in header_columns if c in present]  # as of the schema being migrated
    case = conn.execute(
        f"SELECT {', '.join(header)} FROM cases WHERE case_id = ?", (case_id,)
    ).fetchone()
    columns = [r[1] for r in conn.execute("PRAGMA table_info(cells)")]
    said = [c for c in columns if c != "case_id" and c not in _IMAGES]
    cells = conn.execute(
        f"SELECT {', '.join(said)} FROM cells WHERE case_id = ? ORDER BY field_index, cell_id",
        (case_id,),
    ).fetchall()
    text = json.dumps([list(case or ()), [list(c) for c in cells]], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def chain_hash(previous: str, row: dict, state: str) -> str:
    """The chain value of an audit row after ``previous`` (``''`` for a case's first row)."""
    values = [row[name] for name in AUDIT_CHAINED]
    text = json.dumps([previous, values, state], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
