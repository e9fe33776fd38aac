"""Correct an outline on the Review page: split a clump, merge two pieces, undo.

Thin: it gathers the choice and hands it to :class:`leukemia_core.review.Review` through
:mod:`ui.state`; the core crops, classifies, records and audits the new cells.
"""

from __future__ import annotations

import streamlit as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.review import Review
from leukemia_core.types import LABEL_WORDS, CellLabel
from ui import state
from ui.common import flash
from ui.workspace import CUT_WORDS, open_cell

SPLIT_CHOICES = {"Split into 2 cells": 2, "Split into 3 cells": 3, "Split into 4 cells": 4}
MERGE, UNDO = "Merge with another cell", "Undo the split or merge that made it"
APPLIED_KEY = "outline_actions_applied"  # part of the Action box's key


def show_outline_editor(
    session: Review, field_index: int, editable: bool, cell_id: int | None = None
) -> None:
    """Pick a cell of the field shown above (``cell_id`` first: the cell open for review) and
    split it, merge it, or undo its split/merge."""
    cells = session.field_cells(field_index)
    if not cells:
        return
    with st.container(border=True):
        st.markdown("**Correct an outline** (split a clump, merge two pieces)")
        field = session.fields[field_index]
        st.caption(f"Cell numbers are those of field {field_index + 1} ({field.name}) in the "
                   "field view above. New cells are classified by the case's model, await "
                   "review, and the change is recorded with your name; undo brings the old cell "
                   "back.")  # fmt: skip
        ids = [c.cell_id for c in cells]
        drawn = st.session_state.get(
            state.DRAWN_CUT_KEY
        )  # a lasso outline, offered for the cell it cuts
        left, middle, right = st.columns([1, 2, 1])
        if cell_id not in ids:  # none open (the gallery): a flagged clump, else a whole cell
            clumps = [c.cell_id for c in cells if session.is_possible_clump(c)]
            whole = [c.cell_id for c in cells
                     if not (c.touches_border or c.label == CellLabel.BORDER)]  # fmt: skip
            cell_id = (clumps or whole or ids)[0]
        first = ids.index(cell_id)
        cell_id = left.selectbox("Cell", ids, index=first, format_func=lambda i: f"cell {i}",
                                 key=f"outline_cell_{field_index}_{ids[first]}",
                                 disabled=not editable)  # fmt: skip
        cell = session.cell(field_index, cell_id)
        border = cell.touches_border or cell.label == CellLabel.BORDER  # the core refuses it too
        if border and not cell.origin:
            st.caption(f"Cell {cell_id} is cut by the image edge or the field stop and is never "
                       "counted: there is nothing to split or merge. Pick another cell.")  # fmt: skip
            return
        cut = drawn is not None and drawn[:3] == (session.case_id, field_index, cell_id)
        reshapes = [] if border else [CUT_WORDS] * cut + [*SPLIT_CHOICES, MERGE]
        actions = reshapes + ([UNDO] if cell.origin else [])
        # Nothing chosen until the reviewer picks (a drawing offers its cut): after an Apply the
        # box is empty again, so a second Apply cannot repeat the split on a new piece.
        # (A new key each time: a popped key came back with the browser's old value.)
        applied = st.session_state.get(APPLIED_KEY, 0)
        action = middle.selectbox("Action", actions, disabled=not editable,
                                  index=0 if cut and not border else None, placeholder="Choose…",
                                  key=f"outline_action_{field_index}_{applied}" + "_drawn" * cut)  # fmt: skip
        other = None
        if action == MERGE:  # the nearest cells first: the piece to merge lies beside it
            x, y = cell.centroid
            others = [c.cell_id for c in sorted(
                (c for c in cells if c.cell_id != cell_id and not c.touches_border),
                key=lambda c: (c.centroid[0] - x) ** 2 + (c.centroid[1] - y) ** 2)]  # fmt: skip
            other = right.selectbox(
                "With", others, key=f"outline_other_{field_index}_{cell_id}",
                format_func=lambda i: f"cell {i}" + " (nearest)" * (i == others[0]),
                disabled=not editable,
            )  # fmt: skip
        if st.button("Apply", key=f"outline_apply_{field_index}", icon=":material/content_cut:",
                     disabled=not editable or action is None):  # fmt: skip
            _apply(session, field_index, cell_id, action, other, drawn[3] if cut else None)


def _apply(session: Review, field_index: int, cell_id: int, action: str, other, outline) -> None:
    st.session_state.pop(state.DRAWN_CUT_KEY, None)  # a drawing serves one action, done or not
    st.session_state[APPLIED_KEY] = st.session_state.get(APPLIED_KEY, 0) + 1  # chosen afresh
    try:
        if action == CUT_WORDS:
            made = state.split(session, field_index, cell_id, 2, outline=outline)
            open_cell(made[0].key)
            flash(f"Cell {cell_id} cut into cells {made[0].cell_id} (what you drew) and "
                  f"{made[1].cell_id}; review each.", "success")  # fmt: skip
        elif action in SPLIT_CHOICES:
            made = state.split(session, field_index, cell_id, SPLIT_CHOICES[action])
            open_cell(made[0].key)  # review goes on with the first piece
            words = ", ".join(str(c.cell_id) for c in made)
            flash(f"Cell {cell_id} split into cells {words}; review each.", "success")
        elif action == MERGE:
            if other is None:
                raise LeukemiaCoreError("Pick the cell to merge with.")
            made = state.merge(session, [(field_index, cell_id), (field_index, other)])
            open_cell(made.key)
            flash(f"Cells {cell_id} and {other} merged into cell {made.cell_id}.", "success")
        else:
            back = [session.cell(*key) for key in state.undo_reshape(session, field_index, cell_id)]
            open_cell(back[0].key)
            words = "; ".join(f"cell {c.cell_id} {LABEL_WORDS[c.label].lower()}, "
                              f"{'reviewed' if c.reviewed else 'to review'}" for c in back)  # fmt: skip
            flash(
                f"Undone: cell {cell_id} and the cells made with it are gone; back as they "
                f"were: {words}.",
                "success",
            )
    except LeukemiaCoreError as error:
        flash(str(error))
        flash(f"Not done: {error}", "toast")  # seen beside the Apply button, far below the top
    st.rerun()
