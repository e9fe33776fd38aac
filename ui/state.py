"""The sample under review (one :class:`ReviewSession` per browser tab) and the case record.

Pages read the current review with :func:`current` and change it only through the functions
here, which write the case record first and the in-memory review second, so what is on screen
never runs ahead of what is stored. The case database path is set in one place,
``$LEUKEMIA_CASE_DB`` (see :func:`leukemia_core.store.default_database_path`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import streamlit as st

from leukemia_core.session import NO_MODEL, ReviewError, ReviewSession
from leukemia_core.store import CaseStore, default_database_path

SESSION_KEY = "review_session"
REVIEWER_KEY = "reviewer"
RELABEL_PREFIX = "relabel_"


def current() -> ReviewSession | None:
    """The sample under review in this tab, or None."""
    return st.session_state.get(SESSION_KEY)


def require_current(
    message: str,
    link: tuple[str, str, str] = ("pages/analyze.py", "Analyze a sample", ":material/upload:"),
) -> ReviewSession:
    """The sample under review; without one, says ``message``, links on and stops the page.

    Args:
        message: What is missing and what to do.
        link: ``(page, label, icon)`` of the page to go to.
    """
    session = current()
    if session is None:
        st.info(message)
        page, label, icon = link
        st.page_link(page, label=label, icon=icon)
        st.stop()
    return session


def set_current(session: ReviewSession | None) -> None:
    """Make ``session`` the sample under review, forgetting the previous one's widgets."""
    for key in [k for k in st.session_state if str(k).startswith(RELABEL_PREFIX)]:
        del st.session_state[key]
    st.session_state[SESSION_KEY] = session


def reviewer() -> str:
    """The reviewer's name from the sidebar ('' when not entered)."""
    return str(st.session_state.get(REVIEWER_KEY) or "").strip()


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(path: str) -> CaseStore:
    return CaseStore(path)


def case_store() -> CaseStore:
    """The case database (``$LEUKEMIA_CASE_DB``, else the user's data folder).

    Raises:
        CaseStoreError: The file is not a case database.
    """
    return _store(str(default_database_path()))


def save_case(
    session: ReviewSession,
    *,
    sample_id: str,
    reviewer_name: str,
    overlays: Mapping[tuple[int, int], np.ndarray] | None = None,
) -> str:
    """Store the sample as a new case in one transaction and start recording changes.

    Raises:
        ReviewError: Already saved, or no reviewer name.
        CaseStoreError: The record refused it (e.g. an empty sample id).
    """
    if session.is_saved:
        raise ReviewError(f"This sample is already saved as case {session.case_id}.")
    if not reviewer_name:
        raise ReviewError("Enter your name as reviewer (sidebar or the save form) before saving.")
    fields, cells = session.case_entries(overlays)
    store = case_store()
    case_id = store.create_case(
        sample_id,
        fields,
        cells,
        model_name=session.model_name or NO_MODEL,
        model_checksum=session.model_checksum,
        thresholds=session.thresholds(),
        created_by=reviewer_name,
        domain=session.domain,
    )
    session.apply_record(store.load_case(case_id))
    session.overlays = dict(overlays or {})
    return case_id


def relabel(session: ReviewSession, field_index: int, cell_id: int, label: str) -> None:
    """Reclassify one cell: in the case record (with who and when), then on screen.

    Raises:
        ReviewError: Not saved yet, signed, or no reviewer name.
        CaseStoreError: The record refused it.
    """
    name = reviewer()
    if not session.is_saved:
        raise ReviewError("Save the case first: every reclassification is recorded in it.")
    if not name:
        raise ReviewError("Enter your name as reviewer in the sidebar to reclassify cells.")
    session.cell(field_index, cell_id)  # unknown cells fail before anything is written
    case_store().relabel_cell(
        session.case_id, field_index, cell_id, label, reviewer=name, note="review gallery"
    )
    session.relabel(field_index, cell_id, label, reviewer=name)


def sign(session: ReviewSession) -> None:
    """Sign and freeze the case.

    Raises:
        ReviewError: Not saved, or no reviewer name.
        SignOffBlockedError: Cells are still uncertain.
        CaseStoreError: Already signed, or another refusal of the record.
    """
    if not session.is_saved:
        raise ReviewError("Save the case before signing it.")
    store = case_store()
    store.sign_case(session.case_id, reviewer=reviewer())
    session.apply_record(store.load_case(session.case_id))


def reopen(session: ReviewSession) -> str:
    """Reopen a signed case as a new version, which becomes the one under review."""
    store = case_store()
    new_id = store.reopen_case(session.case_id, reviewer=reviewer())
    session.apply_record(store.load_case(new_id))
    return new_id


def open_case(case_id: str) -> ReviewSession:
    """Load a stored case and make it the sample under review."""
    session = ReviewSession.from_record(case_store().load_case(case_id))
    set_current(session)
    return session


def refresh(session: ReviewSession) -> bool:
    """Re-read a saved case's labels and status when the record differs from the screen (another
    tab may have changed it); returns True when something changed.

    The record's summary line is compared first, so an unchanged case costs no image reads.
    """
    if not session.is_saved:
        return False
    store = case_store()
    count = session.count()
    shown = (session.status, count.n_blasts, count.n_counted, session.n_uncertain)
    for summary in store.list_cases(session.case_id, limit=5):
        if summary.case_id == session.case_id:
            stored = (summary.status, summary.n_blasts, summary.n_counted, summary.n_uncertain)
            if stored == shown:
                return False
    before = (dict(session.labels), session.status, session.version)
    session.apply_record(store.load_case(session.case_id))
    return before != (session.labels, session.status, session.version)
