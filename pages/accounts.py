"""Accounts (admins only): who may use the app and in which role, logins and model changes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from leukemia_core.accounts import AccountInputError, Permission, Role
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.roles import SHELL_PREFIX, role_text
from leukemia_core.store_rows import minute_text
from ui import auth
from ui.common import show_flashes

admin = auth.require(Permission.MANAGE_USERS)
st.title("Accounts")
show_flashes()
accounts = auth.accounts()
try:
    if altered := accounts.altered():
        st.error(
            "The accounts or their logs were changed outside the app: " + "; ".join(altered)
            + ". Check every account's roles and whether it should be enabled below; ask the "
            "server's administrator how the database file was changed, and restore a backup "
            "from before it if needed.",
            icon=":material/gpp_bad:",
        )  # fmt: skip
except LeukemiaCoreError as error:
    st.error(str(error))
ROLE_HELP = "  \n".join(role_text(role) for role in Role)  # what each role may do, exactly


def role_words(role: str) -> str:
    """A role as the sidebar names it ("model administrator", not ``model_admin``)."""
    return auth.ROLE_WORDS.get(Role(role), role)


def by_words(by: str | None) -> str:
    """Who made an account: a name, or the server's command line (``shell:<user>``)."""
    if by and by.startswith(SHELL_PREFIX):
        return f"command line on the server ({by.removeprefix(SHELL_PREFIX)})"
    return by or "—"


users = accounts.list_users()
rows = [
    {"Account": u.name, "Roles": auth.roles_text(u),
     "Disabled": "yes: cannot log in" if u.disabled else "no",  # words: a box looked editable
     "Created (UTC)": minute_text(u.created_at), "By": by_words(u.created_by)}
    for u in users
]  # fmt: skip
# A static table wraps its text: an 800 px screen sees every column without scrolling inside it.
st.table(pd.DataFrame(rows), hide_index=True, border="horizontal")

left, right = st.columns(2)
with left.form("add_account", clear_on_submit=True):
    st.subheader("Add an account")
    name = st.text_input("Account name", key="new_name")
    roles = st.multiselect(
        "Roles",
        [r.value for r in Role],
        default=["reviewer"],
        help=ROLE_HELP,
        key="new_roles",
        format_func=role_words,
    )
    first = st.text_input("Password", type="password", key="new_password")
    second = st.text_input("Password again", type="password", key="new_password_again")
    if st.form_submit_button("Add account", type="primary"):
        try:
            if first != second:
                raise ValueError("The two passwords differ; type the same one twice.")
            accounts.add_user(name, first, roles, by=admin)
            # said after the rerun, so the table above lists the new account at once
            st.session_state["add_account_said"] = f"Account {name.strip()!r} added."
            st.rerun()
        except (LeukemiaCoreError, ValueError) as error:
            st.error(str(error))
    if added := st.session_state.pop("add_account_said", None):
        st.success(added)
left.caption("Accounts are never deleted, so that the audit trails keep naming who did what: "
             "disable one instead (Change an account).")  # fmt: skip

right.subheader("Change an account")
names = [u.name for u in users]
if said := st.session_state.pop("change_account_said", None):  # from the save before the rerun
    getattr(right, said[0])(said[1])
# The picker is outside the form, and the fields are keyed by the account and a save counter:
# they always show the chosen account's stored values, and nothing typed for one account (a
# password, roles) is kept for another or for the next save.
chosen = right.selectbox("Account", names, key="change_name")
current = next((u for u in users if u.name == chosen), None)
key = f"{chosen}_{st.session_state.get('change_account_saves', 0)}"
# What the fields were filled with when drawn: another administrator may change the account
# while this form is open, and its unchanged fields would then write the old values back.
stored = (sorted(current.roles), current.disabled) if current else None
shown = st.session_state.setdefault(f"change_account_shown_{key}", stored)
with right.form(f"change_account_{key}"):
    new_roles = st.multiselect("Roles", [r.value for r in Role], key=f"change_roles_{key}",
                               format_func=role_words,
                               default=sorted(current.roles) if current else [], help=ROLE_HELP)  # fmt: skip
    new_password = st.text_input("New password (leave empty to keep; also lifts a lockout)",
                                 type="password", key=f"change_password_{key}")  # fmt: skip
    disabled = st.checkbox("Disabled (cannot log in)", value=bool(current and current.disabled),
                           key=f"change_disabled_{key}")  # fmt: skip
    if st.form_submit_button(f"Save changes to {chosen}") and current is not None:
        done = []
        try:
            if shown != stored:
                raise AccountInputError(
                    "another administrator changed this account since the form was drawn "
                    "(its roles or whether it is disabled); nothing was saved: look at the "
                    "stored values below and save again"
                )
            if set(new_roles) != set(current.roles):
                accounts.set_roles(chosen, new_roles, by=admin)
                before, after = (", ".join(map(role_words, sorted(roles_of)))
                                 for roles_of in (current.roles, new_roles))  # fmt: skip
                done.append(f"roles {before or 'none'} → {after or 'none'}")
            if new_password:
                accounts.set_password(chosen, new_password, by=admin)
                if chosen == admin.name:  # this session goes on; the account's others end
                    auth.restamp()
                done.append("new password")
            if disabled != current.disabled:
                accounts.set_disabled(chosen, disabled, by=admin)
                done.append("disabled" if disabled else "enabled again")
            said = ("success", f"{chosen}: {'; '.join(done) or 'nothing changed'}.")
        except LeukemiaCoreError as error:
            before = f" (saved before this: {'; '.join(done)})" if done else ""
            said = ("error", f"{chosen}: {error}{before}")
        st.session_state["change_account_said"] = said
        st.session_state["change_account_saves"] = (
            st.session_state.get("change_account_saves", 0) + 1
        )
        st.rerun()  # the table and the fields show what is stored now


def _log_table(rows: list[dict], names: dict[str, str]) -> pd.DataFrame:
    """A log for reading: times to the minute, columns in words, empty cells as dashes."""
    frame = pd.DataFrame(rows).rename(columns=names)
    frame["Time (UTC)"] = frame["Time (UTC)"].map(minute_text)
    return frame.fillna("—").astype(str)


st.subheader("Logins and account changes", divider="gray")
events = accounts.events(200)
if events:
    st.dataframe(_log_table(events, {"at": "Time (UTC)", "user_name": "Account", "event": "Event",
                                     "detail": "Detail"}), hide_index=True, width="stretch")  # fmt: skip
st.subheader("Model changes", divider="gray")
changes = accounts.model_changes(200)
if changes:
    names = {"at": "Time (UTC)", "action": "Action", "to_model": "To", "from_model": "From",
             "user_name": "By", "note": "Note"}  # fmt: skip
    # Which model became active first, in a table that wraps: at 800 px "To" and "Note" were
    # off a scrolling grid's edge, and long model names were cut.
    frame = _log_table([{key: row[key] for key in names} for row in changes], names)
    st.table(frame, hide_index=True, border="horizontal")
else:
    st.caption("No model was promoted, adapted or activated from this app or its commands yet.")
