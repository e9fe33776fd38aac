"""Architecture registry, preprocessing schemes and ImageNet weight sourcing."""

from __future__ import annotations

import hashlib
import time

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from leukemia_core.errors import (
    ImageNetWeightsUnavailableError,
    InvalidImageError,
    ModelNotFoundError,
    UnknownPreprocessingError,
    WeightsFileError,
)
from leukemia_core.models import (
    ARCHITECTURES,
    build_classifier,
    get_architecture,
    imagenet,
    list_architectures,
    preprocess,
)

EXPECTED = {
    "efficientnet_b3", "efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1",
    "efficientnet_lite2", "vgg16", "vgg19", "inception_v3", "xception", "resnet50", "resnet101",
    "simple_cnn",
}  # fmt: skip
HEAVY = {"efficientnet_b3", "inception_v3", "xception", "resnet50", "resnet101"}


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """An empty Keras cache and an origin that refuses connections at once (no network)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("LEUKEMIA_OFFLINE", raising=False)
    return tmp_path


def _unreachable(monkeypatch, name: str) -> imagenet.KerasWeightFile:
    spec = imagenet.KERAS_WEIGHT_FILES[name]
    dead = imagenet.KerasWeightFile(
        spec.file_name, "http://127.0.0.1:9/" + spec.file_name, spec.md5
    )
    monkeypatch.setitem(imagenet.KERAS_WEIGHT_FILES, name, dead)
    return dead


def test_registry_lists_every_architecture_flagship_first():
    assert set(list_architectures()) == EXPECTED
    assert list_architectures()[0] == "efficientnet_b3"
    assert get_architecture("efficientnet_b3").default_input_size == 300
    for spec in ARCHITECTURES.values():
        assert spec.preprocessing in {"efficientnet", "caffe", "tf", "lite", "unit"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(EXPECTED)],
)
def test_builds_flat_classifier_and_predicts(name):
    spec = get_architecture(name)
    size = 128 if name == "efficientnet_b3" else max(64, spec.min_input_size)  # b3 at 128 too
    model = build_classifier(name, input_size=size, weights=None)
    x = preprocess(np.random.default_rng(0).integers(0, 256, (1, size, size, 3), np.uint8),
                   spec.preprocessing)  # fmt: skip
    probabilities = np.asarray(model(x, training=False))  # eager: no tf.function tracing
    assert model.input_shape == (None, size, size, 3)
    assert probabilities.shape == (1, 2)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
    # Flat graph: Grad-CAM layer and logits are reachable on the top-level model.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    gradcam = model.get_layer(spec.gradcam_layer)
    assert len(gradcam.output.shape) == 4 and gradcam.output.shape[1] >= 1
    assert model.get_layer("logits").output.shape == (None, 2)
    assert isinstance(model.get_layer("predictions"), keras.layers.Softmax)


def test_gradcam_runs_on_the_named_layer():
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    spec = get_architecture("simple_cnn")
    model = build_classifier("simple_cnn", input_size=64, weights=None)
    x = preprocess(np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), np.uint8), "unit")
    cam = Gradcam(model, clone=True)(CategoricalScore([1]), x, penultimate_layer=spec.gradcam_layer)
    assert cam.shape == (1, 64, 64)


@pytest.mark.parametrize("bad", ["efficientnet_b7", "VGG16", "", None])
def test_unknown_name_lists_valid_names(bad):
    with pytest.raises(ModelNotFoundError, match=r"valid names: efficientnet_b3, .*simple_cnn"):
        build_classifier(bad, weights=None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "inception_v3", "input_size": 64}, "input_size >= 75"),
        ({"name": "simple_cnn", "num_classes": 1}, "num_classes must be >= 2"),
        ({"name": "simple_cnn", "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_classifier(weights=None, **kwargs)


# --- Preprocessing ----------------------------------------------------------------------------

PIXELS = np.array([[[0, 128, 255]]], np.uint8)  # one pixel: R=0, G=128, B=255


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("efficientnet", [0.0, 128.0, 255.0]),
        ("unit", [0.0, 128 / 255, 1.0]),
        ("tf", [-1.0, 128 / 127.5 - 1, 1.0]),
        ("lite", [-127 / 128, 1 / 128, 1.0]),
        ("caffe", [255 - 103.939, 128 - 116.779, 0 - 123.68]),  # BGR
        ("torch_imagenet", [-0.485 / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]),
    ],
)
def test_preprocess_schemes(scheme, expected):
    out = preprocess(PIXELS, scheme)
    assert out.dtype == np.float32 and out.shape == PIXELS.shape
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("images", "scheme", "error", "match"),
    [
        (PIXELS, "imagenet", UnknownPreprocessingError, "valid schemes: efficientnet, caffe"),
        (PIXELS.astype(np.float32), "unit", InvalidImageError, "got float32 of shape"),
        (np.zeros((4, 4), np.uint8), "unit", InvalidImageError, r"shape \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), "unit", InvalidImageError, "RGB uint8"),
    ],
)
def test_preprocess_rejects(images, scheme, error, match):
    with pytest.raises(error, match=match):
        preprocess(images, scheme)


# --- Weights ----------------------------------------------------------------------------------


def test_imagenet_without_network_fails_fast_with_the_cache_path(empty_keras_home, monkeypatch):
    dead = _unreachable(monkeypatch, "resnet50")
    start = time.monotonic()
    with pytest.raises(ImageNetWeightsUnavailableError) as info:
        build_classifier("resnet50", input_size=64, weights="imagenet")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert dead.file_name in message and str(empty_keras_home / "models") in message
    assert "--weights PATH" in message and "download" in message
    assert not list((empty_keras_home / "models").iterdir())  # no partial file left behind


def test_offline_flag_never_downloads(empty_keras_home, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_OFFLINE", "1")
    with pytest.raises(ImageNetWeightsUnavailableError, match="disabled by LEUKEMIA_OFFLINE"):
        imagenet.keras_imagenet_weights("efficientnet_b3")


def test_simple_cnn_has_no_imagenet_weights():
    with pytest.raises(ImageNetWeightsUnavailableError, match="weights=None"):
        build_classifier("simple_cnn", weights="imagenet")


def _fake_notop_file(application, name: str, home, monkeypatch, size: int = 32):
    """A random-weight ``*_notop.h5`` in the Keras legacy format, registered with its MD5."""
    source = application(include_top=False, weights=None, input_shape=(size, size, 3))
    target = home / "models" / imagenet.KERAS_WEIGHT_FILES[name].file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(target, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    spec = imagenet.KERAS_WEIGHT_FILES[name]
    monkeypatch.setitem(
        imagenet.KERAS_WEIGHT_FILES,
        name,
        imagenet.KerasWeightFile(spec.file_name, spec.origin, md5),
    )
    return source, target


def test_cached_file_is_used_offline_and_a_corrupt_one_is_reported(empty_keras_home, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_OFFLINE", "1")
    source, target = _fake_notop_file(keras.applications.VGG16, "vgg16", empty_keras_home,
                                      monkeypatch)  # fmt: skip
    model = build_classifier("vgg16", input_size=32, weights="imagenet")
    np.testing.assert_array_equal(
        model.get_layer("block5_conv3").get_weights()[0],
        source.get_layer("block5_conv3").get_weights()[0],
    )
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(ImageNetWeightsUnavailableError, match="MD5 is not"):
        build_classifier("vgg16", input_size=32, weights="imagenet")


@pytest.mark.slow
def test_efficientnet_from_file_matches_keras_imagenet_graph(empty_keras_home, monkeypatch):
    """Keras adds a Rescaling(1/sqrt(std)) only for weights="imagenet"; we fold it in."""
    from keras.src.applications import efficientnet

    _, target = _fake_notop_file(keras.applications.EfficientNetB0, "efficientnet_b0",
                                      empty_keras_home, monkeypatch)  # fmt: skip
    monkeypatch.setattr(efficientnet.file_utils, "get_file", lambda *a, **k: str(target))
    keras_model = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(32, 32, 3)
    )
    ours = build_classifier("efficientnet_b0", input_size=32, weights="imagenet")
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    for layer in ("stem_activation", "top_activation"):
        want = keras.Model(keras_model.input, keras_model.get_layer(layer).output)(x)
        got = keras.Model(ours.input, ours.get_layer(layer).output)(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=layer)


def test_weights_file_roundtrip_and_errors(tmp_path):
    model = build_classifier("simple_cnn", input_size=32, weights=None, num_classes=3)
    path = tmp_path / "clf.weights.h5"
    model.save_weights(path)
    again = build_classifier("simple_cnn", input_size=32, weights=path, num_classes=3)
    x = preprocess(np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), np.uint8), "unit")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(WeightsFileError, match=r"does not fit simple_cnn .* 2 classes"):
        build_classifier("simple_cnn", input_size=32, weights=path, num_classes=2)
    with pytest.raises(WeightsFileError, match="does not exist"):
        build_classifier("simple_cnn", weights=tmp_path / "missing.weights.h5")
