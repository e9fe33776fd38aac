"""Review: every cell, one at a time from the keyboard beside its field, or as a gallery by the
model's call; Grad-CAM, relabelling, and outline corrections (split, merge)."""

from __future__ import annotations

import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import interval_text, percent_text
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.pipeline import MODE_FIELDS
from leukemia_core.store_rows import minute_text
from ui import auth, heatmaps, state
from ui.common import domain_warning, metric_row, provisional_note, quality_warnings, show_flashes
from ui.figures import field_overview
from ui.gallery import show_gallery
from ui.outline_editor import show_outline_editor
from ui.record import save_form, status_line
from ui.workspace import (
    GALLERY,
    ONE_BY_ONE,
    SHOWN,
    SHOWN_KEY,
    VIEW_KEY,
    all_reviewed_note,
    current_cell,
    keep_keys_after_clicks,
    show_workspace,
)

auth.require(Permission.ANALYZE)
st.title("Review cells")
session = state.require_current("Nothing to review yet: analyze a sample first.")

try:
    if state.refresh(session):
        st.info("This case was changed in another window; the labels below are the stored ones.")
except LeukemiaCoreError as error:
    st.error(str(error))
show_flashes()
newer = status_line(session)
quality_warnings(session, folded=True)
domain_warning(session)


def show_counts() -> None:
    count = session.count()
    metric_row(
        ("Cells counted", count.n_counted),
        ("Blasts", count.n_blasts),
        ("Blast %", percent_text(count)),
        ("95% CI (Wilson)", interval_text(count)),
        ("Uncertain", session.n_uncertain),
    )
    provisional_note(session)


# One cell at a time: the counts go beside the cell, above its field, so that the cell and its
# keys start on the first screen and the recount stays in sight while labelling.
one_by_one = st.session_state.get(VIEW_KEY, ONE_BY_ONE) == ONE_BY_ONE
if not one_by_one:
    show_counts()

can_review = auth.user().can(Permission.REVIEW)
editable = session.is_saved and not session.is_signed and can_review
if not session.is_saved and can_review:
    save_form(session, prefix="review_")
elif not session.is_saved:
    st.info("Your account may analyze samples and look at their cells, but saving and "
            f"reviewing a case needs the reviewer role ({auth.ask_for_role_text()}).")  # fmt: skip
elif session.is_signed:
    st.success(
        f"Signed by {session.signed_by} at {minute_text(session.signed_at)} UTC; the record is "
        "frozen."
        + ("" if newer else " Reopen it as a new version on the Case & sign-off page to change it.")
    )
elif not can_review:
    st.info("Your account may look at this case but not reclassify cells: that needs the "
            f"reviewer role ({auth.ask_for_role_text()}).")  # fmt: skip

reason = heatmaps.unavailable_reason(session)
# One row that wraps on a narrow screen instead of cutting the labels short. Segmented controls,
# not a radio or a switch, which would keep the focus and the review keys after a click.
controls = st.container(horizontal=True, wrap=True, vertical_alignment="center", gap="medium")
keep_keys_after_clicks()
view = controls.segmented_control(
    "Review", (ONE_BY_ONE, GALLERY), key=VIEW_KEY, persist_state="session", required=True,
    default=ONE_BY_ONE, label_visibility="collapsed",
)  # fmt: skip
show_maps = SHOWN[1] == controls.segmented_control(
    "Beside each cell", SHOWN, key=SHOWN_KEY, persist_state="session", required=True,
    default=SHOWN[0], disabled=reason is not None,
    help="One cell at a time: on the left the cell among its neighbours, outlined; on the right "
    "the crop the model classified, or where the model looked in it: warm colours "
    "pushed it towards its call. Warmth on the black around a cell is not the cell: a map that "
    "dwells there says the call rests on little of the cell. A model that averages over turned "
    "copies of each cell shows the upright copy's map.",
)  # fmt: skip
if show_maps and reason is None:  # only then: on a narrow screen they take a row of their own
    method = controls.selectbox(
        "Method", heatmaps.methods() or tuple(heatmaps.METHOD_NAMES), key="gradcam_method",
        format_func=lambda m: heatmaps.METHOD_NAMES.get(m, m), persist_state="session",
        width=190,
    )  # fmt: skip
    opacity = controls.slider(
        "Heatmap opacity", 0.0, 1.0, heatmaps.DEFAULT_OPACITY, 0.05, key="gradcam_opacity",
        persist_state="session", width=190,
    )  # fmt: skip
right_images = {}
if reason is not None:
    st.caption(reason)
    stored = {c.key: c.overlay for c in session.cells if c.overlay is not None}
    if stored:
        st.caption("Showing the heatmaps stored with the case.")
        right_images = stored
elif show_maps:
    try:
        with st.spinner(f"Computing {heatmaps.METHOD_NAMES.get(method, method)} for "
                        f"{len(session.cells)} cells …"):  # fmt: skip
            maps = heatmaps.gallery_heatmaps(session, method)
        right_images = {
            key: heatmaps.overlay(session.cell(*key).crop, m, opacity) for key, m in maps.items()
        }
    except LeukemiaCoreError as error:
        st.error(str(error))

field_index = opened_id = None
if view == GALLERY and editable:  # one cell at a time, the key line under the controls says it
    st.caption("Give each cell its label under its card; every count updates at once and the "
               "change is recorded with your name.")  # fmt: skip
all_reviewed_note(session)
if view == ONE_BY_ONE:
    opened = current_cell(session)
    heatmap = None if opened is None else right_images.get(opened.key)
    cell = show_workspace(session, heatmap=heatmap, editable=editable, beside=show_counts)
    if cell is not None and session.mode == MODE_FIELDS:
        field_index, opened_id = cell.key
else:
    if session.mode == MODE_FIELDS and session.fields:
        st.subheader("Field overview", divider="gray")
        field_index = 0
        if len(session.fields) > 1:
            field_index = st.selectbox(
                "Field", range(len(session.fields)), key="overview_field",
                format_func=lambda i: f"{i + 1}: {session.fields[i].name}",
            )  # fmt: skip
        st.plotly_chart(
            field_overview(session.fields[field_index], session.field_cells(field_index)),
            key="overview", config={"displaylogo": False, "scrollZoom": False},
        )  # fmt: skip
        st.caption("Drag to zoom, double-click to reset; hover a cell number for its "
                   "probability.")  # fmt: skip
    st.caption(
        "Each card: the cell among its neighbours with its outline, and "
        + ("where the model looked." if right_images else "the crop the model classified.")
    )
    show_gallery(session, right_images=right_images, editable=editable)
if field_index is not None:
    show_outline_editor(session, field_index, editable, opened_id)
