"""Case list: find earlier cases by sample or patient id, open one, or reopen a signed one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import blast_percent_figure
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.store_rows import minute_text
from ui import auth, state
from ui.record import REOPEN_NEEDS_SIGNER, reopen_reason

OPENED_KEY = "cases_opened"  # (message, case id) of an Open or Reopen, for the next run

auth.require(Permission.ANALYZE)
st.title("Case list")
search = st.text_input(
    "Find cases",
    key="case_search",
    placeholder="part of a sample or patient id, or the start of a case id",
)
try:
    cases = state.case_store().list_cases(search)
except LeukemiaCoreError as error:
    st.error(str(error))
    st.stop()
if not cases:
    st.info("No cases found." if search else "No cases saved yet: analyze a sample and save it.")
    st.stop()

reopened = {c.parent_id for c in cases if c.parent_id}


def blasts_text(case) -> str:
    """``17 of 19 (89.5%); 2 uncertain; provisional: 5 not reviewed``: blasts of the cells
    counted, and what awaits review."""
    text = "—"
    if case.n_counted:
        share = blast_percent_figure(case.blast_percent)
        text = f"{case.n_blasts} of {case.n_counted} ({share}%)"
    text += f"; {case.n_uncertain} uncertain" if case.n_uncertain else ""
    return text + (f"; provisional: {case.n_unreviewed} not reviewed" if case.n_unreviewed else "")


def checks_text(case) -> str:
    """What sent cells to review besides the model: the domain check and field quality."""
    parts = ["sample unlike the training data"] if case.out_of_domain else []
    if (n := case.n_fields_out_of_domain) and not case.out_of_domain:
        parts.append(f"{n} field{'s' * (n != 1)} unlike the training data")
    if case.n_fields_failing_quality:
        n = case.n_fields_failing_quality
        parts.append(f"{n} field{'s' * (n != 1)} failed a quality check")
    return "; ".join(parts) or "—"


def signers_text(case) -> str:
    """``A, then B`` where the lab's rule asked for two signers; ``A (first of two)`` while
    the second is awaited."""
    if case.awaits_second_signature:
        return f"{case.first_signed_by} (first of two)"
    if case.first_signed_by and case.signed_by:
        return f"{case.first_signed_by}, then {case.signed_by}"
    return case.signed_by or "—"


rows = [
    {
        "Sample": c.sample_id,
        "Patient": c.patient_id or "—",
        "Status": f"v{c.version} {c.status}"
        + (" (reopened)" if c.case_id in reopened else "")
        + (", awaiting a second signer" if c.awaits_second_signature else "")
        + (
            ", every cell reviewed: ready to sign"
            if c.status == "open"
            and c.n_cells
            and not c.n_unreviewed
            and not c.awaits_second_signature
            else ""
        ),
        "Checks": checks_text(c),
        "Created (UTC)": f"{minute_text(c.created_at)} by {c.created_by or '—'}",
        "Signed by": signers_text(c),
        "Blasts": blasts_text(c),
    }
    for c in cases
]
# A static table wraps its text to the page: no sideways scrolling on a narrow screen.
st.table(pd.DataFrame(rows), hide_index=True, border="horizontal")
by_id = {c.case_id: c for c in cases}
# After Open or Reopen the page runs again, so the table, the picker (on the version opened)
# and the sidebar all show it; the reason typed for a reopen is not offered again.
opened = st.session_state.pop(OPENED_KEY, None)
if opened and opened[1] in by_id:
    st.session_state["case_pick"] = opened[1]
    st.session_state.pop("reopen_case_reason", None)
elif (st.session_state.get("case_pick") not in by_id  # first visit: the case that is open
      and (current := state.current()) is not None and current.case_id in by_id):  # fmt: skip
    st.session_state["case_pick"] = current.case_id
picked = st.selectbox(
    "Case",
    list(by_id),
    key="case_pick",
    format_func=lambda i: (
        f"{by_id[i].sample_id} · version {by_id[i].version} · "
        f"{by_id[i].status} · {minute_text(by_id[i].created_at)} · {i[:8]}"
    ),
)
chosen = by_id[picked]
if opened:
    st.success(opened[0])
    st.page_link("pages/review.py", label="Review its cells", icon=":material/arrow_forward:")
left, right = st.columns(2)
if left.button("Open", key="open_case", type="primary", icon=":material/folder_open:"):
    try:
        state.open_case(chosen.case_id)
        st.session_state[OPENED_KEY] = (
            f"Opened sample {chosen.sample_id}, version {chosen.version}.",
            chosen.case_id,
        )
        st.rerun()
    except LeukemiaCoreError as error:
        st.error(str(error))
can_reopen = chosen.status == "signed" and chosen.case_id not in reopened
may_sign = auth.user().can(Permission.SIGN)  # reopening is a signer's, as on the Case page
reason = reopen_reason("reopen_case_reason", right) if can_reopen and may_sign else ""
if can_reopen and right.button(
    "Reopen as a new version",
    key="reopen_case",
    icon=":material/edit_document:",
    disabled=not may_sign,
    help=None if may_sign else REOPEN_NEEDS_SIGNER,
):
    try:
        session = state.open_case(chosen.case_id)
        state.reopen(session, reason)
        st.session_state[OPENED_KEY] = (
            f"Sample {chosen.sample_id} reopened as version {session.version}.",
            session.case_id,
        )
        st.rerun()
    except LeukemiaCoreError as error:
        st.error(str(error))
