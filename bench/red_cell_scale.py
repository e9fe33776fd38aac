"""How well a field's red-cell size estimates match the expert red-cell boxes; prints JSON.

Usage: ``python bench/red_cell_scale.py --data ../shared/data``. For every BCCD-layout field
(``bccd/``, ``deepbionet/``: ``images/*.jpg`` + Pascal VOC ``annotations/*.xml``) with at least
3 whole ``RBC`` boxes (not touching the border), both estimates of
:func:`leukemia_core.scale.measure_red_cells` are divided by the median longer side of those
boxes. ``typical`` sets every size rule; ``low`` sets the white-cell size floor, so it must not
read large (a floor too high drops white cells), nor far too small (a floor too low lets single
platelets through). Boxes hold a little slack, so a right estimate reads somewhat below 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leukemia_core.scale import measure_red_cells  # noqa: E402

MIN_BOXES = 3


def expert_red_cell_side(annotation: Path, width: int, height: int) -> float | None:
    """Median longer side of the whole ``RBC`` boxes of a field, or None with fewer than 3."""
    sides = []
    for box in ET.parse(annotation).getroot().iter("object"):
        if (box.findtext("name") or "").strip().upper() != "RBC":
            continue
        edges = box.find("bndbox")
        x0, y0, x1, y1 = (float(edges.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x0 > 2 and y0 > 2 and x1 < width - 3 and y1 < height - 3:
            sides.append(max(x1 - x0, y1 - y0))
    return float(np.median(sides)) if len(sides) >= MIN_BOXES else None


def summary(ratios: list[float]) -> dict:
    values = np.asarray(ratios)
    return {
        "median": round(float(np.median(values)), 3),
        "p5": round(float(np.percentile(values, 5)), 3),
        "share_below_0.5": round(float((values < 0.5).mean()), 3),
        "share_above_1.2": round(float((values > 1.2).mean()), 3),
    }


def measure(dataset: Path) -> dict:
    ratios: dict[str, list[float]] = {"typical": [], "low": []}
    for image_path in sorted((dataset / "images").glob("*.jpg")):
        annotation = dataset / "annotations" / f"{image_path.stem}.xml"
        image = cv2.imread(str(image_path))
        if image is None or not annotation.is_file():
            continue
        expert = expert_red_cell_side(annotation, image.shape[1], image.shape[0])
        scale = measure_red_cells(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if expert is None or scale.diameter is None:
            continue
        ratios["typical"].append(scale.diameter / expert)
        ratios["low"].append(scale.low_diameter / expert)
    return {"fields": len(ratios["low"]), **{k: summary(v) for k, v in ratios.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    found = [args.data / name for name in ("bccd", "deepbionet") if (args.data / name).is_dir()]
    if not found:
        raise SystemExit(f"No bccd/ or deepbionet/ folder under {args.data}: pass --data.")
    print(json.dumps({d.name: measure(d) for d in found}, indent=1))


if __name__ == "__main__":
    main()
