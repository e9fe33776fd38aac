"""Leave-one-dataset-out check of the segmentation parameters chosen on data.

Two parts of :class:`SegmentationParams` come from data: the reference red-cell optical density
(:data:`leukemia_core.stain.REFERENCE_RED_CELL_OD`, measured) and the platelet-clump rule
(``platelet_clump_area`` and ``platelet_clump_solidity``, chosen from :data:`CLUMP_CANDIDATES`).
For each dataset, both are found again on the *other* datasets only, and the left-out dataset is
segmented with them; the in-sample figure (the shipped parameters) stands beside it. Parameters
that generalise give the two within a hair of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    images = seg_eval.image_files(folder / "images")
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
    folders: dict[str, Path],
    progress: Callable[[int, int, str], None] | None = None,
    workers: int = 2,
) -> dict:
    """In-sample and left-out figures per dataset; ``folders`` maps a :data:`KINDS` key to a folder.

    Left out, a dataset is segmented with the reference stain measured on the other datasets and
    the platelet-clump rule chosen on them (:func:`choose_clump_rule`, every candidate run on
    every other dataset with that reference). In-sample is the shipped parameter set.
    """
    unknown = set(folders) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown dataset kinds {sorted(unknown)}; use {sorted(KINDS)}")
    if len(folders) < 2:
        raise ValueError("leave-one-dataset-out needs at least two datasets")
    stains = {name: dataset_red_cell_od(folder) for name, folder in folders.items()}
    in_sample = reference_from(stains)
    references = {
        name: reference_from({k: v for k, v in stains.items() if k != name}) for name in folders
    }
    jobs = {(name, in_sample, None) for name in folders}
    for left_out, reference in references.items():
        jobs |= {(name, reference, rule) for name in folders if name != left_out
                 for rule in CLUMP_CANDIDATES}  # fmt: skip
    figures = _run_all(folders, sorted(jobs, key=str), progress, workers)
    result = {"reference_in_sample": in_sample, "red_cell_od_per_dataset": stains, "datasets": {}}
    final = {}
    for name, reference in references.items():
        others = {k: {rule: figures[k, reference, rule] for rule in CLUMP_CANDIDATES}
                  for k in folders if k != name}  # fmt: skip
        final[name] = (reference, choose_clump_rule(others))
    figures |= _run_all(folders, [(n, *final[n]) for n in folders], progress, workers)
    for name in folders:
        keys = KINDS[name][1]
        reference, rule = final[name]
        entry = {
            "in_sample": figures[name, in_sample, None],
            "left_out": figures[name, *final[name]],
        }
        entry["reference_left_out"] = reference
        entry["clump_rule_left_out"] = {"platelet_clump_area": rule[0],
                                        "platelet_clump_solidity": rule[1]}  # fmt: skip
        entry["candidates_on_other_datasets"] = {
            f"area {a}, solidity {b}": {
                k: figures[k, reference, (a, b)] for k in folders if k != name
            }
            for a, b in CLUMP_CANDIDATES
        }
        entry["largest_gap"] = max(abs(entry["in_sample"][k] - entry["left_out"][k]) for k in keys)
        result["datasets"][name] = entry
    result["clump_rule_in_sample"] = {
        "platelet_clump_area": DEFAULT_PARAMS.platelet_clump_area,
        "platelet_clump_solidity": DEFAULT_PARAMS.platelet_clump_solidity,
    }
    return result


# Platelet-clump rules tried, as (largest area in red-cell areas, solidity below which a smaller
# object is dropped); an area of 0 turns the rule off. Areas stop at one red cell: a white cell
# that small is a round lymphocyte, while larger ones can be ragged (a deepapl lymphocyte squeezed
# between red cells measures 1.2 red-cell areas at solidity 0.78).
CLUMP_CANDIDATES = ((0.0, 0.8), (0.6, 0.8), (0.6, 0.9), (1.0, 0.8), (1.0, 0.9))
# A rule may cost a recall or Dice figure at most this much against the best candidate.
RECALL_TOLERANCE = 0.002
RECALL_KEYS = ("wbc_recall", "blast_detection_recall", "cell_dice", "nucleus_dice")


def choose_clump_rule(figures: dict[str, dict[tuple, dict]]) -> tuple[float, float]:
    """The rule with the best mean white-cell precision that costs no dataset recall or Dice.

    ``figures`` maps dataset -> rule -> figures. A rule is allowed when, on every dataset, each
    recall and Dice figure is within :data:`RECALL_TOLERANCE` of the best any rule reaches; ties
    go to the earlier (milder) candidate.
    """
    rules = list(next(iter(figures.values())))

    def allowed(rule) -> bool:
        for per_rule in figures.values():
            for key in RECALL_KEYS:
                if key in per_rule[rule]:
                    best = max(per_rule[r][key] for r in rules)
                    if per_rule[rule][key] < best - RECALL_TOLERANCE:
                        return False
        return True

    def precision(rule) -> float:
        values = [per_rule[rule]["wbc_precision"] for per_rule in figures.values()
                  if "wbc_precision" in per_rule[rule]]  # fmt: skip
        return float(np.mean(values)) if values else 0.0

    candidates = [rule for rule in rules if allowed(rule)] or rules[:1]
    return max(candidates, key=lambda rule: (precision(rule), -rules.index(rule)))


def _run_all(folders, jobs, progress, workers) -> dict:
    """Figures per (dataset, reference, rule) job; rule None keeps the shipped clump rule."""
    out = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        running = {pool.submit(_run_one, folders[job[0]], *job): job for job in jobs}
        for step, done in enumerate(as_completed(running), start=1):
            out[running[done]] = done.result()
            if progress:
                progress(step, len(jobs), running[done][0])
    return out


def _run_one(folder: Path, name: str, reference: tuple, rule: tuple | None) -> dict:
    params = replace(DEFAULT_PARAMS, reference_red_cell_od=reference)
    if rule is not None:
        params = replace(params, platelet_clump_area=rule[0], platelet_clump_solidity=rule[1])
    run, keys = KINDS[name]
    values = run(folder, params)
    return {key: values[key] for key in (*keys, "wbc_precision") if key in values}
