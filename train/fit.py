"""Transfer-learning training of one classifier on grouped splits.

Follows source paper B where it is explicit (Adamax at 1e-3, batch 40, early stopping with
patience 5, frozen ImageNet backbone with a pooled dropout head) and paper A for minority
oversampling and rotation/flip/scale augmentation; then optionally fine-tunes the top of the
backbone at a lower rate. Every crop is first brought into the classifier domain with
:func:`leukemia_core.single_cell.single_cell_crop`, exactly as at inference.

``cached_features=True`` trains the head on backbone features computed once (a few augmented
views per training cell; :mod:`train.head`), which gives the frozen phase's result in minutes on
a CPU. Augmentation is :mod:`train.augmentation`, balancing and batches :mod:`train.batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from leukemia_core.calibration import CLASS_NAMES
from leukemia_core.classify import view_averaged_logits
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.fingerprints import array_digest
from leukemia_core.io import read_image
from leukemia_core.models import build_classifier, get_architecture, preprocess
from leukemia_core.models.config import check_test_time_views
from leukemia_core.models.inputs import STAIN_NORMALISATIONS, InputSpec, ready_crops
from leukemia_core.single_cell import single_cell_crop
from train.augmentation import ALL_AUGMENTATIONS, AUGMENTATIONS
from train.batches import BALANCING, balancing_strata, class_weights, make_dataset, steps_per_epoch
from train.head import fit_cached
from train.progress import EpochProgress, ProgressCallback
from train.records import LabelledCrop, UnreadableFileError

HEAD_LAYERS = ("head_pool", "head_dropout", "logits", "predictions")


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines one training run (stored in the model's config.json).

    Attributes:
        architecture: Registry name.
        input_size: Square input side; the architecture's default when None.
        weights: ``"imagenet"``, None (random initialisation, said so in the card) or a path.
        epochs: Maximum epochs of the first phase (frozen backbone when pretrained).
        fine_tune_epochs: Epochs of the second phase (0 skips it).
        fine_tune_layers: Backbone layers unfrozen from the top in phase two (BN stays frozen).
        batch_size: Cells per step.
        learning_rate: Adamax rate of phase one.
        fine_tune_learning_rate: Adamax rate of phase two.
        patience: Early-stopping patience on validation loss.
        balance: ``"oversample"`` the minority class, ``"class_weight"`` or ``"none"``.
        augment: Augment training cells at all.
        augmentations: Which of :data:`train.augmentation.ALL_AUGMENTATIONS` (horizontal
            and vertical flips, 90-degree rotations, +-10% scale, mild colour jitter;
            ``stain``, ``blur`` and ``jpeg`` for scanner and stain robustness).
        stain_normalisation: Step of the model-input path (see
            :mod:`leukemia_core.models.inputs`); stored in the model folder.
        threshold_rule: How calibration picks the threshold (a key of
            :data:`leukemia_core.calibration.THRESHOLD_RULES`).
        cached_features: Train the head on cached backbone features (frozen backbone only).
        feature_views: Augmented views per training cell in cached-feature mode.
        test_time_views: Views (quarter turns, then mirror images) whose logits are averaged
            when the model classifies, from calibration on: 1, 4 or 8.
        seed: Seed of weights, shuffling and augmentation.
    """

    architecture: str = "efficientnet_b3"
    input_size: int | None = None
    weights: str | None = "imagenet"
    epochs: int = 15
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 30
    batch_size: int = 40
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    patience: int = 5
    balance: str = "oversample"
    augment: bool = True
    augmentations: tuple[str, ...] = AUGMENTATIONS
    cached_features: bool = False
    feature_views: int = 8
    test_time_views: int = 1
    stain_normalisation: str = "none"
    threshold_rule: str = "sensitivity_first"
    seed: int = 0

    def __post_init__(self) -> None:
        get_architecture(self.architecture)  # unknown names fail here, listing valid ones
        if self.stain_normalisation not in STAIN_NORMALISATIONS:
            raise ValueError(f"stain_normalisation must be one of {tuple(STAIN_NORMALISATIONS)}, "
                             f"got {self.stain_normalisation!r}")  # fmt: skip
        if self.balance not in BALANCING:
            raise ValueError(f"balance must be one of {BALANCING}, got {self.balance!r}")
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        unknown = set(self.augmentations) - set(ALL_AUGMENTATIONS)
        if unknown:
            raise ValueError(f"Unknown augmentation(s) {sorted(unknown)}; "
                             f"choose from {ALL_AUGMENTATIONS}.")  # fmt: skip
        check_test_time_views(self.test_time_views)
        if self.cached_features and self.weights is None:
            raise ValueError("cached_features needs a pretrained backbone (weights='imagenet').")

    @property
    def size(self) -> int:
        return self.input_size or get_architecture(self.architecture).default_input_size

    @property
    def input_spec(self) -> InputSpec:
        """The model-input path the trained folder will declare."""
        preprocessing = get_architecture(self.architecture).preprocessing
        return InputSpec(self.size, preprocessing, self.stain_normalisation)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    """A trained model and what happened while training it."""

    model: keras.Model
    config: FitConfig
    history: list[dict] = field(default_factory=list)  # one entry per epoch, both phases
    seconds: float = 0.0


def labels_of(records: Sequence[LabelledCrop]) -> np.ndarray:
    """Class index per record in :data:`CLASS_NAMES` order (blast = 0)."""
    return np.array([CLASS_NAMES.index(r.label) for r in records], dtype=np.int32)


def load_crops(
    records: Sequence[LabelledCrop],
    spec: InputSpec,
    progress: ProgressCallback | None = None,
    *,
    cut: Callable[[LabelledCrop], np.ndarray] | None = None,
) -> np.ndarray:
    """Every record as the model sees it in the app, up to preprocessing: ``(N, S, S, 3)`` uint8.

    Each image is cut at the app's crop size (cell on black) and then goes through the model's
    declared input path (:func:`leukemia_core.models.inputs.ready_crops`), exactly as
    ``analyze`` does: cropping straight at the input size resamples differently, and the
    model's answer on a borderline cell can move by 0.1 with the resampling alone. ``cut``
    replaces :func:`app_crop` (a :class:`train.crop_cache.CropCache` reads it from disk).

    Raises:
        UnreadableFileError: A record's image cannot be read (named by its whole path).
    """
    cut = cut or app_crop
    out = np.zeros((len(records), spec.input_size, spec.input_size, 3), dtype=np.uint8)
    for i, record in enumerate(records):
        try:
            out[i] = ready_crops([cut(record)], spec)[0]
        except LeukemiaCoreError as error:  # named by its whole path: many folders hold a c1.png
            raise UnreadableFileError(
                f"{record.path}: {error} Check the dataset first (python -m train inspect, or "
                "the Retrain page's check), or leave unreadable images out with "
                "--skip-unreadable."
            ) from error
        if progress and (i + 1 == len(records) or i % 50 == 0):
            progress({"stage": "loading", "done": i + 1, "total": len(records)})
    return out


def app_crop(record: LabelledCrop) -> np.ndarray:
    """The record's image as the app crops it (cell on black, at the app's crop size)."""
    return single_cell_crop(read_image(record.path).rgb).crop


def _set_backbone_trainable(model: keras.Model, top_layers: int | None) -> None:
    """Freeze the backbone (top_layers=0), unfreeze its top layers, or all (None)."""
    backbone = [layer for layer in model.layers if layer.name not in HEAD_LAYERS]
    cut = 0 if top_layers is None else max(0, len(backbone) - top_layers)
    for i, layer in enumerate(backbone):
        trainable = i >= cut and not (top_layers is not None and top_layers == 0)
        # Frozen BatchNorm statistics keep small-batch fine-tuning stable.
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable and not (is_bn and top_layers is not None)


def _fit_phase(model, data, config, phase, epochs, rate, checkpoint_dir, report) -> list[dict]:
    train_images, train_labels, val_images, val_labels, strata = data
    model.compile(
        optimizer=keras.optimizers.Adamax(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=bool(tf.config.list_physical_devices("GPU")),
    )
    steps = steps_per_epoch(train_labels, config, strata)
    progress = EpochProgress(report, phase, epochs, steps)
    callbacks = [progress]
    has_val = len(val_labels) > 0
    if has_val:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss", patience=config.patience, restore_best_weights=True))  # fmt: skip
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        # Resumed only by the same run: a backup left by an interrupted run on other cells or
        # another split would start this one from weights trained on what may be its test side.
        backup = checkpoint_dir / f"{phase}_backup_{_run_key(data, config)}"
        callbacks += [
            keras.callbacks.BackupAndRestore(str(backup)),
            keras.callbacks.ModelCheckpoint(
                str(checkpoint_dir / f"{phase}_best.weights.h5"),
                monitor="val_loss" if has_val else "loss",
                save_best_only=True,
                save_weights_only=True,
            ),
        ]
    model.fit(
        make_dataset(train_images, train_labels, config, training=True, strata=strata),
        steps_per_epoch=steps,
        epochs=epochs,
        validation_data=make_dataset(val_images, val_labels, config, training=False)
        if has_val
        else None,
        class_weight=class_weights(train_labels) if config.balance == "class_weight" else None,
        callbacks=callbacks,
        shuffle=False,  # make_dataset shuffles; Keras ignores (and warns about) it for a Dataset
        verbose=0,
    )
    return progress.history


def _run_key(data, config) -> str:
    """Which cells, split and settings a phase trains on, as a short digest."""
    train_images, train_labels, val_images, val_labels, _ = data
    return array_digest(repr(config), train_images, train_labels, val_images, val_labels)


def _best_val_loss(history: list[dict]) -> float:
    losses = [row["val_loss"] for row in history if "val_loss" in row]
    return min(losses) if losses else float("inf")


def fit(
    train: Sequence[LabelledCrop],
    val: Sequence[LabelledCrop],
    config: FitConfig,
    *,
    checkpoint_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> FitResult:
    """Train one classifier on ``train``, stopping early and checkpointing on ``val``.

    Args:
        train: Training cells (already split by group).
        val: Validation cells for early stopping (may be empty: then no early stopping).
        config: The run's settings.
        checkpoint_dir: Where per-phase best weights and resumable backups go; None: nowhere.
            Re-running with the same folder resumes an interrupted phase.
        progress: Receives ``{"stage", "done", "total", ...}`` events (loading, features,
            head/frozen/fine_tune batches and epochs).
        images: Already loaded ``(train_images, val_images)`` crops at ``config.size``.

    Returns:
        A :class:`FitResult` with the trained model (best validation weights).
    """
    import time

    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    if images is None:
        images = (load_crops(train, config.input_spec, progress),
                  load_crops(val, config.input_spec, progress))  # fmt: skip
    train_labels = labels_of(train)
    strata = balancing_strata(train_labels, [r.source for r in train], config.balance)
    data = (images[0], train_labels, images[1], labels_of(val), strata)
    model = build_classifier(config.architecture, input_size=config.size, weights=config.weights)
    pretrained = config.weights is not None
    if config.cached_features:
        history = fit_cached(model, data, config, progress, checkpoint_dir)
    else:
        _set_backbone_trainable(model, 0 if pretrained else None)
        phase = "frozen" if pretrained else "full"
        history = _fit_phase(model, data, config, phase, config.epochs, config.learning_rate,
                             checkpoint_dir, progress)  # fmt: skip
    if config.fine_tune_epochs and pretrained:
        before, best_before = model.get_weights(), _best_val_loss(history)
        _set_backbone_trainable(model, config.fine_tune_layers)
        tuned = _fit_phase(model, data, config, "fine_tune", config.fine_tune_epochs,
                           config.fine_tune_learning_rate, checkpoint_dir, progress)  # fmt: skip
        history += tuned
        if _best_val_loss(tuned) >= best_before:
            # Fine-tuning did not beat the frozen phase on validation: keep the frozen result.
            model.set_weights(before)
            history.append({"phase": "fine_tune", "kept": False})
    _set_backbone_trainable(model, None)
    return FitResult(model, config, history, time.perf_counter() - start)


def predict_logits(
    model: keras.Model, images: np.ndarray, config: FitConfig, batch_size: int = 64
) -> np.ndarray:
    """``(N, 2)`` logits of uint8 crops at ``config.size``, averaged over its test-time views."""
    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    scheme = get_architecture(config.architecture).preprocessing
    views = config.test_time_views
    out = [
        view_averaged_logits(
            logits_model.predict_on_batch, preprocess(images[i : i + batch_size], scheme), views
        )
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2), np.float32)
