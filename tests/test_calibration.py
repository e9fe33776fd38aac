"""Temperature scaling, thresholds, the review band, and the evaluation metrics."""

import numpy as np
import pytest

from leukemia_core.calibration import (
    Calibration,
    blast_probability,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
)
from train.evaluate.metrics import auroc, binary_metrics


def _logits(margin: np.ndarray) -> np.ndarray:
    """(N, 2) logits whose blast-minus-normal margin is ``margin``."""
    return np.stack([margin / 2, -margin / 2], axis=1)


def _overconfident(n=4000, temperature=3.0, seed=0):
    """Labels drawn from sigmoid(z), logits reported as z * temperature (overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = rng.random(n) < 1 / (1 + np.exp(-z))
    return _logits(z * temperature), y


def test_temperature_recovers_the_overconfidence_factor():
    logits, y = _overconfident(temperature=3.0)
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.15)


def test_calibration_lowers_ece():
    logits, y = _overconfident(temperature=3.0, seed=1)
    raw = expected_calibration_error(blast_probability(logits), y)
    calibrated = expected_calibration_error(
        blast_probability(logits, fit_temperature(logits, y)), y
    )
    assert raw > 0.08 and calibrated < 0.03


def test_threshold_and_band_on_separable_data():
    y = np.array([True] * 50 + [False] * 50)
    margin = np.where(y, 4.0, -4.0) + np.random.default_rng(0).normal(0, 0.5, 100)
    calibration = fit_calibration(_logits(margin), y)
    assert 0.3 <= calibration.threshold <= 0.7
    # Perfectly separable: only the minimum band around the threshold is left for review.
    assert calibration.uncertain_high - calibration.uncertain_low == pytest.approx(0.1)


def test_band_catches_overlapping_cells_within_budget():
    rng = np.random.default_rng(2)
    y = rng.random(2000) < 0.5
    margin = np.where(y, 1.5, -1.5) + rng.normal(0, 1.2, 2000)
    calibration = fit_calibration(_logits(margin), y)
    p = blast_probability(_logits(margin), calibration.temperature)
    inside = (p >= calibration.uncertain_low) & (p < calibration.uncertain_high)
    assert 0.02 < inside.mean() <= 0.15
    # Cells outside the band are called more accurately than cells inside it.
    called = p >= calibration.threshold
    assert (called[~inside] == y[~inside]).mean() > (called[inside] == y[inside]).mean()


def test_calibration_round_trips_through_a_dict():
    calibration = Calibration(1.7, 0.42, 0.3, 0.55)
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    p = np.round(rng.random(60), 1)  # ties count one half
    pairs = [(a > b) + 0.5 * (a == b) for a in p[y] for b in p[~y]]
    assert auroc(y, p) == pytest.approx(np.mean(pairs))
    assert auroc(np.ones(3, bool), np.ones(3)) is None


def test_binary_metrics_on_a_known_confusion():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    m = binary_metrics(y, p, 0.5, groups=list("aabbccddee"), n_boot=200)
    assert m["confusion"] == {
        "blast_called_blast": 3,
        "blast_called_normal": 1,
        "normal_called_blast": 1,
        "normal_called_normal": 5,
    }
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class"]["blast"]["precision"] == pytest.approx(0.75)
    assert m["weighted_f1"] == pytest.approx((0.75 * 4 + (10 / 12) * 6) / 10)
    low, high = m["intervals"]["accuracy"]
    assert low <= 0.8 <= high and m["interval_unit"] == "group" and m["n_groups"] == 5
