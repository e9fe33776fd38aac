"""The sample under review (one :class:`Review` per browser tab) and the case record.

Pages read the current review with :func:`current` and change it only through the functions
here, which hand the action to the core workflow (:class:`leukemia_core.review.Review`) with
the case database and the sidebar's reviewer name; the workflow owns every rule. The case database path is set in one place,
``$LEUKEMIA_CASE_DB`` (see :func:`leukemia_core.store.default_database_path`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import streamlit as st

from leukemia_core.errors import LeukemiaCoreError, PossibleClumpError
from leukemia_core.review import Review
from leukemia_core.store import CaseStore, default_database_path
from leukemia_core.store_errors import CaseNotFoundError
from ui import auth

SESSION_KEY = "review_session"
RELABEL_PREFIX = "relabel_"
CLUMP_QUESTION_KEY = "clump_question"  # ((case, cell, label), words): a clump's unanswered label


CASE_PARAM = "case"  # the open case's id in the page address, so a reload brings it back


def current() -> Review | None:
    """The sample under review in this tab, or None.

    After a reload (a new browser session) the saved case named in the address is opened
    again from the case record.
    """
    session = st.session_state.get(SESSION_KEY)
    case_id = st.query_params.get(CASE_PARAM)
    if session is None and case_id and auth.current_user() is not None:
        try:
            session = Review.open(case_store(), case_id)
            st.session_state[SESSION_KEY] = session
        except CaseNotFoundError:
            del st.query_params[CASE_PARAM]  # a case that is gone (or another database)
        except LeukemiaCoreError as error:  # altered outside the app, a busy database: said,
            st.error(str(error))  # and the address keeps naming the case for the next try
    return session


def remember(session: Review | None) -> None:
    """Put the saved case's id in the page address (or take it out)."""
    if session is not None and session.is_saved:
        st.query_params[CASE_PARAM] = session.case_id
    elif CASE_PARAM in st.query_params:
        del st.query_params[CASE_PARAM]


def require_current(
    message: str,
    link: tuple[str, str, str] = ("pages/analyze.py", "Analyze a sample", ":material/upload:"),
) -> Review:
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


DRAWN_CUT_KEY = "workspace_drawn_cut"  # (case id, field, cell id, outline) drawn with the lasso


def set_current(session: Review | None) -> None:
    """Make ``session`` the sample under review, forgetting the previous one's widgets."""
    for key in [k for k in st.session_state if str(k).startswith(RELABEL_PREFIX)]:
        del st.session_state[key]
    st.session_state.pop(DRAWN_CUT_KEY, None)  # an outline drawn on the previous sample
    st.session_state[SESSION_KEY] = session
    remember(session)


def reviewer() -> str:
    """The logged-in account's name (recorded with every change)."""
    return auth.user().name


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
    session: Review,
    *,
    sample_id: str,
    overlays: Mapping[tuple[int, int], np.ndarray] | None = None,
) -> str:
    """Store the sample as a new case (see :meth:`Review.save`)."""
    case_id = session.save(
        case_store(), user=auth.acting_user(), sample_id=sample_id, overlays=overlays
    )
    remember(session)
    return case_id


def relabel(session: Review, field_index: int, cell_id: int, label: str) -> None:
    """Reclassify one cell as the logged-in account (see :meth:`Review.relabel`); a possible
    clump asks once, and the same label given again counts it as one cell."""
    key = (field_index, cell_id)
    with _clump_question(session, key, label) as confirmed:
        session.relabel(case_store(), field_index, cell_id, label, user=auth.acting_user(),
                        as_one_cell=confirmed)  # fmt: skip


def decide(session: Review, key: tuple[int, int], label: str | None) -> bool:
    """Review one cell as the logged-in account: give it ``label`` or (None) accept its label
    (see :meth:`Review.decide`); a possible clump asks once, as :func:`relabel`."""
    with _clump_question(session, key, label) as confirmed:
        return session.decide(case_store(), *key, label, user=auth.acting_user(),
                              as_one_cell=confirmed)  # fmt: skip


@contextmanager
def _clump_question(session: Review, key: tuple[int, int], label: str | None):
    """Yields whether this label for this cell was asked about just before (the reviewer gives
    it again: one cell); a :class:`PossibleClumpError` is remembered as that question."""
    question = (session.case_id, key, label)
    asked = st.session_state.pop(CLUMP_QUESTION_KEY, None)
    try:
        yield asked is not None and asked[0] == question
    except PossibleClumpError as error:
        st.session_state[CLUMP_QUESTION_KEY] = (question, str(error))
        raise


def clump_question(session: Review, key: tuple[int, int]) -> str | None:
    """The question put about this cell, a possible clump, while it waits for the answer."""
    asked = st.session_state.get(CLUMP_QUESTION_KEY)
    return asked[1] if asked and asked[0][:2] == (session.case_id, key) else None


def accept(session: Review, keys: list[tuple[int, int]]) -> int:
    """Accept the current label of these cells as the logged-in account (see
    :meth:`Review.accept`); returns how many were newly marked reviewed."""
    return session.accept(case_store(), keys, user=auth.acting_user())


def split(session: Review, field_index: int, cell_id: int, parts: int, outline=None) -> tuple:
    """Split one cell into ``parts`` cells, or in two by a drawn ``outline`` (field pixels),
    classified by the case's model (see :meth:`Review.split`)."""
    return session.split(case_store(), field_index, cell_id, user=auth.acting_user(),
                         labeller=_labeller(session), parts=parts, line=outline,
                         explainer=_explainer(session))  # fmt: skip


def merge(session: Review, keys: list[tuple[int, int]]):
    """Merge touching cells of one field into one (see :meth:`Review.merge`)."""
    return session.merge(case_store(), keys, user=auth.acting_user(), labeller=_labeller(session),
                         explainer=_explainer(session))  # fmt: skip


def add_fields(session: Review, analysed: Review) -> int:
    """Add the fields ``analysed`` found to the open case (see :meth:`Review.add_fields`);
    returns how many cells came with them."""
    return session.add_fields(case_store(), analysed.analysis, _labeller(session),
                              user=auth.acting_user())  # fmt: skip


def undo_reshape(session: Review, field_index: int, cell_id: int) -> list[tuple[int, int]]:
    """Undo the split or merge that made this cell; the keys of the cells that return."""
    return session.undo_reshape(case_store(), field_index, cell_id, user=auth.acting_user())


def _labeller(session: Review):
    """The case's model for new cells (None for a case analysed without one)."""
    if not session.has_model:
        return None
    from ui.models import get_classifier  # imports TensorFlow only when a split needs it

    return get_classifier(session.model_name)


def _explainer(session: Review):
    """The heatmap overlays new cells are stored with (None without a usable model)."""
    from ui.heatmaps import record_explainer  # imports TensorFlow only when a split needs it

    return record_explainer(session)


def set_details(session: Review, *, comment: str, patient_id: str, seen_token: int) -> bool:
    """Keep the case's comment and patient id for the report, together, as the logged-in
    account, if the case is still as shown (``seen_token``)."""
    return session.set_details(case_store(), user=auth.acting_user(), comment=comment,
                               patient_id=patient_id, seen_token=seen_token)  # fmt: skip


def sign(session: Review, seen_token: int, **details: str) -> None:
    """Sign and freeze the case as the logged-in account, as it was shown (``seen_token``), with
    the report's details (``comment``, ``patient_id``) when given (see :meth:`Review.sign`)."""
    session.sign(case_store(), user=auth.acting_user(), seen_token=seen_token, **details)


def reopen(session: Review, reason: str) -> str:
    """Reopen a signed case as a new version, which becomes the one under review; the page asks
    why (kept in the new version's audit trail)."""
    new_id = session.reopen(case_store(), user=auth.acting_user(), reason=reason)
    remember(session)
    return new_id


def open_case(case_id: str) -> Review:
    """Load a stored case and make it the sample under review."""
    session = Review.open(case_store(), case_id)
    set_current(session)
    return session


def refresh(session: Review) -> bool:
    """Take changes another tab made to the saved case; True when something changed."""
    return session.refresh(case_store())
