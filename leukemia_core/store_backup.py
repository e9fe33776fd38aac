"""Backups of the case database read back, and a backup put back in place (``restore``).

A plain copy over the database file is unsafe: SQLite keeps recent changes in ``<file>-wal``
and ``<file>-shm`` beside it, and after a crash those are replayed onto whatever file now has
the name, mixing two databases' pages. So the backup is read (never written), checked and
copied first; then the database it replaces is set aside whole (file, ``-wal`` and ``-shm``
renamed together under a new name, so it still opens with its own changes); only then is the
copy put in its place. A step that fails puts everything back as it was.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.store import CaseStore
from leukemia_core.store_files import new_private_file
from leukemia_core.store_reads import database_contents
from leukemia_core.store_rows import CaseInputError, CaseStoreError
from leukemia_core.store_schema import SCHEMA_VERSION

SIDE_FILES = ("", "-wal", "-shm")  # SQLite's database file and the two it keeps beside it
FROM_BACKUP = "give a file written by `python -m leukemia_core backup`"


@dataclass(frozen=True)
class Restored:
    """What a restore did: the database now in place, what it holds, where the one it
    replaced was set aside (empty when there was none), and how its accounts differ from the
    replaced one's (a password reset or a disabling made after the backup is undone)."""

    database: Path
    contents: dict[str, int]
    set_aside: tuple[Path, ...]
    account_changes: tuple[str, ...] = ()


def open_read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened for reading only: nothing is written into or beside it (a backup on
    read-only storage opens too; an older backup in WAL mode is read as it stands)."""
    uri = Path(path).resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:  # WAL mode with no -shm that may be made: read it whole
        wal = Path(f"{path}-wal")
        if wal.is_file() and wal.stat().st_size:  # read whole, its newest changes were lost
            raise CaseStoreError(
                f"{path} is on storage this account cannot write (a snapshot?) and keeps its "
                f"newest changes in {wal.name} beside it, which cannot be read there; copy both "
                "files to a writable folder and give the copy."
            ) from None
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn


def backup_contents(path: Path) -> dict[str, int]:
    """What a backup file holds (samples, case versions, signed, accounts), read only."""
    with closing(open_read_only(path)) as conn:
        return database_contents(conn)


def restore_database(backup: str | os.PathLike, database: str | os.PathLike) -> Restored:
    """Replace ``database`` by a checked copy of ``backup``; the replaced one is kept beside it.

    Stop the app first: it would otherwise go on writing to the file set aside.

    Raises:
        CaseInputError: No backup file, or it is the database itself.
        CaseStoreError: The backup is not a whole case database of this or an older version,
            or the database's folder cannot take the copy (nothing was changed then).
    """
    backup, database = Path(backup).expanduser(), Path(database).expanduser()
    if not backup.is_file():
        raise CaseInputError(f"No backup file at {backup}; {FROM_BACKUP}.")
    if database.exists() and backup.resolve() == database.resolve():
        raise CaseInputError(f"{backup} is the case database itself; {FROM_BACKUP}.")
    folder = database.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CaseStoreError(
            f"The database's folder {folder} does not exist or cannot be written; create it "
            "or fix its rights (as the app's server account), then restore again."
        )
    partial = database.with_name(f"{database.name}.restoring")
    replacing = database.is_file()
    # Whose file it is to be: the replaced one's owner, else (a fresh server) the folder's.
    owner = database.stat() if replacing else folder.stat()
    accounts_before = _accounts(database) if replacing else None
    try:
        _checked_copy(backup, partial)
        _same_owner(partial, owner)
        set_aside = _set_aside(database)
        try:
            os.replace(partial, database)
        except OSError:
            _put_back(set_aside, database)
            raise
    except OSError as error:
        raise CaseStoreError(
            f"Could not put {backup} in place of {database} ({error}); the database was left "
            f"as it was. Check the disk space and rights of {folder}, then restore again."
        ) from error
    finally:
        partial.unlink(missing_ok=True)
    try:
        contents = CaseStore(database, create=False).contents()  # migrates an older backup
    except LeukemiaCoreError as error:
        # The copy passed the checks but does not open as a case database: take it away and put
        # the replaced database back, so the app keeps working as before.
        for suffix in SIDE_FILES:
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        _put_back(set_aside, database)
        raise CaseStoreError(
            f"{backup} does not open as a case database ({error}); the database was put back "
            f"as it was. {FROM_BACKUP[0].upper()}{FROM_BACKUP[1:]}."
        ) from error
    accounts_after = _accounts(database)
    changes = (account_changes(accounts_before, accounts_after)
               if accounts_before is not None and accounts_after is not None else ())  # fmt: skip
    return Restored(database, contents, tuple(moved for _, moved in set_aside), changes)


def _same_owner(copy: Path, owner: os.stat_result | None) -> None:
    """Give the copy the replaced database's owner (or its folder's): a restore run as root
    (sudo) left a file only root could open, and the app's server account could not start."""
    if owner is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        os.chown(copy, owner.st_uid, owner.st_gid)


def _accounts(database: Path) -> dict[str, tuple] | None:
    """Each account's (roles, disabled, password hash), read only; ``{}`` for an older
    release's file (no accounts yet), None when it cannot be read (nothing to compare)."""
    try:
        with closing(open_read_only(database)) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone():
                return {}
            rows = conn.execute("SELECT name, roles, disabled, password_hash FROM users")
            return {name: (roles, bool(off), hashed) for name, roles, off, hashed in rows}
    except (sqlite3.Error, LeukemiaCoreError):
        return None


def account_changes(before: dict[str, tuple], after: dict[str, tuple]) -> tuple[str, ...]:
    """What a restore did to accounts, in words an admin acts on (``before``/``after``:
    :func:`_accounts` of the replaced and the restored database)."""
    said = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            said.append(f"{name!r} no longer exists (added after the backup)")
            continue
        if name not in before:
            said.append(f"{name!r} is back (removed after the backup)")
            continue
        (roles, off, hashed), (roles_now, off_now, hashed_now) = before[name], after[name]
        if off and not off_now:
            said.append(f"{name!r} is enabled again (it was disabled after the backup)")
        if hashed != hashed_now:
            said.append(f"{name!r} has its password of the backup's time again")
        if roles != roles_now:
            said.append(f"{name!r} has the roles {roles_now} again (was {roles})")
    return tuple(said)


def _checked_copy(backup: Path, partial: Path) -> None:
    """Copy ``backup`` to ``partial`` through SQLite, checking it is a case database first and
    the copy whole after (a page damaged in the backup is damaged in the copy)."""
    try:
        source = open_read_only(backup)
    except sqlite3.DatabaseError as error:
        raise _unreadable(backup, error, "cannot be read as a database") from error
    with closing(source):
        try:
            _check_backup(source, backup)
        except sqlite3.DatabaseError as error:
            raise _unreadable(backup, error, "is not a case database") from error
        try:
            new_private_file(partial)
            with closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
                (check,) = copy.execute("PRAGMA integrity_check").fetchone()
        except sqlite3.Error as error:
            if _damaged(error):  # the backup's pages, not the disk the copy goes to
                raise _unreadable(backup, error, "could not be copied") from error
            raise OSError(f"writing the copy {partial.name} failed: {error}") from error
    if check != "ok":
        raise CaseStoreError(f"{backup} fails SQLite's integrity check ({check}); use another.")


def _unreadable(backup: Path, error: sqlite3.Error, otherwise: str) -> CaseStoreError:
    """What is wrong with a backup SQLite could not read: damaged pages, or else what
    ``otherwise`` says."""
    if _damaged(error):
        return CaseStoreError(f"{backup} is damaged ({error}); use an older backup.")
    return CaseStoreError(f"{backup} {otherwise} ({error}); {FROM_BACKUP}.")


def _damaged(error: sqlite3.Error) -> bool:
    """SQLite's words for a database file whose pages are broken."""
    said = str(error).lower()
    return "malformed" in said or "corrupt" in said  # "not a database": not one at all


def _check_backup(conn: sqlite3.Connection, backup: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if not {"cases", "audit"} <= tables:
        raise CaseStoreError(
            f"{backup} is an SQLite file but not a case database (no cases or audit table); "
            f"{FROM_BACKUP}."
        )
    if version > SCHEMA_VERSION:
        raise CaseStoreError(
            f"{backup} was written by a newer version of the app (schema {version}, this app "
            f"{SCHEMA_VERSION}); update the app before restoring it."
        )


def _set_aside(database: Path) -> list[tuple[Path, Path]]:
    """Rename the database and its -wal/-shm together to a new ``<name>.before-restore-<time>``
    (never over an earlier one); ``(original, new)`` pairs. A failed rename puts back those
    already moved and raises."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    base, n = Path(f"{database}.before-restore-{stamp}"), 1
    while any(Path(f"{base}{suffix}").exists() for suffix in SIDE_FILES):
        base, n = Path(f"{database}.before-restore-{stamp}-{n}"), n + 1
    moved = []
    try:
        for suffix in SIDE_FILES:
            current = Path(f"{database}{suffix}")
            if current.exists():
                os.replace(current, Path(f"{base}{suffix}"))
                moved.append((current, Path(f"{base}{suffix}")))
    except OSError:
        _put_back(moved, database)
        raise
    return moved


def _put_back(moved: list[tuple[Path, Path]], database: Path) -> None:
    """Undo :func:`_set_aside` (last renamed first)."""
    for original, new in reversed(moved):
        os.replace(new, original)
