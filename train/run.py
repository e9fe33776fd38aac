"""One complete training run: grouped split, fit, calibration on validation, test figures, folder.

This is what ``python -m train fit`` and the retrain page call.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from leukemia_core.calibration import (
    CLASS_NAMES,
    THRESHOLD_RULES,
    Calibration,
    blast_probability,
    fit_calibration,
)
from leukemia_core.classify import Classifier
from leukemia_core.models import get_architecture
from leukemia_core.models.architectures import imagenet_weights
from leukemia_core.models.folder import CONFIG_FILE, load_model
from leukemia_core.models.writing import save_model_folder, write_config
from leukemia_core.outputs import write_text_atomic
from train.card import held_out_sections, model_card
from train.evaluate.classifier import SPLIT_FILE
from train.evaluate.metrics import binary_metrics
from train.fit import FitConfig, app_crop, fit, labels_of, load_crops, predict_logits
from train.groups import bank_group
from train.progress import ProgressCallback
from train.records import CellTable, LabelledCrop, summarize
from train.splits import (
    SIDES,
    SplitError,
    SplitResult,
    describe,
    read_split_file,
    split_by_sides,
    split_from_file,
    split_per_source,
)


@dataclass(frozen=True)
class RunResult:
    """Where the model went and what it scored."""

    folder: Path
    metrics: dict
    config: dict


def _per_source(records, y, p, threshold, review_low=None) -> dict:
    sources = np.array([r.source for r in records])
    groups = np.array([bank_group(r) for r in records])
    return {
        s: binary_metrics(y[m], p[m], threshold, groups=groups[m], review_low=review_low)
        for s in sorted(set(sources))
        if (m := sources == s).any()
    }


def split_csv(split: SplitResult) -> str:
    """``group,side`` rows, one per group."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["group", "side"])
    for side in SIDES:
        for group in sorted({bank_group(r) for r in getattr(split, side)}):
            writer.writerow([group, side])
    return buffer.getvalue()


def train_model(
    records: Sequence[LabelledCrop],
    config: FitConfig,
    name: str,
    *,
    root: Path | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    data_description: str = "",
    checkpoint_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    split_file: Path | None = None,
) -> RunResult:
    """Split by group within each source, train, calibrate, evaluate on test and save the folder.

    Args:
        records: Labelled cells with groups (any mix of sources).
        config: Training settings.
        name: Model folder name.
        root: Parent of model folders (``models/`` by default).
        fractions: Train/val/test shares of the groups of each source.
        data_description: Plain words about the data, for the card.
        checkpoint_dir: Checkpoints for resuming an interrupted run.
        progress: Event callback (see :func:`train.fit.fit`).
        split_file: Re-use the sides of this ``split.csv`` (another model's) instead of
            splitting anew, so the two models are judged on the same cells.
    """
    if config.weights == "imagenet":
        imagenet_weights(config.architecture)  # fail before hours of loading, not after
    # Split on the groups that evaluation uses: an ALL-IDB2 crop joins its field's block, so
    # two crops of one block can never land on different sides.
    records = [replace(r, group=bank_group(r)) for r in records]
    if split_file is None:
        split, split_words = split_per_source(records, fractions, seed=config.seed), None
    else:
        split = split_from_file(records, split_file)
        split_words = (f"the sides of {Path(split_file).name} re-used from "
                       f"{Path(split_file).parent.name} (same validation and test groups; groups "
                       f"it does not name are trained on); groups per side in {SPLIT_FILE}")  # fmt: skip
    if not split.val or not split.test:
        raise ValueError(
            "The split left the validation or test side empty; calibration and honest test "
            "figures need both. Add cells from more subjects or fields."
        )
    images = {s: load_crops(getattr(split, s), config.input_spec, progress) for s in SIDES}
    result = fit(split.train, split.val, config, checkpoint_dir=checkpoint_dir,
                 progress=progress, images=(images["train"], images["val"]))  # fmt: skip
    return finish_run(result.model, config, split, images, name, root=root, records=records,
                      fractions=fractions, data_description=data_description,
                      history=result.history, seconds=result.seconds,
                      split_words=split_words)  # fmt: skip


def mixed_sources(records: Sequence[LabelledCrop]) -> np.ndarray:
    """True for cells of sources that hold both classes on this side."""
    labels: dict[str, set[str]] = {}
    for r in records:
        labels.setdefault(r.source, set()).add(r.label)
    return np.array([len(labels[r.source]) == 2 for r in records])


def calibrate_cells(
    logits: np.ndarray, records: Sequence[LabelledCrop], rule: str = "sensitivity_first"
) -> Calibration:
    """Calibration fitted on these (validation) cells under a threshold rule
    (:data:`leukemia_core.calibration.THRESHOLD_RULES`)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {tuple(THRESHOLD_RULES)}, got {rule!r}.")
    y = labels_of(records) == CLASS_NAMES.index("blast")
    sources = np.array([r.source for r in records]) if rule == "sensitivity_first" else None
    return fit_calibration(logits, y, mixed_sources(records), sources=sources)


def model_folder_config(
    config: FitConfig, calibration: Calibration, records: Sequence[LabelledCrop], *,
    data_description: str, split_words: str, **training_extra,
) -> dict:  # fmt: skip
    """The ``config.json`` values of a trained model folder (the checksum is added on saving)."""
    spec = get_architecture(config.architecture)
    return {
        "architecture": config.architecture,
        "input_size": config.size,
        "preprocessing": spec.preprocessing,
        "stain_normalisation": config.stain_normalisation,
        "class_names": list(CLASS_NAMES),
        "calibration": calibration.to_dict(),
        "test_time_views": config.test_time_views,
        "gradcam_layer": spec.gradcam_layer,
        "training": {
            "fit": config.to_dict(),
            "data": data_description,
            "data_summary": {k: v for k, v in summarize(CellTable(tuple(records))).items()
                             if k != "per_group"},  # per-group sides are in split.csv
            "split": split_words,
            "threshold_rule": THRESHOLD_RULES[config.threshold_rule],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.system()}",
            **training_extra,
        },
    }  # fmt: skip


def calibrate_and_measure(
    logits_of: Callable[[np.ndarray], np.ndarray], split: SplitResult, images: dict,
    rule: str = "sensitivity_first",
) -> tuple[Calibration, dict]:  # fmt: skip
    """Calibration fitted on the validation side, and the figures of both held-out sides.

    Args:
        logits_of: ``(N, 2)`` logits of ready crops, as the model will classify them.
        split: The sides.
        images: Crops of the ``val`` and ``test`` sides.
        rule: Threshold rule (:data:`leukemia_core.calibration.THRESHOLD_RULES`).
    """
    start = time.perf_counter()
    logits = {s: logits_of(images[s]) for s in ("val", "test")}
    seconds_per_cell = (time.perf_counter() - start) / max(1, len(split.val) + len(split.test))
    is_blast = {s: labels_of(getattr(split, s)) == CLASS_NAMES.index("blast") for s in SIDES}
    calibration = calibrate_cells(logits["val"], split.val, rule)
    p_test = blast_probability(logits["test"], calibration.temperature)
    test_groups = [bank_group(r) for r in split.test]
    low = calibration.uncertain_low
    metrics = {
        "test": binary_metrics(is_blast["test"], p_test, calibration.threshold, groups=test_groups,
                               review_low=low),
        "test_per_source": _per_source(split.test, is_blast["test"], p_test, calibration.threshold,
                                       low),
        "validation": binary_metrics(
            is_blast["val"], blast_probability(logits["val"], calibration.temperature),
            calibration.threshold, n_boot=0),
        "test_uncertain_fraction": float(
            ((p_test >= calibration.uncertain_low) & (p_test < calibration.uncertain_high)).mean()
        ),
        "split": describe(split),
        "cpu_seconds_per_cell_predict": seconds_per_cell,
    }  # fmt: skip
    return calibration, metrics


def finish_run(
    model, config: FitConfig, split: SplitResult, images: dict, name: str, *,
    root: Path | None, records: Sequence[LabelledCrop], fractions, data_description: str,
    history: list[dict], seconds: float, split_words: str | None = None,
) -> RunResult:  # fmt: skip
    """Calibrate on validation, measure the test side, and write the model folder."""
    calibration, metrics = calibrate_and_measure(
        lambda crops: predict_logits(model, crops, config), split, images, config.threshold_rule
    )
    metrics.update(training_seconds=seconds, history=history)
    folder_config = model_folder_config(
        config, calibration, records, data_description=data_description,
        split_words=split_words or f"grouped per source, fractions {list(fractions)}, seed "
                                   f"{config.seed}; groups per side in {SPLIT_FILE}",
    )  # fmt: skip
    card = model_card(name, folder_config, metrics)
    folder = save_model_folder(model, name, folder_config, metrics=metrics, card=card,
                               root=root, extra_files={SPLIT_FILE: split_csv(split)})  # fmt: skip
    return RunResult(folder, metrics, json.loads((folder / "config.json").read_text()))


def recalibrate(
    name: str, records: Sequence[LabelledCrop], *, test_time_views: int | None = None,
    root: Path | None = None, data_description: str = "",
    progress: ProgressCallback | None = None,
) -> RunResult:  # fmt: skip
    """Re-fit a model folder's calibration on its own validation groups; weights stay as they are.

    The cells are read afresh (``records``, e.g. a crop bank made by the current segmentation)
    and put on the sides the folder's ``split.csv`` gives their groups; cells of groups it does
    not name are left out. The logits come from the app's :class:`Classifier`, so calibration
    and use cannot differ. The test side is measured again; held-out figures stored with the
    old calibration (:func:`train.card.held_out_sections`) are dropped from ``metrics.json``.

    Args:
        name: Model folder.
        records: Labelled cells with groups.
        test_time_views: Views averaged when classifying (None: keep the folder's).
        root: Parent of model folders.
        data_description: Plain words about ``records``, for the config.
        progress: Event callback for loading the crops.

    Raises:
        SplitError: The folder has no readable ``split.csv``, no cell of ``records`` belongs
            to its validation or test groups, or it is an adapted version (its calibration is
            a lab's).
    """
    loaded = load_model(name, root)
    folder = loaded.path
    adapted = loaded.config.training.get("adapted")
    if adapted:  # its calibration is the lab's: the public validation cells would undo it
        raise SplitError(
            f"model {name!r} was adapted to a lab (from {adapted.get('base', 'its base')}); its "
            "calibration was fitted on that lab's signed cells. Adapt the base model again "
            "(python -m train adapt) instead of recalibrating this version."
        )
    if not (folder / SPLIT_FILE).is_file():
        raise SplitError(f"model {name!r} has no {SPLIT_FILE}, so which groups it was validated "
                         "and tested on is unknown and it cannot be recalibrated; retrain it "
                         "with python -m train fit.")  # fmt: skip
    side_of = read_split_file(folder / SPLIT_FILE)
    views = loaded.config.test_time_views if test_time_views is None else test_time_views
    classifier = Classifier(replace(loaded, config=replace(loaded.config, test_time_views=views)))
    split = split_by_sides([replace(r, group=bank_group(r)) for r in records], side_of)
    coverage = {}
    for side in ("val", "test"):
        named = {g for g, s in side_of.items() if s == side}
        found = {r.group for r in getattr(split, side)}
        if not found:
            raise SplitError(
                f"None of these cells belong to the {side} groups of {name}/{SPLIT_FILE} "
                f"({len(named)} groups, e.g. {sorted(named)[:3]}); recalibrate on the data the "
                "model was split on (e.g. its crop bank)."
            )
        coverage[side] = {"groups": len(found), "groups_in_split": len(named),
                          "cells": len(getattr(split, side))}  # fmt: skip
    # Crops as the app cuts them: the classifier applies the model's own input path.
    images = {s: [app_crop(r) for r in getattr(split, s)] for s in ("val", "test")}
    rule = (loaded.config.training.get("fit") or {}).get("threshold_rule", "sensitivity_first")
    calibration, figures = calibrate_and_measure(classifier.logits, split, images, rule)

    values = json.loads((folder / "config.json").read_text())
    previous = {"calibration": values.get("calibration"),
                "test_time_views": values.get("test_time_views", 1)}  # fmt: skip
    values["calibration"] = calibration.to_dict()
    values["test_time_views"] = views
    values.setdefault("training", {})["threshold_rule"] = THRESHOLD_RULES[rule]
    training = values.setdefault("training", {})
    if isinstance(training.get("fit"), dict):
        training["fit"]["test_time_views"] = views
    training["recalibrated"] = {
        "data": data_description,
        "coverage": coverage,
        "previous": previous,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metrics = json.loads((folder / "metrics.json").read_text())
    dropped = held_out_sections(metrics)
    metrics = {k: v for k, v in metrics.items() if k not in dropped}
    metrics.update(figures)
    training["recalibrated"]["dropped_metrics"] = dropped
    texts = {  # all rendered before anything is written; config.json, which the app reads, last
        "metrics.json": json.dumps(metrics, indent=2) + "\n",
        "card.md": model_card(name, values, metrics),
    }
    for file_name, text in texts.items():
        write_text_atomic(folder / file_name, text)
    write_config(folder, values)
    return RunResult(folder, metrics, json.loads((folder / CONFIG_FILE).read_text()))
