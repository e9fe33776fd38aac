"""How the login log names what was typed in the name box: an account's name plainly (cut
short, control characters spelled out), anything else as a keyed tag, never in letters (it
may be a password typed in the wrong box)."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3

from leukemia_core.store_schema import PSEUDONYM_KEY
from leukemia_core.types import plain_name


def tag_key(conn: sqlite3.Connection) -> bytes:
    """This database's own random key (made at schema 9): without it a short hash of a
    password typed in the name box is undone by hashing likely passwords."""
    row = conn.execute("SELECT value FROM installation WHERE key = ?", (PSEUDONYM_KEY,)).fetchone()
    return (row[0] if row else "").encode()


def unknown_name_tag(typed: str, key: bytes) -> str:
    """How the log names a login under a name no account has: a tag that is the same for the
    same name typed again (its failures count towards one lockout), without its letters."""
    digest = hmac.new(key, typed.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"(unknown name #{digest[:8]})"


LOGGED_NAME_CHARACTERS = 64  # an account name's most


def logged_name(typed: str) -> str:
    """What the event log keeps of a typed login name: a name of megabytes, or with control
    characters that would draw on an admin's terminal, is no account name, so its start is
    kept, spelled plainly."""
    plain = plain_name(typed)
    return plain[:LOGGED_NAME_CHARACTERS] + ("…" * (len(plain) > LOGGED_NAME_CHARACTERS))
