"""Field quality checks on degraded real fields: how often they fire, and what detection loses.

Usage: ``python bench/quality.py [--all-idb1 DIR] [--deepbionet DIR] [--per-set N]``.

Takes ``N`` fields of each annotated set (ALL-IDB1 blast fields: expert blast centroids;
deepbionet: white-cell boxes), evenly spread, none of them used to set the limits
(:func:`calibration_field`). Each field is degraded synthetically at several
strengths (blur in red-cell diameters, JPEG quality, colour cast, rescaling, exposure); for each
degradation the script prints the detection recall against the clean fields and the share of
fields that get any quality warning. A degradation that cuts recall by more than 5 points
should be flagged in >= 95% of fields; clean fields in <= 5%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukemia_core.io import read_image
from leukemia_core.quality import check_field
from leukemia_core.resampling import resize
from leukemia_core.scale import estimate_red_cell_diameter
from leukemia_core.segmentation import segment_wbc
from train.evaluate.segmentation import (
    assign_boxes,
    centroids,
    labels_swapped,
    match_points_to_cells,
    read_voc_boxes,
    read_xyc,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BLUR = (0.05, 0.1, 0.15, 0.2, 0.3)  # Gaussian sigma, red-cell diameters
JPEG = (30, 10)
# Channel gains (R, G, B): a yellow lamp, a blue lamp, a green camera, a magenta filter.
CASTS = {"yellow": (1.0, 0.95, 0.7), "blue": (0.7, 0.9, 1.0), "green": (0.8, 1.0, 0.8),
         "magenta": (1.0, 0.75, 1.0)}  # fmt: skip
CAST_STRENGTHS = (0.5, 1.0, 1.5)  # 0 = none, 1 = the gains above, 1.5 = stronger
RESCALE = (0.5, 0.25, 2.0)
EXPOSURE = (0.7, 0.5, 0.3)  # the picture's brightness times this: one to two stops under


def degradations(rgb: np.ndarray, diameter: float) -> dict[str, np.ndarray]:
    out = {"clean": rgb}
    for sigma in BLUR:
        out[f"blur {sigma}"] = cv2.GaussianBlur(rgb, (0, 0), sigma * diameter)
    for quality in JPEG:
        _, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out[f"jpeg {quality}"] = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()
    for name, gains in CASTS.items():
        for strength in CAST_STRENGTHS:
            g = 1.0 - strength * (1.0 - np.asarray(gains))
            out[f"cast {name} {strength}"] = np.clip(rgb * np.clip(g, 0.05, 2), 0, 255).astype(
                np.uint8
            )
    for factor in RESCALE:
        out[f"rescale {factor}"] = resize(rgb, factor)
    for factor in EXPOSURE:
        out[f"exposure {factor}"] = np.rint(rgb * factor).astype(np.uint8)
    return out


def calibration_field(index: int) -> bool:
    """Whether the field at this position of its sorted folder helped set the limits (every
    3rd, and every 4th from the second, ALL-IDB1 field; every 10th, and every 15th from the
    sixth, BCCD or deepbionet field): such fields are never benched."""
    return index % 3 == 0 or index % 4 == 1 or index % 10 == 0 or index % 15 == 5


def fields(all_idb1: Path, deepbionet: Path, per_set: int):
    """``(name, rgb, truth)``: truth is ("points", [...]) or ("boxes", [...]) in field pixels."""
    blast_fields = []
    for index, path in enumerate(sorted((all_idb1 / "images").iterdir())):
        points = read_xyc(all_idb1 / "xyc" / f"{path.stem}.xyc")
        if points and not calibration_field(index):
            blast_fields.append((path, ("points", points)))
    boxed = []
    for index, path in enumerate(sorted((deepbionet / "images").iterdir())):
        xml = deepbionet / "annotations" / f"{path.stem}.xml"
        boxes = read_voc_boxes(xml)
        if (
            boxes
            and not calibration_field(index)
            and not labels_swapped(boxes, read_voc_boxes(xml, "RBC"))
        ):
            boxed.append((path, ("boxes", boxes)))
    for chosen in (blast_fields, boxed):
        for path, truth in chosen[:: max(1, len(chosen) // per_set)][:per_set]:
            yield path.name, read_image(path).rgb, truth


def found(segmentation, truth, factor: float) -> int:
    kind, items = truth
    if kind == "points":
        return match_points_to_cells([(x * factor, y * factor) for x, y in items],
                                     segmentation.cell_labels)  # fmt: skip
    points = [(x / factor, y / factor) for x, y in centroids(segmentation)]
    return len(assign_boxes(points, items))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-idb1", type=Path, default=DATA / "all_idb1")
    parser.add_argument("--deepbionet", type=Path, default=DATA / "deepbionet")
    parser.add_argument("--per-set", type=int, default=10)
    args = parser.parse_args(argv)
    totals: dict[str, dict] = {}
    for name, rgb, truth in fields(args.all_idb1, args.deepbionet, args.per_set):
        diameter = estimate_red_cell_diameter(rgb) or 50.0
        for kind, image in degradations(rgb, diameter).items():
            factor = image.shape[1] / rgb.shape[1]
            segmentation = segment_wbc(image)
            warnings = check_field(image, segmentation)
            row = totals.setdefault(kind, {"found": 0, "truth": 0, "flagged": 0, "fields": 0,
                                           "checks": {}})  # fmt: skip
            row["found"] += found(segmentation, truth, factor)
            row["truth"] += len(truth[1])
            row["fields"] += 1
            row["flagged"] += bool(warnings)
            for warning in warnings:
                row["checks"][warning.check] = row["checks"].get(warning.check, 0) + 1
        print(f"{name} done", file=sys.stderr)
    clean = totals["clean"]["found"] / totals["clean"]["truth"]
    result = {}
    for kind, row in totals.items():
        recall = row["found"] / row["truth"]
        result[kind] = {"recall": round(recall, 3), "recall_drop": round(clean - recall, 3),
                        "flagged_share": round(row["flagged"] / row["fields"], 3),
                        "checks_fired": row["checks"]}  # fmt: skip
    needed = [k for k, v in result.items() if v["recall_drop"] > 0.05 and not k.startswith("res")]
    summary = {
        "n_fields": totals["clean"]["fields"],
        "clean_flagged_share": result["clean"]["flagged_share"],
        "harmful_degradations": needed,
        "harmful_flagged_share_min": min(
            (result[k]["flagged_share"] for k in needed), default=None
        ),
    }
    print(json.dumps({"summary": summary, "degradations": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
