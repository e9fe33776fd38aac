"""Login, logout and role checks of the app (the accounts themselves: :mod:`leukemia_core.accounts`).

:func:`gate` runs before any page: without accounts it shows only how to create the first one,
without a login only the login form, and a login idle for longer than the timeout is ended.
Pages call :func:`require` for what they need; the core checks the same roles again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from leukemia_core.accounts import (
    Accounts,
    LoginSession,
    Permission,
    Role,
    SessionExpiredError,
    User,
)
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.roles import NEEDED_ROLE, PermissionDeniedError
from leukemia_core.store import default_database_path

LOGIN_KEY = "login"
JUST_LOGGED_IN_KEY = "_just_logged_in"
LOGGED_OUT_KEY = "logged_out"
FIRST_ADMIN_COMMAND = "python -m leukemia_core users init"
APP_LINE = "ALL blast screening from blood-smear images · research use only, not for diagnosis."


@st.cache_resource(show_spinner=False, max_entries=4)
def _accounts(path: str) -> Accounts:
    return Accounts(path)


def accounts() -> Accounts:
    """The accounts of the case database (``$LEUKEMIA_CASE_DB``)."""
    return _accounts(str(default_database_path()))


def current_user() -> User | None:
    login = st.session_state.get(LOGIN_KEY)
    return login.user if isinstance(login, LoginSession) else None


def user() -> User:
    """The logged-in account (the gate guarantees one on every page)."""
    _through_the_app()
    found = current_user()
    if found is None:
        st.stop()
    return found


def acting_user() -> User:
    """The account doing an action, checked now against the accounts and the idle timeout.

    Widget callbacks run before :func:`gate`: with the login as the last run left it, an
    account disabled, stripped of a role or idle past the timeout since then still acted once.
    Here a disabled or expired login acts not at all (the gate then logs it out, saying why),
    and the core checks the roles the account has now.

    Raises:
        SessionExpiredError: Idle longer than the timeout.
        PermissionDeniedError: Logged out, or the account was disabled.
    """
    login = st.session_state.get(LOGIN_KEY)
    if not isinstance(login, LoginSession):
        raise PermissionDeniedError("You are logged out: log in again; nothing was changed.")
    now = _refreshed(login)
    if now is None:
        raise PermissionDeniedError(f"{ENDED_BY_ADMIN}; nothing was changed.")
    return now


ENDED_BY_ADMIN = ("Your account's password was set anew, or the account disabled, since you "
                  "logged in here")  # fmt: skip


def restamp() -> None:
    """This login outlives the password it just set for its own account (the account's other
    sessions end: :meth:`Accounts.current`)."""
    login = st.session_state.get(LOGIN_KEY)
    if isinstance(login, LoginSession):
        login.started = datetime.now(UTC)


def _refreshed(login: LoginSession) -> User | None:
    """The login's account as the accounts say now (its roles of now, kept in the login), or
    None when an administrator disabled it or reset its password since; idle past the timeout
    raises :class:`SessionExpiredError`. The one check of the gate and of every action."""
    login.touch()
    now = accounts().current(login.user, login.started)
    if now is not None:
        login.user = now
    return now


def _through_the_app() -> None:
    """Run this page through ``app.py`` (login, menu), never on its own.

    A page's address opened first on a freshly started server (a bookmark, a reload) is run by
    Streamlit's old pages-folder routing, which it keeps until ``app.py`` first calls
    ``st.navigation``: the page ran alone and showed a blank screen. Switch that routing off and
    run again, through ``app.py``, at the same address.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def gate(url_paths: Sequence[str] = ()) -> User:
    """The logged-in account; otherwise shows the first-start message or the login form and
    stops the page.

    Args:
        url_paths: The app's page addresses (``"review"``, ...). Before a login each one shows
            the login form, so a reload of any page asks for a login instead of saying "page
            not found", and keeps its address (and the open case in it) for after the login.
    """
    try:
        return _gate(url_paths)
    except LeukemiaCoreError as error:  # e.g. the database's disk is full: say so, and stop
        st.error(str(error))
        st.stop()


def _gate(url_paths: Sequence[str]) -> User:
    if not accounts().has_users():
        _only_this_page(url_paths)
        st.title("No accounts yet")
        st.caption(APP_LINE)
        st.info(
            "This app needs an account for everyone who uses it. On the server, in the app's "
            "folder, with its Python environment active (`source .venv/bin/activate` after the "
            f"README's install), create the first administrator:\n\n```\n{FIRST_ADMIN_COMMAND}\n```\n\n"
            "It asks for the administrator's name and password (in a script: add `--password-stdin` "
            "and give the password on standard input). Then reload this page and log in; "
            "administrators add the other accounts on the Accounts page."
        )
        st.stop()
    login = st.session_state.get(LOGIN_KEY)
    if isinstance(login, LoginSession):
        try:
            if (now := _refreshed(login)) is not None:  # an admin's change reaches this session
                return now
            accounts().record(login.user.name, "logout",
                              "the account was disabled or its password reset")  # fmt: skip
            _forget_session()
            st.warning(f"{ENDED_BY_ADMIN}: you are logged out.")
        except SessionExpiredError as error:
            accounts().record(login.user.name, "timeout", str(error))
            _forget_session()
            st.warning(str(error))
    _only_this_page(url_paths)
    _login_form()
    st.stop()


def _only_this_page(url_paths: Sequence[str]) -> None:
    """Replace the app's navigation (which the browser keeps from an earlier run) by none: every
    address is the login page, drawn by the caller."""
    paths = ["login", *(p for p in url_paths if p != "login")]
    st.navigation([st.Page(lambda: None, title="Log in", url_path=path, default=path == "login")
                   for path in paths], position="hidden")  # fmt: skip


def _login_form() -> None:
    st.title("Log in")
    st.caption(APP_LINE)
    if st.session_state.pop(LOGGED_OUT_KEY, False):
        st.info("You are logged out.")
    with st.form("login_form"):
        name = st.text_input("Account name", key="login_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")  # fmt: skip
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        # Stamped before the password is read: a reset that lands while its hash is being
        # checked is then later than the login, and ends it (Accounts.current).
        started = datetime.now(UTC)
        try:
            found = accounts().authenticate(name, password, now=started)
        except LeukemiaCoreError as error:  # a refusal, or a database the server cannot use
            st.error(str(error))
            return
        st.session_state[LOGIN_KEY] = LoginSession(found, started, datetime.now(UTC))
        st.session_state[JUST_LOGGED_IN_KEY] = True
        st.session_state.pop("login_password", None)
        st.rerun()


def just_logged_in() -> bool:
    """True on the first run after a login (once): the page the address names may be one this
    account cannot use (another account logged out there)."""
    return bool(st.session_state.pop(JUST_LOGGED_IN_KEY, False))


def logout() -> None:
    """End the login (recorded) and forget this tab's sample, also in the page address (the
    next account to log in here must not get this one's case; a timeout keeps it)."""
    found = current_user()
    if found is not None:
        accounts().record(found.name, "logout")
    _forget_session()
    st.session_state[LOGGED_OUT_KEY] = True  # said once on the login form
    st.query_params.pop("case", None)  # ui.state.CASE_PARAM (ui.state imports this module)


def _forget_session() -> None:
    for key in list(st.session_state):
        del st.session_state[key]


ROLE_WORDS = {
    Role.REVIEWER: "reviewer",
    Role.SIGNER: "signer",
    Role.MODEL_ADMIN: "model administrator",
    Role.ADMIN: "account administrator",
}


def roles_text(account: User) -> str:
    """The account's roles in words, e.g. ``reviewer, model administrator``."""
    return ", ".join(ROLE_WORDS.get(r, r) for r in sorted(account.roles))


def require(permission: Permission) -> User:
    """The account when it may do this; else says which role is needed and stops the page."""
    found = user()
    if not found.can(permission):
        needed = ROLE_WORDS[NEEDED_ROLE[permission]]
        st.error(f"Your account ({found.name}: {roles_text(found)}) may not {permission.value}: "
                 f"that needs the {needed} role ({ask_for_role_text(found)}).")  # fmt: skip
        if found.can(Permission.MANAGE_USERS):
            st.page_link("pages/accounts.py", label="Accounts", icon=":material/group:")
        st.stop()
    return found


def ask_for_role_text(account: User | None = None) -> str:
    """Who gives a role: the account itself when it administers accounts."""
    if (account or user()).can(Permission.MANAGE_USERS):
        return "give it to your account on the Accounts page"
    return "an account administrator gives it on the Accounts page"


def sidebar() -> None:
    """Who is logged in, and the logout button."""
    found = user()
    st.markdown(f"Logged in as **{found.name}**  \n{roles_text(found)}")
    if st.button("Log out", key="logout", icon=":material/logout:"):
        logout()
        st.rerun()
