"""Grad-CAM family heatmaps and overlays, on the tiny random model and a hand-weighted model."""

from dataclasses import replace
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from leukemia_core.calibration import Calibration
from leukemia_core.errors import InvalidImageError, ModelIntegrityError
from leukemia_core.explain import METHODS, compute_heatmaps, overlay_heatmap
from leukemia_core.models import preprocess
from leukemia_core.models.config import ModelConfig
from leukemia_core.models.folder import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    return load_model("tiny", tiny_models_dir)


def _cells(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Textured discs of varying radius on black, like classifier-domain crops."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        crop = np.zeros((size, size, 3), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (size // 2, size // 2), int(rng.integers(size // 5, size // 2)), 1, -1)
        crop[mask == 1] = rng.integers(40, 255, (int(mask.sum()), 3), dtype=np.uint8)
        crops.append(crop)
    return crops


def _colour_model() -> LoadedModel:
    """A flat classifier whose blast logit sees only red pixels and normal logit only green.

    ``feat`` (1×1 conv, ReLU) has a red channel (R - G - B) and a green one (G - R - B); the
    logits are 4 × their global maxima, so the blast evidence is exactly where the red is.
    """
    inputs = keras.Input((32, 32, 3), name="input_layer")
    feat = keras.layers.Conv2D(2, 1, activation="relu", name="feat")(inputs)
    x = keras.layers.GlobalMaxPooling2D(name="head_pool")(feat)
    x = keras.layers.Dropout(0.5, name="head_dropout")(x)
    logits = keras.layers.Dense(2, name="logits", dtype="float32")(x)
    outputs = keras.layers.Softmax(name="predictions", dtype="float32")(logits)
    model = keras.Model(inputs, outputs, name="colour")
    kernel = np.array([[1, -1], [-1, 1], [-1, -1]], np.float32).reshape(1, 1, 3, 2)
    model.get_layer("feat").set_weights([kernel, np.zeros(2, np.float32)])
    model.get_layer("logits").set_weights(
        [4 * np.eye(2, dtype=np.float32), np.zeros(2, np.float32)]
    )
    config = ModelConfig("colour", "simple_cnn", 32, "unit", ("blast", "normal"), "0" * 64,
                         Calibration(), gradcam_layer="feat")  # fmt: skip
    return LoadedModel(config, Path("."), model)


def _red_top_left_green_bottom_right(size: int = 64) -> np.ndarray:
    crop = np.zeros((size, size, 3), np.uint8)
    cv2.circle(crop, (size // 4, size // 4), size // 6, (255, 0, 0), -1)
    cv2.circle(crop, (3 * size // 4, 3 * size // 4), size // 6, (0, 255, 0), -1)
    return crop


def _quadrant_means(heat: np.ndarray) -> dict[str, float]:
    h = heat.shape[0] // 2
    return {"top_left": heat[:h, :h].mean(), "top_right": heat[:h, h:].mean(),
            "bottom_left": heat[h:, :h].mean(), "bottom_right": heat[h:, h:].mean()}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_heatmaps_have_the_crops_size_and_unit_range(tiny, method):
    heat = compute_heatmaps(tiny, _cells(3), method=method)
    assert heat.shape == (3, 48, 48) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    for one in heat:  # each map is scaled to [0, 1] on its own, or flat zero
        assert one.max() == pytest.approx(1.0) or not one.any()


@pytest.mark.parametrize("method", METHODS)
def test_heatmaps_are_deterministic_and_batching_does_not_change_them(tiny, method):
    crops = _cells(5, seed=1)
    batched = compute_heatmaps(tiny, crops, method=method, batch_size=2)
    np.testing.assert_array_equal(
        batched, compute_heatmaps(tiny, crops, method=method, batch_size=2)
    )
    single = np.concatenate([compute_heatmaps(tiny, [crop], method=method) for crop in crops])
    np.testing.assert_allclose(batched, single, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_heat_lies_where_the_class_evidence_is(method):
    model = _colour_model()
    crop = _red_top_left_green_bottom_right()
    blast = compute_heatmaps(model, [crop], method=method, score_maps=2)[0]
    normal = compute_heatmaps(model, [crop], method=method, class_index=1, score_maps=2)[0]
    for heat, hot in ((blast, "top_left"), (normal, "bottom_right")):
        means = _quadrant_means(heat)
        elsewhere = max(value for quadrant, value in means.items() if quadrant != hot)
        assert means[hot] > 2 * elsewhere, (method, hot, means)
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        assert (y < 32, x < 32) == ((hot == "top_left"),) * 2


def test_explaining_leaves_the_callers_softmax_in_place(tiny):
    images = preprocess(np.stack(_cells(2, size=32)), tiny.config.preprocessing)
    before = np.asarray(tiny.keras_model(images))
    for method in METHODS:
        compute_heatmaps(tiny, _cells(2), method=method)
    after = np.asarray(tiny.keras_model(images))
    np.testing.assert_allclose(after.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(before, after)


def test_no_crops_give_an_empty_stack_at_the_input_size(tiny):
    heat = compute_heatmaps(tiny, [], method="scorecam")
    assert heat.shape == (0, 32, 32) and heat.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "crops", "error", "match"),
    [
        ({"method": "lime"}, None, ValueError, r"unknown explanation method 'lime'; valid methods: gradcam, gradcam\+\+, scorecam"),
        ({"class_index": 2}, None, ValueError, r"class_index must be in \[0, 1\], got 2"),
        ({"score_maps": 0}, None, ValueError, r"score_maps and batch_size must be >= 1, got 0"),
        ({"batch_size": 0}, None, ValueError, r"must be >= 1, got 8 and 0"),
        ({}, [np.zeros((48, 48, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)],
         InvalidImageError, r"different sizes: crop 0 is 48×48 px, crop 1 is 40×40 px"),
        ({}, [np.zeros((48, 48, 3), np.float32)], InvalidImageError, r"crop 0 is float32.*expected RGB uint8"),
        ({}, [np.zeros((48, 48), np.uint8)], InvalidImageError, r"shape \(48, 48\); expected RGB"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_with_the_fix(tiny, kwargs, crops, error, match):
    with pytest.raises(error, match=match):
        compute_heatmaps(tiny, _cells(2) if crops is None else crops, **kwargs)


def test_a_config_naming_a_missing_layer_is_reported(tiny):
    broken = replace(tiny, config=replace(tiny.config, gradcam_layer="no_such_layer"))
    with pytest.raises(ModelIntegrityError, match=r"'no_such_layer'.*set gradcam_layer"):
        compute_heatmaps(broken, _cells(1))


def test_overlay_keeps_shape_and_dtype_and_opacity_zero_is_the_crop():
    crop, heat = _cells(1)[0], np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48)
    out = overlay_heatmap(crop, heat)
    assert out.shape == crop.shape and out.dtype == np.uint8 and not np.array_equal(out, crop)
    np.testing.assert_array_equal(overlay_heatmap(crop, heat, opacity=0.0), crop)


def test_overlay_is_red_where_hot_blue_where_cold_and_leaves_cold_background_dark():
    crop = np.zeros((4, 4, 3), np.uint8)
    crop[:2] = 128  # top half is cell, bottom half background
    heat = np.zeros((4, 4), np.float32)
    heat[:, :2] = 1.0  # left half hot
    out = overlay_heatmap(crop, heat, opacity=1.0).astype(int)
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 10  # hot cell: red (RGB order, not BGR)
    assert out[0, 3, 2] > 100 and out[0, 3, 0] < 10  # cold cell: blue
    assert out[3, 0, 0] > 100  # hot background shows
    np.testing.assert_array_equal(out[3, 3], 0)  # cold background stays black


@pytest.mark.parametrize(
    ("heatmap", "opacity", "error", "match"),
    [
        (np.zeros((8, 8)), 1.5, ValueError, r"opacity must be in \[0, 1\], got 1.5"),
        (np.zeros((8, 8)), -0.1, ValueError, r"opacity must be in \[0, 1\], got -0.1"),
        (np.zeros((8, 8)), float("nan"), ValueError, r"opacity must be in \[0, 1\], got nan"),
        (np.zeros((4, 4)), 0.4, InvalidImageError, r"heatmap has shape \(4, 4\) but the crop is 8×8"),
    ],
)  # fmt: skip
def test_overlay_rejects_bad_arguments(heatmap, opacity, error, match):
    with pytest.raises(error, match=match):
        overlay_heatmap(np.zeros((8, 8, 3), np.uint8), heatmap, opacity=opacity)
    with pytest.raises(InvalidImageError, match=r"crop is float64 of shape \(8, 8, 3\)"):
        overlay_heatmap(np.zeros((8, 8, 3)), np.zeros((8, 8)))
