"""The order a reviewer meets the cells in: the gallery's sections and the cell-by-cell queue.

Both follow the model's call, never the current label, so a cell stays where it was after a
relabel: the next cell never slides under the reviewer's pointer, and the queue does not
reshuffle while someone walks through it. The uncertain cells come first; within a section
the most blast-like cell comes first.

Example:
    >>> from leukemia_core.types import Cell, CellLabel
    >>> def cell(i, label, p):
    ...     label = CellLabel(label)
    ...     return Cell(i, (0, 0, 9, 9), (4.0, 4.0), label=label, model_label=label,
    ...                 blast_probability=p)
    >>> cells = [cell(1, "normal", 0.1), cell(2, "blast", 0.9), cell(3, "uncertain", 0.5),
    ...          cell(4, "border", 0.2)]
    >>> review_queue(cells)
    ((0, 3), (0, 2), (0, 1))
    >>> step(review_queue(cells), (0, 3), +1)
    (0, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from leukemia_core.types import Cell, CellLabel

LEFT_OUT = (CellLabel.EXCLUDED, CellLabel.NOT_WBC, CellLabel.BORDER)
SECTIONS = (
    ("uncertain", "Uncertain: the model could not decide, review these first",
     (CellLabel.UNCERTAIN,)),
    ("blast", "Called blast by the model", (CellLabel.BLAST,)),
    ("normal", "Called normal by the model", (CellLabel.NORMAL,)),
    ("left_out", "Left out of the count by the machine", LEFT_OUT),
)  # fmt: skip

Key = tuple[int, int]


@dataclass(frozen=True)
class CellGroup:
    """Cells of one gallery section, most blast-like first."""

    key: str
    title: str
    cells: tuple[Cell, ...]


def _order(cell: Cell) -> tuple[float, int, int]:
    p = -1.0 if cell.blast_probability is None else cell.blast_probability
    return (-p, cell.field_index, cell.cell_id)


def gallery_groups(cells: Iterable[Cell]) -> tuple[CellGroup, ...]:
    """The gallery's sections by the model's call (uncertain, blast, normal, left out)."""
    cells = tuple(cells)
    return tuple(
        CellGroup(key, title, tuple(sorted((c for c in cells if c.model_label in labels),
                                           key=_order)))
        for key, title, labels in SECTIONS
    )  # fmt: skip


def review_queue(cells: Iterable[Cell]) -> tuple[Key, ...]:
    """Keys of the cells to review one by one, in gallery order; cells cut by the field's
    border are left out (they are never counted, so they need no review)."""
    return tuple(
        c.key for group in gallery_groups(cells) for c in group.cells
        if c.label != CellLabel.BORDER
    )  # fmt: skip


def step(queue: Sequence[Key], key: Key | None, offset: int) -> Key | None:
    """The cell ``offset`` places from ``key`` in the queue, held at its ends (the first cell
    when ``key`` is not in it; None for an empty queue)."""
    if not queue:
        return None
    if key not in queue:
        return queue[0]
    return queue[min(len(queue) - 1, max(0, queue.index(key) + offset))]


def next_to_review(queue: Sequence[Key], waiting: Iterable[Key], after: Key | None) -> Key | None:
    """The first cell after ``after`` (wrapping round) that still waits for review; None when
    every cell of the queue has been reviewed."""
    waiting = set(waiting)
    start = queue.index(after) + 1 if after in queue else 0
    for key in (*queue[start:], *queue[:start]):
        if key in waiting:
            return key
    return None
