"""What an account's name and password must be: the rules :mod:`leukemia_core.accounts`
checks before anything is stored."""

from __future__ import annotations

import re
import unicodedata

from leukemia_core.roles import AccountInputError

MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
# Names the app writes in audit trails itself ("changed outside the app", "schema upgraded"):
# an account of that name would read as the app.
RESERVED_NAMES = frozenset({"system"})


def check_name(name: object) -> str:
    """``name`` without outer spaces, when it can be an account name."""
    text = str(name or "").strip()
    if not _NAME.match(text):
        raise AccountInputError(
            f"{name!r} cannot be an account name: use 1-64 letters, digits, spaces or . _ @ -, "
            "starting with a letter or digit."
        )
    if reads_as(text) in RESERVED_NAMES:
        raise AccountInputError(
            f"{text!r} is the name the app signs its own audit rows with; choose another."
        )
    return text


def same_spelling(password: str) -> str:
    """``password`` in one Unicode spelling (NFC): "ü" typed as one character on one keyboard
    and as "u" plus a dot accent on another (or pasted) is one password."""
    return unicodedata.normalize("NFC", password)


# The commonest passwords of ten or more characters (and their stems, "password" of
# "password12"): the first ones tried by anyone guessing.
_COMMON_PASSWORDS = frozenset({
    "password", "passw0rd", "qwertyuiop", "iloveyou", "letmein", "welcome", "administrator",
    "changeme", "trustno1", "sunshine", "football", "baseball", "princess", "superman",
    "starwars", "whatever", "qwerty", "laboratory", "hematology", "haematology", "leukemia",
})  # fmt: skip
_RUNS = ("01234567890123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")


def too_easy(password: str, name: str) -> str | None:
    """Why ``password`` would be among the first guesses for account ``name`` (None: it is not)."""
    plain = password.casefold()
    stem = re.sub(r"[\W\d_]+$", "", plain)  # "Password123!" -> "password"
    if len(set(plain)) <= 2:
        return "uses one or two different characters only"
    if any(plain in run or plain in run[::-1] for run in _RUNS):
        return "is a run of keys or digits"
    if plain in _COMMON_PASSWORDS or stem in _COMMON_PASSWORDS:
        return "is one of the commonest passwords"
    account = re.sub(r"[\W_]+", "", reads_as(name)) if name else ""
    if len(account) >= 4 and account in re.sub(r"[\W_]+", "", plain):
        return "contains the account name"
    return None


def check_password(password: object, name: str = "") -> str:
    """``password``, when it can be account ``name``'s password."""
    # One spelling first: the rules judge the password that is stored.
    password = same_spelling(password) if isinstance(password, str) else password
    # Ten spaces were a password; a line end pasted with it could never be typed at login.
    if not isinstance(password, str) or len(password.strip()) < MIN_PASSWORD_LENGTH:
        raise AccountInputError(
            f"The password must have at least {MIN_PASSWORD_LENGTH} characters, not counting "
            "spaces at its ends."
        )
    if why := too_easy(password, name):
        raise AccountInputError(
            f"That password {why}, so it would be among the first guesses: choose another, "
            "e.g. three or four unrelated words."
        )
    if password != password.strip(" ") or any(c in password for c in "\r\n\t"):
        raise AccountInputError(
            "The password must not start or end with a space or hold a line end or tab: they "
            "are easily lost when typed or pasted at login."
        )
    return password


def reads_as(name: str) -> str:
    """A name as a reader tells people apart: capitals, spaces, dots, dashes do not count."""
    return " ".join(re.sub(r"[._-]", " ", str(name)).split()).casefold()
