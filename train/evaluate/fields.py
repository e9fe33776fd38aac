"""ALL-IDB2's expert outlines judged in the ALL-IDB1 fields they were cut from.

``python -m train.evaluate fields --all-idb1 DIR --all-idb2 DIR``: the whole-field segmentation
against the centre-cell masks of ALL-IDB2, placed back at their positions (``source_fields.csv``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from leukemia_core.io import read_image
from leukemia_core.scale import estimate_red_cell_diameter
from train.evaluate.segmentation import (
    Progress,
    _segment,
    _truth_masks,
    dice,
    image_files,
    share_within,
)


def read_source_fields(root: Path) -> dict[str, tuple[str, int, int]]:
    """ALL-IDB2 ``source_fields.csv``: crop file name -> (field file name, centre x, centre y)."""
    path = root / "source_fields.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as stream:
        return {
            row["crop"]: (row["idb1_field"], int(float(row["x"])), int(float(row["y"])))
            for row in csv.DictReader(stream)
        }


def evaluate_cells_in_fields(
    all_idb1: Path, all_idb2: Path, params=None, progress: Progress | None = None
) -> dict:
    """Whole-field segmentation of the cells ALL-IDB2 experts outlined, found in their fields.

    Each ALL-IDB2 centre-cell mask is placed back at its position in the ALL-IDB1 field it was
    cut from (``source_fields.csv``), and the field's segmentation is judged there: the Dice of
    the detected cell that overlaps it most, and whether the cell fell apart into pieces (two or
    more detected cells that each lie mostly inside the expert outline and hold at least a tenth
    of it). A split blast is counted twice, so this is the failure that inflates blast counts.

    The red-cell scale, which sizes every crop, is checked too: the share of fields whose
    estimate lies within 25% of the median of fields of the same size (one camera, one
    magnification), and the share of crops whose own estimate lies within 25% of their field's.
    """
    sources = read_source_fields(all_idb2)
    by_field: dict[str, list[tuple[Path, int, int]]] = {}
    for crop in image_files(all_idb2 / "images"):
        if crop.name in sources and (all_idb1 / "images" / sources[crop.name][0]).is_file():
            field, x, y = sources[crop.name]
            by_field.setdefault(field, []).append((crop, x, y))
    dices, split, missed = [], 0, 0
    field_scale, crop_scale = {}, []
    for i, (field, crops) in enumerate(sorted(by_field.items())):
        segmentation = _segment(all_idb1 / "images" / field, params)
        labels = segmentation.cell_labels
        field_scale[field] = (labels.shape, segmentation.red_cell_diameter_px)
        area = np.bincount(labels.ravel(), minlength=labels.max() + 1)
        for crop, x, y in crops:
            own = estimate_red_cell_diameter(read_image(crop).rgb) or 0.0
            crop_scale.append(own / segmentation.red_cell_diameter_px)
            mask_path = next((all_idb2 / "masks").glob(f"{crop.stem}.*"), None)
            if mask_path is None:
                continue
            truth = _place(_truth_masks(mask_path)[1], x, y, labels.shape)
            overlap = np.bincount(labels[truth], minlength=labels.max() + 1)
            overlap[0] = 0
            if overlap.max() == 0:
                missed += 1
                dices.append(0.0)
                continue
            pieces = (overlap >= 0.5 * np.maximum(area, 1)) & (overlap >= 0.1 * truth.sum())
            split += int(pieces.sum() >= 2)
            dices.append(dice(labels == int(overlap.argmax()), truth))
        if progress:
            progress(i + 1, len(by_field), field)
    n = len(dices)
    camera = {shape: np.median([d for s, d in field_scale.values() if s == shape])
              for shape, _ in field_scale.values()}  # fmt: skip
    return {
        "field_scale_within_25pct": share_within(
            [d / camera[shape] for shape, d in field_scale.values()], 1 / 1.25, 1.25
        ),
        "crop_scale_within_25pct": share_within(crop_scale, 1 / 1.25, 1.25),
        "cell_dice_in_field": float(np.mean(dices)) if n else None,
        "split_rate": split / n if n else None,
        "n_split": split,
        "n_missed": missed,
        "n_cells": n,
        "n_fields": len(by_field),
    }


def _place(mask: np.ndarray, x: int, y: int, shape: tuple[int, int]) -> np.ndarray:
    """A crop-sized mask centred at ``(x, y)`` in a field of ``shape`` (clipped at the edges)."""
    out = np.zeros(shape, dtype=bool)
    top, left = y - mask.shape[0] // 2, x - mask.shape[1] // 2
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(shape[0], top + mask.shape[0]), min(shape[1], left + mask.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = mask[r0 - top : r1 - top, c0 - left : c1 - left]
    return out
