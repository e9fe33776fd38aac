"""Binary blast-vs-normal metrics with group-bootstrap 95% intervals.

Blast is the positive class. Intervals resample whole groups (subjects, fields) when groups are
known, because cells of one subject are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest, rankdata

from leukemia_core.calibration import expected_calibration_error

INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "weighted_f1", "sensitivity",
                    "specificity", "auroc", "ece", "confident_miss_rate")  # fmt: skip
# The class(es) each figure is measured on: with one group of a class every bootstrap replicate
# holds the same cells of it, and the interval collapses to the point, looking precise.
INTERVAL_CLASSES = {"sensitivity": ("blast",), "confident_miss_rate": ("blast",),
                    "specificity": ("normal",), "balanced_accuracy": ("blast", "normal"),
                    "auroc": ("blast", "normal")}  # fmt: skip
SCREENING_SPECIFICITY = 0.90  # operating point for "sensitivity at specificity" (ROC)
# A bootstrap over fewer groups (patients, field blocks) cannot show how much the next group
# may differ: its intervals come out narrow, not wide.
FEW_GROUPS_FOR_INTERVALS = 5


def auroc(is_blast: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney); None when only one class is present."""
    y = np.asarray(is_blast, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(np.asarray(p, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def few_groups_note(n_groups: int | None, class_groups: dict[str, int] | None = None) -> str | None:
    """A warning for intervals bootstrapped over too few groups; None when there are enough.

    ``class_groups`` (groups holding each class): sensitivity rests on the blast patients alone
    and specificity on the normal ones, so 2 blast patients among 10 get the warning too.
    """
    few = {c: n for c, n in (class_groups or {}).items() if 0 < n < FEW_GROUPS_FOR_INTERVALS}
    if (n_groups is None or n_groups >= FEW_GROUPS_FOR_INTERVALS) and few:
        which = ", ".join(f"{c} cells from {n} group(s)" for c, n in sorted(few.items()))
        return (f"The intervals of the figures of one class rest on few groups ({which}): a "
                f"bootstrap over fewer than {FEW_GROUPS_FOR_INTERVALS} looks narrower than the "
                "truth. Treat them as unknown; test cells of more patients.")  # fmt: skip
    if n_groups is None or n_groups >= FEW_GROUPS_FOR_INTERVALS:
        return None
    return (
        f"The 95% intervals come from {n_groups} group(s) only: a bootstrap over fewer than "
        f"{FEW_GROUPS_FOR_INTERVALS} cannot show how much another patient or field would "
        "differ, so they look narrower than the truth. Treat them as unknown; test cells of "
        "more patients."
    )


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def _class_scores(tp: int, fp: int, fn: int) -> dict:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def sensitivity_at_specificity(
    is_blast: np.ndarray, p: np.ndarray, specificity: float = SCREENING_SPECIFICITY
) -> float | None:
    """Best blast sensitivity of any threshold whose specificity is >= ``specificity`` (ROC)."""
    y, p = np.asarray(is_blast, dtype=bool), np.asarray(p, dtype=np.float64)
    if not y.any() or y.all():
        return None
    # The lowest threshold keeping specificity: just above the allowed share of top normals.
    normals = np.sort(p[~y])
    allowed = int(np.floor((1 - specificity) * len(normals) + 1e-9))
    cut = normals[len(normals) - allowed - 1] if allowed < len(normals) else -np.inf
    return float((p[y] > cut).mean())


def point_metrics(
    is_blast: np.ndarray, p: np.ndarray, threshold: float | np.ndarray,
    review_low: float | np.ndarray | None = None,
) -> dict:  # fmt: skip
    """Every figure at one threshold (or one per cell), without intervals.

    ``review_low`` (the lower end of the review band, one or per cell) gives
    ``confident_miss_rate``: blasts below the band, which no reviewer is asked to look at, over
    all blasts.
    """
    y = np.asarray(is_blast, dtype=bool)
    called = np.asarray(p) >= threshold
    tp, fn = int((called & y).sum()), int((~called & y).sum())
    fp, tn = int((called & ~y).sum()), int((~called & ~y).sum())
    blast, normal = _class_scores(tp, fp, fn), _class_scores(tn, fn, fp)
    sens, spec = blast["recall"], normal["recall"]
    weighted = [(c["f1"] or 0.0) * c["support"] for c in (blast, normal)]
    return {
        "n": len(y),
        "accuracy": _ratio(tp + tn, len(y)),
        # Undefined with one class only: a lone recall must not pass for a balanced accuracy.
        "balanced_accuracy": (sens + spec) / 2 if sens is not None and spec is not None else None,
        "weighted_f1": _ratio(sum(weighted), len(y)),
        "sensitivity": sens,
        "specificity": spec,
        "auroc": auroc(y, p),
        "ece": expected_calibration_error(p, y) if len(y) else None,
        "confident_miss_rate": None if review_low is None or not y.any()
        else float((np.asarray(p) < review_low)[y].mean()),
        "sensitivity_at_specificity_90": sensitivity_at_specificity(y, p),
        "per_class": {"blast": blast, "normal": normal},
        "confusion": {"blast_called_blast": tp, "blast_called_normal": fn,
                      "normal_called_blast": fp, "normal_called_normal": tn},
    }  # fmt: skip


def binary_metrics(
    is_blast: Sequence[bool] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    threshold: float | np.ndarray = 0.5,
    *,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    review_low: float | np.ndarray | None = None,
) -> dict:
    """Point figures plus ``intervals``: 95% percentile bootstrap over groups (or cells).

    Args:
        is_blast: True for blasts.
        p: Calibrated blast probability per cell.
        threshold: Decision threshold on ``p``, or one per cell (pooled out-of-fold
            predictions of models calibrated per fold).
        groups: Group of each cell; resampled as units when given.
        n_boot: Bootstrap replicates (0 skips intervals).
        seed: Bootstrap seed.
        review_low: Lower end of the review band (one, or one per cell) for
            ``confident_miss_rate``.
    """
    y, p = np.asarray(is_blast, dtype=bool), np.asarray(p, dtype=np.float64)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), p.shape)
    lows = None if review_low is None else np.broadcast_to(
        np.asarray(review_low, dtype=np.float64), p.shape)  # fmt: skip
    result = point_metrics(y, p, thresholds, lows)
    result["threshold"] = float(threshold) if np.ndim(threshold) == 0 else "per fold"
    if not n_boot or len(y) < 2:
        return result
    group_ids = np.unique(np.asarray(groups if groups is not None else np.arange(len(y))),
                          return_inverse=True)[1]  # fmt: skip
    members = [np.flatnonzero(group_ids == g) for g in range(group_ids.max() + 1)]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in INTERVAL_METRICS}
    for _ in range(n_boot):
        chosen = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        replicate = point_metrics(y[chosen], p[chosen], thresholds[chosen],
                                  None if lows is None else lows[chosen])  # fmt: skip
        for k in INTERVAL_METRICS:
            if replicate[k] is not None:
                samples[k].append(replicate[k])
    class_groups = {"blast": len(np.unique(group_ids[y])), "normal": len(np.unique(group_ids[~y]))}
    result["intervals"] = {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
        if v and all(class_groups[c] >= 2 for c in INTERVAL_CLASSES.get(k, ()))
        else None
        for k, v in samples.items()
    }
    result["class_groups"] = class_groups
    result["interval_unit"] = "group" if groups is not None else "cell"
    result["n_groups"] = len(members)
    return result


def roc_points(is_blast: np.ndarray, p: np.ndarray, max_points: int = 200) -> dict:
    """ROC curve ``{"fpr": [...], "tpr": [...]}`` from (0, 0) to (1, 1), thinned to ``max_points``."""
    y = np.asarray(is_blast, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    if not y.any() or y.all():
        return {"fpr": [], "tpr": []}
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tpr = np.r_[0.0, np.cumsum(y)[last_of_tie] / y.sum()]
    fpr = np.r_[0.0, np.cumsum(~y)[last_of_tie] / (~y).sum()]
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers on the same cells.

    Returns ``a_only`` (cells only A got right), ``b_only`` and the two-sided ``p_value``
    (binomial on the discordant cells; 1.0 when there are none). Cells of one subject are not
    independent, so read the p-value as indicative.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p_value = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p_value)}
