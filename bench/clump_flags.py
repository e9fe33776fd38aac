"""How often the possible-clump flag (``leukemia_core.pressed``) fires; prints JSON.

Usage: ``python bench/clump_flags.py --data ../shared/data [--datasets all_idb1 bccd ...]``.
Segmentation and cropping only (no model). For ALL-IDB1 each flagged outline lists the expert
blast centroids inside it; for every dataset, how many flagged cells lie in fields that fail a
quality check (whose cells all go to review anyway).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukemia_core.cropping import crop_cells
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import read_for_analysis
from leukemia_core.pressed import possible_clumps
from leukemia_core.quality import check_field
from leukemia_core.segmentation import segment_wbc

IMAGES = {"all_idb1": "all_idb1/images", "bccd": "bccd/images",
          "deepbionet": "deepbionet/images", "aria": "aria"}  # fmt: skip
SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def expert_blasts_inside(cell, path: Path, data: Path, scale: float) -> int:
    xyc = data / "all_idb1" / "xyc" / f"{path.stem}.xyc"
    if not xyc.is_file() or not xyc.stat().st_size:
        return 0
    mask, (x0, y0, _, _) = cell.mask(), cell.bbox
    inside = 0
    for x, y in np.loadtxt(xyc, ndmin=2) * scale:
        row, col = round(y) - y0, round(x) - x0
        inside += 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and bool(mask[row, col])
    return inside


def measure(name: str, data: Path) -> dict:
    paths = sorted(p for p in (data / IMAGES[name]).rglob("*") if p.suffix.lower() in SUFFIXES)
    n_fields = n_cells = in_warned = 0
    flagged = []
    for path in paths:
        try:
            image = read_for_analysis(path)
        except LeukemiaCoreError:
            continue  # damaged files: the datasets' own READMEs list them
        segmentation = segment_wbc(image.rgb)
        cells = crop_cells(image.rgb, segmentation)
        n_fields, n_cells = n_fields + 1, n_cells + len(cells)
        hits = possible_clumps(cells)
        if hits and check_field(image.rgb, segmentation):
            in_warned += len(hits)
        for cell in hits:
            item = {"field": str(path.relative_to(data)), "cell": cell.cell_id}
            if name == "all_idb1":
                item["expert_blasts_inside"] = expert_blasts_inside(cell, path, data, image.scale)
            flagged.append(item)
    return {"fields": n_fields, "cells": n_cells, "flagged": len(flagged),
            "fields_flagged": len({f["field"] for f in flagged}),
            "flagged_in_fields_failing_quality": in_warned, "items": flagged}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="../shared/data")
    parser.add_argument("--datasets", nargs="+", choices=list(IMAGES), default=list(IMAGES))
    args = parser.parse_args()
    print(json.dumps({name: measure(name, args.data) for name in args.datasets}, indent=1))


if __name__ == "__main__":
    main()
