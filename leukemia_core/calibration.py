"""Turn classifier logits into calibrated blast probabilities, a decision and an abstention band.

All three are fitted on the validation split and stored in the model's ``config.json``:
temperature scaling (Guo et al., 2017) divides the logit difference by one scalar fitted by
maximum likelihood. The decision threshold is sensitivity-first when the sources of the cells
are given: the highest threshold at which every source with enough blasts keeps a blast
sensitivity of at least :data:`MIN_SENSITIVITY` (a missed blast is the worst error of a
screening tool); otherwise it maximises balanced accuracy. The "uncertain" band around it is
set so that blasts below it (confident misses) stay under :data:`TARGET_CONFIDENT_ERROR` of the
blasts and confident false blasts under that share of the normal cells, within a review budget;
doubtful cells go to a reviewer instead of being counted silently.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

BLAST_INDEX = 0  # class order of every model: ("blast", "normal")
CLASS_NAMES = ("blast", "normal")
MAX_UNCERTAIN_FRACTION = 0.15  # balanced-accuracy rule: share of validation cells for review
SENSITIVITY_FIRST_REVIEW_BUDGET = 0.25  # sensitivity-first rule: misses cost more than reviews
TARGET_CONFIDENT_ERROR = 0.01
TEMPERATURE_RANGE = (0.01, 100.0)  # fit_temperature searches 0.05-20
MIN_HALF_WIDTH = 0.05  # cells this close to the threshold always go to review
MIN_SENSITIVITY = 0.95  # blast sensitivity on validation, in every source with blasts
MIN_SOURCE_BLASTS = 10  # sources with fewer validation blasts are judged pooled
THRESHOLD_RULES = {
    "balanced_accuracy": "balanced accuracy on validation cells of sources holding both "
    "classes; temperature on all validation cells",
    "sensitivity_first": f"highest threshold keeping blast sensitivity >= {MIN_SENSITIVITY} on "
    f"the validation cells of every source with >= {MIN_SOURCE_BLASTS} blasts (smaller ones "
    "pooled); review band keeping confident misses and confident false blasts <= "
    f"{TARGET_CONFIDENT_ERROR:.0%} each within a {SENSITIVITY_FIRST_REVIEW_BUDGET:.0%} review "
    "budget; temperature on all validation cells",
}


@dataclass(frozen=True)
class Calibration:
    """Calibration stored in a model config.

    Attributes:
        temperature: Divides the blast-vs-normal logit margin (1.0 = unchanged).
        threshold: Calibrated blast probability at or above which a cell is called a blast.
        uncertain_low: Cells with ``uncertain_low <= p < uncertain_high`` are sent to review.
        uncertain_high: Upper end of the review band.
    """

    temperature: float = 1.0
    threshold: float = 0.5
    uncertain_low: float = 0.5
    uncertain_high: float = 0.5

    def __post_init__(self) -> None:
        """Each value in its range (a ValueError names the field): a temperature of 0 or less
        or NaN would silence or invert every call, a threshold outside (0, 1) fix it."""
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(f"calibration.{key} is {value!r}; expected a number")
            if not math.isfinite(value):
                raise ValueError(f"calibration.{key} is {value!r}; expected a finite number")
        low, high = TEMPERATURE_RANGE
        if not low <= self.temperature <= high:
            raise ValueError(f"calibration.temperature is {self.temperature!r}; use a number "
                             f"from {low} to {high:g} (it divides the logit margin)")  # fmt: skip
        if not 0 < self.threshold < 1:
            raise ValueError(f"calibration.threshold is {self.threshold!r}; use a probability "
                             "between 0 and 1")  # fmt: skip
        if not 0 <= self.uncertain_low <= self.threshold <= self.uncertain_high <= 1:
            raise ValueError(
                f"calibration review band is uncertain_low {self.uncertain_low!r} to "
                f"uncertain_high {self.uncertain_high!r} around threshold {self.threshold!r}; it "
                "needs 0 <= uncertain_low <= threshold <= uncertain_high <= 1"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        """From a config's ``calibration`` object: all four values, or none (an uncalibrated
        model: temperature 1, threshold 0.5, no review band). A misspelt or missing key is
        refused, not filled with a default that moves every call."""
        keys = tuple(asdict(cls()))
        unknown = sorted(set(values) - set(keys))
        missing = [k for k in keys if k not in values]
        if unknown or (values and missing):
            raise ValueError(f"calibration holds {sorted(values)}; expected all of "
                             f"{', '.join(keys)} (or none)")  # fmt: skip
        numbers = {}
        for key in keys:
            if key in values:
                value = values[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"calibration.{key} is {value!r}; expected a number")
                try:
                    numbers[key] = float(value)
                except OverflowError:  # a hand-typed integer of hundreds of digits
                    raise ValueError(f"calibration.{key} is too large") from None
        return cls(**numbers)


def calls_in_words(threshold: float | None, low: float | None, high: float | None) -> str:
    """What a cell gets at each calibrated probability, as the report and the app say it."""
    if None not in (threshold, low, high) and low <= threshold < high:  # the band holds the
        # threshold: what a cell gets on each side, not two ranges that seem to overlap
        return (f"called blast at a calibrated probability of {high:.2f} or more and normal "
                f"below {low:.2f}; between the two (around the decision threshold "
                f"{threshold:.2f}) sent to review")  # fmt: skip
    parts = []
    if threshold is not None:
        parts.append(f"blast when the calibrated probability is at least {threshold:.2f}")
    if low is not None and high is not None and high > low:
        parts.append(f"sent to review between {low:.2f} and {high:.2f}")
    return "; ".join(parts)


def blast_margin(logits: np.ndarray) -> np.ndarray:
    """Blast logit minus normal logit, per cell, from ``(N, 2)`` logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits[:, BLAST_INDEX] - logits[:, 1 - BLAST_INDEX]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def blast_probability(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated blast probability of each cell."""
    return _sigmoid(blast_margin(logits) / temperature)


def fit_temperature(logits: np.ndarray, is_blast: np.ndarray) -> float:
    """The temperature minimising validation negative log-likelihood (bounded to 0.05-20)."""
    margin = blast_margin(logits)
    y = np.asarray(is_blast, dtype=bool)

    def nll(log_t: float) -> float:
        p = np.clip(_sigmoid(margin / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def balanced_accuracy(p: np.ndarray, is_blast: np.ndarray, threshold: float) -> float:
    y = np.asarray(is_blast, dtype=bool)
    called = np.asarray(p) >= threshold
    sens = called[y].mean() if y.any() else 1.0
    spec = (~called[~y]).mean() if (~y).any() else 1.0
    return float((sens + spec) / 2)


def fit_calibration(
    logits: np.ndarray,
    is_blast: np.ndarray,
    decide_on: np.ndarray | None = None,
    *,
    sources: np.ndarray | None = None,
) -> Calibration:
    """Temperature, threshold and uncertain band fitted on validation logits and labels.

    Args:
        logits: ``(N, 2)`` validation logits.
        is_blast: True for blasts.
        decide_on: Cells the balanced-accuracy threshold is chosen on (default: all). Pass the
            cells of sources that hold both classes: normal cells from blast-free sets are easy
            and would pull the threshold down.
        sources: Source of each cell. When given, the threshold is sensitivity-first (see the
            module docstring and :data:`THRESHOLD_RULES`).
    """
    y = np.asarray(is_blast, dtype=bool)
    temperature = fit_temperature(logits, y)
    p = blast_probability(logits, temperature)
    if sources is not None and y.any():
        threshold = sensitivity_first_threshold(p, y, np.asarray(sources))
        low, high = _review_band(p, y, threshold)
        return Calibration(temperature, threshold, low, high)
    chosen = np.ones(len(y), bool) if decide_on is None else np.asarray(decide_on, bool)
    if chosen.any() and y[chosen].any() and (~y[chosen]).any():
        p_decide, y_decide = p[chosen], y[chosen]
    else:
        p_decide, y_decide = p, y
    # Balanced accuracy is flat over wide ranges; among the best thresholds take the one
    # closest to 0.5 so that calibrated probabilities keep their plain meaning.
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = np.array([balanced_accuracy(p_decide, y_decide, t) for t in grid])
    best = grid[scores >= scores.max() - 1e-9]
    threshold = float(best[np.argmin(np.abs(best - 0.5))])
    low, high = _uncertain_band(p, y, threshold)
    return Calibration(temperature, threshold, low, high)


def sensitivity_first_threshold(p: np.ndarray, is_blast: np.ndarray, sources: np.ndarray) -> float:
    """Highest grid threshold (0.05-0.95) with blast sensitivity >= :data:`MIN_SENSITIVITY` in
    every source holding >= :data:`MIN_SOURCE_BLASTS` blasts, the smaller ones pooled.

    >>> p = np.array([0.9, 0.8, 0.3, 0.1]); y = np.array([1, 1, 1, 0], bool)
    >>> sensitivity_first_threshold(p, y, np.array(["a"] * 4))
    0.3
    """
    y = np.asarray(is_blast, bool)
    blasts_per_source = {s: int((y & (sources == s)).sum()) for s in np.unique(sources)}
    small = [s for s, n in blasts_per_source.items() if 0 < n < MIN_SOURCE_BLASTS]
    judged = [sources == s for s, n in blasts_per_source.items() if n >= MIN_SOURCE_BLASTS]
    if small:
        judged.append(np.isin(sources, small))
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    ok = [t for t in grid if all((p[y & m] >= t).mean() >= MIN_SENSITIVITY for m in judged)]
    return float(max(ok)) if ok else float(grid[0])


def _review_band(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """Band around a sensitivity-first threshold: confident misses first, then false blasts.

    The low end is put under all but :data:`TARGET_CONFIDENT_ERROR` of the validation blasts,
    the high end over all but that share of the normal cells; when more than
    :data:`SENSITIVITY_FIRST_REVIEW_BUDGET` of the cells would fall inside, the high end gives
    way first (a false blast is seen by the reviewer anyway; a confident miss is not).
    """
    grid = np.round(np.arange(0.0, 1.001, 0.01), 2)
    blasts, normals = p[y], p[~y]
    low_ok = [v for v in grid if v <= threshold - MIN_HALF_WIDTH
              and (blasts < v).mean() <= TARGET_CONFIDENT_ERROR]  # fmt: skip
    low = float(max(low_ok)) if low_ok else 0.0
    high_ok = [v for v in grid if v >= threshold + MIN_HALF_WIDTH
               and (not len(normals) or (normals >= v).mean() <= TARGET_CONFIDENT_ERROR)]  # fmt: skip
    high = float(min(high_ok)) if high_ok else 1.0

    def inside(lo: float, hi: float) -> float:
        return float(((p >= lo) & (p < hi)).mean())

    while inside(low, high) > SENSITIVITY_FIRST_REVIEW_BUDGET and high > threshold + MIN_HALF_WIDTH:
        high = round(high - 0.01, 2)
    while inside(low, high) > SENSITIVITY_FIRST_REVIEW_BUDGET and low < threshold - MIN_HALF_WIDTH:
        low = round(low + 0.01, 2)
    return low, max(high, round(threshold + MIN_HALF_WIDTH, 2))


def _uncertain_band(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """Narrowest band around the threshold leaving <= the target error outside it."""
    called = p >= threshold
    for half_width in np.arange(MIN_HALF_WIDTH, 0.5, 0.01):
        low, high = max(0.0, threshold - half_width), min(1.0, threshold + half_width)
        inside = (p >= low) & (p < high)
        if inside.mean() > MAX_UNCERTAIN_FRACTION:
            break
        outside = ~inside
        error = (called[outside] != y[outside]).mean() if outside.any() else 0.0
        if error <= TARGET_CONFIDENT_ERROR:
            return float(low), float(high)
    # The target cannot be met within the review budget: use the widest band that fits it.
    widths = np.arange(0.0, 0.5, 0.01)
    fits = [
        w
        for w in widths
        if ((p >= threshold - w) & (p < threshold + w)).mean() <= MAX_UNCERTAIN_FRACTION
    ]
    half_width = float(max(fits)) if fits else MIN_HALF_WIDTH
    return max(0.0, threshold - half_width), min(1.0, threshold + half_width)


def reliability_bins(p: np.ndarray, is_blast: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of the blast probability: ``n``, mean ``p`` and observed blast share."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(is_blast, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [
        {"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(in_bin.sum()),
         "mean_p": float(p[in_bin].mean()), "blast_share": float(y[in_bin].mean())}
        for b in range(bins) if (in_bin := index == b).any()
    ]  # fmt: skip


def expected_calibration_error(p: np.ndarray, is_blast: np.ndarray, bins: int = 10) -> float:
    """ECE of the blast probability with equal-width bins (the usual 10-bin definition)."""
    rows = reliability_bins(p, is_blast, bins)
    n = sum(row["n"] for row in rows)
    return float(sum(row["n"] / n * abs(row["mean_p"] - row["blast_share"]) for row in rows))
