"""Possible clumps of pressed cells: flagged for review by size, nucleus and notches.

Synthesized outlines (discs and pairs of pressed discs) for the rule, a real ALL-IDB1 field for
the pipeline (it needs ../shared/data).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EveryCellABlast

from leukemia_core.imaging import mask_outline, read_for_analysis
from leukemia_core.pipeline import analyze
from leukemia_core.pressed import DECIDED_WORDS, clump_note, field_notes_now, possible_clumps
from leukemia_core.types import Cell, CellLabel


def discs(centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:200, :300]
    return np.any([(xx - x) ** 2 + (yy - y) ** 2 <= radius**2 for x, y in centres], axis=0)


def cell(cell_id: int, mask: np.ndarray, nucleus_fraction: float = 0.9, **kw) -> Cell:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    area = int(mask.sum())
    return Cell(cell_id, (x0, y0, x1, y1), (float(xs.mean()), float(ys.mean())),
                outline=mask_outline(mask[y0:y1, x0:x1], (x0, y0)), cell_area_px=area,
                nucleus_area_px=int(nucleus_fraction * area), model_label="blast", **kw)  # fmt: skip


def field_of(extra: list[Cell], n_single: int = 7) -> list[Cell]:
    singles = [cell(i, discs([(40 + 30 * i, 40)], 12)) for i in range(1, n_single + 1)]
    return singles + extra


def test_two_pressed_blasts_in_one_outline_are_flagged():
    pair = cell(20, discs([(100, 130), (127, 130)], 16))  # 2 discs of 16 px: notched, 3.2x
    assert [c.cell_id for c in possible_clumps(field_of([pair]))] == [20]
    three = cell(21, discs([(200, 130), (226, 130), (213, 152)], 15))
    assert [c.cell_id for c in possible_clumps(field_of([pair, three]))] == [20, 21]


def test_large_round_cells_pale_clumps_sparse_fields_and_border_cells_are_not():
    big_round = cell(20, discs([(100, 130)], 24))  # 4x the area, but fills its hull
    pale = cell(21, discs([(200, 130), (227, 130)], 16), nucleus_fraction=0.5)  # a neutrophil pair?
    pair = cell(22, discs([(100, 170), (127, 170)], 16))
    assert possible_clumps(field_of([big_round, pale])) == []
    assert possible_clumps(field_of([pair], n_single=4)) == []  # 5 whole cells say too little
    cut = cell(22, discs([(100, 170), (127, 170)], 16), touches_border=True)
    assert possible_clumps(field_of([cut])) == []
    replaced = cell(22, discs([(100, 170), (127, 170)], 16), label=CellLabel.REPLACED)
    assert possible_clumps(field_of([replaced])) == []  # a reviewer already split it


def test_the_note_names_the_cells():
    assert clump_note([6]).startswith("Cell 6 is several times the size")
    assert clump_note([9, 3, 12]).startswith("Cells 3, 9 and 12 are")
    assert "split it on the Review page" in clump_note([6])


@pytest.mark.data
def test_a_fused_clump_of_two_expert_blasts_goes_to_review_with_its_reason(shared_data):
    from leukemia_core.review import Review

    path = shared_data / "all_idb1" / "images" / "Im013_1.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    analysis = analyze([read_for_analysis(path)], EveryCellABlast())
    (field,) = analysis.fields
    assert not field.quality  # a sharp, well-stained field: only the clump goes to review
    flagged = possible_clumps(analysis.cells)
    assert len(flagged) == 1  # the outline around 2 expert blasts (README, ALL-IDB1 misses)
    (clump,) = flagged
    assert clump.label == CellLabel.UNCERTAIN and clump.blast_probability == 0.95
    others = [c for c in analysis.cells if c.key != clump.key and not c.touches_border]
    assert others and {c.label for c in others} == {CellLabel.BLAST}
    assert clump_note([clump.cell_id]) in field.notes
    xyc = np.loadtxt(shared_data / "all_idb1" / "xyc" / "Im013_1.xyc", ndmin=2) * field.scale
    mask, (x0, y0, _, _) = clump.mask(), clump.bbox
    inside = [mask[int(y) - y0, int(x) - x0] for x, y in xyc
              if 0 <= int(y) - y0 < mask.shape[0] and 0 <= int(x) - x0 < mask.shape[1]]  # fmt: skip
    assert sum(inside) == 2
    because = Review(analysis, sample_id="S-1").sent_to_review_because(clump)
    assert because == "it may be two or more cells pressed together: split it if so"


def test_the_clump_note_says_when_a_reviewer_has_decided_it():
    """A signed report still said "If so, split it on the Review page" of split clumps."""
    from dataclasses import replace

    pair = cell(20, discs([(100, 130), (127, 130)], 16), label=CellLabel.UNCERTAIN)
    pair = replace(pair, model_label=CellLabel.UNCERTAIN)
    notes = ("downscaled 2x", clump_note([20]))
    assert field_notes_now(notes, field_of([pair])) == notes  # still waiting
    decided = [replace(pair, label=CellLabel.BLAST, reviewed=True)]
    now = field_notes_now(notes, field_of(decided))
    assert now[0] == notes[0] and now[1] == notes[1] + DECIDED_WORDS
    split = [replace(pair, label=CellLabel.REPLACED)]  # its pieces replace it
    assert field_notes_now(notes, field_of(split))[1].endswith(DECIDED_WORDS)
