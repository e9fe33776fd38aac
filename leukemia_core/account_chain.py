"""Account and model events chained by hash, as a case's audit trail is.

Each ``account_events`` row carries a digest of the whole ``users`` table after its change
(``users_state``: names, roles, password hashes, disablings) and a ``chain`` hash over the
previous row's chain and its own values; ``model_events`` rows are chained the same way. So a
role granted, a password hash swapped or an account enabled with SQL, and an event edited or
deleted, show on the Accounts page and in ``users list``. As for cases, the chain has no secret
key: it shows edits made with SQL, not a forger who recomputes it, nor the removal of the newest
rows (restrict access to the file and keep backups).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

ACCOUNT_CHAINED = ("at", "user_name", "event", "detail", "users_state")
MODEL_CHAINED = ("at", "user_name", "action", "from_model", "to_model", "note")
UNCHAINED = ""  # rows written before schema 10 that the upgrade could not vouch for
SYSTEM, OUTSIDE = "system", "changed outside the app"  # the event noting such a change


def users_state(conn: sqlite3.Connection) -> str:
    """A digest of every account as stored now."""
    rows = conn.execute(
        "SELECT name, password_hash, roles, disabled, created_at, created_by FROM users "
        "ORDER BY name"
    ).fetchall()
    return _sha256([list(row) for row in rows])


def append_account_event(
    conn: sqlite3.Connection, name: str, event: str, detail: str, at: str
) -> None:
    """Add an ``account_events`` row after the change it records (in its transaction)."""
    row = {"at": at, "user_name": name, "event": event, "detail": detail,
           "users_state": users_state(conn)}  # fmt: skip
    _append(conn, "account_events", ACCOUNT_CHAINED, row)


def note_outside_change(conn: sqlite3.Connection, at: str) -> None:
    """Before the app changes accounts: when they differ from what the last account event
    recorded, put that on record for good, so the app's own next digest does not hide it."""
    last = conn.execute("SELECT users_state FROM account_events ORDER BY event_id DESC LIMIT 1"
                        ).fetchone()  # fmt: skip
    if last is not None and last[0] not in (UNCHAINED, users_state(conn)):
        append_account_event(conn, SYSTEM, OUTSIDE, "found when the app next wrote", at)


def append_model_event(conn: sqlite3.Connection, row: dict) -> None:
    """Add a ``model_events`` row (``row`` holds :data:`MODEL_CHAINED`)."""
    _append(conn, "model_events", MODEL_CHAINED, row)


def chain_existing(conn: sqlite3.Connection) -> None:
    """Chain the events written before chains existed, as they stand (the schema upgrade)."""
    for table, names in (("account_events", ACCOUNT_CHAINED), ("model_events", MODEL_CHAINED)):
        previous = ""
        for values in _rows(conn, table):
            previous = _chain(previous, values, names)
            conn.execute(f"UPDATE {table} SET chain = ? WHERE event_id = ?",
                         (previous, values["event_id"]))  # fmt: skip


def account_alterations(conn: sqlite3.Connection) -> tuple[str, ...]:
    """What was changed outside the app in the accounts and the two event logs, in words."""
    found = []
    if (conn.execute("SELECT 1 FROM users LIMIT 1").fetchone()
            and not conn.execute("SELECT 1 FROM account_events LIMIT 1").fetchone()):  # fmt: skip
        # The app writes an event with every account it makes: a log emptied with SQL.
        found.append("accounts exist but their log holds no event: it was emptied outside the app")
    for table, names, what in (("account_events", ACCOUNT_CHAINED, "account event"),
                               ("model_events", MODEL_CHAINED, "model change")):  # fmt: skip
        previous, last, broken = "", None, False
        for last in _rows(conn, table):
            if table == "account_events" and (last["user_name"], last["event"]) == (
                SYSTEM,
                OUTSIDE,
            ):
                found.append(f"the accounts were changed outside the app before "
                             f"{last['at'][:16]} (found when the app next wrote)")  # fmt: skip
            expected = _chain(previous, last, names)
            if last["chain"] != expected:
                found.append(
                    f"{what} {last['event_id']} ({last['at'][:16]}, {last['user_name']}) does "
                    "not follow the one before it: the log was edited or rows deleted"
                )
                broken = True  # the first break is said; what follows it proves nothing
                break
            previous = expected
        if (
            table == "account_events"
            and last is not None
            and not broken
            and (last["users_state"] not in (UNCHAINED, users_state(conn)))
        ):
            found.append(
                f"the accounts (names, roles, passwords or disablings) were changed after the "
                f"last account event ({last['at'][:16]}) without one"
            )
    return tuple(found)


def _append(conn: sqlite3.Connection, table: str, names: tuple[str, ...], row: dict) -> None:
    last = conn.execute(f"SELECT chain FROM {table} ORDER BY event_id DESC LIMIT 1").fetchone()
    row = {**row, "chain": _chain(last[0] if last else "", row, names)}
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                 tuple(row.values()))  # fmt: skip


def _chain(previous: str, row: dict, names: tuple[str, ...]) -> str:
    return _sha256([previous, [row[name] for name in names]])


def _rows(conn: sqlite3.Connection, table: str) -> list[dict]:
    """Every row of an event table in order, as dicts (with or without a row factory: the
    schema upgrade's connection has none)."""
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY event_id")
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _sha256(value: object) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()
