"""EfficientNet-Lite: NumPy reader of PyTorch checkpoints, conversion, ImageNet sanity."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile

import keras
import numpy as np
import pytest
from skimage import data, transform

from leukemia_core.errors import WeightsFileError
from leukemia_core.models import build_classifier, get_architecture, imagenet, lite, preprocess

ESPRESSO = 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


# --- A hand-made checkpoint, pickled with the same GLOBAL opcodes torch.save emits ----------


def _fake_torch(monkeypatch) -> types.SimpleNamespace:
    """Stand-ins registered as ``torch``/``torch._utils`` so pickle names them like torch."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = (
        "torch._utils",
        ("_rebuild_tensor_v2"),
    )
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for kind in ("FloatStorage", "HalfStorage", "LongStorage"):
        setattr(torch, kind, type(kind, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(torch=torch, rebuild=_rebuild_tensor_v2)


class _StorageRef:
    def __init__(self, key: str, kind: type, array: np.ndarray):
        self.key, self.kind, self.array = key, kind, array


class _TensorRef:
    def __init__(self, fake, storage, offset, shape, stride):
        self.fake, self.args = fake, (storage, offset, shape, stride)

    def __reduce__(self):
        storage, offset, shape, stride = self.args
        return self.fake.rebuild, (storage, offset, shape, stride, False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)  # torch.save's default protocol
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            pid = ("storage", obj.kind, obj.key, "cpu", obj.array.size)
            return (*pid, None) if self.legacy else pid
        return None


def _state_dict(fake):
    """Tensors with a transposed stride, a storage offset, float16 and an int64 scalar."""
    t = fake.torch
    base = _StorageRef("0", t.FloatStorage, np.arange(12, dtype=np.float32))
    shared = _StorageRef("1", t.FloatStorage, np.arange(20, dtype=np.float32) * 0.5)
    half = _StorageRef("2", t.HalfStorage, np.array([1.5, -2.0, 0.25], np.float16))
    count = _StorageRef("3", t.LongStorage, np.array([7], np.int64))
    sd = collections.OrderedDict(
        transposed=_TensorRef(fake, base, 0, (4, 3), (1, 4)),
        offset=_TensorRef(fake, shared, 5, (2, 3), (3, 1)),
        half=_TensorRef(fake, half, 0, (3,), (1,)),
        steps=_TensorRef(fake, count, 0, (), ()),
    )
    expected = {
        "transposed": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "offset": (np.arange(20, dtype=np.float32) * 0.5)[5:11].reshape(2, 3),
        "half": np.array([1.5, -2.0, 0.25], np.float16),
        "steps": np.array(7, np.int64),
    }
    return sd, [base, shared, half, count], expected


def _write_zip(path, sd, storages):
    buffer = io.BytesIO()
    _TorchPickler(buffer, legacy=False).dump(sd)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")
        for s in storages:
            archive.writestr(f"archive/data/{s.key}", s.array.tobytes())


def _write_legacy(path, sd, storages):
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        _TorchPickler(f, legacy=True).dump(sd)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(np.int64(s.array.size).tobytes() + s.array.tobytes())


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy], ids=["zip", "legacy"])
def test_reader_handles_strides_offsets_and_dtypes(writer, tmp_path, monkeypatch):
    fake = _fake_torch(monkeypatch)
    sd, storages, expected = _state_dict(fake)
    writer(tmp_path / "tiny.pth", sd, storages)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need torch at all
    loaded = lite.load_torch_checkpoint(tmp_path / "tiny.pth")
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        assert loaded[key].dtype == want.dtype, key
        np.testing.assert_array_equal(loaded[key], want, err_msg=key)


def test_reader_refuses_foreign_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": print}, protocol=2))
    with pytest.raises(WeightsFileError, match=r"print; only tensor state_dicts"):
        lite.load_torch_checkpoint(path)


def test_reader_refuses_strides_outside_storage(tmp_path, monkeypatch):
    fake = _fake_torch(monkeypatch)
    storage = _StorageRef("0", fake.torch.FloatStorage, np.zeros(4, np.float32))
    sd = {"w": _TensorRef(fake, storage, 0, (4, 4), (4, 1))}
    _write_zip(tmp_path / "bad.pth", sd, [storage])
    with pytest.raises(WeightsFileError, match="outside its storage"):
        lite.load_torch_checkpoint(tmp_path / "bad.pth")


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "cannot read PyTorch checkpoint"), (pickle.dumps(42), "wrong magic number")],
)
def test_reader_rejects_non_checkpoints(content, match, tmp_path):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(WeightsFileError, match=match):
        lite.load_torch_checkpoint(tmp_path / "x.pth")


def test_reader_on_packaged_lite0_checkpoint():
    sd = lite.load_torch_checkpoint(imagenet.lite_checkpoint_path(0))
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.running_var"].min() >= 0
    assert sd["_conv_stem.weight"].flags.c_contiguous  # stored transposed; copied to C order


# --- Converted ImageNet models --------------------------------------------------------------


@pytest.fixture(scope="module")
def lite_home(tmp_path_factory):
    """A private KERAS_HOME for this module, so conversion runs here, not in the user's cache."""
    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def imagenet_lite(lite_home):
    """``imagenet_lite(k)``: the converted ImageNet model with top, built once per variant."""
    models = {}

    def get(k: int) -> keras.Model:
        if k not in models:
            weights = imagenet.lite_imagenet_weights(k)
            models[k] = lite.efficientnet_lite(k, include_top=True, weights=weights)
        return models[k]

    return get


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (transforms.Resize), centre crop, back to uint8."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    resized = transform.resize(
        image, (round(h * scale), round(w * scale)), anti_aliasing=True, preserve_range=True
    )
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return np.clip(resized[top : top + size, left : left + size], 0, 255).astype(np.uint8)


def _top1(model: keras.Model, image: np.ndarray, scheme: str) -> int:
    x = preprocess(_square(image, model.input_shape[1])[None], scheme)
    return int(np.argmax(model.predict(x, verbose=0)[0]))


@pytest.mark.parametrize("scheme", ["lite", "torch_imagenet"])
def test_lite0_imagenet_classifies_coffee_and_cat(scheme, lite_home, imagenet_lite):
    model = imagenet_lite(0)
    assert (lite_home / "leukemia" / "efficientnet_lite0_imagenet.weights.h5").is_file()
    assert _top1(model, data.coffee(), scheme) == ESPRESSO
    assert _top1(model, data.chelsea(), scheme) in CATS


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_lite1_lite2_imagenet_classify_coffee(k, imagenet_lite):
    model = imagenet_lite(k)
    assert model.input_shape[1] == get_architecture(f"efficientnet_lite{k}").default_input_size
    scheme = get_architecture(f"efficientnet_lite{k}").preprocessing
    assert _top1(model, data.coffee(), scheme) == ESPRESSO


def test_classifier_backbone_gets_the_converted_weights(imagenet_lite):
    imagenet_lite(0)  # converts into the private cache if no test did yet
    classifier = build_classifier("efficientnet_lite0", input_size=128, weights="imagenet")
    backbone = lite.efficientnet_lite(
        0, input_size=128, weights=imagenet.lite_imagenet_weights(0)
    )  # weights do not depend on the input size
    x = preprocess(_square(data.coffee(), 128)[None], "lite")
    features = keras.Model(classifier.input, classifier.get_layer("top_activation").output)
    np.testing.assert_allclose(
        features.predict(x, verbose=0), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
