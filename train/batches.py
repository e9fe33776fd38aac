"""Training batches: class or source/class balancing, class weights and the tf.data pipeline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from leukemia_core.calibration import CLASS_NAMES
from leukemia_core.models import get_architecture
from leukemia_core.models.architectures import PREPROCESSING_SCHEMES
from train.augmentation import augment

if TYPE_CHECKING:
    from train.fit import FitConfig

# "source_class" oversamples every (source, class) stratum to the largest one, so that no
# source is one class in effect (a source giving only normal cells teaches "this look = normal").
BALANCING = ("oversample", "source_class", "class_weight", "none")


def balanced_indices(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every index once plus random repeats of the smaller strata up to the largest one.

    ``strata`` is the class index per cell (``oversample``) or a ``source/class`` key
    (``source_class``).
    """
    groups = [np.flatnonzero(strata == k) for k in np.unique(strata)]
    largest = max(len(g) for g in groups)
    extra = [rng.choice(g, largest - len(g)) for g in groups if 0 < len(g) < largest]
    return rng.permutation(np.concatenate([np.arange(len(strata)), *extra]))


def balancing_strata(labels: np.ndarray, sources: Sequence[str] | None, balance: str) -> np.ndarray:
    """What :func:`balanced_indices` equalises under a ``balance`` setting."""
    if balance == "source_class" and sources is not None:
        return np.array([f"{s}/{y}" for s, y in zip(sources, labels, strict=True)])
    return np.asarray(labels)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, normalised to a mean of 1 per cell."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {k: float(len(labels) / (len(counts) * c)) for k, c in enumerate(counts) if c}


def make_dataset(
    images: np.ndarray, labels: np.ndarray, config: FitConfig, *, training: bool,
    strata: np.ndarray | None = None,
) -> tf.data.Dataset:  # fmt: skip
    """Batches of preprocessed images; training data is balanced, shuffled, augmented, endless.

    ``strata`` (see :func:`balancing_strata`) is what oversampling equalises; the class by
    default.
    """
    scheme = PREPROCESSING_SCHEMES[get_architecture(config.architecture).preprocessing]
    order = np.arange(len(labels))
    if training and config.balance in ("oversample", "source_class"):
        strata = labels if strata is None else strata
        order = balanced_indices(strata, np.random.default_rng(config.seed))
    indices = tf.data.Dataset.from_tensor_slices(order)
    if training:
        indices = indices.shuffle(len(order), seed=config.seed).repeat()
    # Independent augmentation seeds for every element of every epoch.
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
    images, labels = tf.constant(images), tf.constant(labels)

    def load(i, seed):
        image = tf.cast(tf.gather(images, i), tf.float32)
        if training and config.augment:
            image = augment(image, seed, config.augmentations)
        return scheme(image), tf.gather(labels, i)

    return (
        tf.data.Dataset.zip(indices, seeds)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def steps_per_epoch(labels: np.ndarray, config: FitConfig, strata: np.ndarray | None = None) -> int:
    """Batches in one pass over the (balanced) training cells."""
    n = len(labels)
    if config.balance in ("oversample", "source_class"):
        _, counts = np.unique(labels if strata is None else strata, return_counts=True)
        n = len(counts) * int(counts.max())
    return math.ceil(n / config.batch_size)
