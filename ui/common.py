"""Widgets every page shares: the research-use banner, page headers, messages and label names.

Only this package and the pages import streamlit; the image work happens in :mod:`leukemia_core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from leukemia_core.counting import CellLabel
from leukemia_core.io import FILE_SUFFIXES
from leukemia_core.types import LABEL_WORDS

if TYPE_CHECKING:
    from leukemia_core.review import Review
    from leukemia_core.types import Field

DISCLAIMER = (
    "**Research use only.** This is decision support for research; it is not a diagnosis. "
    "Every result must be reviewed by a qualified person."
)
UPLOAD_TYPES = tuple(suffix.lstrip(".") for suffix in FILE_SUFFIXES)  # io.FORMATS_TEXT
LABEL_NAMES = LABEL_WORDS  # one home for the words: leukemia_core.types
LABEL_COLOURS = {
    CellLabel.BLAST: "#c62828",
    CellLabel.NORMAL: "#2e7d32",
    CellLabel.UNCERTAIN: "#ef8f00",
    CellLabel.EXCLUDED: "#6d6d6d",
    CellLabel.NOT_WBC: "#6d6d6d",
    CellLabel.BORDER: "#a0a0a0",
}
_FLASH_KEY = "_flash"


def label_rgb(label: CellLabel) -> tuple[int, int, int]:
    """The label's colour as RGB (for outlines drawn into images)."""
    colour = LABEL_COLOURS[label]
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def research_use_banner() -> None:
    """Show the research-use-only disclaimer (app.py shows it above every page)."""
    st.warning(DISCLAIMER, icon=":material/science:")


def metric_row(*metrics: tuple) -> None:
    """Metrics side by side, each as wide as its value, wrapping onto the next line on a narrow
    screen instead of being cut short. Each metric is ``(label, value)`` or ``(label, value,
    help)``."""
    row = st.container(horizontal=True, wrap=True, horizontal_alignment="distribute")
    for label, value, *help_text in metrics:
        row.metric(label, value, help=help_text[0] if help_text else None, width="content")


def flash(message: str, kind: str = "error") -> None:
    """Keep a message for the next run of the page (for callbacks, which cannot render).

    ``kind`` is error, success, info, warning, or toast: a passing note in the corner that
    takes no room on the page, so nothing below it moves when it goes (e.g. above the cell
    under review)."""
    st.session_state.setdefault(_FLASH_KEY, []).append((kind, message))


def show_flashes() -> None:
    """Show and forget the messages kept by :func:`flash`."""
    for kind, message in st.session_state.pop(_FLASH_KEY, []):
        show = {"error": st.error, "success": st.success, "info": st.info,
                "warning": st.warning, "toast": st.toast}[kind]  # fmt: skip
        show(message)


def provisional_note(session: Review) -> bool:
    """Say that the counts are provisional while cells wait for review; True when they are."""
    text = session.provisional
    if text:
        st.info(text, icon=":material/hourglass_top:")
    return text is not None


def quality_warnings(session: Review, *, folded: bool = False) -> None:
    """One warning per field quality check that failed (their cells were sent to review);
    ``folded``: one closed box listing them (the Review page, where they would push the cell
    under review a screen down on a narrow display)."""
    warned = [(field, warning) for field in session.fields for warning in field.quality]
    if not warned:
        return
    if not folded:
        for field, warning in warned:
            st.warning(f"**{field.name}**: {warning.message} Every cell of this field was sent "
                       "to review.", icon=":material/warning:")  # fmt: skip
        return
    names = ", ".join(dict.fromkeys(field.name for field, _ in warned))
    label = (f"{len(warned)} quality warning{'s' * (len(warned) > 1)} ({names}): every cell of "
             "the field was sent to review")  # fmt: skip
    with st.expander(label, icon=":material/warning:"):
        for field, warning in warned:
            st.markdown(f"**{field.name}**: {warning.message}")


def field_warning_text(field: Field) -> str:
    """Why a field's cells went to review, in words ('' when its checks passed)."""
    reasons = [warning.message for warning in field.quality]
    if field.domain is not None and field.domain.warned:
        reasons.append("Its cells differ from the training data (another microscope, stain or "
                       "magnification?).")  # fmt: skip
    return " ".join(reasons)


def domain_warning(session: Review) -> None:
    """Warn plainly when the sample (or a field) differs from the model's training data.

    Shows nothing for a sample without a model; says so when the model has no domain check.
    """
    if not session.has_model or not session.cells:  # no cells: nothing to compare
        return
    domain = session.domain
    if domain is None:
        st.caption("This model has no domain reference, so no out-of-domain check was made.")
        return
    warned = [f for f in session.fields if f.domain is not None and f.domain.warned]
    if not domain.warned and not warned:
        st.caption(domain.message)
        return
    # One box, not two: on a narrow screen every warning pushes the cells further down.
    names = ", ".join(f.name for f in warned)
    if not domain.warned:
        parts = [
            f"Out of domain: {names}. These fields' cells differ from the training data; "
            "every cell of them was sent to review."
        ]
    else:
        parts = [domain.message]
        if warned and len(warned) < len(session.fields):
            parts.append(f"The fields least like it: {names}.")
    st.warning(" ".join(parts), icon=":material/warning:")
