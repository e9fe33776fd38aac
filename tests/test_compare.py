"""The parts of a comparison that need no real data: folds, statistics, baseline, job plumbing."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.roles import User
from train import job_worker, jobs
from train.__main__ import build_parser
from train.augmentation import AUGMENTATIONS, augment
from train.cli_compare import settings_from_args
from train.compare import comparison_splits
from train.compare_settings import PRESETS, CompareSettings, initial_weights
from train.evaluate.metrics import auroc, mcnemar, roc_points
from train.records import LabelledCrop
from train.size_baseline import cell_area_fraction, logistic_fit
from train.splits import SplitError, folds_per_source


def _cells(groups: list[tuple[str, str, int]]) -> list[LabelledCrop]:
    """Cells of ``(group, source, n)`` triples; a group's label alternates with its index."""
    return [
        LabelledCrop(Path(f"{g}_{i}.png"), ("blast", "normal")[(k + i) % 2], g, source)
        for k, (g, source, n) in enumerate(groups)
        for i in range(n)
    ]


@settings(max_examples=40, deadline=None)
@given(n_groups=st.integers(6, 30), k=st.integers(3, 6), seed=st.integers(0, 99))
def test_folds_test_every_cell_once_and_never_split_a_group(n_groups, k, seed):
    records = _cells([(f"s{i}", "a" if i % 3 else "b", 1 + i % 4) for i in range(n_groups)])
    folds = folds_per_source(records, k, seed)
    assert len(folds) == k
    tested = [r for f in folds for r in f.test]
    per_source_groups = {s: len({r.group for r in records if r.source == s}) for s in "ab"}
    # A source of fewer groups than folds is tested too (ALL-IDB: 4 smear runs), from 3 on.
    expected = [r for r in records if per_source_groups[r.source] >= 3]
    assert sorted(tested, key=str) == sorted(expected, key=str)  # each tested exactly once
    for fold in folds:
        for source in "ab":  # and always trained on
            assert any(r.source == source for r in fold.train)
        sides = [fold.groups(s) for s in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(records)


def test_a_source_of_four_runs_is_tested_in_five_folds_and_trained_on_both_kinds():
    """ALL-IDB's 4 smear runs (2 ALL, 2 healthy) trained in every fold of a 5-fold comparison
    and were never tested; dealt one per fold, two ALL runs must not train alone."""
    records = [LabelledCrop(Path(f"{run}_{i}.png"), label, run, "x")
               for run, label in (("r1", "blast"), ("r2", "blast"), ("r3", "normal"),
                                  ("r4", "normal"))
               for i in range(3)]  # fmt: skip
    records += _cells([(f"o{i}", "other", 2) for i in range(10)])
    for seed in range(5):
        folds = folds_per_source(records, 5, seed)
        tested = [r.group for f in folds for r in f.test if r.source == "x"]
        assert sorted(set(tested)) == ["r1", "r2", "r3", "r4"] and len(tested) == 12
        for fold in folds:
            assert {r.label for r in fold.train if r.source == "x"} == {"blast", "normal"}


def test_folds_need_three_parts_and_one_split_is_the_70_10_20_split():
    records = _cells([(f"s{i}", "a", 2) for i in range(10)])
    with pytest.raises(SplitError, match="k >= 3"):
        folds_per_source(records, 2)
    ((name, split),) = comparison_splits(records, 1, 0)
    assert name == "1"
    assert len(split.test) and len(split.val) and len(split.train) > len(split.test)


def test_mcnemar_counts_discordant_cells_and_is_exact():
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (10, 2)
    assert result["p_value"] == pytest.approx(0.0386, abs=1e-3)  # binomial, 12 trials, <= 2
    assert mcnemar(a, a)["p_value"] == 1.0


def test_roc_points_agree_with_the_auroc():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    roc = roc_points(y, p, max_points=10_000)
    area = np.trapezoid(roc["tpr"], roc["fpr"])
    assert area == pytest.approx(auroc(y, p), abs=1e-9)
    assert roc["fpr"][0] == roc["tpr"][0] == 0.0 and roc["fpr"][-1] == roc["tpr"][-1] == 1.0
    assert len(roc_points(y, p)["fpr"]) <= 200


def test_size_baseline_sees_bigger_cells_and_nothing_else():
    rng = np.random.default_rng(1)
    crops = np.zeros((200, 32, 32, 3), np.uint8)
    is_blast = np.arange(200) < 100
    for i, big in enumerate(is_blast):
        r = rng.integers(9, 13) if big else rng.integers(5, 9)
        yy, xx = np.ogrid[:32, :32]
        crops[i][(yy - 16) ** 2 + (xx - 16) ** 2 <= r * r] = (150, 80, 170)
    area = cell_area_fraction(crops)
    assert np.all(area[is_blast].min() > area[~is_blast].max())
    beta = logistic_fit((area - area.mean()) / area.std(), is_blast.astype(float))
    assert beta[1] > 0  # larger -> more likely blast
    p = 1 / (1 + np.exp(-(beta[0] + beta[1] * (area - area.mean()) / area.std())))
    assert auroc(is_blast, p) == 1.0


def test_only_the_chosen_augmentations_are_applied():
    image = tf.constant(np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3) % 200 + 10)
    flips = {augment(image, tf.constant([s, 1]), ("hflip",)).numpy().tobytes() for s in range(12)}
    assert flips == {image.numpy().tobytes(), image.numpy()[:, ::-1].tobytes()}
    assert np.array_equal(augment(image, tf.constant([3, 4]), ()).numpy(), image.numpy())
    with pytest.raises(ValueError, match="Unknown augmentation"):
        augment(image, tf.constant([0, 0]), ("shear",))


def test_presets_name_registry_architectures_and_follow_the_papers():
    assert PRESETS["paper_a"].architectures == ("efficientnet_b3", "vgg16", "simple_cnn",
                                                "inception_v3")  # fmt: skip
    assert len(PRESETS["paper_b"].architectures) == 7
    paper_b = CompareSettings.from_preset("paper_b")
    assert (paper_b.epochs, paper_b.batch_size, paper_b.patience) == (15, 40, 5)
    assert paper_b.augmentations == ("hflip",) and not paper_b.cached_features
    quick = CompareSettings.from_preset("quick_cpu", folds=5)
    assert quick.input_size == 128 and quick.cached_features and quick.folds == 5
    assert set(AUGMENTATIONS) == set(quick.augmentations)


def test_the_quick_preset_runs_only_what_needs_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    ready, left_out = PRESETS["quick_cpu"].runnable()
    assert "simple_cnn" in ready and "efficientnet_lite0" in ready  # random init; a pip package
    assert {"efficientnet_b3", "vgg16", "resnet50"} <= set(left_out)
    assert CompareSettings.from_preset("quick_cpu").architectures == ready
    every = CompareSettings.from_preset("quick_cpu", missing_weights="random").architectures
    assert every == PRESETS["quick_cpu"].architectures  # the README's comparison, reproduced
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"0")
    assert "vgg16" in PRESETS["quick_cpu"].runnable()[0]
    assert PRESETS["paper_a"].runnable() == (PRESETS["paper_a"].architectures, ())


@pytest.mark.parametrize("bad, message", [
    ({"architectures": ()}, "at least one"),
    ({"architectures": ("vgg16", "vgg16")}, "twice"),
    ({"architectures": ("alexnet",)}, "valid names"),
    ({"architectures": ("vgg16",), "folds": 2}, "folds must be 1 or at least 3"),
    ({"architectures": ("vgg16",), "missing_weights": "download"}, "missing_weights"),
    ({"architectures": ("vgg16",), "fine_tune_epochs": 3}, "cannot train on cached"),
])  # fmt: skip
def test_bad_settings_are_refused_with_the_reason(bad, message):
    with pytest.raises((ValueError, LeukemiaCoreError), match=message):
        CompareSettings(**bad)


def test_architectures_without_offline_weights_are_skipped_or_said_random(monkeypatch):
    monkeypatch.setenv("LEUKEMIA_OFFLINE", "1")
    weights, _init, skip = initial_weights("vgg16", "skip")
    if skip is None:
        pytest.skip("VGG16 ImageNet weights are in this machine's Keras cache")
    assert weights is None and "ImageNet weights unavailable offline" in skip
    assert initial_weights("vgg16", "random")[:2] == (None, "random (ImageNet weights "
                                                              "unavailable offline)")  # fmt: skip
    assert initial_weights("simple_cnn")[0] is None
    assert initial_weights("efficientnet_lite0") == ("imagenet", "ImageNet", None)


@pytest.mark.parametrize("settings", [
    CompareSettings.from_preset("paper_b", epochs=3, folds=4, seed=7, patience=2),
    CompareSettings(("simple_cnn", "efficientnet_lite0"), augment=False, cached_features=False,
                    balance="class_weight", missing_weights="random", input_size=None),
    CompareSettings.from_preset("quick_cpu", augmentations=("vflip", "colour")),
])  # fmt: skip
def test_the_page_command_runs_the_same_comparison_in_the_cli(settings, tmp_path):
    spec = jobs.JobSpec((str(tmp_path / "my cells"), "/data/it's.csv"), settings, "folders", True)
    argv = shlex.split(spec.command(tmp_path / "run").replace("\\\n", ""))
    assert argv[:4] == ["python", "-m", "train", "compare"]
    args = build_parser().parse_args(argv[3:])
    assert [str(d) for d in args.data] == list(spec.data) and args.format == "folders"
    assert args.allow_ungrouped and args.out == tmp_path / "run"
    assert settings_from_args(args) == settings


def test_overall_progress_grows_through_a_model_and_across_models():
    base = {"n_models": 2, "n_folds": 3, "model_index": 1}
    events = [
        {"stage": "model", "done": 0, "total": 2},
        {"stage": "features", "done": 50, "total": 100, "fold": 0},
        {"stage": "head", "epoch": 1, "epochs": 10, "done": 5, "total": 10, "fold": 1},
        {"stage": "head_epoch", "done": 10, "total": 10, "fold": 1},
        {"stage": "head", "epoch": 5, "epochs": 10, "done": 1, "total": 10, "fold": 3},
        {"stage": "model_done", "done": 1, "total": 2},
    ]
    values = [job_worker.overall_fraction({**base, **e}) for e in events]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 0.5
    assert job_worker.overall_fraction({**base, "model_index": 2, "stage": "model_done", "done": 2,
                                  "total": 2}) == 1.0  # fmt: skip


def test_progress_of_a_cached_features_model_follows_where_its_time_goes():
    """Cutting the cells out takes most of it: equal steps sat at 50% for a third of a job and
    then jumped to 100% (one fold, deepapl on 2 cores)."""
    base = {"n_models": 1, "n_folds": 1, "model_index": 1, "cached_features": True}
    halfway_loading = job_worker.overall_fraction({**base, "stage": "loading", "done": 50,
                                                   "total": 100})  # fmt: skip
    features_done = job_worker.overall_fraction({**base, "stage": "features", "done": 100,
                                                 "total": 100})  # fmt: skip
    head_half = job_worker.overall_fraction({**base, "stage": "head", "epoch": 1, "epochs": 2,
                                             "done": 10, "total": 10, "fold": 1})  # fmt: skip
    assert halfway_loading == pytest.approx(0.4) and features_done == pytest.approx(0.95)
    assert head_half == pytest.approx(0.975) and features_done < head_half < 1.0
    # Cells read back from the crop cache load in seconds: the bar gives loading little.
    warm = {**base, "crops_cached": True}
    loaded = job_worker.overall_fraction({**warm, "stage": "loading", "done": 100, "total": 100})
    features = job_worker.overall_fraction({**warm, "stage": "features", "done": 50,
                                            "total": 100})  # fmt: skip
    assert loaded < 0.1 and loaded < features < 0.5


def test_queue_order_is_submission_order_and_cancel_before_start(tmp_path):
    settings = CompareSettings(("simple_cnn",))
    ids = [jobs.submit(jobs.JobSpec(("x",), settings, title=f"job {i}"), tmp_path, user=User.shell())
           for i in range(3)]  # fmt: skip
    listed = jobs.list_jobs(tmp_path)
    assert [j.job_id for j in listed] == ids[::-1]  # newest first
    assert [jobs.queue_position(i, listed) for i in ids] == [1, 2, 3]
    jobs.cancel_job(ids[0], tmp_path, user=User.shell())
    listed = jobs.list_jobs(tmp_path)
    assert jobs.job_status(ids[0], tmp_path).state == jobs.CANCELLED
    assert [jobs.queue_position(i, listed) for i in ids] == [None, 1, 2]
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_a_job_cancelled_as_the_worker_picks_it_up_loads_no_data(tmp_path, monkeypatch):
    """The worker had already started reading the job's cells (a minute on a real set) when it
    saw the cancel; the Retrain page said "Cancelled before it started" meanwhile."""
    job_id = jobs.submit(jobs.JobSpec(("x",), CompareSettings(("simple_cnn",))), tmp_path,
                         user=User.shell())  # fmt: skip
    (tmp_path / job_id / jobs.CANCEL_FILE).touch()  # after the worker took it off the queue

    def loading(spec):
        raise AssertionError("the data of a cancelled job was loaded")

    monkeypatch.setattr(job_worker, "load_job_data", loading)
    assert job_worker.run_job(tmp_path / job_id) == jobs.CANCELLED


def test_a_job_whose_cells_changed_after_the_check_fails_and_says_so(tmp_path):
    """A class folder deleted while the job waited: it trained on 29 cells, not the 40
    checked, finished "done" and rewrote its data notes without a word."""
    from test_datasets import SUBJECTS, make_subjects

    from train.inspection import inspect_dataset

    data = make_subjects(tmp_path / "lab", SUBJECTS)
    _, summary = inspect_dataset(data)
    spec = jobs.JobSpec((str(data),), CompareSettings(("simple_cnn",)),
                        checked=jobs.data_counts(summary))  # fmt: skip
    assert jobs.JobSpec.from_dict(spec.to_dict()).checked == spec.checked  # kept in job.json
    assert job_worker.load_job_data(spec)[0]  # the same cells: it runs
    (data / "normal" / "P03" / "e.png").unlink()  # still a usable set, but not the one checked
    job_id = jobs.submit(spec, tmp_path / "runs", user=User.shell())
    assert job_worker.run_job(tmp_path / "runs" / job_id) == jobs.FAILED
    error = jobs.job_status(job_id, tmp_path / "runs").error
    assert "changed after it was checked" in error and "Check it again in step 1" in error


def test_one_worker_per_runs_folder(tmp_path):
    held = jobs.try_lock(tmp_path)  # another worker, as far as the lock can tell
    try:
        assert jobs.worker_alive(tmp_path)
        assert job_worker.run_worker(tmp_path, lock_wait_s=0.3) == 0
    finally:
        held.close()
    assert not jobs.worker_alive(tmp_path)


def test_promotion_concerns_name_what_a_lab_should_weigh():
    """A walkthrough promoted, in one click, a model tested on one patient that called every
    cell blast, scored below the size-only baseline and had no out-of-domain reference: a model
    that calls every cell one class is now refused (a second walk promoted one through the
    warning and got 100% blasts on normal fields), the rest are weighed."""
    from train.compare_tables import promotion_concerns, promotion_refusals, row_interval_text

    row = {"model": "lite", "status": "done", "balanced_accuracy": 0.5, "sensitivity": 1.0,
           "specificity": 0.0, "balanced_accuracy_low": 0.5, "balanced_accuracy_high": 0.5}  # fmt: skip
    results = {
        "table": [
            row,
            {"model": "size_only_baseline", "status": "done", "balanced_accuracy": 0.583},
        ],
        "models": {"lite": {"metrics": {"n": 12, "n_groups": 1}}},
    }
    refusals = promotion_refusals(results, "lite")
    assert refusals[0] == ("it calls (nearly) every test cell blast (sensitivity 1.00, "
                           "specificity 0.00)")  # fmt: skip
    assert "does not beat the size-only baseline (balanced accuracy 0.500 against 0.583)" in (
        refusals[1])  # fmt: skip
    assert "rest on 1 test group(s)" in refusals[2] and len(refusals) == 3
    (concern,) = promotion_concerns(results, "lite", has_domain_reference=False)
    assert "no out-of-domain reference" in concern
    # A second walk promoted one of AUROC 0.22 on one subject through the warnings.
    chance = {"table": [{**row, "sensitivity": 0.9, "specificity": 0.4, "auroc": 0.22,
                         "balanced_accuracy": 0.65}, results["table"][1]],
              "models": {"lite": {"metrics": {"n": 200, "n_groups": 9}}}}  # fmt: skip
    assert promotion_refusals(chance, "lite") == [
        "it ranks test cells no better than chance (AUROC 0.22)"]  # fmt: skip
    assert (
        row_interval_text(row, "balanced_accuracy", groups=1)
        == "0.500 (interval n/a: 1 test group)"
    )
    assert row_interval_text(row, "balanced_accuracy", groups=6) == "0.500 (0.500-0.500)"
    good = {**row, "balanced_accuracy": 0.9, "sensitivity": 0.9, "specificity": 0.9}
    results = {"table": [good, results["table"][1]],
               "models": {"lite": {"metrics": {"n": 300, "n_groups": 12}}}}  # fmt: skip
    assert promotion_concerns(results, "lite", has_domain_reference=True) == []
    assert promotion_refusals(results, "lite") == []
    # a test side without blasts never measured how it calls them (a review promoted one)
    blind = {"table": [{**good, "sensitivity": None, "balanced_accuracy": None}]}
    assert promotion_refusals(blind, "lite") == [
        "its test cells hold no blast cell, so how it calls them was never measured: label "
        "cells of that class from more subjects"
    ]
    # 240 one-file groups of a normal-only source hid that the blasts came from 4 fields
    results["models"]["lite"]["per_source"] = {
        "allidb2": {"n_groups": 4, "sensitivity": 0.9}, "pbc": {"n_groups": 240, "sensitivity": None}}  # fmt: skip
    (concern,) = promotion_concerns(results, "lite", has_domain_reference=True)
    assert "blast figures on allidb2 (4) rest on fewer than 5 test groups" in concern


def test_the_page_table_puts_figures_before_notes_whatever_row_comes_first():
    """At 800 px a skipped model's note (the first row) pushed every figure out of sight."""
    from ui.comparison import table_frame

    done = {"model": "lite", "status": "done", "init": "ImageNet", "n_cells": 40,
            "balanced_accuracy": 0.8, "training_seconds": 3.0}  # fmt: skip
    skipped = {"model": "b3", "status": "skipped", "init": None,
               "note": "not run: ImageNet weights unavailable offline. Put them in the cache."}  # fmt: skip
    frame = table_frame([skipped, done])
    assert list(frame.columns)[:5] == ["Model", "Balanced accuracy", "Sensitivity (blast)",
                                       "Specificity (normal)", "AUROC"]  # fmt: skip
    assert frame.columns[-1] == "Note"
    assert frame.loc[0, "Note"] == "skipped: not run: ImageNet weights unavailable offline"
    assert frame.loc[0, "Cells"] == "—" and frame.loc[1, "Balanced accuracy"] == "0.800"
    assert frame.loc[1, "Cells"] == "40" and frame.loc[1, "Training s"] == "3.0"
    import pyarrow as pa

    pa.Table.from_pandas(frame)  # what Streamlit does; mixed columns raised ArrowInvalid


def test_a_lab_models_card_speaks_of_the_labs_cells_not_public_datasets():
    """A walkthrough's model trained on a lab's cells alone had a card naming ALL-IDB and C-NMC
    as its blasts, and ALL-IDB1's field grouping."""
    from train.card import model_card

    config = {"training": {"data_summary": {"per_source": {"lab6": 113}}}}
    limits = model_card("lab-model", config, {}).split("## Known limits")[1]
    assert "Blasts in the training data come from lab6 (this lab's own labels)" in limits
    assert "Normal cells come from one source" in limits
    assert "ALL-IDB" not in limits and "C-NMC" not in limits
    public = {"allidb1": 418, "allidb2": 165, "cnmc": 12, "deepapl": 1947, "pbc": 1049}
    config = {"training": {"data_summary": {"per_source": public}}}
    limits = model_card("bundled", config, {}).split("## Known limits")[1]
    assert "ALL-IDB (lymphoblasts; one lab, two cameras), a handful of C-NMC" in limits
    assert "deepapl (myeloid blasts" in limits and "PBC" not in limits.split(";")[0]
    assert "keeps each smear run" in limits


def test_every_setting_value_has_words_on_the_page():
    """The Retrain page showed raw values (oversample / source_class / cell_lab ...)."""
    from leukemia_core.calibration import THRESHOLD_RULES
    from leukemia_core.models.inputs import STAIN_NORMALISATIONS
    from train.batches import BALANCING
    from train.compare_settings import MISSING_WEIGHTS
    from ui.comparison import BALANCING_WORDS, MISSING_WEIGHTS_WORDS, STAIN_WORDS, THRESHOLD_WORDS

    for values, words in ((BALANCING, BALANCING_WORDS), (MISSING_WEIGHTS, MISSING_WEIGHTS_WORDS),
                          (STAIN_NORMALISATIONS, STAIN_WORDS), (THRESHOLD_RULES, THRESHOLD_WORDS)):  # fmt: skip
        assert set(words) == set(values) and all(words.values())


def test_a_job_from_an_edited_preset_is_titled_custom():
    """A walkthrough's 60-epoch plain-CNN job was titled "Quick CPU comparison"."""
    quick = CompareSettings.from_preset("quick_cpu")
    assert quick.title("quick_cpu") == PRESETS["quick_cpu"].title
    assert replace(quick, epochs=quick.epochs + 1).title("quick_cpu") == "Custom"
    assert quick.title(None) == "Custom"


def test_one_test_group_gives_no_interval_in_any_table():
    """The Per source tab showed "0.500 (0.500-0.500)" where the main table said n/a."""
    from train.compare_tables import interval_text

    one = {"sensitivity": 0.5, "n_groups": 1, "intervals": {"sensitivity": (0.5, 0.5)}}
    assert interval_text(one, "sensitivity") == "0.500 (interval n/a: 1 test group)"
    many = {**one, "n_groups": 6, "intervals": {"sensitivity": (0.3, 0.7)}}
    assert interval_text(many, "sensitivity") == "0.500 (0.300-0.700)"


def test_a_class_from_one_group_gives_no_interval_for_its_figures():
    """The card printed C-NMC balanced accuracy "0.750 (0.750-0.750)" from one blast and one
    normal subject: every replicate held the same cells of each class."""
    from train.compare_tables import interval_text
    from train.evaluate.metrics import binary_metrics

    cells = binary_metrics([True, True, False, False, False, False], [0.9, 0.2, 0.3, 0.1, 0.6, 0.2],
                           0.5, groups=["a", "a", "b", "b", "c", "c"])  # fmt: skip
    assert cells["class_groups"] == {"blast": 1, "normal": 2}
    assert cells["intervals"]["sensitivity"] is None and cells["intervals"]["auroc"] is None
    assert cells["intervals"]["specificity"] is not None  # two normal groups
    assert interval_text(cells, "sensitivity") == "0.500 (interval n/a: 1 blast group)"
    assert "interval n/a" not in interval_text(cells, "specificity")


def test_the_model_bar_shows_the_current_models_progress():
    """A job's only model showed an empty "Model 1 of 1" bar while it trained."""
    from ui.comparison import model_fraction

    assert model_fraction(0.55, 1, 1) == pytest.approx(0.55)
    assert model_fraction(0.55, 2, 2) == pytest.approx(0.1)  # the second of two, just begun
    assert model_fraction(0.4, 1, 2) == pytest.approx(0.8)
    assert model_fraction(1.0, 3, 3) == 1.0 and model_fraction(0.2, None, None) == 0.2


def test_the_charts_keep_their_width_at_800_px_and_count_whole_epochs():
    """A walkthrough saw the legends squeeze the plots at 800 px and epoch ticks at 0.5."""
    from ui.comparison import curves_figure, reliability_figure, roc_figure

    model = {"metrics": {"auroc": 0.9}, "roc": {"fpr": [0, 1], "tpr": [0, 1]},
             "reliability": [{"mean_p": 0.5, "blast_share": 0.5, "n": 3}]}  # fmt: skip
    curves = curves_figure({"lite": [{"fold": 1, "epoch": 1, "loss": 0.7},
                                     {"fold": 1, "epoch": 2, "loss": 0.5}]})  # fmt: skip
    for figure in (roc_figure({"lite": model}), reliability_figure({"lite": model}), curves):
        assert figure.layout.legend.orientation == "h" and figure.layout.legend.y < 0
    assert curves.layout.xaxis.tickformat == "d"


def test_the_loso_domain_check_scores_the_features_the_app_scores(monkeypatch):
    """With test-time views the app scores view-averaged features, but the LOSO domain figure
    was measured on the plain view alone."""
    from train import compare

    rng = np.random.default_rng(0)
    views, n, width = 4, 12, 5
    x = rng.normal(size=(1, n, width)).astype(np.float32)
    test_views = np.concatenate([x, rng.normal(size=(views - 1, n, width))]).astype(np.float32)
    features = {"x": x, "test_views": test_views, "averaged": test_views.mean(axis=0),
                "stain": rng.normal(size=(n, 6)), "groups": np.array(list("aabbccddeeff")),
                "is_blast": np.arange(n) % 2 == 0}  # fmt: skip
    take = {"train": np.arange(0, 6), "val": np.arange(6, 9), "test": np.arange(9, 12)}
    inputs = tf.keras.Input((width,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="logits")(inputs))
    seen = {}
    monkeypatch.setattr(compare, "domain_check", lambda *args: seen.setdefault("domain", args))
    monkeypatch.setattr(compare, "adaptation_check", lambda *args: seen.setdefault("adapt", args))
    compare._loso_extras(features, take, model, calibration=None, p_test=np.zeros(3))
    (train_x, _), (val_x, _, _), (test_x, _, _), _ = seen["domain"]
    for got, rows in ((train_x, take["train"]), (val_x, take["val"]), (test_x, take["test"])):
        np.testing.assert_array_equal(got, features["averaged"][rows])
    np.testing.assert_array_equal(seen["adapt"][0], features["averaged"][take["test"]])


def test_the_equivalent_command_of_a_job_with_no_augmentation_chosen_trains_without_any():
    """Augmentation ticked with every kind removed trains with none; the command printed for
    it left out both flags, so the command line applied the default five."""
    from train.jobs import JobSpec

    settings = replace(CompareSettings.from_preset("quick_cpu", missing_weights="random"),
                       augmentations=())  # fmt: skip
    argv = shlex.split(JobSpec(("/data/x",), settings).command("/runs/j").replace("\\\n", " "))
    back = settings_from_args(build_parser().parse_args(argv[3:]))
    assert not back.augment or not back.augmentations


def test_a_smear_run_counts_once_in_group_counts_and_no_reason_overrides_an_unmeasured_class():
    """One patient's run of six blocks passed the "5 test groups" floor as six groups; and a
    typed reason could promote a model whose blast calls were never measured."""
    from leukemia_core.models.adapted_check import activation_refusals
    from train.compare_tables import promotion_refusals, unmeasured_classes
    from train.data import LABELS, LabelledCrop
    from train.groups import interval_units

    records = [LabelledCrop(Path(f"Im{n:03d}_1_cell001.png"), LABELS[0], f"allidb1:b{n // 4:03d}",
                            "allidb1") for n in range(20, 44)]  # fmt: skip
    assert len(set(interval_units(records))) == 1  # blocks b005-b010: one run
    blind = {"table": [{"model": "m", "status": "done", "sensitivity": None, "specificity": 0.9}]}
    (refusal,) = promotion_refusals(blind, "m")
    assert "never measured" in refusal and unmeasured_classes(blind, "m") == ["blast"]
    # an adapted version whose folder lost its check is not vouched for
    assert "does not hold the check" in activation_refusals({"adapted": {"base": "x"}})[0]
    assert activation_refusals({}) == []


def test_promotion_of_a_model_never_tested_on_a_class_offers_no_typed_reason(tmp_path):
    """The refusal said "give your reason" for a model whose blast calls were never measured,
    which no reason overrides."""
    import json

    from train.compare_settings import RESULTS_FILE
    from train.promote import promote

    row = {"model": "m", "status": "done", "sensitivity": None, "specificity": 0.9}
    (tmp_path / RESULTS_FILE).write_text(json.dumps({"table": [row], "settings": {}}))
    for despite in ("", "a long enough reason for the record"):
        with pytest.raises(ValueError, match="never measured") as refused:
            promote(tmp_path, "m", "mine", user=User.shell(), despite=despite)
        assert "give your reason" not in str(refused.value)
