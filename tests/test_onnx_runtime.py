"""The network on ONNX Runtime: same outputs as Keras, verified on load, Keras when it cannot."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import synthetic_cell_crops

from leukemia_core.classify import Classifier
from leukemia_core.models.folder import load_model
from leukemia_core.models.onnx_runtime import (
    CACHE_ENV_VAR,
    PROBE_TOLERANCE,
    OnnxUnavailableError,
    cache_dir,
)


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "onnx-cache"))
    return tmp_path / "onnx-cache"


@pytest.fixture(scope="module")
def cell_crops() -> list[np.ndarray]:
    return [crop for crops in synthetic_cell_crops(seeds=[3, 4]) for crop in crops]


def test_onnx_runtime_gives_the_keras_probabilities_and_features(
    tiny_models_dir, onnx_cache, cell_crops
):
    model = load_model("tiny", tiny_models_dir)
    keras_run = Classifier(model, runtime="keras")
    onnx_run = Classifier(model, runtime="onnx")
    assert (keras_run.runtime, onnx_run.runtime) == ("keras", "onnx")
    assert "verified against Keras" in onnx_run.forward.note
    assert len(cell_crops) >= 6
    expected, got = keras_run.outputs(cell_crops), onnx_run.outputs(cell_crops)
    dp = np.abs(keras_run.probabilities(cell_crops) - onnx_run.probabilities(cell_crops))
    assert dp.max() <= PROBE_TOLERANCE
    np.testing.assert_allclose(got.features, expected.features, rtol=1e-3, atol=1e-4)
    assert list(onnx_cache.glob("*.onnx")), "the verified graph is cached for the next load"


def test_a_graph_of_other_weights_in_the_cache_is_caught_and_replaced(
    tiny_models_dir, onnx_cache, tmp_path, cell_crops
):
    import keras

    from leukemia_core.models import build_classifier

    model = load_model("tiny", tiny_models_dir)
    Classifier(model, runtime="onnx")
    (cached,) = onnx_cache.glob("*.onnx")
    # The graph of a network with other weights, filed under this model's key.
    keras.utils.set_random_seed(7)
    other = build_classifier("simple_cnn", input_size=32, weights=None)
    other_model = replace(model, keras_model=other)
    Classifier(other_model, runtime="onnx")  # same key (config checksum): overwrites the file
    assert len(list(onnx_cache.glob("*.onnx"))) == 1
    wrong = cached.read_bytes()
    reloaded = Classifier(model, runtime="onnx")  # the probe sees the wrong graph
    assert reloaded.runtime == "onnx"
    assert cached.read_bytes() != wrong, "the wrong graph was replaced by a fresh conversion"
    dp = np.abs(reloaded.probabilities(cell_crops) - Classifier(model).probabilities(cell_crops))
    assert dp.max() <= PROBE_TOLERANCE


def test_a_damaged_cache_file_is_converted_again(tiny_models_dir, onnx_cache):
    model = load_model("tiny", tiny_models_dir)
    Classifier(model, runtime="onnx")
    (cached,) = onnx_cache.glob("*.onnx")
    cached.write_bytes(b"not an onnx graph")
    assert Classifier(model, runtime="onnx").runtime == "onnx"
    assert cached.read_bytes() != b"not an onnx graph"


def test_without_onnxruntime_auto_keeps_keras_and_says_why(
    tiny_models_dir, onnx_cache, monkeypatch
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    model = load_model("tiny", tiny_models_dir)
    auto = Classifier(model, runtime="auto")
    assert auto.runtime == "keras"
    assert "onnxruntime is not installed" in auto.forward.note
    with pytest.raises(OnnxUnavailableError, match=r"pip install -r requirements\.txt"):
        Classifier(model, runtime="onnx")


def test_an_unknown_runtime_is_refused_with_the_choices(tiny_models_dir):
    with pytest.raises(ValueError, match=r"'tflite'.*'auto', 'keras', 'onnx'"):
        Classifier(load_model("tiny", tiny_models_dir), runtime="tflite")


def test_an_unwritable_cache_only_costs_the_next_load_its_conversion(
    tiny_models_dir, tmp_path, monkeypatch
):
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV_VAR, str(blocked / "cache"))
    assert cache_dir() == blocked / "cache"
    assert Classifier(load_model("tiny", tiny_models_dir), runtime="onnx").runtime == "onnx"
    assert blocked.read_text().startswith("a file")


def test_a_graph_that_fails_on_the_probe_batch_leaves_keras_in_charge(
    tiny_models_dir, onnx_cache, monkeypatch
):
    """Whatever the reason, a graph that fails on the probe batch is not used."""
    import onnxruntime

    def fail(self, *args, **kwargs):
        raise ValueError("Required inputs (['normalization/Sub/y:0']) are missing")

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", fail)
    model = load_model("tiny", tiny_models_dir)
    auto = Classifier(model, runtime="auto")
    assert auto.runtime == "keras" and "failed on the probe batch" in auto.forward.note
    assert not list(onnx_cache.glob("*.onnx")), "a graph that failed is not cached"
    with pytest.raises(OnnxUnavailableError, match="Required inputs"):
        Classifier(model, runtime="onnx")


def test_efficientnet_with_input_normalisation_runs_on_keras_and_is_not_tried_twice(
    onnx_cache, tmp_path, cell_crops
):
    """Keras' EfficientNets (B0-B7) normalise their input in the graph; tf2onnx leaves those
    statistics as graph inputs, so the load check refuses the graph and notes why."""
    import keras

    from leukemia_core.models import build_classifier
    from leukemia_core.models.writing import save_model_folder

    keras.utils.set_random_seed(0)
    model = build_classifier("efficientnet_b0", input_size=32, weights=None)
    config = {"architecture": "efficientnet_b0", "input_size": 32, "preprocessing": "efficientnet",
              "class_names": ["blast", "normal"], "gradcam_layer": "top_activation",
              "calibration": {"temperature": 1.0, "threshold": 0.5, "uncertain_low": 0.4,
                              "uncertain_high": 0.6}, "training": {"data": "none"}}  # fmt: skip
    save_model_folder(model, "b0", config, metrics={}, card="# b0\n", root=tmp_path)
    loaded = load_model("b0", tmp_path)
    auto = Classifier(loaded, runtime="auto")
    assert auto.runtime == "keras" and "inputs" in auto.forward.note
    assert [p.suffix for p in onnx_cache.iterdir()] == [".keras-only"]
    again = Classifier(loaded, runtime="auto")
    assert "an earlier load found this" in again.forward.note
    np.testing.assert_allclose(again.probabilities(cell_crops), auto.probabilities(cell_crops))
    with pytest.raises(OnnxUnavailableError, match="runtime auto or keras"):
        Classifier(loaded, runtime="onnx")


def test_a_timed_out_conversion_is_tried_again_at_the_next_load(
    onnx_cache, tiny_models_dir, monkeypatch
):
    """One timeout on a busy server left a note that kept these weights on Keras for good (and
    refused --runtime onnx) until someone deleted it by hand."""
    from leukemia_core.models import onnx_runtime

    model = load_model("tiny", tiny_models_dir)
    monkeypatch.setattr(onnx_runtime, "CONVERT_TIMEOUT_S", 0.01)
    busy = Classifier(model, runtime="auto")
    assert busy.runtime == "keras" and "took over" in busy.forward.note
    assert not list(onnx_cache.glob("*")), "a timeout is not remembered"
    monkeypatch.undo()
    assert Classifier(model, runtime="auto").runtime == "onnx"


def test_a_conversion_that_cannot_start_falls_back_to_keras_and_says_why(
    onnx_cache, tiny_models_dir, monkeypatch
):
    """A full temporary folder (or a converter the account may not run) stopped analyze with
    "could not write the results to --out: ... Free some space", blaming the output folder."""
    import subprocess

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", sys.executable)

    monkeypatch.setattr(subprocess, "run", refuse)
    classifier = Classifier(load_model("tiny", tiny_models_dir), runtime="auto")
    assert classifier.runtime == "keras"
    assert "the ONNX conversion could not run" in classifier.forward.note
    assert not list(onnx_cache.glob("*")), "not remembered: it may work another time"
