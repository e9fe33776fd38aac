"""The case database's files on disk: made readable by their owner only (they hold patient ids,
images and password hashes), and said when other accounts of the server may read them."""

from __future__ import annotations

import contextlib
import os


def create_private(path: os.PathLike) -> None:
    """Create ``path`` empty, readable by its owner only, when missing (SQLite's journal and
    WAL files take the database file's mode): the database holds patient ids, images and
    password hashes, which other accounts on the server have no business reading."""
    # When it exists its mode is the admin's choice; when it cannot be made, SQLite says why.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def readable_by_others_note(path: os.PathLike) -> str | None:
    """A note when the database at ``path`` may be read by other accounts of the server (made
    beforehand with ``touch``, say): its mode is the admin's choice, so it is said, not changed."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o044:
        return None
    return (f"note: {path} may be read by other accounts on this server (mode {mode:o}), and it "
            f"holds password hashes and patient ids; run `chmod 600 {path}` unless that is "
            "meant.")  # fmt: skip


def new_private_file(path: os.PathLike) -> None:
    """Make ``path`` a new empty file readable by its owner only, whatever was at that name (a
    scratch name of ours: a file left there could be world-readable, a link could send the
    copy into another account's file). Raises OSError when it cannot be made."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a link itself, not what it points to
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
