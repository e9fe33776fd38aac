"""Roles and permissions: what an account may do, checked in the core before it acts.

The core workflow calls :func:`require` (or :meth:`User.require`) before signing, relabelling,
promoting or managing accounts, so a page that forgot a check still cannot do these. Accounts
themselves (passwords, logins, lockout) are :mod:`leukemia_core.accounts`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from leukemia_core.errors import LeukemiaCoreError


class Role(StrEnum):
    """What an account is for; an account may hold several."""

    REVIEWER = "reviewer"  # analyze, review, relabel
    SIGNER = "signer"  # also sign and reopen
    MODEL_ADMIN = "model_admin"  # retrain and compare, promote, adapt, choose the active model
    ADMIN = "admin"  # accounts


class Permission(StrEnum):
    ANALYZE = "analyze and open samples"
    REVIEW = "review and relabel cells"
    SIGN = "sign and reopen cases"
    MANAGE_MODELS = "retrain, promote, adapt or activate models"
    MANAGE_USERS = "manage accounts"


ROLE_PERMISSIONS = {
    Role.REVIEWER: frozenset({Permission.ANALYZE, Permission.REVIEW}),
    Role.SIGNER: frozenset({Permission.ANALYZE, Permission.REVIEW, Permission.SIGN}),
    Role.MODEL_ADMIN: frozenset({Permission.ANALYZE, Permission.MANAGE_MODELS}),
    Role.ADMIN: frozenset({Permission.MANAGE_USERS}),
}


def role_text(role: Role) -> str:
    """``reviewer: analyze and open samples, review and relabel cells``: what a role allows, from
    :data:`ROLE_PERMISSIONS` (so the words cannot drift from the checks)."""
    allowed = [p.value for p in Permission if p in ROLE_PERMISSIONS[role]]
    return f"{role.value}: {', '.join(allowed)}"


SHELL_PREFIX = "shell:"  # the name of whoever runs the command-line tools: shell:<user>
NEEDED_ROLE = {Permission.ANALYZE: Role.REVIEWER, Permission.REVIEW: Role.REVIEWER,
                Permission.SIGN: Role.SIGNER, Permission.MANAGE_MODELS: Role.MODEL_ADMIN,
                Permission.MANAGE_USERS: Role.ADMIN}  # fmt: skip


class AccountError(LeukemiaCoreError):
    """An account action was refused (see the subclasses)."""


class AccountInputError(AccountError, ValueError):
    """A name, password or role cannot be used as given."""


class PermissionDeniedError(AccountError, PermissionError):
    """The account lacks the role an action needs."""


@dataclass(frozen=True)
class User:
    """A logged-in account (or, for the command line, the shell user: see :meth:`shell`)."""

    name: str
    roles: frozenset[Role]

    def can(self, permission: Permission) -> bool:
        return any(permission in ROLE_PERMISSIONS[role] for role in self.roles)

    def require(self, permission: Permission) -> None:
        """Raises :class:`PermissionDeniedError` unless the account may do this."""
        if not self.can(permission):
            roles = ", ".join(sorted(self.roles)) or "no role"
            raise PermissionDeniedError(
                f"{self.name} ({roles}) may not {permission.value}: that needs the "
                f"{NEEDED_ROLE[permission].value} role; ask an account administrator."
            )

    @classmethod
    def shell(cls) -> User:
        """Whoever runs the command-line tools on the server (has the server's files anyway)."""
        return cls(f"{SHELL_PREFIX}{_system_user()}", frozenset(Role))


def _system_user() -> str:
    """The operating system's name for this process's user: the audit trail must not take it
    from $USER, which anyone can set and which cron and services leave unset."""
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):  # Windows, or a uid without a passwd entry
        return os.environ.get("USERNAME") or os.environ.get("USER") or "unknown"


def require(user: object, permission: Permission) -> User:
    """``user`` when it is an account allowed to do this; else :class:`PermissionDeniedError`."""
    if not isinstance(user, User):
        raise PermissionDeniedError(
            f"Only a logged-in account may {permission.value}; got {user!r} "
            f"({type(user).__name__}): pass the accounts.User of whoever acts."
        )
    user.require(permission)
    return user
