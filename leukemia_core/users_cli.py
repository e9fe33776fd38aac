"""``python -m leukemia_core users ...``: accounts from the server's shell.

Passwords are asked for at the terminal (twice, not echoed) or read from standard input with
``--password-stdin`` (for scripts); they never appear on the command line or in logs.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from leukemia_core.accounts import MIN_PASSWORD_LENGTH, AccountError, Accounts, Role
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.store_files import readable_by_others_note

ROLE_CHOICES = [r.value for r in Role]
_TRIES = 3


def add_parser(commands: argparse._SubParsersAction) -> None:
    users = commands.add_parser("users", help="create and manage accounts (see README)")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account (password prompted)")
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True, choices=ROLE_CHOICES,
                     help="repeat for several roles")  # fmt: skip
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    roles = actions.add_parser("roles", help="set an account's roles")
    roles.add_argument("name")
    roles.add_argument("--role", action="append", required=True, choices=ROLE_CHOICES)
    password = actions.add_parser("password", help="set an account's password (prompted)")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true")
    for action, words in (("disable", "stop an account from logging in"),
                          ("enable", "let a disabled account log in again")):  # fmt: skip
        actions.add_parser(action, help=words).add_argument("name")
    actions.add_parser("list", help="list accounts and their roles")
    init = actions.add_parser(
        "init", help="on first start: ask for the first administrator's name and password"
    )
    init.add_argument("--name", help="the administrator's account name (default: asked, admin)")
    init.add_argument("--password-stdin", action="store_true",
                      help="read the password from stdin (for scripts; no terminal needed)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run one ``users`` action; ``error: ...`` and exit code 2 on a refusal."""
    try:
        # Only creating an account may create the database: a mistyped $LEUKEMIA_CASE_DB must
        # not answer "list" or "disable" from a new, empty one.
        accounts = Accounts(create=args.action in ("init", "add"))
        if note := readable_by_others_note(accounts.path):
            print(note, file=sys.stderr)
        if args.action == "init":
            return _init(accounts, args.name, args.password_stdin)
        if args.action == "add":
            accounts.add_user(args.name, _password(args.password_stdin), args.role)
            print(f"account {args.name!r} created with roles {', '.join(sorted(set(args.role)))}")
        elif args.action == "roles":
            accounts.set_roles(args.name, args.role)
            print(f"account {args.name!r} now has roles {', '.join(sorted(set(args.role)))}")
        elif args.action == "password":
            accounts.set_password(args.name, _password(args.password_stdin))
            print(f"password of {args.name!r} changed")
        elif args.action in ("disable", "enable"):
            accounts.set_disabled(args.name, args.action == "disable")
            print(f"account {args.name!r} {args.action}d")
        else:
            users = accounts.list_users()
            for change in accounts.altered():
                print(f"WARNING: changed outside the app: {change}", file=sys.stderr)
            for user in users:
                state = " (disabled)" if user.disabled else ""
                print(f"{user.name}\t{', '.join(sorted(user.roles))}{state}")
            if not users:
                print(f"no accounts yet in {accounts.path}; create the first administrator with "
                      "`python -m leukemia_core users init`", file=sys.stderr)  # fmt: skip
        return 0
    except (EOFError, KeyboardInterrupt):  # their words are empty: "error: " said nothing
        print("\nerror: no password was entered (cancelled, or no terminal to type it in: in a "
              "script, give it on standard input with --password-stdin); nothing was changed.",
              file=sys.stderr)  # fmt: skip
        return 2
    except LeukemiaCoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _init(accounts: Accounts, name: str | None, password_stdin: bool) -> int:
    """Create the first administrator (all roles) when there is no account; else do nothing."""
    if accounts.has_users():  # silent: the README's start command runs this every time
        if name is not None or password_stdin:  # ... but not when asked for an account
            print("Accounts exist already, so init created none; add one with: python -m "
                  "leukemia_core users add NAME --role ROLE", file=sys.stderr)  # fmt: skip
        return 0
    roles = [Role.ADMIN, Role.SIGNER, Role.MODEL_ADMIN]
    if not password_stdin and not sys.stdin.isatty():
        # Exit 0 all the same: the README's line goes on to start the app, whose first page
        # says the same, rather than stopping with no app at all.
        print(
            "No accounts yet, and no terminal to ask for the administrator's password (the "
            "input is piped or redirected). In a terminal, in the app's folder with its "
            "environment active (. .venv/bin/activate), run:\n  python -m leukemia_core users "
            "init\nor, in a script, give the password on standard input:\n  python -m "
            "leukemia_core users init --name admin --password-stdin < password-file\nUntil then "
            "the app shows a 'No accounts yet' page.",
            file=sys.stderr,
        )
        return 0
    if not password_stdin:
        print("First start: create the administrator account (it may analyze, review, sign, "
              "manage models and add the other accounts).")  # fmt: skip
    if name is None:
        name = "admin" if password_stdin else input("Administrator name [admin]: ").strip()
    accounts.add_user(name or "admin", _password(password_stdin), roles)
    print(f"account {name or 'admin'!r} created; log in with it in the browser")
    return 0


def _password(from_stdin: bool) -> str:
    """The password from stdin, or asked twice at the terminal (up to three tries)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    for _ in range(_TRIES):
        first = getpass.getpass(f"Password (at least {MIN_PASSWORD_LENGTH} characters): ")
        if len(first) < MIN_PASSWORD_LENGTH:
            print(f"Too short: {len(first)} characters. Try again.", file=sys.stderr)
        elif first != getpass.getpass("Password again: "):
            print("The two passwords differ. Try again.", file=sys.stderr)
        else:
            return first
    raise AccountError(f"No password set after {_TRIES} tries; nothing was changed.")
