"""Widgets every page shares: the research-use banner, page headers, messages and label names.

Only this package and the pages import streamlit; the image work happens in :mod:`leukemia_core`.
"""

from __future__ import annotations

import streamlit as st

from leukemia_core.counting import CellLabel
from leukemia_core.types import BlastCount

DISCLAIMER = (
    "**Research use only.** This is decision support for research; it is not a diagnosis. "
    "Every result must be reviewed by a qualified person."
)
UPLOAD_TYPES = ("jpg", "jpeg", "png", "tif", "tiff", "bmp")
LABEL_NAMES = {
    CellLabel.BLAST: "Blast",
    CellLabel.NORMAL: "Normal",
    CellLabel.UNCERTAIN: "Uncertain",
    CellLabel.EXCLUDED: "Excluded",
    CellLabel.NOT_WBC: "Not a white cell",
    CellLabel.BORDER: "Cut by the border",
}
LABEL_COLOURS = {
    CellLabel.BLAST: "#c62828",
    CellLabel.NORMAL: "#2e7d32",
    CellLabel.UNCERTAIN: "#ef8f00",
    CellLabel.EXCLUDED: "#6d6d6d",
    CellLabel.NOT_WBC: "#6d6d6d",
    CellLabel.BORDER: "#a0a0a0",
}
_FLASH_KEY = "_flash"


def research_use_banner() -> None:
    """Show the research-use-only disclaimer (app.py shows it above every page)."""
    st.warning(DISCLAIMER, icon=":material/science:")


def label_name(label: str) -> str:
    """Human name of a cell label (``not_wbc`` -> ``Not a white cell``)."""
    return LABEL_NAMES.get(CellLabel(label), str(label))


def percent_text(count: BlastCount) -> str:
    return "—" if count.percent is None else f"{count.percent:.1f}%"


def interval_text(count: BlastCount) -> str:
    if count.ci_low_percent is None or count.ci_high_percent is None:
        return "—"
    return f"{count.ci_low_percent:.1f}–{count.ci_high_percent:.1f}%"


def flash(message: str, kind: str = "error") -> None:
    """Keep a message for the next run of the page (for callbacks, which cannot render)."""
    st.session_state.setdefault(_FLASH_KEY, []).append((kind, message))


def show_flashes() -> None:
    """Show and forget the messages kept by :func:`flash`."""
    for kind, message in st.session_state.pop(_FLASH_KEY, []):
        {"error": st.error, "success": st.success, "info": st.info, "warning": st.warning}[kind](
            message
        )
