"""Outlines that may hold several pressed cells: sent to a reviewer, never split unasked.

Pressed blasts with scant cytoplasm can fuse into one outline that no cut of the segmentation
parts (:mod:`leukemia_core.clumps` needs a pale line or a neck). Counted as it is, such an outline
is one blast where there are two or three. In a crowded field the field's own cells say what one
cell measures, and a clump of pressed cells is several times that, nearly all nucleus, and
notched where its cells meet. Splitting such outlines automatically was tried and not kept (it
cut large single cells of other labs' fields, README); flagging them costs a reviewer a look.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from leukemia_core.clumps import solidity
from leukemia_core.types import Cell, CellLabel


@dataclass(frozen=True)
class ClumpRule:
    """When an outline is flagged as a possible clump of pressed cells.

    The values are the thirteenth session's (README, "Fused clumps split automatically"),
    kept as they were when flagging replaced splitting.
    """

    min_field_cells: int = 6  # whole white cells in the field: fewer say too little
    min_size_ratio: float = 2.2  # outline area over the median whole cell's of its field
    min_nucleus_fraction: float = 0.8  # pressed blasts are nearly all nucleus
    max_solidity: float = 0.94  # notched where the cells meet (a single cell fills its hull)


DEFAULT_CLUMP_RULE = ClumpRule()


def possible_clumps(cells: Sequence[Cell], rule: ClumpRule = DEFAULT_CLUMP_RULE) -> list[Cell]:
    """The cells of one field whose outline may hold several pressed cells.

    Only whole cells count (not cut by the border, not replaced by a reviewer's split or
    merge); a field with fewer than ``rule.min_field_cells`` of them gets no flag.
    """
    whole = [c for c in cells if not c.touches_border and c.cell_area_px > 0
             and c.label != CellLabel.REPLACED]  # fmt: skip
    if len(whole) < rule.min_field_cells:
        return []
    typical = float(np.median([c.cell_area_px for c in whole]))
    return [
        c for c in whole
        if c.cell_area_px >= rule.min_size_ratio * typical
        and c.nucleus_area_px >= rule.min_nucleus_fraction * c.cell_area_px
        and solidity(c.mask()) <= rule.max_solidity
    ]  # fmt: skip


CLUMP_NOTE_END = "split it on the Review page (Correct an outline)."
DECIDED_WORDS = " A reviewer has decided it since (see the audit trail, of this version or of the one it was reopened from)."


def undecided_clumps(cells: Sequence[Cell]) -> list[Cell]:
    """The flagged outlines of one field (:func:`possible_clumps`) that no reviewer has split,
    merged or labelled yet."""
    return [c for c in possible_clumps(cells) if c.model_label == CellLabel.UNCERTAIN
            and not c.origin and not c.reviewed]  # fmt: skip


def field_notes_now(notes: Sequence[str], cells: Sequence[Cell]) -> tuple[str, ...]:
    """A field's notes as they read now: the possible-clump note says when a reviewer has
    decided every flagged outline since (a signed report told readers to split clumps that
    had been split)."""
    decided = any(n.endswith(CLUMP_NOTE_END) for n in notes) and not undecided_clumps(cells)
    return tuple(n + DECIDED_WORDS if decided and n.endswith(CLUMP_NOTE_END) else n
                 for n in notes)  # fmt: skip


def clump_note(cell_ids: Collection[int]) -> str:
    """The field note naming the flagged cells."""
    ids = sorted(cell_ids)
    which = f"Cell {ids[0]} is" if len(ids) == 1 else (
        f"Cells {', '.join(map(str, ids[:-1]))} and {ids[-1]} are")  # fmt: skip
    return (
        f"{which} several times the size of this field's other white cells, nearly all nucleus "
        "and notched: possibly two or more cells pressed together, so sent to review. If so, "
        + CLUMP_NOTE_END
    )
