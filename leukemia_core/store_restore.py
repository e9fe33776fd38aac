"""Putting a backup of the case database back in place (``python -m leukemia_core restore``).

A plain copy over the database file is unsafe: SQLite keeps recent changes in ``<file>-wal``
and ``<file>-shm`` beside it, and after a crash those are replayed onto whatever file now has
the name, mixing two databases' pages. So the backup is checked and copied first, then the
database it replaces is set aside whole (file, ``-wal`` and ``-shm`` renamed together, so it
still opens with its own changes), and only then is the copy put in its place.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from leukemia_core.store import CaseStore
from leukemia_core.store_rows import CaseInputError, CaseStoreError
from leukemia_core.store_schema import SCHEMA_VERSION

SIDE_FILES = ("", "-wal", "-shm")  # SQLite's database file and the two it keeps beside it


@dataclass(frozen=True)
class Restored:
    """What a restore did: the database now in place, what it holds, and where the one it
    replaced was set aside (empty when there was none)."""

    database: Path
    contents: dict[str, int]
    set_aside: tuple[Path, ...]


def restore_database(backup: str | os.PathLike, database: str | os.PathLike) -> Restored:
    """Replace ``database`` by a checked copy of ``backup``; the replaced one is kept beside it.

    Stop the app first: it would otherwise go on writing to the file set aside.

    Raises:
        CaseInputError: No backup file, or it is the database itself.
        CaseStoreError: The backup is not a whole case database of this or an older version.
    """
    backup, database = Path(backup).expanduser(), Path(database).expanduser()
    if not backup.is_file():
        raise CaseInputError(
            f"No backup file at {backup}; give a file written by `python -m leukemia_core backup`."
        )
    if database.exists() and backup.resolve() == database.resolve():
        raise CaseInputError(f"{backup} is the case database itself; give a backup file.")
    partial = database.with_name(database.name + ".restoring")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(backup)) as source, closing(sqlite3.connect(partial)) as copy:
            _check_backup(source, backup)
            source.backup(copy)
            (check,) = copy.execute("PRAGMA integrity_check").fetchone()
        if check != "ok":
            raise CaseStoreError(f"The copy of {backup} fails SQLite's integrity check: {check}.")
        set_aside = _set_aside(database)
        os.replace(partial, database)
    except sqlite3.DatabaseError as error:
        raise CaseStoreError(
            f"{backup} cannot be read as a case database ({error}); give a file written by "
            "`python -m leukemia_core backup`."
        ) from error
    finally:
        partial.unlink(missing_ok=True)
    contents = CaseStore(database, create=False).contents()  # migrates an older backup
    return Restored(database, contents, set_aside)


def _check_backup(conn: sqlite3.Connection, backup: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if not {"cases", "audit"} <= tables:
        raise CaseStoreError(
            f"{backup} is an SQLite file but not a case database (no cases or audit table); "
            "give a file written by `python -m leukemia_core backup`."
        )
    if version > SCHEMA_VERSION:
        raise CaseStoreError(
            f"{backup} was written by a newer version of the app (schema {version}, this app "
            f"{SCHEMA_VERSION}); update the app before restoring it."
        )
    (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    if check != "ok":
        raise CaseStoreError(f"{backup} fails SQLite's integrity check ({check}); use another.")


def _set_aside(database: Path) -> tuple[Path, ...]:
    """Rename the database and its -wal/-shm together to ``<name>.before-restore-<time>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    moved = []
    for suffix in SIDE_FILES:
        current = Path(f"{database}{suffix}")
        if current.exists():
            target = Path(f"{database}.before-restore-{stamp}{suffix}")
            os.replace(current, target)
            moved.append(target)
    return tuple(moved)
