"""Leave-one-source-out splits, the sensitivity-first operating point, the one model-input path,
robustness augmentation and source-balanced sampling (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from leukemia_core.calibration import (
    MIN_SENSITIVITY,
    TARGET_CONFIDENT_ERROR,
    blast_probability,
    fit_calibration,
    sensitivity_first_threshold,
)
from leukemia_core.models import preprocess
from leukemia_core.models.inputs import (
    REFERENCE_LAB_MEAN,
    InputSpec,
    model_inputs,
    ready_crops,
)
from leukemia_core.synthetic import make_demo_smear
from train.augmentation import ALL_AUGMENTATIONS, augment
from train.batches import balanced_indices, balancing_strata
from train.compare import comparison_splits
from train.compare_settings import CompareSettings
from train.evaluate.metrics import (
    FEW_GROUPS_FOR_INTERVALS,
    binary_metrics,
    few_groups_note,
    sensitivity_at_specificity,
)
from train.records import LabelledCrop
from train.splits import SplitError, leave_one_source_out, loso_units


def _cells(groups: list[tuple[str, str, int]]) -> list[LabelledCrop]:
    """Cells of ``(group, source, n)``; labels alternate within a group."""
    return [
        LabelledCrop(Path(f"{g}_{i}.png"), ("blast", "normal")[(k + i) % 2], g, source)
        for k, (g, source, n) in enumerate(groups)
        for i in range(n)
    ]


@settings(max_examples=30, deadline=None)
@given(n_groups=st.integers(12, 40), seed=st.integers(0, 50))
def test_loso_never_puts_a_source_or_a_group_on_two_sides(n_groups, seed):
    sources = ["allidb1", "deepapl", "pbc", "bccd"]
    records = _cells([(f"g{i}", sources[i % 4], 1 + i % 3) for i in range(n_groups)])
    # An ALL-IDB2 crop shares its field's group: the two sources must leave together.
    records += [LabelledCrop(Path(f"crop{i}.tif"), "blast", "g0", "allidb2") for i in range(2)]
    splits = leave_one_source_out(records, 0.2, seed)
    assert [name for name, _ in splits] == ["allidb1+allidb2", "bccd", "deepapl", "pbc"]
    tested = []
    for name, split in splits:
        left_out = set(name.split("+"))
        assert {r.source for r in split.test} == left_out
        assert not {r.source for r in split.train + split.val} & left_out
        sides = [split.groups(s) for s in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert len(split.train) + len(split.val) + len(split.test) == len(records)
        assert split.val  # threshold and temperature are fitted on sources it trained on
        tested += split.test
    assert sorted(map(str, tested)) == sorted(map(str, records))  # every cell tested once


def test_loso_needs_two_sources_and_is_the_compare_protocol():
    one = _cells([(f"g{i}", "pbc", 2) for i in range(6)])
    with pytest.raises(SplitError, match="at least two sources"):
        leave_one_source_out(one)
    two = one + _cells([(f"h{i}", "deepapl", 2) for i in range(6)])
    assert loso_units(two) == {"pbc": "pbc", "deepapl": "deepapl"}
    names = [n for n, _ in comparison_splits(two, 5, 0, "leave_one_source_out")]
    assert names == ["deepapl", "pbc"]
    with pytest.raises(ValueError, match="protocol must be one of"):
        CompareSettings(architectures=("simple_cnn",), protocol="random_cells")


def _validation(seed: int = 0):
    """Two sources with blasts, one much harder than the other, plus normal-only cells."""
    rng = np.random.default_rng(seed)
    sources = np.array(["easy"] * 300 + ["hard"] * 300 + ["normals"] * 200)
    y = np.r_[rng.random(300) < 0.4, rng.random(300) < 0.4, np.zeros(200, bool)]
    shift = np.where(sources == "hard", -1.5, 0.0)  # the hard source's blasts look normal-ish
    margin = np.where(y, rng.normal(3, 1.2, y.size) + shift, rng.normal(-3, 1.2, y.size))
    return np.stack([margin / 2, -margin / 2], axis=1), y, sources


def test_sensitivity_first_keeps_every_source_sensitive_and_misses_rarely_confident():
    logits, y, sources = _validation()
    rule = fit_calibration(logits, y, sources=sources)
    balanced = fit_calibration(logits, y)
    p = blast_probability(logits, rule.temperature)
    for source in ("easy", "hard"):
        blasts = y & (sources == source)
        assert (p[blasts] >= rule.threshold).mean() >= MIN_SENSITIVITY
    # The older rule, pooled over sources, lets the hard source's blasts slip.
    p_balanced = blast_probability(logits, balanced.temperature)
    hard = y & (sources == "hard")
    assert (p_balanced[hard] >= balanced.threshold).mean() < MIN_SENSITIVITY
    assert rule.uncertain_low < rule.threshold < rule.uncertain_high
    assert (p[y] < rule.uncertain_low).mean() <= TARGET_CONFIDENT_ERROR
    # It is the highest such threshold: one step up breaks a source.
    higher = round(rule.threshold + 0.01, 2)
    assert any((p[y & (sources == s)] >= higher).mean() < MIN_SENSITIVITY for s in ("easy", "hard"))
    assert sensitivity_first_threshold(p, y, sources) == rule.threshold


def test_confident_miss_rate_and_sensitivity_at_specificity():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    p = np.array([0.9, 0.6, 0.3, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.01, 0.02, 0.03, 0.04, 0.7])
    m = binary_metrics(y, p, 0.5, review_low=0.25, n_boot=50)
    assert m["confident_miss_rate"] == pytest.approx(0.25)  # only the blast at 0.05
    assert m["intervals"]["confident_miss_rate"] is not None
    # Specificity >= 0.9 of 10 normals allows one above the cut (0.7): blasts above 0.5 count.
    assert sensitivity_at_specificity(y, p) == pytest.approx(0.5)
    assert binary_metrics(y, p, 0.5, n_boot=0)["confident_miss_rate"] is None


def test_intervals_over_two_patients_are_narrow_and_flagged_as_unknown():
    """Two patients, cells alike within each: the bootstrap interval is narrow, not honest."""
    rng = np.random.default_rng(0)
    y = np.tile([True, False], 20)
    p = np.where(y, rng.uniform(0.6, 0.9, 40), rng.uniform(0.1, 0.4, 40))
    groups = ["patient-1"] * 20 + ["patient-2"] * 20
    m = binary_metrics(y, p, 0.5, groups=groups, n_boot=200)
    low, high = m["intervals"]["balanced_accuracy"]
    assert m["n_groups"] == 2 and high - low < 0.05  # looks precise
    assert "from 2 group(s) only" in few_groups_note(m["n_groups"])
    assert few_groups_note(FEW_GROUPS_FOR_INTERVALS) is None
    # 10 patients, but the blasts of 2: sensitivity's interval rests on those 2
    blasts_of_two = few_groups_note(10, {"blast": 2, "normal": 8})
    assert "blast cells from 2 group(s)" in blasts_of_two and "normal" not in blasts_of_two
    assert few_groups_note(10, {"blast": 5, "normal": 5}) is None
    assert few_groups_note(10, {"blast": 0, "normal": 10}) is None  # no blasts: said elsewhere


def _crops() -> list[np.ndarray]:
    from leukemia_core.cropping import crop_cells
    from leukemia_core.segmentation import segment_wbc

    smear = make_demo_smear()
    return [c.crop for c in crop_cells(smear.image, segment_wbc(smear.image))[:4]]


def test_input_path_is_declared_and_checked():
    with pytest.raises(ValueError, match="stain_normalisation is 'macenko'"):
        InputSpec(224, "lite", "macenko")
    with pytest.raises(ValueError, match="preprocessing is 'imagenet'"):
        InputSpec(224, "imagenet")
    with pytest.raises(ValueError, match="input_size"):
        InputSpec(8, "lite")
    crops = _crops()
    spec = InputSpec(96, "lite", "none")
    assert np.array_equal(model_inputs(crops, spec), preprocess(ready_crops(crops, spec), "lite"))


def test_stain_normalisations_keep_the_background_and_remove_a_colour_cast():
    crop = _crops()[0]
    background = crop.max(axis=-1) <= 4
    cast = np.clip(crop.astype(int) * np.array([1.25, 0.8, 1.0]), 0, 255).astype(np.uint8)
    cast[background] = 0
    grey = ready_crops([crop], InputSpec(crop.shape[0], "lite", "grey"))[0]
    assert np.array_equal(grey[..., 0], grey[..., 2]) and not grey[background].any()
    spec = InputSpec(crop.shape[0], "lite", "cell_lab")
    plain, shifted = ready_crops([crop, cast], spec)
    assert not plain[background].any()
    cell = ~background
    # The cast moves the raw cells' mean colour far more than the normalised cells'.
    raw_gap = np.abs(crop[cell].mean(0) - cast[cell].mean(0)).max()
    normalised_gap = np.abs(plain[cell].mean(0).astype(float) - shifted[cell].mean(0)).max()
    assert normalised_gap < raw_gap / 3
    lab = tf.image.rgb_to_grayscale(plain[None].astype(np.float32)).numpy()  # sanity: not blank
    assert lab[0][cell].std() > 5
    assert REFERENCE_LAB_MEAN[0] > 0


def test_robust_augmentations_keep_shape_range_and_black_background():
    crop = _crops()[0].astype(np.float32)
    background = crop.max(axis=-1) <= 4
    for seed in range(6):
        out = augment(tf.constant(crop), tf.constant([seed, 7]), ALL_AUGMENTATIONS).numpy()
        assert out.shape == crop.shape and out.min() >= 0 and out.max() <= 255
    still = augment(tf.constant(crop), tf.constant([1, 2]), ("stain", "blur", "jpeg")).numpy()
    assert np.abs(still[background]).max() == 0  # no flips: background pixels stay put, black
    assert np.abs(still - crop)[~background].mean() > 1  # and the cell did change
    with pytest.raises(ValueError, match="Unknown augmentation"):
        augment(tf.constant(crop), tf.constant([1, 2]), ("sepia",))


def test_source_class_balancing_evens_out_every_source_and_class():
    labels = np.array([0] * 10 + [1] * 90 + [1] * 300)
    sources = ["a"] * 100 + ["pbc"] * 300
    strata = balancing_strata(labels, sources, "source_class")
    order = balanced_indices(strata, np.random.default_rng(0))
    keys, counts = np.unique(strata[order], return_counts=True)
    assert list(keys) == ["a/0", "a/1", "pbc/1"] and set(counts) == {300}
    assert set(order) == set(range(len(labels)))  # every cell at least once
    plain = balancing_strata(labels, sources, "oversample")
    assert np.array_equal(plain, labels)
