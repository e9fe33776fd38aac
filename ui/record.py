"""Case-record widgets shared by the Review and Case pages: status line and the save form."""

from __future__ import annotations

import streamlit as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.review import Review
from leukemia_core.store import CaseHeader, CaseRecord
from leukemia_core.store_rows import minute_text
from ui import heatmaps, state
from ui.common import flash

STATUS_TEXT = {
    "unsaved": ":orange-badge[not saved]",
    "open": ":blue-badge[open: under review]",
    "signed": ":green-badge[signed]",
}


def status_line(session: Review, record: CaseRecord | None = None) -> CaseHeader | None:
    """Sample id, case version and status as one line, and a warning when this signed version
    was reopened as a newer one (returned: pages then point to it, not to reopening). A page
    that has loaded the ``record`` passes it: it already names the newer version."""
    version = f" · version {session.version}" if session.is_saved else ""
    badge = STATUS_TEXT[session.status]
    if session.status == "open" and session.first_signed_by:  # as the case list says it
        badge = ":violet-badge[open: awaiting a second signer]"
    st.markdown(f"Sample **{session.sample_id}**{version} {badge}")
    newer = None if record is None else record.superseded_by
    if session.is_signed and record is None:
        try:
            newer = state.case_store().newer_version(session.case_id)
        except LeukemiaCoreError as error:
            st.error(str(error))
    if newer is not None:
        st.warning(f"Superseded: reopened as version {newer.version} by "
                   f"{newer.created_by or '—'} at {minute_text(newer.created_at)} UTC. This "
                   "signed version stays as it was and is not the current result; open the "
                   "latest version from the Case list.", icon=":material/history:")  # fmt: skip
    if session.altered:
        st.error(
            "This record was altered outside the app: " + "; ".join(session.altered) + ". Do "
            "not rely on it; ask the administrator to restore the database from a backup.",
            icon=":material/gpp_bad:",
        )
    return newer


def current_record(session: Review) -> CaseRecord:
    """The saved case of this session, freshly read; shows the error and stops the page."""
    try:
        state.refresh(session)
        record = state.case_store().load_case(session.case_id)
        session.altered = record.altered  # checked again on every read of the whole record
        return record
    except LeukemiaCoreError as error:
        st.error(str(error))
        st.stop()


def save_form(session: Review, *, prefix: str) -> None:
    """Sample id and a "Save case" button (keys ``<prefix>sample_id``, ``<prefix>save_case``)."""
    with st.container(border=True):
        st.markdown(
            "**Save the case to start the review.** The case record keeps the images, every "
            "cell, the model and its thresholds; from then on each reclassification is recorded "
            "with your name and the time."
        )
        sample_key, owner_key = f"{prefix}sample_id", f"{prefix}sample_id_of"
        # A new sample starts from its own id (and a page switch drops the box's state).
        if sample_key not in st.session_state or st.session_state.get(owner_key) != session.token:
            st.session_state[sample_key] = session.sample_id
            st.session_state[owner_key] = session.token
        sample_id = st.text_input(
            "Sample id",
            key=sample_key,
            max_chars=64,
            help="The specimen's identifier; no patient names needed.",
        )
        try:
            earlier = state.case_store().cases_of_sample(sample_id)
        except LeukemiaCoreError:  # an unusable store is reported when Save is clicked
            earlier = []
        if earlier:
            latest = earlier[0]
            st.warning(
                f"Sample id **{latest.sample_id}** already has a case (version {latest.version}, "
                f"{latest.status}, saved {minute_text(latest.created_at)} UTC by "
                f"{latest.created_by or '—'}). Saving makes a second case with the same id: "
                "check the id, or open that case from the case list to change it.",
                icon=":material/content_copy:",
            )
        st.caption(f"Saving records you, **{state.reviewer()}**, as the case's creator.")
        if st.button("Save case", key=f"{prefix}save_case", type="primary"):
            _save(session, sample_id)


def _save(session: Review, sample_id: str) -> None:
    method = st.session_state.get("gradcam_method", heatmaps.DEFAULT_METHOD)
    opacity = st.session_state.get("gradcam_opacity", heatmaps.DEFAULT_OPACITY)
    maps = " and where the model looked in each, for the report" * (
        heatmaps.unavailable_reason(session) is None
    )  # most of the seconds, on a CPU
    with st.spinner(f"Saving {len(session.cells)} cells{maps} …"):
        try:  # the record keeps each cell's heatmap overlay for the report, when there is one
            overlays = heatmaps.overlays_for_record(session, method, opacity)
        except LeukemiaCoreError as error:
            overlays = {}
            flash(f"The case was saved without heatmaps: {error}", "warning")
        try:
            case_id = state.save_case(session, sample_id=sample_id, overlays=overlays)
        except LeukemiaCoreError as error:
            st.error(str(error))
            return
    # A toast: a banner here would vanish at the first label and pull the cell up the page.
    flash(f"Case saved (id {case_id[:8]}): each change is now recorded.", "toast")
    st.rerun()


REOPEN_NEEDS_SIGNER = (
    "Reopening a signed case needs the signer role: ask a signer, or an account administrator "
    "for the role."
)


def reopen_reason(key: str, container=st) -> str:
    """The reason for reopening a signed case (kept in the new version's audit trail)."""
    return container.text_input("Why reopen it? (kept in the audit trail)", key=key,
                                max_chars=500,
                                placeholder="e.g. second opinion on cell 7").strip()  # fmt: skip
