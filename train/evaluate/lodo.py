"""Leave-one-dataset-out check of the segmentation's one measured parameter: the reference stain.

The reference red-cell optical density (:data:`leukemia_core.stain.REFERENCE_RED_CELL_OD`) is
the only value of :class:`SegmentationParams` measured on data. For each dataset, it is measured
again on the *other* datasets only, and the left-out dataset is segmented with that reference;
the in-sample figure (reference measured on every dataset) stands beside it. A parameter that
generalises gives the two within a hair of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from leukemia_core.io import read_image
from leukemia_core.segmentation import DEFAULT_PARAMS
from leukemia_core.stain import estimate_stain
from train.evaluate import segmentation as seg_eval

# Dataset kind -> (evaluation, the figures that judge it).
KINDS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "bccd": (seg_eval.evaluate_wbc, ("wbc_precision", "wbc_recall", "nucleus_dice")),
    "deepbionet": (seg_eval.evaluate_wbc, ("wbc_precision", "wbc_recall")),
    "all_idb1": (seg_eval.evaluate_smears, ("blast_detection_recall",)),
    "all_idb2": (seg_eval.evaluate_crops, ("cell_dice", "nucleus_dice")),
}
STAIN_SAMPLE = 40  # fields per dataset for the stain measurement (evenly spread)


def dataset_red_cell_od(folder: Path, sample: int = STAIN_SAMPLE) -> tuple[float, ...] | None:
    """Median red-cell optical density (R, G, B) over up to ``sample`` fields of a dataset."""
    images = seg_eval._images(folder / "images")
    step = max(1, len(images) // sample)
    values = []
    for path in images[::step][:sample]:
        estimate = estimate_stain(read_image(path).rgb)
        if estimate.red_cell_od is not None:
            values.append(estimate.red_cell_od)
    if not values:
        return None
    return tuple(round(float(v), 4) for v in np.median(values, axis=0))


def reference_from(per_dataset: dict[str, tuple[float, ...] | None]) -> tuple[float, ...]:
    """Each dataset weighs the same: the median of the datasets' medians."""
    values = [v for v in per_dataset.values() if v is not None]
    if not values:
        raise ValueError("no red cells found in any dataset: cannot measure a reference stain")
    return tuple(round(float(v), 4) for v in np.median(values, axis=0))


def leave_one_dataset_out(
    folders: dict[str, Path], progress: Callable[[int, int, str], None] | None = None
) -> dict:
    """In-sample and left-out figures per dataset; ``folders`` maps a :data:`KINDS` key to a folder."""
    unknown = set(folders) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown dataset kinds {sorted(unknown)}; use {sorted(KINDS)}")
    if len(folders) < 2:
        raise ValueError("leave-one-dataset-out needs at least two datasets")
    stains = {name: dataset_red_cell_od(folder) for name, folder in folders.items()}
    in_sample = reference_from(stains)
    result = {"reference_in_sample": in_sample, "red_cell_od_per_dataset": stains, "datasets": {}}
    for step, (name, folder) in enumerate(folders.items(), start=1):
        left_out = reference_from({k: v for k, v in stains.items() if k != name})
        run, keys = KINDS[name]
        figures = {}
        for label, reference in (("in_sample", in_sample), ("left_out", left_out)):
            params = replace(DEFAULT_PARAMS, reference_red_cell_od=reference)
            values = run(folder, params)
            figures[label] = {key: values[key] for key in keys}
        figures["reference_left_out"] = left_out
        figures["largest_gap"] = max(
            abs(figures["in_sample"][k] - figures["left_out"][k]) for k in keys
        )
        result["datasets"][name] = figures
        if progress:
            progress(step, len(folders), name)
    return result
