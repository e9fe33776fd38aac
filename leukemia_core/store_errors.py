"""The case database's errors, and SQLite's failures in words a lab can act on."""

from __future__ import annotations

import sqlite3

from leukemia_core.errors import LeukemiaCoreError


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


class CaseChangedError(CaseStoreError):
    """The case (or cell) changed since the caller read it: read it again and check."""


class AlteredRecordError(CaseStoreError):
    """A stored value of a case cannot be read: the record was changed or damaged outside
    the app."""


def unreadable_value(what: str, value: object) -> AlteredRecordError:
    """The words for a stored ``what`` the app cannot read (a label no label is, an outline
    that is no outline): such a value was written outside the app."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return AlteredRecordError(
        f"{what} cannot be read ({shown}): this record was changed or damaged outside the app. "
        "Do not rely on it; ask the administrator to restore the database from a backup."
    )


_SERVER_CAUSES = (  # words in SQLite's message -> what the user is told
    (("full",), "the disk that holds it is full; free space on the server"),
    (("locked", "busy"), "another change to it is taking long; try again in a moment"),
    (("readonly", "unable to open", "permission"), "it or its folder cannot be written "
     "(read-only, or no permission); ask the administrator to check the file's permissions"),
    # what a full disk says when SQLite's shared memory or journal cannot grow
    (("disk i/o",), "the server could not read or write its disk (a full disk or a disk "
     "fault); free space on the server, or ask the administrator to check the disk"),
)  # fmt: skip


def _server_cause(error: sqlite3.Error) -> str | None:
    """What is wrong with the server, not the file (full disk, a lock held too long, a
    read-only file or folder), in words; None for other errors."""
    message = str(error).lower()
    if isinstance(error, sqlite3.OperationalError):
        for words, cause in _SERVER_CAUSES:
            if any(word in message for word in words):
                return cause
    return None


def server_trouble(error: sqlite3.Error) -> bool:
    """True for SQLite errors of the server, not of the file (see :func:`_server_cause`)."""
    return _server_cause(error) is not None


def damaged_database(path: object, error: sqlite3.Error) -> CaseStoreError:
    """The words for a case database whose file SQLite finds damaged."""
    return CaseStoreError(f"The case database {path} is damaged ({error}). Stop the app and "
                          "ask the administrator to restore the latest backup (python -m "
                          "leukemia_core restore); nothing was written.")  # fmt: skip


def unusable_database(path: object, error: sqlite3.Error, what: str) -> CaseStoreError:
    """The words for a database the server cannot use now (``what``: opened, read, written)."""
    cause = _server_cause(error) or f"SQLite says {error}; ask the administrator"
    return CaseStoreError(f"The case database {path} could not be {what}: {cause}. Nothing "
                          "half-done was kept; the record is as before.")  # fmt: skip
