"""Case: save the sample to the case record, sign it off, reopen a signed case, see the audit."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import interval_text, percent_text
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.store import DATABASE_ENV_VAR, default_database_path
from leukemia_core.store_rows import minute_text
from leukemia_core.store_signoff import NOTHING_COUNTED_NEEDS_COMMENT
from leukemia_core.types import AUDIT_LABEL_WORDS
from ui import auth, state
from ui.common import domain_warning, quality_warnings, show_flashes
from ui.record import REOPEN_NEEDS_SIGNER, current_record, reopen_reason, save_form, status_line

account = auth.require(Permission.ANALYZE)
st.title("Case record")
session = state.require_current(
    "No case open: analyze a sample, or open an earlier case from the case list.",
    ("pages/cases.py", "Case list", ":material/folder_open:"),
)

show_flashes()
if not session.is_saved:
    status_line(session)
    save_form(session, prefix="case_")
    st.stop()

seen_token = session.audit_token  # the case as this account last saw it, before this read
record = current_record(session)

newer = status_line(session, record)
count = record.counts()
parent = " (reopened from the signed version before it)" if record.parent_id else ""
st.markdown(
    f"- **Case:** {record.case_id[:8]}, version {record.version}{parent}\n"
    f"- **Created:** {minute_text(record.created_at)} UTC by "
    f"{record.created_by or '—'}\n"
    f"- **Model:** {record.model_words}\n"
    f"- **Fields:** {len(record.fields)}; **cells:** {len(record.cells)}; **counted:** "
    f"{count.n_counted}; **blasts:** {count.n_blasts} ({percent_text(count)}, 95% CI "
    f"{interval_text(count)})"
)
with st.expander("Details: identifiers, checksums and thresholds"):
    st.markdown(
        f"Case id `{record.case_id}`" + (f", reopened from `{record.parent_id}`" if parent else "")
        + f"; model weights sha256 `{record.model_checksum or '—'}`"
    )  # fmt: skip
    st.code(json.dumps(record.thresholds, indent=2), language="json")

st.subheader("For the report", divider="gray")
locked = record.is_signed or not account.can(Permission.REVIEW)
# Keyed by the case's status and stored details too: once signed, or once someone saves new
# details, the boxes show what is stored (and would be signed), not what they last held.
stored = hashlib.blake2b(f"{record.patient_id}\n{record.comment}".encode(), digest_size=4)
details_key = f"{record.case_id}_{record.status}_{stored.hexdigest()}"
patient_id = st.text_input(
    "Patient id (optional)", value=record.patient_id, key=f"case_patient_{details_key}",
    max_chars=64, disabled=locked, placeholder="your laboratory's identifier",
    help="Printed on the report and searchable in the case list. Leave it empty where the "
    "sample id is enough.",
)  # fmt: skip
comment = st.text_area(
    "Comment", value=record.comment, key=f"case_comment_{details_key}", max_chars=4000,
    disabled=locked, placeholder="e.g. morphology notes, what to repeat",
)  # fmt: skip
changed = not locked and (comment != record.comment or patient_id.strip() != record.patient_id)
if changed and st.button("Save for the report", key="save_comment", icon=":material/save:"):
    try:
        state.set_details(session, comment=comment, patient_id=patient_id,
                          seen_token=seen_token)  # fmt: skip
        st.rerun()
    except LeukemiaCoreError as error:
        st.error(str(error))

st.subheader("Sign-off", divider="gray")
if record.is_signed:
    first = (f" (first signature: **{record.first_signed_by}** at "
             f"{minute_text(record.first_signed_at)} UTC)" if record.first_signed_by else "")  # fmt: skip
    st.success(
        f"Signed by **{record.signed_by}** at {minute_text(record.signed_at)} UTC{first}. The "
        "record is frozen.",
        icon=":material/verified:",
    )
    st.page_link("pages/report.py", label="Open the report (PDF, CSV, JSON)",
                 icon=":material/description:")  # fmt: skip
    if newer is None:
        st.caption("To change it, reopen it: that makes a new version and keeps this one as "
                   "signed.")  # fmt: skip
        may_sign = auth.user().can(Permission.SIGN)
        reason = reopen_reason("reopen_reason") if may_sign else ""
        # Enabled before a reason is typed: a box's text reaches the page when the box loses
        # focus, and the first click would otherwise land on a disabled button.
        if st.button("Reopen as a new version", key="reopen", icon=":material/edit_document:",
                     disabled=not may_sign,
                     help=None if may_sign else REOPEN_NEEDS_SIGNER):  # fmt: skip
            try:
                state.reopen(session, reason)
                st.rerun()
            except LeukemiaCoreError as error:
                st.error(str(error))
        if not may_sign:  # said, not only in the disabled button's tooltip
            st.caption(REOPEN_NEEDS_SIGNER)
else:
    if session.sign_blockers:
        st.warning(session.sign_blockers, icon=":material/pending:")
    # What the signer answers for, where it is signed (a walk signed a 4-cell sample from an
    # unfamiliar camera here without seeing any of it): the checks and the count's reading.
    domain_warning(session)
    quality_warnings(session, folded=True)
    reading = session.count()
    st.markdown(f"**Reading:** {reading.interpretation}"
                + (f"  \n:orange[{reading.hint}]" if reading.hint else ""))  # fmt: skip
    may_sign = account.can(Permission.SIGN)
    if session.first_signed_by:
        st.info(
            f"Signed once by **{session.first_signed_by}**: at this blast level the lab asks for "
            "a second signer, another account. A change to any cell withdraws the first "
            "signature.",
            icon=":material/group:",
        )
    if not reading.n_counted and not session.n_uncertain and not session.n_unreviewed:
        # the core refuses the signature until the comment says why there is no result
        st.info(NOTHING_COUNTED_NEEDS_COMMENT, icon=":material/edit_note:")
    st.markdown(session.what_signing_does(account))
    # Said in the warnings above; and a second signer signs what the first one saw, so a
    # change to the report's details after a first signature is saved on its own first.
    blocked = bool(session.n_uncertain or session.n_unreviewed or session.altered)
    unsaved_after_first = changed and bool(session.first_signed_by)
    if changed and may_sign:
        st.caption("Save the patient id and comment above before the second signature."
                   if unsaved_after_first else
                   "Signing also saves the patient id and comment above.")  # fmt: skip
    if st.button("Sign case", key="sign", type="primary", icon=":material/signature:",
                 disabled=not may_sign or blocked or unsaved_after_first
                 or session.first_signed_by == account.name):  # fmt: skip
        try:  # what the page showed is what gets signed, with the details the form shows
            details = {"comment": comment, "patient_id": patient_id} if changed else {}
            state.sign(session, seen_token, **details)
            st.rerun()
        except LeukemiaCoreError as error:
            st.error(str(error))

if account.can(Permission.MANAGE_USERS):  # server paths only for admins, folded away
    with st.expander("Details for the administrator"):
        st.caption(
            f"Cases are kept in `{default_database_path()}` (set `{DATABASE_ENV_VAR}` to use "
            "another file, e.g. a shared one)."
        )

st.subheader("Audit trail", divider="gray")


def _change(entry) -> str:
    """Which cell and what became of it, in one short column ("field 1 · cell 6: Blast →
    Normal"): four narrow columns were off the grid's right edge at 800 px."""
    where = "" if entry.field_index is None else f"field {entry.field_index + 1}"
    if entry.cell_id is not None:
        where += f" · cell {entry.cell_id}"
    labels = [AUDIT_LABEL_WORDS.get(x, x) if x else "—" for x in (entry.from_label, entry.to_label)]
    what = " → ".join(labels) if entry.from_label or entry.to_label else ""
    return f"{where}: {what}" if where and what else where or what


audit = pd.DataFrame(
    [
        {"Time (UTC)": minute_text(a.at), "Who": a.reviewer or "—", "Action": a.action,
         "Change": _change(a), "Note": a.note}
        for a in record.audit
    ]
)  # fmt: skip
# The note gets room first: at 1440 px it was cut after a few words
st.dataframe(audit.astype(str), hide_index=True, width="stretch",
             column_config={"Note": st.column_config.TextColumn(width="large")})  # fmt: skip
