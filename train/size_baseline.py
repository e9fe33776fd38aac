"""The size-only baseline of a comparison: logistic regression on the cell's area in its crop.

A model that does not clearly beat it may have learned only that blasts are larger.
"""

from __future__ import annotations

import time

import numpy as np

from leukemia_core.calibration import BLAST_INDEX, blast_probability
from train.compare_settings import SIZE_BASELINE
from train.comparison import ModelOutcome
from train.fit import labels_of
from train.run import calibrate_cells
from train.splits import split_rows


def cell_area_fraction(crops: np.ndarray) -> np.ndarray:
    """Share of each crop covered by the cell (non-black pixels): the size-only feature."""
    return (crops.max(axis=-1) > 4).mean(axis=(1, 2)).astype(np.float64)


def logistic_fit(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Intercept and slope of a class-balanced, lightly ridged logistic regression (Newton)."""
    design = np.column_stack([np.ones_like(x), x])
    weights = np.where(y, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (weights * (p - y)) + 1e-3 * beta
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + 1e-3 * np.eye(2)
        beta -= np.linalg.solve(hessian, gradient)
    return beta


def _size_logits(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Two-column logits whose softmax blast probability is the logistic output."""
    z = beta[0] + beta[1] * x
    logits = np.zeros((len(x), 2), np.float32)
    logits[:, BLAST_INDEX] = z
    return logits


def size_only_baseline(settings, records, splits, index, crops) -> ModelOutcome:
    """Out-of-fold blast probabilities of the area-only model on the comparison's own splits."""
    area = cell_area_fraction(crops)
    outcome = ModelOutcome(SIZE_BASELINE, "logistic regression on cell area", params=2,
                           p=np.full(len(records), np.nan),
                           thresholds=np.full(len(records), np.nan),
                           review_low=np.full(len(records), np.nan))  # fmt: skip
    start = time.perf_counter()
    for _, split in splits:
        rows = split_rows(split, index)
        y = {s: labels_of(getattr(split, s)) == BLAST_INDEX for s in rows}
        mean, std = area[rows["train"]].mean(), area[rows["train"]].std() + 1e-9
        beta = logistic_fit((area[rows["train"]] - mean) / std, y["train"].astype(float))
        logits = {s: _size_logits(beta, (area[rows[s]] - mean) / std) for s in ("val", "test")}
        calibration = calibrate_cells(logits["val"], split.val, settings.threshold_rule)
        outcome.p[rows["test"]] = blast_probability(logits["test"], calibration.temperature)
        outcome.thresholds[rows["test"]] = calibration.threshold
        outcome.review_low[rows["test"]] = calibration.uncertain_low
    outcome.training_seconds = time.perf_counter() - start
    return outcome
