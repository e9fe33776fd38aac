"""Classifier figures: single cells, normal-cell folders, and blast counts on whole fields.

``seen_groups`` (the groups a model was trained or calibrated on, from its ``split.csv``) are
skipped when given, so the same command reports honest held-out figures on the data the model
came from, and plain figures on anyone else's data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from leukemia_core.classify import Classifier
from leukemia_core.errors import InvalidImageError, NoCellError
from leukemia_core.io import read_image
from leukemia_core.pipeline import analyze
from leukemia_core.wilson import wilson_interval
from train.evaluate.metrics import (
    FEW_GROUPS_FOR_INTERVALS,
    auroc,
    binary_metrics,
    few_groups_note,
)
from train.evaluate.segmentation import cells_at_points, image_files, read_xyc
from train.fit import app_crop
from train.groups import (
    bank_group,
    idb1_fields,
    idb1_fields_of,
    idb1_group,
    interval_units,
    linked_groups,
)
from train.records import BLAST, CellTable
from train.splits import read_split_file

Progress = Callable[[int, int, str], None]
SPLIT_FILE = "split.csv"


def seen_groups(model_folder: Path) -> set[str]:
    """Groups on the train and val sides of the model's split (empty when the model has no
    split.csv). Callers join the groups of one smear run to them (:func:`linked_seen`) with
    the field labels their data show: the split alone cannot tell where an ALL run meets a
    healthy one, so it would count a healthy run numbered next to a trained ALL run as seen."""
    return {group for group, side in _split_sides(model_folder).items() if side != "test"}


def split_groups(model_folder: Path) -> set[str]:
    """Every group of the model's split: a test block between a seen block and the data's
    links them into one run, even where the data hold no cell of it."""
    return set(_split_sides(model_folder))


def _split_sides(model_folder: Path) -> dict[str, str]:
    path = Path(model_folder) / SPLIT_FILE
    return read_split_file(path) if path.is_file() else {}


def linked_seen(seen: set[str], others, fields: dict[int, str] | None = None) -> set[str]:
    """``seen`` and every group of ``others`` in one split unit with a seen group (fields
    numbered next to a training field of ALL-IDB1 are likely the same smear; ``fields``, where
    known, part runs where an ALL field meets a healthy one)."""
    unit_of = linked_groups(set(seen) | set(others), fields)
    seen_units = {unit_of[g] for g in seen}
    return {g for g, unit in unit_of.items() if unit in seen_units}


def _crop_probabilities(records, classifier: Classifier, progress: Progress | None):
    """The app's probability of each readable record, its crop through the model's own input
    path; returns ``(p, readable records, unreadable files with the reader's message)``."""
    out, kept, unreadable, chunk = [], [], [], 256  # app-size crops are large: a chunk at a time
    for start in range(0, len(records), chunk):
        crops = []
        for record in records[start : start + chunk]:
            try:
                crops.append(app_crop(record))
            except (InvalidImageError, NoCellError) as error:  # reported, not fatal
                unreadable.append(f"{record.path}: {error}")
                continue
            kept.append(record)
        out.append(classifier.probabilities(crops))
        if progress:
            progress(min(start + chunk, len(records)), len(records), "cells")
    return (np.concatenate(out) if out else np.zeros(0)), kept, unreadable


def seen_in_training(
    records, seen: set[str], split: set[str] = frozenset()
) -> tuple[list[bool], list[str]]:
    """Which records belong to a group the model was trained or calibrated on, and notes.

    A group is matched by its dataset and name (``deepapl:Patient_00``). Data whose dataset
    name is none the model was split on (a renamed copy: ``dapl/``) is matched by group name
    alone, so a copy of a training set is never counted as new patients; other patients who
    happen to share a name are then left out too, and the note says so.
    """
    seen = linked_seen(seen, {bank_group(record) for record in records} | set(split),
                       idb1_fields_of(records))  # fmt: skip
    known = {g.partition(":")[0] for g in seen}
    names = {g.partition(":")[2] for g in seen}
    flags, by_name = [], {}
    for record in records:
        group = bank_group(record)
        source, _, name = group.partition(":")
        hit = group in seen or (source not in known and name in names)
        if hit and group not in seen:
            by_name.setdefault(source, set()).add(name)
        flags.append(hit)
    notes = [
        f"{source!r} is not a dataset the model was split on, so its groups were matched by name "
        f"alone: {len(groups)} of them ({', '.join(sorted(groups)[:3])}"
        f"{', ...' if len(groups) > 3 else ''}) are named as groups the model was trained on. "
        "A renamed copy of a training set is caught this way; if these are other patients, "
        "their names merely coincide and they are left out of held-out figures too."
        for source, groups in sorted(by_name.items())
    ]
    return flags, notes


def _held_out(records, seen: set[str] | None, model_folder: Path) -> tuple[list, int, list[str]]:
    """``(records to measure, how many were left out, notes)``.

    With ``seen`` (held-out figures), records of those groups are left out. Without it every
    record is measured, and a note says how many come from the model's own training groups.
    """
    if seen is not None:
        flags, notes = seen_in_training(records, seen, split_groups(model_folder))
        kept = [r for r, hit in zip(records, flags, strict=True) if not hit]
        return kept, len(records) - len(kept), notes
    flags, _ = seen_in_training(records, seen_groups(model_folder), split_groups(model_folder))
    notes = []
    if any(flags):
        notes.append(_not_held_out_note(sum(flags), len(flags), "cells", " (or named as such)"))
    return list(records), 0, notes


def _not_held_out_note(n: int, total: int, what: str, named: str = "") -> str:
    """The note of figures measured without ``--held-out`` on the model's own groups."""
    return (f"{n} of {total} {what} come from groups the model was trained or calibrated "
            f"on{named}: these figures are not held-out. Add --held-out to leave those {what} "
            "out.")  # fmt: skip


def evaluate_cells(
    table: CellTable, classifier: Classifier, *, seen: set[str] | None = None,
    progress: Progress | None = None, n_boot: int = 1000,
) -> dict:  # fmt: skip
    """Blast-vs-normal figures on labelled single cells, overall and per source."""
    records, skipped, notes = _held_out(table.records, seen, classifier.model.path)
    if not records:
        raise ValueError(
            "Every cell belongs to a group the model was trained on; nothing to test. "
            + " ".join(notes)
        )
    p, records, unreadable = _crop_probabilities(records, classifier, progress)
    _refuse_nothing_read(records, unreadable)
    notes = [*table.notes, *notes]  # e.g. no patient folders: each image its own group
    y = np.array([r.label == BLAST for r in records])
    # Intervals by patient or field where the data say which; else by cell (and said so)
    groups = interval_units(records) if table.groups_known else None  # a smear run counts once
    calibration = classifier.model.config.calibration
    low = calibration.uncertain_low  # a blast below the review band is a confident miss
    result = binary_metrics(y, p, calibration.threshold, groups=groups, n_boot=n_boot,
                            review_low=low)  # fmt: skip
    uncertain = (p >= calibration.uncertain_low) & (p < calibration.uncertain_high)
    result["uncertain_fraction"] = float(uncertain.mean())
    result["n_skipped_seen_in_training"] = skipped
    if note := few_groups_note(result.get("n_groups"), result.get("class_groups")):
        notes.append(note)
    if y.all():
        notes.append("Only blast cells: sensitivity and the confident-miss rate are measured; "
                     "specificity and AUROC need normal cells too.")  # fmt: skip
    elif not y.any():
        notes.append("Only normal cells: specificity is measured; sensitivity and AUROC need "
                     "blast cells too.")  # fmt: skip
    result["notes"] = notes
    result["unreadable_files"] = unreadable
    sources = np.array([r.source for r in records])
    if len(set(sources)) > 1:
        result["per_source"] = {
            s: binary_metrics(
                y[sources == s],
                p[sources == s],
                calibration.threshold,
                groups=None
                if groups is None
                else [g for g, m in zip(groups, sources == s, strict=True) if m],
                n_boot=n_boot,
                review_low=low,
            )
            for s in sorted(set(sources))
        }
        for source, figures in result["per_source"].items():
            if note := few_groups_note(figures.get("n_groups"), figures.get("class_groups")):
                notes.append(f"{source}: {note}")
    return result


NOT_WHITE_CELLS = ("platelet",)  # normal cell folders (PBC) that hold no white cell


def evaluate_normals(
    table: CellTable, classifier: Classifier, *, seen: set[str] | None = None,
    progress: Progress | None = None,
) -> dict:  # fmt: skip
    """False-blast rate on folders of normal cells, overall and per cell type (Wilson 95%)."""
    normals = [r for r in table.records if r.label != BLAST]
    blasts = len(table.records) - len(normals)
    # Not white cells: never in training (the crop bank leaves them out), and a rate over them
    # would read as the rate over the white cells the model is for.
    white = [r for r in normals if r.cell_type not in NOT_WHITE_CELLS]
    records, skipped, notes = _held_out(white, seen, classifier.model.path)
    if blasts:
        notes.append(f"{blasts} blast cell(s) left out: this command measures normal cells only.")
    if len(white) < len(normals):
        notes.append(f"{len(normals) - len(white)} image(s) of {', '.join(NOT_WHITE_CELLS)} left "
                     "out: the model classifies white cells.")  # fmt: skip
    if not records:
        raise ValueError("No normal cells to test (all were blasts or seen in training).")
    p, records, unreadable = _crop_probabilities(records, classifier, progress)
    _refuse_nothing_read(records, unreadable)
    notes = [*table.notes, *notes]
    n_groups = len({bank_group(r) for r in records}) if table.groups_known else None
    if n_groups is not None and n_groups < FEW_GROUPS_FOR_INTERVALS:
        notes.append(f"These cells come from {n_groups} patient(s) or field(s) only; the "
                     "interval is over cells, so it understates how much another patient "
                     "would differ: treat it as unknown.")  # fmt: skip
    called = p >= classifier.model.config.calibration.threshold
    types = np.array([r.cell_type or r.source for r in records])

    def rate(mask: np.ndarray) -> dict:
        k, n = int(called[mask].sum()), int(mask.sum())
        low, high = wilson_interval(k, n)
        return {"false_blast_rate": k / n, "interval": [low, high], "n": n, "false_blasts": k}

    overall = rate(np.ones(len(records), bool))
    return {
        **overall,
        "per_class": {t: rate(types == t) for t in sorted(set(types))},
        "n_skipped_seen_in_training": skipped,
        "interval_unit": "cell",  # Wilson intervals over cells, not a bootstrap over patients
        "notes": notes,
        "unreadable_files": unreadable,
    }


def _refuse_nothing_read(records, unreadable: list[str]) -> None:
    if not records:
        raise ValueError(
            f"None of the {len(unreadable)} image(s) could be read as a cell, so there is "
            f"nothing to measure; first: {unreadable[0] if unreadable else '-'}. Check the "
            "files (copy or export them again)."
        )


def cells_at_points_all(points, labels: np.ndarray, ids: list[int]) -> set[int]:
    """Indices of the points that fall inside any of the cells ``ids``."""
    height, width = labels.shape
    return {
        i for i, (x, y) in enumerate(points)
        if 0 <= round(y) < height and 0 <= round(x) < width and labels[round(y), round(x)] in ids
    }  # fmt: skip


def fields_trained_on(images, model_folder: Path, seen: set[str] | None = None) -> set[str]:
    """Groups of the ALL-IDB1 field files ``images`` in a smear run the model saw (``seen``,
    default: the train and val sides of its split): runs told by the fields' labels (every
    file, marked or not) and linked through the split's own test blocks."""
    seen = seen_groups(model_folder) if seen is None else seen
    groups = {idb1_group(Path(p).stem) for p in images} | split_groups(model_folder)
    return linked_seen(seen, groups, idb1_fields(Path(p).name for p in images))


def evaluate_smears(
    root: Path, classifier: Classifier, *, seen: set[str] | None = None,
    progress: Progress | None = None,
) -> dict:  # fmt: skip
    """Blast counting on ALL-IDB1-layout fields against expert centroids.

    A detected cell is a predicted blast when its calibrated probability reaches the model's
    threshold; predicted blasts are matched one-to-one to expert centroids inside their masks.
    Cells cut by the image border are left out on both sides, as the app leaves them out of
    counts: they are never predicted blasts, and expert marks inside them are not expected.
    """
    images = image_files(root / "images")
    # An ALL field without its expert marks would count every blast found as a false one.
    unmarked = [p.name for p in images if p.stem.endswith("_1")
                and not (root / "xyc" / f"{p.stem}.xyc").is_file()]  # fmt: skip
    every = [p for p in images if p.name not in unmarked]
    if seen:  # a field numbered next to a training field is likely the same smear
        seen = fields_trained_on(images, classifier.model.path, seen)
    fields = [p for p in every if not seen or idb1_group(p.stem) not in seen]
    if not fields:
        raise ValueError(f"Every field in {root} belongs to a group the model was trained on, "
                         "or has no expert marks (xyc/).")  # fmt: skip
    notes = []
    if unmarked:
        notes.append(f"{len(unmarked)} ALL field(s) without expert marks (no xyc/<name>.xyc) "
                     f"left out: {', '.join(unmarked[:5])}{', ...' if len(unmarked) > 5 else ''}.")  # fmt: skip
    if seen is None:  # with --held-out those fields are already left out above
        own = fields_trained_on(images, classifier.model.path)
        if trained := sum(idb1_group(p.stem) in own for p in fields):
            notes.append(_not_held_out_note(trained, len(fields), "fields"))
    threshold = classifier.model.config.calibration.threshold
    review_low = classifier.model.config.calibration.uncertain_low
    tp = fp = fn = 0
    confident_misses = unsegmented = 0
    errors, scores, is_all, healthy_blasts = [], [], [], []
    for i, path in enumerate(fields):
        analysis = analyze([read_image(path).rgb], classifier, names=[path.name],
                           keep_segmentation=True)  # fmt: skip
        xyc = root / "xyc" / f"{path.stem}.xyc"
        cell_labels = analysis.fields[0].segmentation.cell_labels
        border = [c.cell_id for c in analysis.cells if c.touches_border]
        in_border = cells_at_points_all(read_xyc(xyc) if xyc.exists() else [], cell_labels, border)
        points = [
            p for i, p in enumerate(read_xyc(xyc) if xyc.exists() else []) if i not in in_border
        ]
        predicted = [c.cell_id for c in analysis.cells
                     if c.blast_probability >= threshold and not c.touches_border]  # fmt: skip
        below_band = [c.cell_id for c in analysis.cells if c.blast_probability < review_low]
        confident_misses += len(cells_at_points_all(points, cell_labels, below_band))
        segmented = np.unique(cell_labels[cell_labels > 0]).tolist()
        unsegmented += len(points) - len(cells_at_points_all(points, cell_labels, segmented))
        blast_labels = np.where(np.isin(cell_labels, predicted), cell_labels, 0)
        matched = len(cells_at_points(points, blast_labels))
        tp, fp, fn = tp + matched, fp + len(predicted) - matched, fn + len(points) - matched
        errors.append(abs(len(predicted) - len(points)))
        scores.append(len(predicted) / max(1, len(analysis.cells)))
        is_all.append(path.stem.endswith("_1"))
        if path.stem.endswith("_0"):
            healthy_blasts.append(len(predicted))
        if progress:
            progress(i + 1, len(fields), path.name)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {
        "blast_precision": precision,
        "blast_recall": recall,
        "blast_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "count_mae": float(np.mean(errors)),
        "field_auroc": auroc(np.array(is_all), np.array(scores)),
        "healthy_false_blasts_per_field": float(np.mean(healthy_blasts))
        if healthy_blasts
        else None,
        "n_fields": len(fields),
        "n_all_fields": int(np.sum(is_all)),
        "n_healthy_fields": len(healthy_blasts),
        # Expert blasts inside a cell the model scored below its review band, over all expert
        # blasts: missed without a reviewer ever being asked (blasts no cell holds are counted
        # in blast_recall, as segmentation misses).
        "confident_miss_rate": confident_misses / (tp + fn) if tp + fn else None,
        "n_expert_blasts_not_segmented": unsegmented,
        "n_expert_blasts": tp + fn,
        "n_predicted_blasts": tp + fp,
        "n_skipped_seen_in_training": len(every) - len(fields),
        "notes": notes,
    }
