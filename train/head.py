"""Cached-feature training: the frozen backbone's pooled features once, the head trained on them.

With ``FitConfig(cached_features=True)`` the backbone sees each training cell in a few augmented
views (:attr:`~train.fit.FitConfig.feature_views`) once, and only the dropout + ``logits`` head
is trained on those features: the frozen phase's result in minutes on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from leukemia_core.calibration import CLASS_NAMES
from leukemia_core.fingerprints import array_digest
from leukemia_core.models import get_architecture
from leukemia_core.models.architectures import PREPROCESSING_SCHEMES
from train.augmentation import augment
from train.batches import balanced_indices, class_weights
from train.progress import EpochProgress, ProgressCallback

if TYPE_CHECKING:
    from train.fit import FitConfig


def _head_model(features: int, dropout: float, seed: int) -> keras.Model:
    """Dropout + Dense ``logits`` + softmax: the classifier head alone, for cached features."""
    inputs = keras.Input((features,))
    x = keras.layers.Dropout(dropout, seed=seed)(inputs)
    logits = keras.layers.Dense(len(CLASS_NAMES), name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def backbone_features(
    model: keras.Model, images: np.ndarray, config: FitConfig, *, views: int = 1,
    progress: ProgressCallback | None = None, layer: str = "head_pool",
) -> np.ndarray:  # fmt: skip
    """Pooled backbone features ``(views, N, F)``; view 0 is the plain image, others augmented.

    ``layer`` names another layer whose output to return instead (``(views, N, ...)``).
    """
    extractor = keras.Model(model.input, model.get_layer(layer).output)
    scheme = PREPROCESSING_SCHEMES[get_architecture(config.architecture).preprocessing]
    out = []
    for view in range(views):
        seeds = tf.data.Dataset.random(seed=config.seed * 1000 + view).batch(2)

        def load(image, seed, augmented=view > 0):
            image = tf.cast(image, tf.float32)
            if augmented:
                image = tf.round(augment(image, seed, config.augmentations))
            return scheme(image)

        batches = (
            tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(images), seeds)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(config.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        view_out = []
        for batch in batches:
            view_out.append(extractor.predict_on_batch(batch))
            if progress:
                done = view * len(images) + sum(len(v) for v in view_out)
                progress({"stage": "features", "done": done, "total": views * len(images)})
        out.append(np.concatenate(view_out))
    return np.stack(out)


def _cached(path: Path | None, compute) -> np.ndarray:
    """``compute()``, stored in ``path`` (an .npy file) and read back on a re-run."""
    if path is not None and path.is_file():
        return np.load(path)
    values = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".partial.npy"), values)
        Path(path.with_suffix(".partial.npy")).replace(path)
    return values


def train_head(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray | None, val_y: np.ndarray | None,
    config: FitConfig, dropout: float, report: ProgressCallback | None = None,
    strata: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[dict]]:  # fmt: skip
    """Train the dropout + ``logits`` head on pooled features; returns its weights and history.

    Args:
        train_x: ``(N, F)`` features of training cells (augmented views as extra rows).
        train_y: Class index per row.
        val_x: Validation features for early stopping, or None.
        val_y: Validation class indices, or None.
        config: Epochs, batch size, rate, patience, balancing and seed come from here.
        dropout: Dropout rate of the classifier's head.
        report: Progress callback.
        strata: What oversampling equalises per row (:func:`train.batches.balancing_strata`);
            the class when None.
    """
    keras.utils.set_random_seed(config.seed)  # same seed, same head, whatever ran before
    head = _head_model(train_x.shape[-1], dropout, config.seed)
    head.compile(optimizer=keras.optimizers.Adamax(config.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # fmt: skip
    order = np.arange(len(train_y))
    if config.balance in ("oversample", "source_class"):
        strata = train_y if strata is None else strata
        order = balanced_indices(strata, np.random.default_rng(config.seed))
    epochs = max(config.epochs, 1)
    progress = EpochProgress(report, "head", epochs, math.ceil(len(order) / config.batch_size))
    callbacks = [progress]
    has_val = val_x is not None and len(val_x) > 0
    if has_val:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss", patience=config.patience, restore_best_weights=True))  # fmt: skip
    head.fit(
        train_x[order], train_y[order], batch_size=config.batch_size, epochs=epochs,
        validation_data=(val_x, val_y) if has_val else None, shuffle=True,
        class_weight=class_weights(train_y) if config.balance == "class_weight" else None,
        callbacks=callbacks, verbose=0,
    )  # fmt: skip
    return head.get_layer("logits").get_weights(), progress.history


def feature_file_name(config: FitConfig, train_images: np.ndarray) -> str:
    """Name of the cached features of ``train_images``: what they depend on, the backbone's
    weights too (another backbone's features in the same folder are stale), and every pixel,
    but not the head's settings, so a new head reuses them."""
    recipe = (f"{config.architecture} {config.size} {config.seed} {sorted(config.augmentations)} "
              f"{config.stain_normalisation} {config.weights} {config.feature_views}")  # fmt: skip
    return (f"features_{config.architecture}_{config.size}_{array_digest(recipe, train_images)}"
            f"_v{config.feature_views}.npy")  # fmt: skip


def fit_cached(model, data, config, report, checkpoint_dir=None) -> list[dict]:
    """Phase one on cached features; the trained head is copied into ``model``."""
    train_images, train_labels, val_images, val_labels, strata = data
    cache = checkpoint_dir / feature_file_name(config, train_images) if checkpoint_dir else None
    train_x = _cached(cache, lambda: backbone_features(
        model, train_images, config, views=config.feature_views, progress=report))  # fmt: skip
    train_y = np.tile(train_labels, config.feature_views)
    train_x = train_x.reshape(-1, train_x.shape[-1])
    val_x = backbone_features(model, val_images, config)[0] if len(val_labels) else None
    weights, history = train_head(
        train_x, train_y, val_x, val_labels, config, model.get_layer("head_dropout").rate,
        report, strata=None if strata is None else np.tile(strata, config.feature_views))  # fmt: skip
    model.get_layer("logits").set_weights(weights)
    return history
