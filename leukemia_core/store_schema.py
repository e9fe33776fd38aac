"""The case database's schema and its versioned migrations.

A new database gets the schema of release 1 and then every migration in order, so the path a
lab's database takes on upgrade is the one every new database takes too. Each migration is a
function from version ``N`` to ``N + 1`` run in one transaction; the version is read again inside
it, so two processes opening an old database at once migrate it once.

To add a column: write ``_vN_to_vN1`` below, add it to :data:`MIGRATIONS`; the store reads and
writes cell columns by the names of :class:`leukemia_core.types.Cell`'s attributes. What the
audit chain records of a case (its digests) is :mod:`leukemia_core.store_digest`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np

from leukemia_core.account_chain import SYSTEM, append_account_event, chain_existing
from leukemia_core.imaging import mask_outline
from leukemia_core.store_digest import (
    AUDIT_CHAINED,
    IMAGE_DIGESTS,
    case_digest,
    chain_hash,
    fields_digest,
    image_sha256,
    state_matches,
)

_RELEASE_1 = """
CREATE TABLE cases (
    case_id TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
    parent_id TEXT UNIQUE REFERENCES cases (case_id), sample_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'signed')),
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, model_name TEXT NOT NULL,
    model_checksum TEXT NOT NULL, thresholds TEXT NOT NULL, signed_by TEXT, signed_at TEXT);
CREATE INDEX cases_by_sample ON cases (sample_id);
CREATE TABLE fields (
    case_id TEXT NOT NULL REFERENCES cases (case_id), field_index INTEGER NOT NULL,
    name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, image_png BLOB,
    PRIMARY KEY (case_id, field_index));
CREATE TABLE cells (
    case_id TEXT NOT NULL, field_index INTEGER NOT NULL, cell_id INTEGER NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    centroid_x REAL NOT NULL, centroid_y REAL NOT NULL, blast_probability REAL,
    model_label TEXT NOT NULL, label TEXT NOT NULL, crop_png BLOB, overlay_png BLOB,
    PRIMARY KEY (case_id, field_index, cell_id),
    FOREIGN KEY (case_id, field_index) REFERENCES fields (case_id, field_index));
CREATE TABLE audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL REFERENCES cases (case_id),
    version INTEGER NOT NULL, action TEXT NOT NULL, reviewer TEXT NOT NULL, at TEXT NOT NULL,
    field_index INTEGER, cell_id INTEGER, from_label TEXT, to_label TEXT, note TEXT NOT NULL);
CREATE INDEX audit_by_case ON audit (case_id);
CREATE TRIGGER cases_are_kept BEFORE DELETE ON cases
    BEGIN SELECT RAISE(ABORT, 'case records are kept, never deleted'); END;
CREATE TRIGGER audit_is_append_only BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are never changed'); END;
"""
_FREEZE_SIGNED = """
CREATE TRIGGER signed_cells_are_frozen BEFORE UPDATE ON cells
    WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
CREATE TRIGGER signed_cases_are_frozen BEFORE UPDATE ON cases
    WHEN OLD.status = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
"""


def _statements(script: str) -> list[str]:
    """The statements of a script (triggers hold ';' inside BEGIN ... END)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """The schema of release 1: cases, fields, cells, an append-only audit trail."""
    for statement in _statements(_RELEASE_1 + _FREEZE_SIGNED):
        conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """The out-of-domain check: sample and field assessments as JSON, a score per cell."""
    conn.execute("ALTER TABLE cases ADD COLUMN domain TEXT")
    conn.execute("ALTER TABLE fields ADD COLUMN domain TEXT")
    conn.execute("ALTER TABLE cells ADD COLUMN domain_score REAL")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """One cell model: the outline, the reviewed flag and the cell's measurements are stored.

    Older cells get the outline their stored crop implies (the crop is the cell on black at a
    known box), and count as reviewed when a reviewer changed them or the case was signed.
    """
    for statement in (
        "ALTER TABLE cells ADD COLUMN outline TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE cells ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE cells ADD COLUMN cell_area_px INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE cells ADD COLUMN nucleus_area_px INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE cells ADD COLUMN touches_border INTEGER NOT NULL DEFAULT 0",
        # Signed versions are frozen by triggers; lift them for this one-time fill.
        "DROP TRIGGER signed_cells_are_frozen",
        "DROP TRIGGER signed_cases_are_frozen",
    ):
        conn.execute(statement)
    rows = conn.execute(
        "SELECT x.rowid, x.x0, x.y0, x.x1, x.y1, x.crop_png, x.label, x.model_label, c.status "
        "FROM cells AS x JOIN cases AS c ON c.case_id = x.case_id"
    ).fetchall()
    for rowid, x0, y0, x1, y1, crop_png, label, model_label, status in rows:
        outline = _outline_from_crop(crop_png, (x0, y0, x1, y1))
        reviewed = int(label != model_label or status == "signed")
        conn.execute(
            "UPDATE cells SET outline = ?, reviewed = ?, cell_area_px = ?, "
            "touches_border = (model_label = 'border') WHERE rowid = ?",
            (outline_json(outline), reviewed, _area(outline), rowid),
        )
    for statement in _statements(_FREEZE_SIGNED):
        conn.execute(statement)


_ACCOUNTS = """
CREATE TABLE users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, roles TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE account_events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user_name TEXT NOT NULL,
    event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX account_events_by_user ON account_events (user_name, at);
CREATE TABLE model_events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user_name TEXT NOT NULL,
    action TEXT NOT NULL, from_model TEXT, to_model TEXT, note TEXT NOT NULL DEFAULT '');
CREATE TRIGGER account_events_are_kept BEFORE DELETE ON account_events
    BEGIN SELECT RAISE(ABORT, 'account events are kept, never deleted'); END;
CREATE TRIGGER account_events_are_append_only BEFORE UPDATE ON account_events
    BEGIN SELECT RAISE(ABORT, 'account events are never changed'); END;
CREATE TRIGGER model_events_are_kept BEFORE DELETE ON model_events
    BEGIN SELECT RAISE(ABORT, 'model events are kept, never deleted'); END;
CREATE TRIGGER model_events_are_append_only BEFORE UPDATE ON model_events
    BEGIN SELECT RAISE(ABORT, 'model events are never changed'); END;
CREATE TRIGGER audit_is_kept BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are kept, never deleted'); END;
CREATE TRIGGER signed_cells_are_kept BEFORE DELETE ON cells
    WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
CREATE TRIGGER signed_fields_are_frozen BEFORE UPDATE ON fields
    WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
CREATE TRIGGER signed_fields_are_kept BEFORE DELETE ON fields
    WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
    BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen it to change it'); END;
"""


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Accounts, their login events and model changes; a first signature; audit rows chained.

    Each audit row gets ``state`` (a digest of its case after the action) and ``chain`` (a hash
    over the previous row's chain, the row and its state), so a change made outside the app (a
    deleted or edited audit row, a cell changed without one) shows when the case is opened.
    Rows written before this version are chained as they stand at the migration.
    """
    for statement in _statements(_ACCOUNTS):
        conn.execute(statement)
    # A lab may ask for a second signer above a blast level: the first signature is kept here.
    conn.execute("ALTER TABLE cases ADD COLUMN first_signed_by TEXT")
    conn.execute("ALTER TABLE cases ADD COLUMN first_signed_at TEXT")
    conn.execute("ALTER TABLE cases ADD COLUMN comment TEXT NOT NULL DEFAULT ''")  # for the report
    conn.execute("ALTER TABLE audit ADD COLUMN state TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT ''")
    conn.execute("DROP TRIGGER audit_is_append_only")
    for (case_id,) in conn.execute("SELECT case_id FROM cases").fetchall():
        state, previous = case_digest(conn, case_id), ""
        rows = conn.execute(
            "SELECT * FROM audit WHERE case_id = ? ORDER BY audit_id", (case_id,)
        ).fetchall()
        for row in rows:
            values = dict(zip([d[0] for d in conn.execute("SELECT * FROM audit LIMIT 0").description],
                              row, strict=True))  # fmt: skip
            previous = chain_hash(previous, values, state)
            conn.execute("UPDATE audit SET state = ?, chain = ? WHERE audit_id = ?",
                         (state, previous, values["audit_id"]))  # fmt: skip
    conn.execute(
        "CREATE TRIGGER audit_is_append_only BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit rows are never changed'); END"
    )


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    """Field quality warnings (JSON list), and the origin of cells a reviewer split or merged."""
    _add_digested_columns(conn, (
        "ALTER TABLE fields ADD COLUMN quality TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE cells ADD COLUMN origin TEXT NOT NULL DEFAULT ''",
    ), "database schema 5: cell origins (split and merge) and field quality warnings")  # fmt: skip


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """An optional patient id per case (the lab's own identifier, shown in the report)."""
    _add_digested_columns(conn, ("ALTER TABLE cases ADD COLUMN patient_id TEXT NOT NULL "
                                 "DEFAULT ''",), "database schema 6: an optional patient id "
                          "per case")  # fmt: skip


def _fill_fields_digests(conn: sqlite3.Connection) -> None:
    for (case_id,) in conn.execute("SELECT case_id FROM cases").fetchall():
        conn.execute("UPDATE cases SET fields_sha256 = ? WHERE case_id = ?",
                     (fields_digest(conn, case_id), case_id))  # fmt: skip


def _v6_to_v7(conn: sqlite3.Connection) -> None:
    """Each stored image's SHA-256 beside it, so a case's digest covers every image cheaply."""
    conn.create_function("sha256_of", 1, image_sha256, deterministic=True)
    statements = []
    for table, pairs in IMAGE_DIGESTS.items():
        trigger = f"signed_{table}_are_frozen"  # lifted for this one-time fill, then put back
        statements.append(f"DROP TRIGGER {trigger}")
        for image, digest in pairs:
            statements += [f"ALTER TABLE {table} ADD COLUMN {digest} TEXT NOT NULL DEFAULT ''",
                           f"UPDATE {table} SET {digest} = sha256_of({image})"]  # fmt: skip
        statements.append(
            f"CREATE TRIGGER {trigger} BEFORE UPDATE ON {table} WHEN (SELECT status FROM cases "
            "WHERE case_id = OLD.case_id) = 'signed' BEGIN SELECT RAISE(ABORT, 'the case is "
            "signed; reopen it to change it'); END"
        )
    statements += ["DROP TRIGGER signed_cases_are_frozen",
                   "ALTER TABLE cases ADD COLUMN fields_sha256 TEXT NOT NULL DEFAULT ''",
                   _fill_fields_digests,
                   "CREATE TRIGGER signed_cases_are_frozen BEFORE UPDATE ON cases WHEN "
                   "OLD.status = 'signed' BEGIN SELECT RAISE(ABORT, 'the case is signed; reopen "
                   "it to change it'); END"]  # fmt: skip
    _add_digested_columns(conn, statements, "database schema 7: every image's SHA-256 in the "
                          "audit chain's digest")  # fmt: skip


ALTERED_OUTSIDE = "changed outside the app before this row"
"""The ``state`` of an audit row written when the app found its case changed without an audit
row (at a schema upgrade, or before its next write): the mark stays in the trail for good."""


def _add_digested_columns(conn: sqlite3.Connection, statements, note: str) -> None:
    """Run ``statements`` (new columns that enter a case's digest), then one chained audit row
    per case.

    The case's earlier rows still verify, and the digest after the upgrade is recorded, unless
    the case already differed from its last audit row: then the row keeps saying so
    (:data:`ALTERED_OUTSIDE`), so an upgrade never launders a change made outside the app.
    """
    cases = conn.execute("SELECT case_id, version FROM cases").fetchall()
    last_states = {case_id: conn.execute(
        "SELECT state FROM audit WHERE case_id = ? ORDER BY audit_id DESC LIMIT 1", (case_id,)
    ).fetchone() for case_id, _ in cases}  # fmt: skip
    intact = {case_id: last is None or last[0] == ALTERED_OUTSIDE
              or state_matches(conn, case_id, last[0])
              for case_id, last in last_states.items()}  # fmt: skip
    for statement in statements:  # SQL, or a function that fills what SQL cannot
        statement(conn) if callable(statement) else conn.execute(statement)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    for case_id, version in cases:
        last = conn.execute("SELECT chain, state FROM audit WHERE case_id = ? ORDER BY audit_id "
                            "DESC LIMIT 1", (case_id,)).fetchone()  # fmt: skip
        (next_id,) = conn.execute("SELECT COALESCE(MAX(audit_id), 0) + 1 FROM audit").fetchone()
        row = dict(zip(AUDIT_CHAINED, (next_id, case_id, version, "schema upgraded", "system",
                                       at, None, None, None, None, note),
                       strict=True))  # fmt: skip
        row["state"] = case_digest(conn, case_id) if intact[case_id] else ALTERED_OUTSIDE
        row["chain"] = chain_hash(last[0] if last else "", row, row["state"])
        conn.execute(f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))  # fmt: skip


def _v7_to_v8(conn: sqlite3.Connection) -> None:
    """Each field's notes (how its image was read or downscaled, possible clumps): they were
    lost once a case was saved. ``'[]'`` stays out of the fields' digest
    (:func:`~leukemia_core.store_digest.digest_of_fields`), so no case's digest changes."""
    conn.execute("ALTER TABLE fields ADD COLUMN notes TEXT NOT NULL DEFAULT '[]'")


def _v8_to_v9(conn: sqlite3.Connection) -> None:
    """Each field's size in its file and the scale it was analysed at (the boxes of a field
    downscaled for analysis map back to the file with them), and this database's own random
    key for the pseudonyms the reviewed-cases export gives patients and samples (a bare hash
    of a record number is undone by hashing every number). The defaults (0, 0, 1.0: not
    known) stay out of the fields' digest, so no case's digest changes."""
    for column in ("original_width INTEGER NOT NULL DEFAULT 0",
                   "original_height INTEGER NOT NULL DEFAULT 0", "scale REAL NOT NULL DEFAULT 1.0"):  # fmt: skip
        conn.execute(f"ALTER TABLE fields ADD COLUMN {column}")
    conn.execute("CREATE TABLE installation (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO installation VALUES (?, ?)", (PSEUDONYM_KEY, secrets.token_hex(32)))


PSEUDONYM_KEY = "pseudonym_key"  # the ``installation`` row of the export's pseudonym key


def _v9_to_v10(conn: sqlite3.Connection) -> None:
    """Account and model events chained by hash, each account event with a digest of the
    accounts after it (:mod:`leukemia_core.account_chain`): a role granted or an account
    enabled with SQL left no trace. Earlier events are chained as they stand, and one event
    records the accounts as the upgrade found them."""
    for table, column in (("account_events", "users_state"), ("account_events", "chain"),
                          ("model_events", "chain")):  # fmt: skip
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    guards = ("account_events_are_append_only", "model_events_are_append_only")
    kept = {name: sql for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'") if name in guards}  # fmt: skip
    for name in kept:
        conn.execute(f"DROP TRIGGER {name}")
    chain_existing(conn)
    for sql in kept.values():
        conn.execute(sql)
    if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():  # not a new database
        append_account_event(conn, SYSTEM, "schema upgraded", "database schema 10: account "
                             "and model events chained", datetime.now(UTC).isoformat())  # fmt: skip


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _v0_to_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
    8: _v8_to_v9,
    9: _v9_to_v10,
}
"""``MIGRATIONS[n]`` brings a database from version ``n`` to ``n + 1``."""

SCHEMA_VERSION = max(MIGRATIONS) + 1


def migrate(conn: sqlite3.Connection) -> None:
    """Brings the database on ``conn`` (autocommit mode) to :data:`SCHEMA_VERSION`."""
    for version in range(SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == version:
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")


def outline_json(outline: np.ndarray) -> str:
    """An outline as compact JSON ``[[x, y], ...]`` (whole pixels; outlines are pixel contours)."""
    points = np.round(np.asarray(outline, np.float64).reshape(-1, 2)).astype(int)
    return json.dumps(points.tolist(), separators=(",", ":"))


def outline_from_json(text: str) -> np.ndarray:
    return np.asarray(json.loads(text), np.float32).reshape(-1, 2)


def _area(outline: np.ndarray) -> int:
    if len(outline) < 3:
        return 0
    return round(cv2.contourArea(outline.astype(np.float32).reshape(-1, 1, 2)))


def _outline_from_crop(crop_png: bytes | None, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The outline a stored crop implies: the cell's pixels are the non-black ones, and the box's
    longer side spans their extent, centred (as :func:`cropping.masked_square_crop` made it)."""
    x0, y0, x1, y1 = bbox
    width, height = x1 - x0, y1 - y0
    crop = None if not crop_png else cv2.imdecode(np.frombuffer(crop_png, np.uint8), 1)
    if crop is None or width < 1 or height < 1:
        return np.zeros((0, 2), np.float32)
    cell = crop.max(axis=2) > 0
    ys, xs = np.nonzero(cell)
    if not len(xs):
        return np.zeros((0, 2), np.float32)
    inner = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    offset = (crop.shape[0] - inner) // 2
    inside = cell[offset : offset + inner, offset : offset + inner].astype(np.uint8)
    side = max(width, height)
    square = cv2.resize(inside, (side, side), interpolation=cv2.INTER_NEAREST)
    top, left = (side - height) // 2, (side - width) // 2
    return mask_outline(square[top : top + height, left : left + width], (x0, y0))
