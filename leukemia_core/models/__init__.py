"""Classifier architectures, their preprocessing, and pretrained ImageNet weight sources."""

from leukemia_core.models.architectures import (
    ARCHITECTURES,
    PREPROCESSING_SCHEMES,
    ArchitectureSpec,
    build_classifier,
    get_architecture,
    list_architectures,
    preprocess,
)
from leukemia_core.models.imagenet import keras_home, keras_imagenet_weights, lite_cache_dir

__all__ = [
    "ARCHITECTURES",
    "PREPROCESSING_SCHEMES",
    "ArchitectureSpec",
    "build_classifier",
    "get_architecture",
    "keras_home",
    "keras_imagenet_weights",
    "list_architectures",
    "lite_cache_dir",
    "preprocess",
]
