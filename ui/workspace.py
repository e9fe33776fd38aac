"""Cell by cell: one cell large beside its field, reviewed from the keyboard.

B blast, N normal, W not a white cell, X exclude, Space accepts the current label; a decision
moves on to the next cell still waiting for review. Left and Right step through the queue
(:meth:`leukemia_core.review.Review.queue`, which follows the model's call, so it never
reshuffles). Clicking a cell's number in the field view opens that cell; an outline drawn there
with the lasso around one cell of a clump is offered as a cut (kept under
:data:`ui.state.DRAWN_CUT_KEY` for :mod:`ui.outline_editor`). The buttons carry the
shortcuts (Streamlit's own ``shortcut``), so the keys work wherever the page has focus except
in a text box or a list (which is why the page's own switches are buttons), and the controls stay
where they are from one cell to the next.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import CellLabel
from leukemia_core.errors import LeukemiaCoreError, PossibleClumpError
from leukemia_core.imaging import side_by_side
from leukemia_core.review import Review
from leukemia_core.review_queue import step
from leukemia_core.store_errors import CaseChangedError
from leukemia_core.types import Cell
from ui import auth, state
from ui.common import LABEL_NAMES, flash, label_rgb
from ui.figures import field_overview

CURRENT_KEY = "workspace_cell"
VIEW_KEY = "review_view"
ONE_BY_ONE, GALLERY = "One cell at a time (keyboard)", "Gallery"  # the Review page's views
SHOWN_KEY, SHOWN = "beside_cell", ("Crop", "Heatmap")  # what the Review page shows beside a cell
LARGE_SIDE = 400  # the cell view's side on screen: a 2592x1944 field's cell at about 2x
CELL_PANEL_PX = 460  # the cell and its controls; the field view takes the rest, or goes below
CUT_WORDS = "Cut out what I drew"
# Streamlit's shortcuts stay silent while a form control has the focus, and a segmented
# control keeps it after a click and takes Space and the arrows itself. A mouse click on one of
# the Review page's two (detail > 0; a key press that activates it has detail 0) gives the focus
# back to the page; other pages' controls keep theirs.
_FOCUS_BACK_AFTER_CLICK = """<script>
if (!window.leukemiaFocusBack) {
  window.leukemiaFocusBack = true;
  document.addEventListener("click", (event) => {
    if (event.detail > 0 && event.target.closest?.("SWITCHES")) {
      setTimeout(() => document.activeElement?.blur(), 0);
    }
  }, true);
}
</script>""".replace("SWITCHES", f".st-key-{VIEW_KEY}, .st-key-{SHOWN_KEY}")
DECISIONS = (
    (CellLabel.BLAST, "Blast", "B"),
    (CellLabel.NORMAL, "Normal", "N"),
    (CellLabel.NOT_WBC, "Not a white cell", "W"),
    (CellLabel.EXCLUDED, "Exclude", "X"),
)


def keep_keys_after_clicks() -> None:
    """After a mouse click on a segmented control (the Review page's switches), the review keys
    work again at once."""
    st.html(_FOCUS_BACK_AFTER_CLICK, unsafe_allow_javascript=True)


def current_cell(session: Review) -> Cell | None:
    """The cell open in the workspace: the one last opened, else the first waiting for review."""
    queue = session.queue()
    key = st.session_state.get(CURRENT_KEY)
    if key not in queue:
        key = session.next_to_review() or step(queue, None, 0)
        st.session_state[CURRENT_KEY] = key
    return None if key is None else session.cell(*key)


def open_cell(key: tuple[int, int]) -> None:
    """Make this cell the one open in the workspace (e.g. the first piece of a split)."""
    st.session_state[CURRENT_KEY] = key


def decision_button_key(label: str, cell_key: tuple[int, int]) -> str:
    """The key of a decision button: one per cell, so that a press made while the page was
    still showing the previous cell reaches that cell's button, not the next cell's."""
    return f"decide_{label}_{cell_key[0]}_{cell_key[1]}"


def _on_decide(label: str | None, shown: tuple[int, int], shown_label: str) -> None:
    session = state.current()
    key = st.session_state.get(CURRENT_KEY)
    if session is None or key is None or key != tuple(shown):
        # Pressed on a cell the workspace has moved on from (a second press while the page was
        # redrawing): labelling the cell now open would label one nobody saw. Dropped.
        return
    try:
        state.decide(session, key, label)
        st.session_state[CURRENT_KEY] = session.next_to_review(after=key) or key
    except PossibleClumpError:  # asked beside the cell's buttons; the same key again answers
        pass
    except CaseChangedError as error:
        # Two presses sent together: the second ran on what the page read before the first
        # was written. When the cell already holds the call pressed (for Accept: the label the
        # page showed), it is done; "changed by you since you read it" invited a third press.
        # Any other label written meanwhile is said, never passed over.
        try:
            state.refresh(session)
            cell = session.cell(*key)
        except LeukemiaCoreError as reread:  # split or merged in another window
            flash(f"{error} {reread}")
            return
        if cell.reviewed and cell.label == (label or shown_label):
            st.session_state[CURRENT_KEY] = session.next_to_review(after=key) or key
        else:
            flash(str(error))
    except LeukemiaCoreError as error:
        flash(str(error))


def _on_step(offset: int) -> None:
    session = state.current()
    if session is not None:
        st.session_state[CURRENT_KEY] = step(session.queue(), st.session_state.get(CURRENT_KEY),
                                             offset)  # fmt: skip


def _on_field_click(chart_key: str, field_index: int) -> None:
    event = st.session_state.get(chart_key)
    session = state.current()
    if event is None or session is None:
        return
    lassos = [s for s in event.selection.lasso if len(s.get("x", ())) >= 3]
    if lassos:
        _offer_cut(session, field_index, list(zip(lassos[-1]["x"], lassos[-1]["y"], strict=True)))
        return
    for point in event.selection.points:
        data = point.get("customdata")
        if isinstance(data, list) and len(data) >= 2:  # a cell's number, not an outline
            key = (int(data[0]), int(data[1]))
            if key in session.queue():
                open_cell(key)
            else:
                flash(f"Cell {key[1]} is cut by the image border: it is never counted, so it "
                      "needs no review.", "info")  # fmt: skip
            return


def _offer_cut(session: Review, field_index: int, outline: list) -> None:
    """Keep a lasso outline as a cut of the cell it divides, for the outline editor to apply."""
    try:
        cell = session.cell_cut_by(field_index, outline)
    except LeukemiaCoreError as error:
        st.session_state.pop(state.DRAWN_CUT_KEY, None)
        flash(str(error))
        return
    st.session_state[state.DRAWN_CUT_KEY] = (
        session.case_id,
        field_index,
        cell.cell_id,
        tuple(outline),
    )
    open_cell(cell.key)
    flash(f"You drew around part of cell {cell.cell_id}: apply “{CUT_WORDS}” under Correct an "
          "outline to cut it there.", "info")  # fmt: skip


def _describe(session: Review, cell: Cell) -> str:
    p = "—" if cell.blast_probability is None else f"{cell.blast_probability:.2f}"
    name = session.fields[cell.field_index].name  # field numbered as the gallery and audit do
    text = f"**Cell {cell.cell_id}** of field {cell.field_index + 1} ({name}) · P(blast) {p} · "
    text += f"model: {LABEL_NAMES[cell.model_label]}"
    if because := session.sent_to_review_because(cell):
        text += f" ({because})"
    if cell.label != cell.model_label:
        text += f" · now: **{LABEL_NAMES[cell.label]}**"
    return text + (" · ✓ reviewed" if cell.reviewed else " · not reviewed yet")


def all_reviewed_note(session: Review) -> None:
    """Once every cell of a saved case is reviewed: say so, and where to sign (both views)."""
    if session.n_unreviewed or session.is_signed or not session.is_saved or not session.cells:
        return
    st.success("Every cell is reviewed: the counts are final once the case is signed.")
    if auth.user().can(Permission.SIGN):
        st.page_link("pages/case.py", label="Sign the case", icon=":material/verified:")
    else:  # a link to a disabled button would only disappoint
        st.caption("Ready for a signer: an account with the signer role signs it.")


def show_workspace(
    session: Review, *, heatmap: np.ndarray | None, editable: bool, beside: Callable[[], None]
) -> Cell | None:
    """One cell large (view with outline, and its heatmap or crop) with the keyboard controls,
    beside ``beside()`` (the page's counts) and the field view; returns the open cell."""
    cell = current_cell(session)
    if cell is None:
        beside()
        st.info("No cells to review: none were found, or every one was cut by the image border.")
        return None
    queue = session.queue()
    position = queue.index(cell.key) + 1
    if session.is_signed:  # nothing is left to review: the keys only move between cells
        st.caption(f"Cell {position} of {len(queue)} · signed: every cell was reviewed · keys: "
                   "**←/→** previous/next")  # fmt: skip
    else:
        waiting = (f"{session.n_unreviewed} not reviewed yet" if session.n_unreviewed
                   else "all reviewed")  # fmt: skip
        st.caption(
            f"Cell {position} of {len(queue)} · {waiting} · keys: **B** blast, **N** normal, "
            "**W** not a white cell, **X** exclude, **Space** accept, **←/→** previous/next"
        )
    row = st.container(horizontal=True, wrap=True, gap="medium")  # the field wraps below
    left, right = row.container(width=CELL_PANEL_PX), row.container(width="stretch")
    with left:
        colour = label_rgb(cell.label)
        second = heatmap if heatmap is not None else cell.crop
        images = [session.view(cell, colour, LARGE_SIDE)]
        if second is not None:
            images.append(second)
        # No caption (the help of "Beside each cell" says what the two pictures are): every
        # line here pushes the keys below the first screen.
        st.image(side_by_side(images, LARGE_SIDE), width="stretch")
        st.markdown(_describe(session, cell))
        _controls(cell, editable)
        if asked := state.clump_question(session, cell.key):  # beside the keys, not off screen
            st.warning(asked, icon=":material/call_split:")
    with right:
        beside()
        field = session.fields[cell.field_index]
        chart_key = f"workspace_field_{cell.field_index}_{cell.cell_id}"  # new key: no old pick
        st.plotly_chart(
            field_overview(field, session.field_cells(cell.field_index), cell.key),
            key=chart_key, on_select=lambda: _on_field_click(chart_key, cell.field_index),
            selection_mode=("points", "lasso"),
            config={"displaylogo": False, "scrollZoom": False},
        )  # fmt: skip
        cut = (" To cut a clump, pick the lasso (toolbar) and draw around one of its cells, "
               "outline and all: outside the clump everywhere but across the line where that "
               "cell meets the others." if editable else "")  # fmt: skip
        st.caption(f"{field.name}: click a cell's number to open it; drag to zoom, "
                   f"double-click to reset.{cut}")  # fmt: skip
    return cell


def _controls(cell: Cell, editable: bool) -> None:
    row = st.container(horizontal=True, gap="small")
    for label, words, key in DECISIONS:
        row.button(
            words, key=decision_button_key(label.value, cell.key), shortcut=key,
            on_click=_on_decide, args=(label.value, cell.key, cell.label.value),
            disabled=not editable,
            type="primary" if cell.label == label else "secondary",
        )  # fmt: skip
    row.button(
        "Accept", key=decision_button_key("accept", cell.key), shortcut="Space",
        on_click=_on_decide, args=(None, cell.key, cell.label.value),
        disabled=not editable or cell.label == CellLabel.UNCERTAIN, icon=":material/done:",
        help="Keep the current label: counts as reviewing this cell.",
    )  # fmt: skip
    if editable and cell.label == CellLabel.UNCERTAIN:  # Space did nothing, and said nothing
        st.caption("The model left this cell uncertain: give it a label (**B**, **N**, **W** or "
                   "**X**); **Space** accepts only a label a cell has.")  # fmt: skip
    row = st.container(horizontal=True, gap="small")
    row.button("Previous", key="workspace_previous", shortcut="Left", on_click=_on_step,
               args=(-1,), icon=":material/arrow_back:")  # fmt: skip
    row.button("Next", key="workspace_next", shortcut="Right", on_click=_on_step, args=(1,),
               icon=":material/arrow_forward:")  # fmt: skip
