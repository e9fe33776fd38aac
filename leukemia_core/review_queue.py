"""The order a reviewer meets the cells in (the gallery's sections and the cell-by-cell queue),
and the counts shown beside them (:class:`ReviewTallies`, mixed into the review).

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

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from leukemia_core.counting import count_cells, provisional_text
from leukemia_core.errors import ReviewError
from leukemia_core.jpeg_check import is_damaged
from leukemia_core.pressed import undecided_clumps
from leukemia_core.types import MODE_CELLS, BlastCount, Cell, CellLabel

LEFT_OUT = (CellLabel.EXCLUDED, CellLabel.NOT_WBC, CellLabel.BORDER)
SECTIONS = (
    ("uncertain", "Left uncertain by the model", (CellLabel.UNCERTAIN,)),
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


def _order(cell: Cell) -> tuple[bool, float, int, int]:
    """Most blast-like first; a reviewer's pieces (a split's, a merge's) before every other
    cell, side by side in the order they were made, so labelling one leads to the next."""
    if cell.origin:
        return (False, 0.0, cell.field_index, cell.cell_id)
    p = -1.0 if cell.blast_probability is None else cell.blast_probability
    return (True, -p, cell.field_index, cell.cell_id)


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


class ReviewTallies:
    """Finding cells, counts and order on :class:`leukemia_core.review.Review` (mixed in): all
    read the cells' labels, so nothing can drift out of step with them."""

    def cells_of(self, keys: Iterable) -> list[Cell]:
        """The cells of ``keys``, each a ``(field_index, cell_id)`` pair.

        Raises:
            ReviewError: A key that is no pair, or names no cell of this sample.
        """
        keys = list(keys)
        if bad := [k for k in keys if not isinstance(k, tuple | list) or len(k) != 2]:
            raise ReviewError(f"Cells are named by (field index, cell id) pairs, got {bad[0]!r}; "
                              "pick cells shown in the gallery.")  # fmt: skip
        return [self.cell(*key) for key in keys]

    def cell(self, field_index: int, cell_id: int) -> Cell:
        """The cell with this key.

        Raises:
            ReviewError: No such cell in this sample.
        """
        try:
            return self._cells[(int(field_index), int(cell_id))]
        except (KeyError, TypeError, ValueError):
            raise ReviewError(
                f"This sample has no cell {cell_id!r} in field {field_index!r}; pick a cell "
                "shown in the gallery."
            ) from None

    def field_cells(self, field_index: int) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.field_index == field_index)

    @property
    def n_uncertain(self) -> int:
        return sum(c.label == CellLabel.UNCERTAIN for c in self._cells.values())

    @property
    def n_unreviewed(self) -> int:
        """Cells no reviewer has relabelled or accepted yet (border cells need no review)."""
        return sum(c.awaits_review for c in self._cells.values())

    @property
    def provisional(self) -> str | None:
        """What the counts are worth while cells wait for review (None once all are reviewed)."""
        return provisional_text(self.cells)

    @property
    def n_changed(self) -> int:
        """Cells whose current label differs from the machine's."""
        return sum(c.changed_by_reviewer for c in self.cells)

    def count(self, field_index: int | None = None) -> BlastCount:
        """Blast count from the current labels, of one field or (None) the whole sample."""
        return count_cells(self._scope(field_index), single_cells=self.mode == MODE_CELLS)

    def model_count(self, field_index: int | None = None) -> BlastCount:
        """Blast count from the machine's labels, before review."""
        return count_cells(self._scope(field_index), single_cells=self.mode == MODE_CELLS,
                           model=True)  # fmt: skip

    def field_counts(self) -> tuple[BlastCount, ...]:
        return tuple(self.count(f.index) for f in self.fields)

    def tally(self, *, model: bool = False) -> Counter[str]:
        """Cells per label (current labels, or the machine's with ``model=True``)."""
        return Counter((c.model_label if model else c.label).value for c in self.cells)

    def _scope(self, field_index: int | None) -> tuple[Cell, ...]:
        return self.cells if field_index is None else self.field_cells(field_index)

    def groups(self) -> tuple[CellGroup, ...]:
        """Gallery sections by the model's call: uncertain first, then blasts, normal cells,
        left out; most blast-like first (see :mod:`leukemia_core.review_queue`)."""
        return gallery_groups(self.cells)

    def queue(self) -> tuple[tuple[int, int], ...]:
        """Keys of the cells to review one by one, in gallery order (no border cells)."""
        return review_queue(self.cells)

    def next_to_review(self, after: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The next cell after ``after`` in the queue still waiting for review (None: done)."""
        waiting = [c.key for c in self.cells if c.awaits_review]
        return next_to_review(self.queue(), waiting, after)

    def sent_to_review_because(self, cell: Cell) -> str:
        """Why the model's call of an uncertain cell is "uncertain" when its probability alone
        would have decided it: its field failed a quality check or was decoded damaged, its
        field or the whole sample differs from the training data, or its outline may hold
        several pressed cells ('' otherwise, or for other labels)."""
        if cell.model_label != CellLabel.UNCERTAIN:
            return ""
        if cell.origin:  # the request to label it goes once it is labelled
            return f"a reviewer made it ({cell.origin})" + (
                "" if cell.reviewed else ": label it yourself"
            )
        field = self.fields[cell.field_index]
        if field.quality:
            return "its field failed a quality check (" + ", ".join(
                w.check for w in field.quality) + ")"  # fmt: skip
        if is_damaged(field.notes):
            return "its image file is damaged (see the field's notes)"
        if field.domain is not None and field.domain.warned:
            return "its field differs from the training data"
        if self.domain is not None and self.domain.warned:
            return "the sample differs from the training data"
        if self.is_possible_clump(cell):
            return "it may be two or more cells pressed together: split it if so"
        return ""

    def is_possible_clump(self, cell: Cell) -> bool:
        """True for an outline of the segmentation flagged as possibly several pressed cells
        (:mod:`leukemia_core.pressed`) while no reviewer has decided it."""
        return any(c.key == cell.key for c in undecided_clumps(self._scope(cell.field_index)))
