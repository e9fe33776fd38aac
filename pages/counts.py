"""Counts: blast % with its 95% Wilson interval for the sample and per field; model vs reviewer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import (
    INVESTIGATE_PERCENT,
    WHO_ACUTE_LEUKEMIA_PERCENT,
    CellLabel,
    interval_text,
    percent_text,
    review_changes_text,
)
from leukemia_core.pipeline import MODE_FIELDS
from leukemia_core.review import Review
from leukemia_core.types import BlastCount
from ui import auth, state
from ui.common import LABEL_NAMES, domain_warning, metric_row, provisional_note, quality_warnings
from ui.figures import counts_chart, model_vs_reviewer_chart
from ui.record import status_line

auth.require(Permission.ANALYZE)
st.title("Blast counts")
session = state.require_current("No counts yet: analyze a sample first.")


def count_row(scope: str, count: BlastCount, n_uncertain: int, checks: str = "") -> dict:
    return {
        "Scope": scope,
        "Cells counted": count.n_counted,
        "Blasts": count.n_blasts,
        "Blast %": percent_text(count),
        "95% CI (Wilson)": interval_text(count),
        "Uncertain": n_uncertain,
        "Left out": count.n_excluded - n_uncertain,
        "Checks": checks or "—",
    }


def field_checks(field) -> str:
    """What sent a field's cells to review, in two words each (the warnings above say more)."""
    failed = list(dict.fromkeys(w.check for w in field.quality))  # e.g. "focus", "colour cast"
    if field.domain is not None and field.domain.warned:
        failed.append("unlike the training data")
    return ", ".join(failed)


def uncertain_in(session: Review, field_index: int | None) -> int:
    cells = session.cells if field_index is None else session.field_cells(field_index)
    return sum(c.label == CellLabel.UNCERTAIN for c in cells)


status_line(session)
quality_warnings(session, folded=True)  # a field's count is only as good as the field
domain_warning(session)
count = session.count()
st.caption("From the current labels: the model's calls as corrected by the reviewer.")
metric_row(
    ("Cells counted", count.n_counted, "Blasts plus normal white cells."),
    ("Blasts", count.n_blasts),
    ("Blast %", percent_text(count)),
    ("95% CI (Wilson)", interval_text(count)),
)
if provisional_note(session):  # no alarm colours before every cell is reviewed
    st.info(count.interpretation, icon=":material/insights:")
elif count.percent is not None and count.percent >= WHO_ACUTE_LEUKEMIA_PERCENT:
    st.error(count.interpretation, icon=":material/priority_high:")
elif count.percent is not None and count.percent >= INVESTIGATE_PERCENT:
    st.warning(count.interpretation, icon=":material/warning:")
else:
    st.info(count.interpretation, icon=":material/insights:")
if count.hint:
    st.warning(count.hint, icon=":material/rule:")

rows = [count_row("Whole sample", count, session.n_uncertain)]
scopes = [("Whole sample", count)]
if session.mode == MODE_FIELDS:
    for field, field_count in zip(session.fields, session.field_counts(), strict=True):
        name = f"Field {field.index + 1}: {field.name}"
        rows.append(count_row(name, field_count, uncertain_in(session, field.index),
                              field_checks(field)))  # fmt: skip
        scopes.append((name, field_count))
st.subheader("Per field" if session.mode == MODE_FIELDS else "Sample", divider="gray")
# Static tables wrap their text to the page: no sideways scrolling on a narrow screen.
st.table(pd.DataFrame(rows), hide_index=True, border="horizontal")
if any(c.percent is not None for _, c in scopes):
    st.plotly_chart(counts_chart(scopes), key="counts_chart", config={"displaylogo": False})
    st.caption("Bars: blast %; whiskers: 95% Wilson interval; dashed lines: the 5% and 20% levels.")

st.subheader("The model's calls and the labels now", divider="gray")
model_count, model_tally, tally = session.model_count(), session.tally(model=True), session.tally()
table = [
    {"Label": LABEL_NAMES[label], "Model": model_tally.get(label.value, 0),
     "Now": tally.get(label.value, 0)}
    for label in LABEL_NAMES
]  # fmt: skip
table.append({"Label": "Blast %", "Model": percent_text(model_count), "Now": percent_text(count)})
left, right = st.columns([2, 3])
left.table(pd.DataFrame(table).astype(str), hide_index=True, border="horizontal")
# Before review "now" is the model's call: say so, or the column reads as a reviewer's verdict.
left.caption(
    review_changes_text(session.cells)
    + f" {session.n_unreviewed} not reviewed yet keep the model's call."
)
right.plotly_chart(model_vs_reviewer_chart(model_tally, tally), key="model_vs_reviewer",
                   config={"displaylogo": False})  # fmt: skip
if session.is_signed:
    st.page_link("pages/report.py", label="Open the report", icon=":material/description:")
elif session.is_saved and not session.n_unreviewed and auth.user().can(Permission.SIGN):
    st.page_link("pages/case.py", label="Every cell is reviewed: sign the case",
                 icon=":material/verified:")  # fmt: skip
