"""Train several architectures on the same grouped folds and compare them honestly.

Every model sees exactly the same cells on the same sides, so their out-of-fold predictions can
be compared cell by cell (McNemar). Splits are grouped within each source (subjects, field
blocks), never by cell. A size-only baseline (logistic regression on the cell's area in its crop)
shows whether a model learned more than "blasts are larger".

What ``python -m train compare`` and the Retrain page run. Research use only.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from leukemia_core.calibration import (
    BLAST_INDEX,
    Calibration,
    blast_probability,
)
from leukemia_core.classify import dihedral_view
from leukemia_core.domain import stain_statistics
from leukemia_core.models import build_classifier, get_architecture
from leukemia_core.models.inputs import InputSpec
from leukemia_core.models.writing import save_model_folder
from leukemia_core.outputs import write_text_atomic
from train.batches import balancing_strata
from train.card import model_card
from train.compare_settings import (
    FROZEN_RANDOM_WORDS,
    MODELS_SUBDIR,
    RESULTS_FILE,
    SPEED_CELLS,
    CompareCancelled,
    CompareSettings,
    initial_weights,
)
from train.compare_tables import comparison_markdown
from train.comparison import Comparison, ModelOutcome
from train.crop_cache import CropCache, ReadyCrops
from train.domain import staged_domain_reference
from train.evaluate.classifier import SPLIT_FILE
from train.fit import FitConfig, fit, labels_of, predict_logits
from train.groups import bank_group
from train.head import backbone_features, train_head
from train.loso import adaptation_check, domain_check
from train.progress import ProgressCallback
from train.records import LabelledCrop
from train.run import calibrate_cells, model_folder_config, split_csv
from train.size_baseline import size_only_baseline
from train.splits import (
    SplitResult,
    folds_per_source,
    leave_one_source_out,
    split_per_source,
    split_rows,
)


def comparison_splits(
    records: Sequence[LabelledCrop], folds: int, seed: int, protocol: str = "grouped"
) -> list[tuple[str, SplitResult]]:
    """The named splits every model of a comparison shares (fold numbers, or left-out sources)."""
    if protocol == "leave_one_source_out":
        return leave_one_source_out(records, 0.2, seed)
    if folds == 1:
        return [("1", split_per_source(records, (0.7, 0.1, 0.2), seed))]
    return [(str(k + 1), split) for k, split in enumerate(folds_per_source(records, folds, seed))]


def planned_splits(
    records: Sequence[LabelledCrop], settings: CompareSettings
) -> tuple[tuple[LabelledCrop, ...], list[tuple[str, SplitResult]]]:
    """The records (grouped as the cell bank groups them) and the comparison's splits.

    Raises:
        ValueError: A split would leave its validation or test side empty (too few groups);
            the Retrain page calls this before queueing, so such a job is never started.
    """
    records = tuple(replace(r, group=bank_group(r)) for r in records)
    splits = comparison_splits(records, settings.folds, settings.seed, settings.protocol)
    if not any(s.test for _, s in splits) or not all(s.val for _, s in splits):
        n_groups = len({r.group for r in records})
        fix = "add cells from more subjects or fields (reviewed cases: sign cases of more samples)"
        if settings.folds > 1 and settings.protocol != "leave_one_source_out":
            fix += f", or use fewer folds than {settings.folds}"
        raise ValueError(f"The cells come from {n_groups} group(s), too few for a grouped split "
                         f"with validation and test sides: {fix}.")  # fmt: skip
    return records, splits


class _Reporter:
    """Adds model and fold to every progress event and turns a cancel request into an exception."""

    def __init__(self, progress: ProgressCallback | None, n_models: int, n_folds: int,
                 cancelled: Callable[[], bool] | None):  # fmt: skip
        self.progress, self.cancelled = progress, cancelled
        self.context = {"n_models": n_models, "n_folds": n_folds}

    def at(self, **context) -> ProgressCallback:
        self.context |= context
        return self

    def __call__(self, event: dict) -> None:
        if self.cancelled is not None and self.cancelled():
            raise CompareCancelled("The comparison was cancelled.")
        if self.progress is not None:
            self.progress({**self.context, **event})


def _inference_speed(model, crops: np.ndarray, config: FitConfig) -> float:
    """Cells per second of the full model on up to :data:`SPEED_CELLS` ready crops."""
    sample = crops[:SPEED_CELLS]
    predict_logits(model, sample[:8], config)  # warm-up: graph tracing is not inference
    start = time.perf_counter()
    predict_logits(model, sample, config)
    return len(sample) / max(time.perf_counter() - start, 1e-9)


def _fold_model(config: FitConfig, split: SplitResult, index: dict, crops, features, report):
    """Train one fold; returns ``(model, logits_val, logits_test, history, seconds)``."""
    take = split_rows(split, index)
    labels = {side: labels_of(getattr(split, side)) for side in take}
    start = time.perf_counter()
    if features is not None:
        model = features["model"]
        views = features["x"]  # (views, N, F)
        train_x = views[:, take["train"]].reshape(-1, views.shape[-1])
        train_y = np.tile(labels["train"], views.shape[0])
        sources = [r.source for r in split.train]
        strata = np.tile(balancing_strata(labels["train"], sources, config.balance), views.shape[0])
        weights, history = train_head(
            train_x, train_y, views[0, take["val"]], labels["val"], config,
            model.get_layer("head_dropout").rate, report, strata=strata)  # fmt: skip
        model.get_layer("logits").set_weights(weights)
        kernel, bias = weights
        test_views = features["test_views"]  # (test-time views, N, F); view 0 is the cell as is

        def logits_of(side):
            return np.mean([v[take[side]] @ kernel + bias for v in test_views], axis=0,
                           dtype=np.float64).astype(np.float32)  # fmt: skip

        seconds = time.perf_counter() - start
        return model, logits_of("val"), logits_of("test"), history, seconds
    result = fit(split.train, split.val, config, progress=report,
                 images=(crops[take["train"]], crops[take["val"]]))  # fmt: skip
    logits_val = predict_logits(result.model, crops[take["val"]], config)
    logits_test = predict_logits(result.model, crops[take["test"]], config)
    return result.model, logits_val, logits_test, result.history, result.seconds


def _run_architecture(
    name: str, settings: CompareSettings, records, splits, index, crops_by_size, report,
    staging: Path | None, data_description: str,
) -> ModelOutcome:  # fmt: skip
    weights, init, skip = initial_weights(name, settings.missing_weights)
    if skip:
        return ModelOutcome(name, init, status="skipped", reason=skip)
    config = settings.fit_config(name, weights)
    frozen_random = (
        settings.cached_features
        and weights is None
        and settings.epochs > 0
        and get_architecture(name).imagenet_source is not None
    )
    report.at(
        cached_features=bool(config.cached_features or frozen_random),
        crops_cached=crops_by_size.warm,
    )  # progress shares
    crops = crops_by_size.get(config.input_spec, report.at(model=name))
    outcome = ModelOutcome(name, init, p=np.full(len(records), np.nan),
                           thresholds=np.full(len(records), np.nan),
                           review_low=np.full(len(records), np.nan),
                           review_high=np.full(len(records), np.nan))  # fmt: skip
    features = None
    if config.cached_features or frozen_random:
        start = time.perf_counter()
        model = build_classifier(name, input_size=config.size, weights=weights)
        views = settings.feature_views if settings.augment and settings.augmentations else 1
        x = backbone_features(model, crops, config, views=views,
                              progress=report.at(model=name, fold=0))  # fmt: skip
        # Features of the turned and mirrored cells, for test-time views (computed once).
        turned = [backbone_features(model, dihedral_view(crops, k), config)[0]
                  for k in range(1, config.test_time_views)]  # fmt: skip
        features = {"model": model, "x": x, "test_views": np.stack([x[0], *turned])}
        # Per-cell arrays the domain checks (every left-out source's) and the staged model's
        # domain reference read, made once. The domain score's stain part reads the cells' own
        # colours, before any stain step; the app averages features over the test-time views.
        raw = replace(config.input_spec, stain_normalisation="none")
        features |= {
            "stain": stain_statistics(crops_by_size.get(raw, report)),
            "averaged": features["test_views"].mean(axis=0),
            "groups": np.array([r.group for r in records]),  # bank groups (see compare_models)
            "is_blast": labels_of(records) == BLAST_INDEX,
        }  # fmt: skip
        outcome.training_seconds += time.perf_counter() - start
        if frozen_random:
            outcome.init = FROZEN_RANDOM_WORDS
    for fold, (fold_name, split) in enumerate(splits):
        model, logits_val, logits_test, history, seconds = _fold_model(
            config, split, index, crops, features, report.at(model=name, fold=fold + 1)
        )
        outcome.training_seconds += seconds
        left_out = {"left_out": fold_name} if settings.protocol != "grouped" else {}
        outcome.history += [{"fold": fold + 1, **left_out, **row} for row in history]
        calibration = calibrate_cells(logits_val, split.val, settings.threshold_rule)
        take = split_rows(split, index)
        test_rows = take["test"]
        outcome.p[test_rows] = blast_probability(logits_test, calibration.temperature)
        outcome.thresholds[test_rows] = calibration.threshold
        outcome.review_low[test_rows] = calibration.uncertain_low
        outcome.review_high[test_rows] = calibration.uncertain_high
        if settings.protocol == "leave_one_source_out" and features is not None:
            outcome.loso[fold_name] = _loso_extras(
                features, take, model, calibration, outcome.p[test_rows]
            )
        if fold == 0:
            outcome.params = int(model.count_params())
            outcome.cells_per_second = _inference_speed(model, crops, config)
            # A LOSO fold's model never saw one source: it measures a recipe, it is no candidate.
            if staging is not None and settings.protocol == "grouped":
                mode = FROZEN_RANDOM_WORDS if frozen_random else None
                outcome.folder = str(_stage_model(model, config, calibration, split, records,
                                                  staging, data_description, init, mode))  # fmt: skip
                if features is not None:  # so the Analyze page can warn, once it is promoted
                    staged_domain_reference(config.architecture, features, take,
                                            staging / MODELS_SUBDIR, data_description)  # fmt: skip
    return outcome


def _loso_extras(
    features: dict, take: dict, model, calibration: Calibration, p_test: np.ndarray
) -> dict:
    """Domain score and adaptation checks of one left-out source (see :mod:`train.loso`), on
    the features the app scores: averaged over the model's test-time views."""
    averaged, stain = features["averaged"], features["stain"]
    groups, is_blast, t = features["groups"], features["is_blast"], take["test"]
    kernel, bias = model.get_layer("logits").get_weights()
    return {
        "domain": domain_check(
            (averaged[take["train"]], stain[take["train"]]),
            (averaged[take["val"]], stain[take["val"]], groups[take["val"]]),
            (averaged[t], stain[t], groups[t]), (p_test, is_blast[t], calibration)),
        "adaptation": adaptation_check(averaged[t], is_blast[t], groups[t], (kernel, bias),
                                       calibration),
    }  # fmt: skip


def _stage_model(model, config: FitConfig, calibration: Calibration, split: SplitResult,
                 records, staging: Path, data_description: str, init: str,
                 mode: str | None) -> Path:  # fmt: skip
    """Write the first fold's model as a complete model folder under the run's ``models/``."""
    t = [bank_group(r) for r in split.test]
    folder_config = model_folder_config(
        config, calibration, records, data_description=data_description, initialisation=init,
        **({"mode": mode} if mode else {}),
        split_words=f"grouped per source (the comparison's fold 1), seed {config.seed}; groups "
                    f"per side in {SPLIT_FILE}",
    )  # fmt: skip
    metrics = {"split": {"test_groups": len(set(t)), "test_cells": len(t)}}
    return save_model_folder(model, config.architecture, folder_config, metrics=metrics,
                             card="", root=staging / MODELS_SUBDIR,
                             extra_files={SPLIT_FILE: split_csv(split)})  # fmt: skip


def compare_models(
    records: Sequence[LabelledCrop],
    settings: CompareSettings,
    *,
    run_dir: Path | None = None,
    data_description: str = "",
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    crop_cache: CropCache | None = None,
) -> Comparison:
    """Train every architecture of ``settings`` on the same grouped splits and compare them.

    Args:
        records: Labelled cells with groups.
        settings: Architectures and training settings.
        run_dir: Where results and each model's first-fold folder go (written at the end;
            those of an earlier run there are removed first, so none is promoted half-run).
        data_description: Plain words about the data, for the results and model cards.
        progress: Receives the training events of :func:`train.fit.fit` plus ``model``,
            ``fold``, ``n_models`` and ``n_folds``; model starts and ends come as
            ``{"stage": "model", ...}`` and ``{"stage": "model_done", ...}``.
        cancelled: Polled before every event; returning True stops the comparison with
            :class:`CompareCancelled` and writes nothing.
        crop_cache: Where cut-out cells are kept between jobs (none: cut out every time).

    Returns:
        The :class:`Comparison`; also written to ``run_dir`` when given.
    """
    start = time.perf_counter()
    records, splits = planned_splits(records, settings)
    if run_dir is not None:
        (Path(run_dir) / RESULTS_FILE).unlink(missing_ok=True)
        shutil.rmtree(Path(run_dir) / MODELS_SUBDIR, ignore_errors=True)
    index = {id(r): i for i, r in enumerate(records)}
    fold_of = np.full(len(records), -1)
    for fold, (_, split) in enumerate(splits):
        fold_of[[index[id(r)] for r in split.test]] = fold + 1
    report = _Reporter(progress, len(settings.architectures), len(splits), cancelled)
    crops_by_size = ReadyCrops(records, crop_cache)
    outcomes = []
    for i, name in enumerate(settings.architectures):
        report.at(model=name, model_index=i + 1, fold=0)(
            {"stage": "model", "done": i, "total": len(settings.architectures)}
        )
        try:
            outcome = _run_architecture(name, settings, records, splits, index, crops_by_size,
                                        report, run_dir, data_description)  # fmt: skip
        except CompareCancelled:
            raise
        except Exception as error:  # one architecture failing must not lose the others
            outcome = ModelOutcome(name, "", status="failed",
                                   reason=f"{type(error).__name__}: {error}")  # fmt: skip
        outcomes.append(outcome)
        report({"stage": "model_done", "done": i + 1, "total": len(settings.architectures),
                "status": outcome.status})  # fmt: skip
    spec = next(iter(crops_by_size), None) or InputSpec(settings.input_size or 128, "unit")
    outcomes.append(size_only_baseline(settings, records, splits, index,
                                       crops_by_size.get(spec, report)))  # fmt: skip
    comparison = Comparison(settings, records, fold_of, outcomes, data_description,
                            time.perf_counter() - start,
                            fold_names=tuple(name for name, _ in splits))  # fmt: skip
    if run_dir is not None:
        _write_cards(comparison, comparison.write(run_dir))
    return comparison


def _write_cards(comparison: Comparison, results: dict) -> None:
    """Fill each staged model's card and metrics from the comparison's written results."""
    table = comparison_markdown(results["table"])
    for outcome in comparison.outcomes:
        if not outcome.folder:
            continue
        folder = Path(outcome.folder)
        config = json.loads((folder / "config.json").read_text())
        # The folder holds fold 1's model: its test figures are fold 1's test cells. The
        # pooled figures of every fold (other folds' tests hold this model's training cells)
        # describe the recipe, and the best recipe was chosen on them.
        own = len(comparison.fold_names) > 1
        metrics = {
            "test": comparison.metrics(outcome, 1) if own else results["models"][outcome.name]["metrics"],
            "test_per_source": (comparison.per_source(outcome, 1) if own
                                else results["models"][outcome.name]["per_source"]),
            "test_uncertain_fraction": comparison.uncertain_fraction(outcome),
            "training_seconds": outcome.training_seconds,
            "history": outcome.history,
            "comparison": (f"Trained in a comparison of {len(comparison.outcomes) - 1} "
                           f"architecture(s); split {results['split']}. "
                           + ("The figures above are this folder's model (fold 1) on fold 1's "
                              "test groups; the table below pools every fold's test cells "
                              "(other folds' models), and the best recipe was chosen on it, "
                              "so its figure is optimistic for the one chosen." if own else
                              "The best recipe was chosen on these test figures, so they are "
                              "optimistic for the one chosen.") + "\n\n" + table),
        }  # fmt: skip
        write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        write_text_atomic(folder / "card.md", model_card(folder.name, config, metrics))
