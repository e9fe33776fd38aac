"""Site adaptation: re-fit a model's calibration (and maybe its head) on a lab's own cells.

A model trained on public sets can score a new lab's blasts lower (another stain, camera or
smear technique). :func:`adapt_from_arrays` works on pooled backbone features, the input of the
model's ``logits`` layer: that layer is linear, so the features averaged over the model's
test-time views give its view-averaged logits, and trying a new head is one matrix product. It
tries, least change first: re-fitting temperature, threshold and review band; also the logits'
offset (one number, which temperature scaling cannot replace when a lab's probabilities are all
too low); and, with at least ``min_head_cells`` cells, also the head's weights (logistic
regression pulled toward the current ones, so a small lab set cannot wreck them). A grouped
internal check (no sample on both sides) picks one. :mod:`train.adapt_model` writes the result
as a new model folder that must be made active explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from leukemia_core.calibration import (
    BLAST_INDEX,
    Calibration,
    blast_probability,
    fit_calibration,
)
from leukemia_core.models.adapted_check import worse_than_before as worse_than_before
from train.evaluate.metrics import point_metrics
from train.records import BLAST, NORMAL, DatasetError, LabelledCrop
from train.splits import assign_groups, units_of

MIN_CELLS_PER_CLASS = 5  # fewer blasts or normal cells than this: nothing to fit on
MIN_GROUPS = 2  # the internal check needs at least two samples
MIN_HEAD_CELLS_PER_CLASS = 20  # the head is re-fitted only with this many of each class too
CHECK_FOLDS = 5
# The check's figures (train.evaluate.metrics.point_metrics keys)
FIGURES = ("n", "balanced_accuracy", "sensitivity", "specificity", "ece", "confident_miss_rate")
HEAD_PULL = 1.0  # L2 pull toward the current head, in units of the features' mean variance
HEAD_ACCURACY_SLACK = 0.01  # a lower log-loss may cost this much balanced accuracy
MIN_LOGLOSS_GAIN = 0.01  # a larger change must lower the check's log-loss by this much
ADAPTATION_SOURCE = "this lab"  # every adaptation cell counts as one source for the threshold
# What an adaptation may change, least first: the calibration only; also the offset of the
# logits (one number: temperature scaling cannot move probabilities that are all too low);
# also the head's weights (with enough cells).
CALIBRATION_ONLY, OFFSET, HEAD = "calibration_only", "offset", "head"
VARIANTS = (CALIBRATION_ONLY, OFFSET, HEAD)
VARIANT_WORDS = {
    CALIBRATION_ONLY: "temperature, threshold and review band re-fitted; weights unchanged",
    OFFSET: "temperature, threshold, review band and the logits' offset re-fitted",
    HEAD: "temperature, threshold, review band and the classifier head re-fitted",
}


VARIANT_NAMES = {CALIBRATION_ONLY: "calibration only", OFFSET: "calibration and offset",
                 HEAD: "calibration and head"}  # fmt: skip


class AdaptationError(DatasetError):
    """The cells cannot adapt a model: too few, one class only, or too few samples."""


@dataclass(frozen=True)
class Adaptation:
    """What adapting to a lab's cells gave.

    Attributes:
        calibration: The re-fitted temperature, threshold and review band.
        kernel: ``(F, 2)`` weights of the ``logits`` layer (the old ones unless re-fitted).
        bias: ``(2,)`` bias of the ``logits`` layer (the old one for ``calibration_only``).
        variant: What was re-fitted: ``calibration_only``, ``offset`` (plus the logits'
            offset) or ``head`` (plus the head's weights).
        decision: Why this variant, in words.
        counts: Cells and groups used, per class.
        check: Figures of the grouped internal check, each on the same out-of-fold cells:
            ``before`` (the current model and calibration), one entry per variant tried (None
            for ``head`` when there were too few cells) and ``after`` (the chosen one); plus
            the number of folds, cells and groups scored.
    """

    calibration: Calibration
    kernel: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    variant: str
    decision: str
    counts: dict
    check: dict

    @property
    def head_refitted(self) -> bool:
        return self.variant == HEAD

    def to_dict(self) -> dict:
        """Everything but the weights, as JSON-ready values."""
        return {"calibration": self.calibration.to_dict(), "variant": self.variant,
                "head_refitted": self.head_refitted, "decision": self.decision,
                "counts": self.counts, "check": self.check}  # fmt: skip


def check_cells(is_blast: np.ndarray, groups: np.ndarray) -> dict:
    """Counts of the adaptation cells, or an :class:`AdaptationError` saying what is missing."""
    y, groups = np.asarray(is_blast, dtype=bool), np.asarray(groups).astype(str)
    if y.ndim != 1 or groups.shape != y.shape:
        raise AdaptationError(f"is_blast and groups must be 1-D and of one length; got shapes "
                              f"{y.shape} and {groups.shape}.")  # fmt: skip
    counts = {"cells": len(y), "groups": len(set(groups)),
              "per_class": {BLAST: int(y.sum()), NORMAL: int((~y).sum())},
              "groups_per_class": {BLAST: len(set(groups[y])),
                                   NORMAL: len(set(groups[~y]))}}  # fmt: skip
    fewest = min(counts["per_class"].values())
    if fewest < MIN_CELLS_PER_CLASS:
        raise AdaptationError(
            f"Adaptation needs at least {MIN_CELLS_PER_CLASS} labelled blasts and "
            f"{MIN_CELLS_PER_CLASS} labelled normal cells; these cells hold "
            f"{counts['per_class'][BLAST]} blast(s) and {counts['per_class'][NORMAL]} normal "
            "cell(s). Add labelled cells of both classes (sign more of this lab's cases, "
            "blast-positive and negative samples, or give a folder with both), then adapt again."
        )
    if counts["groups"] < MIN_GROUPS:
        raise AdaptationError(
            f"Adaptation needs cells of at least {MIN_GROUPS} samples (groups), so it can be "
            f"checked on a sample it was not fitted on; these {len(y)} cells come from "
            f"{counts['groups']}. Sign cases of more samples, then adapt again."
        )
    return counts


def _fit_calibration(logits: np.ndarray, y: np.ndarray) -> Calibration:
    """:func:`fit_calibration` on cells of one lab: one source, sensitivity-first threshold."""
    return fit_calibration(logits, y, sources=np.full(len(y), ADAPTATION_SOURCE))


def _margin_parts(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights and bias of the blast-minus-normal logit margin."""
    other = 1 - BLAST_INDEX
    return kernel[:, BLAST_INDEX] - kernel[:, other], float(bias[BLAST_INDEX] - bias[other])


def fit_head(
    features: np.ndarray, is_blast: np.ndarray, kernel: np.ndarray, bias: np.ndarray,
    pull: float = HEAD_PULL, *, offset_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``logits`` layer re-fitted by logistic regression on ``features``.

    Only the blast-minus-normal margin matters to a two-class softmax, so the margin's weights
    and offset are fitted (from the current ones, the weights with an L2 pull toward them of
    ``pull`` times the features' mean variance) and the change is split evenly between the two
    logits. The loss is not class-weighted: the offset then matches the lab's own mix of cells,
    which is what calibrated probabilities need (the threshold handles the imbalance).

    Args:
        features: ``(N, F)`` pooled features.
        is_blast: True for blasts.
        kernel: ``(F, 2)`` current kernel of the ``logits`` layer.
        bias: ``(2,)`` current bias.
        pull: Strength of the pull toward the current weights.
        offset_only: Fit the margin's offset alone (one number; the weights stay).

    Returns:
        The new ``(kernel, bias)``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(is_blast, dtype=np.float64)
    w0, b0 = _margin_parts(np.asarray(kernel, np.float64), np.asarray(bias, np.float64))
    strength = pull * max(float(x.var(axis=0).mean()), 1e-12)
    base = x @ w0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = (w0, theta[0]) if offset_only else (theta[:-1], theta[-1])
        margin = (base if offset_only else x @ w) + b
        residual = (1.0 / (1.0 + np.exp(-np.clip(margin, -60, 60))) - y) / len(y)
        value = float(np.mean(np.logaddexp(0.0, margin) - y * margin))
        if offset_only:
            return value, np.array([residual.sum()])
        delta = w - w0
        value += 0.5 * strength * float(delta @ delta)
        return value, np.append(x.T @ residual + strength * delta, residual.sum())

    start = np.array([b0]) if offset_only else np.append(w0, b0)
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    dw = np.zeros_like(w0) if offset_only else result.x[:-1] - w0
    db = result.x[-1] - b0
    step = np.zeros_like(kernel, dtype=np.float64)
    step[:, BLAST_INDEX], step[:, 1 - BLAST_INDEX] = dw / 2, -dw / 2
    shift = np.zeros(2)
    shift[BLAST_INDEX], shift[1 - BLAST_INDEX] = db / 2, -db / 2
    return (kernel + step).astype(np.float32), (bias + shift).astype(np.float32)


def figures(p: np.ndarray, is_blast: np.ndarray, threshold, uncertain_low) -> dict:
    """Balanced accuracy, sensitivity, specificity, ECE and confident-miss rate.

    Args:
        p: Calibrated blast probabilities.
        is_blast: True for blasts.
        threshold: Decision threshold, or one per cell (per-fold calibrations).
        uncertain_low: Lower end of the review band, or one per cell; a blast below it is a
            confident miss (counted normal without review).
    """
    p = np.asarray(p, np.float64)
    m = point_metrics(is_blast, p, np.broadcast_to(threshold, p.shape),
                      np.broadcast_to(uncertain_low, p.shape))  # fmt: skip
    return {k: m[k] for k in FIGURES}


def _folds(is_blast: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Fold index per cell: groups shared out over up to :data:`CHECK_FOLDS` parts by class."""
    cells = [LabelledCrop(Path("."), BLAST if b else NORMAL, g, ADAPTATION_SOURCE)
             for b, g in zip(is_blast, groups, strict=True)]  # fmt: skip
    # Parts are filled with split units (one ALL-IDB1 smear run's blocks together), not groups.
    k = min(CHECK_FOLDS, len(set(units_of(cells).values())))
    part_of = assign_groups(cells, [1 / k] * k, seed)
    return np.array([part_of[g] for g in groups])


def _recipe(x, y, groups, kernel, bias, variant: str, pull: float, seed: int):
    """The calibration (and ``logits`` layer) one adaptation ``variant`` fits on these cells.

    A re-fitted head separates the cells it was fitted on better than new ones, so its
    calibration is fitted on cross-fitted logits: each sample's from a head fitted without it.
    """
    if variant == CALIBRATION_ONLY:
        return _fit_calibration(x @ kernel + bias, y), kernel, bias
    new_kernel, new_bias = fit_head(x, y, kernel, bias, pull, offset_only=variant == OFFSET)
    logits = x @ new_kernel + new_bias
    if variant == HEAD:
        fold = _folds(y, groups, seed)
        for k in np.unique(fold):
            fit_on, held = fold != k, fold == k
            if y[fit_on].any() and not y[fit_on].all():  # else: in-sample logits stay
                inner_kernel, inner_bias = fit_head(x[fit_on], y[fit_on], kernel, bias, pull)
                logits[held] = x[held] @ inner_kernel + inner_bias
    return _fit_calibration(logits, y), new_kernel, new_bias


def adapt_from_arrays(
    features: np.ndarray,
    is_blast: np.ndarray,
    groups: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    *,
    calibration: Calibration | None = None,
    n_views_logits: np.ndarray | None = None,
    min_head_cells: int = 200,
    head_pull: float = HEAD_PULL,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
) -> Adaptation:
    """Re-fit calibration (and maybe the logits' offset or head) on a lab's cells.

    Each variant (see :class:`Adaptation`) is scored on a grouped k-fold check of these cells
    (up to :data:`CHECK_FOLDS` folds, samples never split); the chosen one is then fitted on
    all of them.

    Args:
        features: ``(N, F)`` pooled backbone features (``head_pool`` output), averaged over
            the model's test-time views as its logits are.
        is_blast: True for blasts (the reviewers' labels).
        groups: Sample (or patient) of each cell; a group is never on both sides of a split.
        kernel: ``(F, 2)`` current weights of the ``logits`` layer.
        bias: ``(2,)`` current bias of the ``logits`` layer.
        calibration: The model's current calibration, for the ``before`` figures (default:
            uncalibrated, temperature 1 and threshold 0.5).
        n_views_logits: The model's own ``(N, 2)`` logits of these cells (view-averaged);
            when given they must equal ``features @ kernel + bias``, which catches features
            taken with other views or preprocessing.
        min_head_cells: Re-fit the head only with at least this many cells (and
            :data:`MIN_HEAD_CELLS_PER_CLASS` of each class).
        head_pull: Strength of the pull toward the current head (see :func:`fit_head`).
        variants: Which of :data:`VARIANTS` may be chosen (``calibration_only`` always is).
        seed: Seed of the check's fold assignment.

    Raises:
        AdaptationError: Too few cells or samples, one class only, mismatched shapes, or no
            fold of the check holds both classes on its fitting side.
    """
    allowed, unknown = set(variants), set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"variants {sorted(unknown)} are unknown; choose from {VARIANTS}.")
    x = np.asarray(features, dtype=np.float64)
    y, groups = np.asarray(is_blast, dtype=bool), np.asarray(groups).astype(str)
    kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
    if x.ndim != 2 or kernel.shape != (x.shape[1], 2) or bias.shape != (2,) or len(x) != len(y):
        raise AdaptationError(
            f"features {x.shape}, kernel {kernel.shape}, bias {bias.shape} and {len(y)} labels "
            "do not fit: expected (N, F) features of N labelled cells, an (F, 2) kernel and a "
            "(2,) bias of the model's 'logits' layer."
        )
    counts = check_cells(y, groups)
    logits = x @ kernel + bias
    if n_views_logits is not None and not np.allclose(logits, n_views_logits, rtol=1e-3, atol=1e-3):
        worst = float(np.max(np.abs(logits - np.asarray(n_views_logits))))
        raise AdaptationError(
            f"features @ kernel + bias differ from the model's logits by up to {worst:.3g}: the "
            "features were not taken the way the model classifies (same preprocessing, same "
            "test-time views, averaged before the logits layer)."
        )
    current = calibration or Calibration()
    head_ok = (len(y) >= min_head_cells
               and min(counts["per_class"].values()) >= MIN_HEAD_CELLS_PER_CLASS)  # fmt: skip

    # Grouped check: every variant is fitted without the fold it is scored on.
    fold = _folds(y, groups, seed)
    variants = tuple(v for v in VARIANTS if v == CALIBRATION_ONLY
                     or (v in variants and (v != HEAD or head_ok)))  # fmt: skip
    scored = np.zeros(len(y), bool)
    out = {v: np.zeros((3, len(y))) for v in variants}  # p, threshold, review band's low end
    for k in np.unique(fold):
        fit_on, test = fold != k, fold == k
        if y[fit_on].all() or not y[fit_on].any():
            continue  # this fold's fitting side holds one class: it cannot fit a threshold
        scored |= test
        for variant in variants:
            cal, kern, b = _recipe(x[fit_on], y[fit_on], groups[fit_on], kernel, bias, variant,
                                   head_pull, seed)  # fmt: skip
            out[variant][0, test] = blast_probability(x[test] @ kern + b, cal.temperature)
            out[variant][1:, test] = [[cal.threshold], [cal.uncertain_low]]
    ys = y[scored]
    if ys.all() or not ys.any():
        raise AdaptationError(
            f"No grouped check is possible: the {counts['groups']} samples cannot be split so "
            "that both classes are on the fitting side and scored on the other. Sign cases of "
            "more samples holding blasts and more holding normal cells."
        )
    if n_views_logits is not None:
        logits = np.asarray(n_views_logits, np.float64)
    p_before = blast_probability(logits[scored], current.temperature)
    check = {"folds": len(np.unique(fold)), "cells": int(scored.sum()),
             "groups": len(set(groups[scored])), HEAD: None,
             "before": figures(p_before, ys, current.threshold, current.uncertain_low)}  # fmt: skip
    for variant in variants:
        p, threshold, low = out[variant][:, scored]
        check[variant] = {**figures(p, ys, threshold, low), "nll": _nll(p, ys)}
    variant, decision = _choose(check, variants)
    if not head_ok and HEAD in allowed:
        decision += (
            f"; the head's weights are re-fitted from {min_head_cells} cells with "
            f"{MIN_HEAD_CELLS_PER_CLASS} of each class (here {counts['cells']} cells, "
            f"{counts['per_class'][BLAST]} blasts, {counts['per_class'][NORMAL]} normal)"
        )
    check["after"] = check[variant]
    new_calibration, new_kernel, new_bias = _recipe(x, y, groups, kernel, bias, variant,
                                                    head_pull, seed)  # fmt: skip
    return Adaptation(new_calibration, new_kernel, new_bias, variant, decision, counts, check)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _choose(check: dict, variants: tuple[str, ...]) -> tuple[str, str]:
    """The least change that the grouped check does not beat: a larger variant is taken only
    when its out-of-fold log-loss is :data:`MIN_LOGLOSS_GAIN` lower and its balanced accuracy
    at most :data:`HEAD_ACCURACY_SLACK` below calibration alone's (a thresholded figure moves
    by a cell or two)."""
    floor = check[CALIBRATION_ONLY]["balanced_accuracy"] - HEAD_ACCURACY_SLACK
    best = CALIBRATION_ONLY
    for variant in variants[1:]:
        candidate = check[variant]
        if (candidate["nll"] < check[best]["nll"] - MIN_LOGLOSS_GAIN
                and candidate["balanced_accuracy"] >= floor):  # fmt: skip
            best = variant
    words = "; ".join(f"{VARIANT_NAMES[v]}: balanced accuracy "
                      f"{check[v]['balanced_accuracy']:.3f}, log-loss {check[v]['nll']:.3f}"
                      for v in variants)  # fmt: skip
    return best, f"Chosen on that check: {VARIANT_NAMES[best]} ({words})"
