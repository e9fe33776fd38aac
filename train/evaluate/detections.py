"""Per-field detection outcomes: which expert cells were missed, what was found that is not one.

A reviewer opens the CSV (``python -m train.evaluate wbc|smears ... --misses FILE``) beside the
fields to see each miss and false detection with its position and a reason, instead of a single
recall figure.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from leukemia_core.types import Segmentation

MISSED = "missed"
FALSE_DETECTION = "false detection"
# A detection smaller than this (in red-cell areas) is platelet-sized.
PLATELET_SIZED = 0.5


@dataclass(frozen=True)
class Outcome:
    """One expert cell the segmentation missed, or one detection no expert marked."""

    dataset: str
    field: str
    kind: str
    x: float
    y: float
    reason: str


def box_outcomes(dataset, field, seg: Segmentation, points, boxes, assigned) -> list[Outcome]:
    """Missed boxes and unmatched detections of one box-annotated field."""
    out = []
    matched_boxes = set(assigned.values())
    for index, box in enumerate(boxes):
        if index in matched_boxes:
            continue
        inside = [i for i, (x, y) in enumerate(points) if box.contains(x, y)]
        if inside:
            reason = "its detection was given to an overlapping box (fused with a neighbour?)"
        elif _overlaps(seg.cell_labels, box):
            reason = "outlined, but the outline's centre lies outside the box (merged or cut)"
        else:
            reason = "not detected (faint, small, or a stain the rules do not cover)"
        out.append(Outcome(dataset, field, MISSED, *_centre(box), reason))
    for index, (x, y) in enumerate(points):
        if index not in assigned:
            out.append(Outcome(dataset, field, FALSE_DETECTION, x, y, _why_false(seg, index + 1)))
    return out


def point_outcomes(dataset, field, seg: Segmentation, points) -> list[Outcome]:
    """Expert centroids (ALL-IDB1 blasts) that fall in no detected cell, or share one."""
    labels = seg.cell_labels
    taken: set[int] = set()
    out = []
    for x, y in points:
        row = min(max(round(y), 0), labels.shape[0] - 1)
        col = min(max(round(x), 0), labels.shape[1] - 1)
        cell = int(labels[row, col])
        if cell and cell not in taken:
            taken.add(cell)
            continue
        if cell:
            reason = "inside a cell already holding another expert blast (fused clump)"
        else:
            reason = "in no detected cell (faint, small, or cut off at the border)"
        out.append(Outcome(dataset, field, MISSED, float(x), float(y), reason))
    return out


def write_outcomes(path: Path, outcomes: list[Outcome]) -> None:
    """The outcomes as a CSV with a header row (written even when there are none)."""
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, [f.name for f in fields(Outcome)])
        writer.writeheader()
        writer.writerows(asdict(o) for o in outcomes)


def _why_false(seg: Segmentation, cell_id: int) -> str:
    if cell_id in seg.border_cell_ids:
        return "cell cut by the field border"
    red_cell_area = np.pi * seg.red_cell_diameter_px**2 / 4
    area = float((seg.cell_labels == cell_id).sum()) / max(red_cell_area, 1.0)
    if area < PLATELET_SIZED:
        return f"platelet-sized ({area:.2f} red-cell areas): platelet clump or debris?"
    return "no expert box here: an unannotated white cell, a stained artefact, or a red cell"


def _overlaps(labels: np.ndarray, box) -> bool:
    rows = slice(max(0, int(box.y0)), max(0, int(box.y1) + 1))
    cols = slice(max(0, int(box.x0)), max(0, int(box.x1) + 1))
    return bool(labels[rows, cols].any())


def _centre(box) -> tuple[float, float]:
    return (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
