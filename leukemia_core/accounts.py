"""Accounts, roles and logins, kept in the case database (no extra server).

Passwords are stored only as argon2id hashes. A name that fails :data:`LOCKOUT_FAILURES` times
within :data:`LOCKOUT_WINDOW` is locked until the window has passed; every login, failure,
lockout, logout and idle timeout is an ``account_events`` row (time and user name, never a
password); an admin's new password lifts a lockout. Roles say what an account may do; the core
workflow asks :meth:`User.require` before acting, so a page that forgot a check still cannot
sign or promote. The last enabled admin can be neither disabled nor demoted.

Example:
    >>> import pathlib, tempfile
    >>> accounts = Accounts(pathlib.Path(tempfile.mkdtemp()) / "cases.sqlite3")
    >>> accounts.add_user("ana", "correct horse battery", [Role.SIGNER])
    >>> user = accounts.authenticate("ana", "correct horse battery")
    >>> user.can(Permission.SIGN), user.can(Permission.MANAGE_MODELS)
    (True, False)
"""

from __future__ import annotations

import functools
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Roles live in leukemia_core.roles; accounts re-exports them, so a page imports one module.
from leukemia_core.account_chain import (
    account_alterations,
    append_account_event,
    append_model_event,
    note_outside_change,
)
from leukemia_core.account_rules import MIN_PASSWORD_LENGTH as MIN_PASSWORD_LENGTH
from leukemia_core.account_rules import check_name, check_password, reads_as, same_spelling
from leukemia_core.login_log import logged_name, tag_key, unknown_name_tag
from leukemia_core.roles import AccountError as AccountError
from leukemia_core.roles import AccountInputError as AccountInputError
from leukemia_core.roles import Permission as Permission
from leukemia_core.roles import PermissionDeniedError as PermissionDeniedError
from leukemia_core.roles import Role as Role
from leukemia_core.roles import User as User
from leukemia_core.roles import require as require
from leukemia_core.runtime import setting_number
from leukemia_core.store import CaseStore

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
IDLE_TIMEOUT_ENV_VAR = "LEUKEMIA_IDLE_TIMEOUT_MINUTES"
DEFAULT_IDLE_TIMEOUT = timedelta(minutes=30)
_HASHER = PasswordHasher()


class LoginError(AccountError):
    """The name or password is wrong (deliberately not saying which)."""


class AccountLockedError(LoginError):
    """Too many failed logins for this name; try again later."""


class SessionExpiredError(AccountError):
    """The login was idle for longer than the timeout."""


@dataclass(frozen=True)
class AccountRow:
    """One account as listed for admins (no hash)."""

    name: str
    roles: frozenset[Role]
    created_at: str
    created_by: str
    disabled: bool


@dataclass
class LoginSession:
    """One browser login: who, since when, and when it was last used."""

    user: User
    started: datetime
    last_seen: datetime

    def touch(self, now: datetime | None = None, timeout: timedelta | None = None) -> None:
        """Mark use now; raises :class:`SessionExpiredError` when idle longer than ``timeout``."""
        now = now or datetime.now(UTC)
        timeout = timeout or idle_timeout()
        if now - self.last_seen > timeout:
            minutes = round(timeout.total_seconds() / 60)
            raise SessionExpiredError(
                f"You were logged out after {minutes} minutes without activity; log in again."
            )
        self.last_seen = now


def idle_timeout() -> timedelta:
    """``$LEUKEMIA_IDLE_TIMEOUT_MINUTES`` (default 30)."""
    try:
        minutes = setting_number(IDLE_TIMEOUT_ENV_VAR, 1, 24 * 60, "a number of minutes")
    except ValueError as error:
        raise AccountInputError(str(error)) from None
    return DEFAULT_IDLE_TIMEOUT if minutes is None else timedelta(minutes=minutes)


def parse_roles(values: Iterable[str | Role]) -> frozenset[Role]:
    roles = set()
    for value in values:
        try:
            roles.add(Role(str(value).strip().lower()))
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise AccountInputError(f"{value!r} is not a role; choose from: {valid}.") from None
    if not roles:
        raise AccountInputError("Give the account at least one role.")
    return frozenset(roles)


def _now() -> datetime:
    return datetime.now(UTC)


class Accounts:
    """Accounts and login events in the case database at ``path`` (see :class:`CaseStore`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self._store = CaseStore(path, create=create)  # creates (if allowed) or migrates it
        self.path = self._store.path

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One short transaction, as the store's; a write first notes accounts changed outside
        the app (:func:`~leukemia_core.account_chain.note_outside_change`)."""
        with self._store._transaction(write=write) as conn:
            if write:
                note_outside_change(conn, _now().isoformat())
            yield conn

    def has_users(self) -> bool:
        with self._transaction(write=False) as conn:
            return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] > 0

    def add_user(
        self, name: str, password: str, roles: Iterable[str | Role], *, by: User | None = None
    ) -> None:
        """Create an account; ``by`` must be an admin (None: the server's shell)."""
        actor = by or User.shell()
        actor.require(Permission.MANAGE_USERS)
        name, roles = check_name(name), parse_roles(roles)
        hashed = _HASHER.hash(check_password(password, name))
        with self._transaction(write=True) as conn:
            # casefold in Python: SQLite's lower() folds ASCII letters only
            for (other,) in conn.execute("SELECT name FROM users"):
                if other == name:
                    raise AccountInputError(f"An account named {name!r} exists already.")
                if reads_as(other) == reads_as(name):
                    raise AccountInputError(
                        f"An account named {other!r} exists already, and {name!r} differs from "
                        "it only in capitals, spaces or dots: in the audit trail and on signed "
                        "reports the two would read as one person. Use that account, or choose "
                        "a clearly different name."
                    )
            conn.execute(
                "INSERT INTO users (name, password_hash, roles, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, hashed, ",".join(sorted(roles)), _now().isoformat(), actor.name),
            )
            _event(conn, name, "created", f"by {actor.name}; roles {', '.join(sorted(roles))}")

    def set_roles(self, name: str, roles: Iterable[str | Role], *, by: User | None = None) -> None:
        actor = by or User.shell()
        actor.require(Permission.MANAGE_USERS)
        roles = parse_roles(roles)
        with self._transaction(write=True) as conn:
            self._row(conn, name)
            if Role.ADMIN not in roles:
                _keep_an_admin(conn, name, "take the admin role from")
            conn.execute(
                "UPDATE users SET roles = ? WHERE name = ?", (",".join(sorted(roles)), name)
            )
            _event(conn, name, "roles", f"by {actor.name}: {', '.join(sorted(roles))}")

    def set_password(self, name: str, password: str, *, by: User | None = None) -> None:
        """Set a password: an admin for anyone, an account for itself."""
        actor = by or User.shell()
        if actor.name != name:
            actor.require(Permission.MANAGE_USERS)
        hashed = _HASHER.hash(check_password(password, name))
        with self._transaction(write=True) as conn:
            self._row(conn, name)
            conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hashed, name))
            _event(conn, name, "password", f"set by {actor.name}")

    def set_disabled(self, name: str, disabled: bool, *, by: User | None = None) -> None:
        actor = by or User.shell()
        actor.require(Permission.MANAGE_USERS)
        if disabled and actor.name == name:
            raise AccountInputError("You cannot disable your own account; ask another admin.")
        with self._transaction(write=True) as conn:
            self._row(conn, name)
            if disabled:
                _keep_an_admin(conn, name, "disable")
            conn.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
            _event(conn, name, "disabled" if disabled else "enabled", f"by {actor.name}")

    def list_users(self) -> list[AccountRow]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [AccountRow(r["name"], parse_roles(r["roles"].split(",")), r["created_at"],
                           r["created_by"], bool(r["disabled"])) for r in rows]  # fmt: skip

    def authenticate(self, name: str, password: str, *, now: datetime | None = None) -> User:
        """The account, when the password is right and the name neither locked nor disabled.

        Raises:
            AccountLockedError: :data:`LOCKOUT_FAILURES` failures within the window.
            LoginError: Wrong name or password, or a disabled account (one message for all).
        """
        now = now or _now()
        name = str(name or "").strip()
        typed = logged_name(name)
        # The hash check (a third of a second, 64 MiB) runs outside any transaction: inside
        # one, failed logins held the database's write lock and every relabel in the lab
        # waited. Guesses at one name are taken one at a time by this process (the app's),
        # so parallel ones cannot all be checked before any failure is counted.
        with _LOGIN_LOCKS[hash(typed) % len(_LOGIN_LOCKS)]:
            with self._transaction(write=False) as conn:
                row = None if typed != name else conn.execute(
                    "SELECT * FROM users WHERE name = ?", (name,)).fetchone()  # fmt: skip
                # What the log keeps: an account's name, or a tag for anything else typed
                # (a password typed in the name box must not be kept for admins to read).
                said = name if row is not None else unknown_name_tag(typed, tag_key(conn))
                since = (now - LOCKOUT_WINDOW).isoformat()
                failures = conn.execute(
                    "SELECT COUNT(*) FROM account_events WHERE user_name = ? AND event = "
                    "'login_failed' AND at > ? AND at > COALESCE((SELECT MAX(at) FROM "
                    "account_events WHERE user_name = ? AND event IN ('login', 'password')), '')",
                    (said, since, said),
                ).fetchone()[0]
                locked = failures >= LOCKOUT_FAILURES
            # Every refusal costs one hash check: a fast "no" told which names exist.
            usable = row is not None and not row["disabled"] and not locked
            stored = row["password_hash"] if usable else _dummy_hash()
            if not _HASH_CHECKS.acquire(timeout=_HASH_WAIT_S):  # a flood: say so, count nothing
                raise LoginError("The server is busy checking other logins; try again in a "
                                 "minute.")  # fmt: skip
            try:
                matched, new_hash = _verified(stored, str(password or ""))
            finally:
                _HASH_CHECKS.release()
            user = User(name, parse_roles(row["roles"].split(","))) if usable and matched else None
            with self._transaction(write=True) as conn:
                if locked:
                    _event(conn, said, "locked", "login refused while locked", at=now)
                elif user is None:
                    disabled = row is not None and row["disabled"]
                    _event(conn, said, "login_failed", "account disabled" if disabled else "",
                           at=now)  # fmt: skip
                else:
                    if new_hash:  # before the event, whose digest of the accounts includes it
                        conn.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                                     (new_hash, name))  # fmt: skip
                    _event(conn, said, "login", "", at=now)
        if locked:  # raised after the commit, so the lockout itself is recorded
            minutes = round(LOCKOUT_WINDOW.total_seconds() / 60)
            raise AccountLockedError(
                f"Too many failed logins for {typed!r}: try again in {minutes} minutes, or "
                "ask an admin to reset the password."
            )
        if user is None:  # the failure is stored before the refusal is raised
            raise LoginError("The name or password is wrong (or the account is disabled).")
        return user

    def current(self, user: User, logged_in_at: datetime | None = None) -> User | None:
        """``user`` as the accounts now say: its roles of now, or None when the account was
        disabled or removed since the login, or (given ``logged_in_at``) its password was set
        or the account disabled since (a reset after a leak ends the sessions of the old
        password, one's own change too; re-enabling brings no session back; take
        ``logged_in_at`` before :meth:`authenticate` reads the hash, so that a reset made while
        it is checked ends the login too). A page asks this
        on every run, so a change by an admin reaches sessions already logged in."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT roles, disabled FROM users WHERE name = ?",
                               (user.name,)).fetchone()  # fmt: skip
            # A password set since, by anyone (one's own change after a leak too: the session
            # that made it is stamped anew, see restamp), or a disabling since, even one undone.
            reset = logged_in_at is not None and conn.execute(
                "SELECT 1 FROM account_events WHERE user_name = ? AND event IN ('password', "
                "'disabled') AND at > ?", (user.name, logged_in_at.isoformat())).fetchone()  # fmt: skip
        if row is None or row["disabled"] or reset:
            return None
        return User(user.name, parse_roles(row["roles"].split(",")))

    def altered(self) -> tuple[str, ...]:
        """What was changed outside the app in the accounts or their logs (empty: nothing
        found); see :mod:`leukemia_core.account_chain`."""
        with self._transaction(write=False) as conn:
            return account_alterations(conn)

    def record(self, name: str, event: str, detail: str = "") -> None:
        """Record ``logout`` or ``timeout`` (or another account event) for ``name``."""
        with self._transaction(write=True) as conn:
            _event(conn, name, event, detail)

    def events(self, limit: int = 200) -> list[dict]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT at, user_name, event, detail FROM account_events "
                "ORDER BY event_id DESC LIMIT ?", (int(limit),)
            ).fetchall()  # fmt: skip
        return [dict(r) for r in rows]

    def record_model_change(
        self, user: User, action: str, from_model: str | None, to_model: str | None,
        note: str = "",
    ) -> None:  # fmt: skip
        """Record who changed which model, when (promote, activate, adapt, ...)."""
        require(user, Permission.MANAGE_MODELS)
        with self._transaction(write=True) as conn:
            append_model_event(conn, {"at": _now().isoformat(), "user_name": user.name,
                                      "action": action, "from_model": from_model,
                                      "to_model": to_model, "note": note})  # fmt: skip

    def model_changes(self, limit: int = 200) -> list[dict]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT at, user_name, action, from_model, to_model, note FROM model_events "
                "ORDER BY event_id DESC LIMIT ?", (int(limit),)
            ).fetchall()  # fmt: skip
        return [dict(r) for r in rows]

    def _row(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise AccountInputError(f"No account named {name!r}; see `users list`.")
        return row


def _keep_an_admin(conn: sqlite3.Connection, name: str, action: str) -> None:
    """Refuse a change that would leave no enabled admin (nobody could manage accounts)."""
    admins = [r["name"] for r in conn.execute("SELECT name, roles FROM users WHERE disabled = 0")
              if Role.ADMIN.value in r["roles"].split(",")]  # fmt: skip
    if admins == [name]:
        raise AccountInputError(
            f"Cannot {action} {name!r}: it is the only enabled admin, and nobody could manage "
            "accounts. Give another account the admin role first."
        )


_LOGIN_LOCKS = tuple(threading.Lock() for _ in range(64))  # by the name's hash
# Hash checks at once, over all names: each takes 64 MiB, and 32 logins at once under
# different names took the app's server from 77 MiB to 1.6 GiB. The others wait their turn.
_HASH_CHECKS = threading.BoundedSemaphore(2)
_HASH_WAIT_S = 30.0  # a login flood turns late logins away rather than hold them for minutes


def _verified(stored: str, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches the ``stored`` hash, and a new hash to store when it does
    and the stored one was made with older parameters or another spelling of the password."""
    spelled = same_spelling(password)
    for candidate in dict.fromkeys((spelled, password)):  # hashes set before spellings were one
        try:
            _HASHER.verify(stored, candidate)
        except (VerificationError, InvalidHashError):
            continue
        renew = candidate != spelled or _HASHER.check_needs_rehash(stored)
        return True, _HASHER.hash(spelled) if renew else None
    return False, None


def _event(
    conn: sqlite3.Connection, name: str, event: str, detail: str, at: datetime | None = None
) -> None:
    append_account_event(conn, name, event, detail, (at or _now()).isoformat())


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, checked for unknown and disabled names."""
    return _HASHER.hash(secrets.token_hex(16))
