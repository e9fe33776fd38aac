"""The cell gallery: every cell by class, most blast-like first, with one-click reclassification.

Each card shows the cell among its neighbours with its mask outline, next to the classifier's
crop (or its Grad-CAM overlay), and a segmented control keyed ``relabel_<field>_<cell>``.
"""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from leukemia_core.counting import CellLabel
from leukemia_core.errors import LeukemiaCoreError, PossibleClumpError
from leukemia_core.imaging import side_by_side
from leukemia_core.review import REVIEW_CHOICES, Review
from leukemia_core.types import Cell
from ui import state
from ui.common import LABEL_NAMES, flash, label_rgb

PAGE_SIZE = 40
_NO_CROP = np.zeros((8, 8, 3), np.uint8)  # cases stored without crops
SHORT_NAMES = {
    CellLabel.BLAST: "Blast",
    CellLabel.NORMAL: "Normal",
    CellLabel.NOT_WBC: "Not WBC",
    CellLabel.EXCLUDED: "Exclude",
}
CHOICES = tuple(label.value for label in REVIEW_CHOICES)


def relabel_key(cell: Cell) -> str:
    return f"{state.RELABEL_PREFIX}{cell.field_index}_{cell.cell_id}"


def _shown_value(session: Review, cell: Cell) -> str | None:
    label = session.cell(*cell.key).label
    return label.value if label.value in CHOICES else None


def _on_relabel(field_index: int, cell_id: int) -> None:
    session = state.current()
    if session is None:
        return
    cell = session.cell(field_index, cell_id)
    key = relabel_key(cell)
    chosen = st.session_state.get(key)
    if chosen is None:  # a click on the option already shown: keep the label, and accept it
        st.session_state[key] = _shown_value(session, cell)
        if cell.reviewed or cell.label not in REVIEW_CHOICES:
            return
    try:
        if chosen is None:  # the model's call, not reviewed yet: this click says "yes, that"
            state.accept(session, [cell.key])
            return
        state.relabel(session, field_index, cell_id, chosen)
    except LeukemiaCoreError as error:  # a possible clump: the same choice again confirms
        flash(str(error), "warning" if isinstance(error, PossibleClumpError) else "error")
        st.session_state[key] = _shown_value(session, cell)


def _caption(session: Review, cell: Cell) -> str:
    p = "—" if cell.blast_probability is None else f"{cell.blast_probability:.2f}"
    field = session.fields[cell.field_index].name if session.mode == "cells" else (
        f"field {cell.field_index + 1}")  # fmt: skip
    text = f"{field} · cell {cell.cell_id} · P(blast) {p}"
    label = cell.label
    if label != cell.model_label:
        text += f" · model: {LABEL_NAMES[cell.model_label]} → {LABEL_NAMES[label]}"
    else:
        text += f" · model: {LABEL_NAMES[cell.model_label]}"
    if because := session.sent_to_review_because(cell):
        text += f" ({because})"
    if label != CellLabel.BORDER:
        text += " · ✓ reviewed" if cell.reviewed else " · not reviewed yet"
    return text


def _on_accept(keys: tuple[tuple[int, int], ...]) -> None:
    session = state.current()
    if session is None:
        return
    try:
        n = state.accept(session, list(keys))
        flash(f"Accepted the label of {n} cell{'s' if n != 1 else ''}.", "success")
    except LeukemiaCoreError as error:
        flash(str(error))


def show_gallery(
    session: Review,
    *,
    right_images: dict[tuple[int, int], np.ndarray],
    editable: bool,
    columns: int = 4,
) -> None:
    """Render every gallery section.

    Args:
        session: The sample under review.
        right_images: Image shown beside each cell's view (heatmap overlay); the classifier crop
            for cells not in it.
        editable: Whether the reclassify controls are enabled.
        columns: Cards per row on a wide screen.
    """
    for group in session.groups():
        if group.key != "uncertain" and not group.cells:
            continue
        title = f"{group.title} ({len(group.cells)})"
        if group.key == "uncertain" and group.cells:  # the section keeps them once labelled
            waiting = sum(c.label == CellLabel.UNCERTAIN for c in group.cells)
            title = f"{group.title} ({len(group.cells)}; {waiting or 'none'} still to label)"
        if group.key == "left_out":
            container = st.expander(title, expanded=False)
        else:
            st.subheader(title, divider="gray")
            container = st.container()
        with container:
            if not group.cells:
                st.success("No uncertain cells are waiting for review.")
                continue
            cells = _page(group.key, group.cells)
            open_keys = tuple(c.key for c in cells
                              if not c.reviewed and c.label not in (CellLabel.UNCERTAIN,
                                                                    CellLabel.BORDER))  # fmt: skip
            if open_keys:
                st.button(
                    f"Accept the label of the {len(open_keys)} unreviewed cell"
                    f"{'s' if len(open_keys) != 1 else ''} shown here",
                    key=f"accept_{group.key}", on_click=_on_accept, args=(open_keys,),
                    disabled=not editable, icon=":material/done_all:",
                    help="Counts as reviewing them: do it after looking at each one.",
                )  # fmt: skip
            grid = st.grid(columns, min_column_width=250, border=True)
            for cell in cells:
                with grid.cell():
                    _card(session, cell, right_images.get(cell.key), editable)


def _page(group_key: str, cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    n_pages = math.ceil(len(cells) / PAGE_SIZE)
    if n_pages <= 1:
        return cells
    page = st.number_input(
        f"Page (of {n_pages}, {PAGE_SIZE} cells each)", min_value=1, max_value=n_pages, value=1,
        key=f"page_{group_key}",
    )  # fmt: skip
    start = (int(page) - 1) * PAGE_SIZE
    return cells[start : start + PAGE_SIZE]


def _card(session: Review, cell: Cell, right: np.ndarray | None, editable: bool) -> None:
    shown = right if right is not None else cell.crop if cell.crop is not None else _NO_CROP
    colour = label_rgb(cell.label)
    st.image(side_by_side([session.view(cell, colour), shown]),
             caption=_caption(session, cell), width="stretch")  # fmt: skip
    key = relabel_key(cell)
    wanted = _shown_value(session, cell)
    if st.session_state.get(key, "unset") != wanted:
        st.session_state[key] = wanted
    st.segmented_control(
        "Reclassify",
        options=CHOICES,
        format_func=lambda value: SHORT_NAMES[CellLabel(value)],
        key=key,
        on_change=_on_relabel,
        args=cell.key,
        disabled=not editable,
        label_visibility="collapsed",
        width="stretch",
        wrap=True,
    )
