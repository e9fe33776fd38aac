"""Transfer-learning training of one classifier on grouped splits.

Follows source paper B where it is explicit (Adamax at 1e-3, batch 40, early stopping with
patience 5, frozen ImageNet backbone with a pooled dropout head) and paper A for minority
oversampling and rotation/flip/scale augmentation; then optionally fine-tunes the top of the
backbone at a lower rate. Every crop is first brought into the classifier domain with
:func:`leukemia_core.single_cell.single_cell_crop`, exactly as at inference.

``cached_features=True`` trains the head on backbone features computed once (a few augmented
views per training cell), which gives the frozen phase's result in minutes on a CPU.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from leukemia_core.calibration import CLASS_NAMES
from leukemia_core.classify import view_averaged_logits
from leukemia_core.io import read_image
from leukemia_core.models import build_classifier, get_architecture, preprocess
from leukemia_core.models.architectures import PREPROCESSING_SCHEMES
from leukemia_core.models.folder import check_test_time_views
from leukemia_core.models.inputs import STAIN_NORMALISATIONS, InputSpec, ready_crops
from leukemia_core.single_cell import single_cell_crop
from train.records import CellRecord

HEAD_LAYERS = ("head_pool", "head_dropout", "logits", "predictions")
AUGMENTATIONS = ("hflip", "vflip", "rotate90", "scale", "colour")
# Scanner and stain robustness (LOSO-chosen recipes): strong stain jitter in HED space, wider
# hue/saturation/brightness/contrast, defocus blur and JPEG re-compression.
ROBUST_AUGMENTATIONS = ("stain", "blur", "jpeg")
ALL_AUGMENTATIONS = AUGMENTATIONS + ROBUST_AUGMENTATIONS
# "source_class" oversamples every (source, class) stratum to the largest one, so that no
# source is one class in effect (a source giving only normal cells teaches "this look = normal").
BALANCING = ("oversample", "source_class", "class_weight", "none")

# Progress events: {"stage": ..., "done": int, "total": int, **details}
ProgressCallback = Callable[[dict], None]


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
        augmentations: Which of :data:`ALL_AUGMENTATIONS` (horizontal and vertical flips,
            90-degree rotations, +-10% scale, mild colour jitter; ``stain``, ``blur`` and
            ``jpeg`` for scanner and stain robustness).
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


def labels_of(records: Sequence[CellRecord]) -> np.ndarray:
    """Class index per record in :data:`CLASS_NAMES` order (blast = 0)."""
    return np.array([CLASS_NAMES.index(r.label) for r in records], dtype=np.int32)


def load_crops(
    records: Sequence[CellRecord], spec: InputSpec, progress: ProgressCallback | None = None
) -> np.ndarray:
    """Every record as the model sees it in the app, up to preprocessing: ``(N, S, S, 3)`` uint8.

    Each image is cut at the app's crop size (cell on black) and then goes through the model's
    declared input path (:func:`leukemia_core.models.inputs.ready_crops`), exactly as
    ``analyze`` does: cropping straight at the input size resamples differently, and the
    model's answer on a borderline cell can move by 0.1 with the resampling alone.
    """
    out = np.zeros((len(records), spec.input_size, spec.input_size, 3), dtype=np.uint8)
    for i, record in enumerate(records):
        out[i] = ready_crops([app_crop(record)], spec)[0]
        if progress and (i + 1 == len(records) or i % 50 == 0):
            progress({"stage": "loading", "done": i + 1, "total": len(records)})
    return out


def app_crop(record: CellRecord) -> np.ndarray:
    """The record's image as the app crops it (cell on black, at the app's crop size)."""
    return single_cell_crop(read_image(record.path).rgb).crop


# Haematoxylin, eosin and DAB optical-density vectors (Ruifrok & Johnston; skimage's
# ``rgb_from_hed``): stain jitter rescales each stain's amount, as another lab's staining would.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def _stain_jitter(x: tf.Tensor, seeds) -> tf.Tensor:
    """Per-stain scale (0.75-1.25) and shift (+-0.05 OD) in HED space; x in 0..1."""
    od = -tf.math.log((x * 255.0 + 1.0) / 256.0)
    hed = tf.tensordot(od, _HED_FROM_RGB, 1)
    alpha = tf.random.stateless_uniform([3], seeds[0], 0.75, 1.25)
    beta = tf.random.stateless_uniform([3], seeds[1], -0.05, 0.05)
    od = tf.tensordot(hed * alpha + beta, _RGB_FROM_HED, 1)
    return (tf.exp(-od) * 256.0 - 1.0) / 255.0


def _blur(image: tf.Tensor, seed, size) -> tf.Tensor:
    """Defocus and lower optical resolution: down to 45-100% of the side and back up."""
    factor = tf.random.stateless_uniform([], seed, 0.45, 1.0)
    small = tf.cast(tf.round(tf.cast(size, tf.float32) * factor), tf.int32)
    return tf.image.resize(tf.image.resize(image, [small, small], antialias=True), [size, size])


def augment(image: tf.Tensor, seed: tf.Tensor, kinds: Sequence[str] = AUGMENTATIONS) -> tf.Tensor:
    """Random flips, 90-degree rotation, scale, blur, colour/stain jitter and JPEG artefacts.

    The background stays black. ``colour`` alone is a mild jitter; with ``stain`` the jitter
    is strong (HED stain amounts, hue +-0.08, saturation 0.6-1.4, brightness +-0.15, contrast
    0.7-1.3), as between labs and scanners.

    Args:
        image: ``(H, W, 3)`` float image in 0..255.
        seed: Stateless seed pair.
        kinds: Which of :data:`ALL_AUGMENTATIONS` to apply.
    """
    unknown = set(kinds) - set(ALL_AUGMENTATIONS)
    if unknown:
        raise ValueError(f"Unknown augmentation(s) {sorted(unknown)}; choose from "
                         f"{ALL_AUGMENTATIONS}.")  # fmt: skip
    seeds = tf.random.experimental.stateless_split(seed, 14)
    size = tf.shape(image)[0]
    if "hflip" in kinds:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if "vflip" in kinds:
        image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    if "rotate90" in kinds:
        k = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    if "scale" in kinds:
        zoom = tf.random.stateless_uniform([], seeds[3], 0.9, 1.1)
        scaled = tf.cast(tf.round(tf.cast(size, tf.float32) * zoom), tf.int32)
        image = tf.image.resize(image, [scaled, scaled])
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    cell = tf.cast(tf.reduce_max(image, axis=-1, keepdims=True) > 4.0, tf.float32)
    if "blur" in kinds:
        image = _blur(image, seeds[8], size)
    x = image / 255.0
    strong = "stain" in kinds
    if strong:
        x = _stain_jitter(x, seeds[9:11])
    if "colour" in kinds or strong:
        x = tf.image.stateless_random_brightness(x, 0.15 if strong else 0.08, seeds[4])
        x = tf.image.stateless_random_contrast(x, *((0.7, 1.3) if strong else (0.85, 1.15)),
                                               seeds[5])  # fmt: skip
        x = tf.image.stateless_random_hue(x, 0.08 if strong else 0.03, seeds[6])
        x = tf.image.stateless_random_saturation(x, *((0.6, 1.4) if strong else (0.85, 1.15)),
                                                 seeds[7])  # fmt: skip
    x = tf.clip_by_value(x, 0.0, 1.0)
    if "jpeg" in kinds:
        x = tf.image.stateless_random_jpeg_quality(x, 40, 95, seeds[11])
    return x * 255.0 * cell


def _balanced_indices(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every index once plus random repeats of the smaller strata up to the largest one.

    ``strata`` is the class index per cell (``oversample``) or a ``source/class`` key
    (``source_class``).
    """
    groups = [np.flatnonzero(strata == k) for k in np.unique(strata)]
    largest = max(len(g) for g in groups)
    extra = [rng.choice(g, largest - len(g)) for g in groups if 0 < len(g) < largest]
    return rng.permutation(np.concatenate([np.arange(len(strata)), *extra]))


def balancing_strata(labels: np.ndarray, sources: Sequence[str] | None, balance: str) -> np.ndarray:
    """What :func:`_balanced_indices` equalises under a ``balance`` setting."""
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
        order = _balanced_indices(strata, np.random.default_rng(config.seed))
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


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, report: ProgressCallback | None, phase: str, epochs: int, steps: int):
        super().__init__()
        self.report, self.phase, self.epochs, self.steps = report, phase, epochs, steps
        self.epoch = 0
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.report:
            self.report({"stage": self.phase, "epoch": self.epoch + 1, "epochs": self.epochs,
                         "done": batch + 1, "total": self.steps, **(logs or {})})  # fmt: skip

    def on_epoch_end(self, epoch, logs=None):
        row = {"phase": self.phase, "epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        self.history.append(row)
        if self.report:
            self.report({"stage": f"{self.phase}_epoch", "done": epoch + 1,
                         "total": self.epochs, **row})  # fmt: skip


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
    progress = _ProgressCallback(report, phase, epochs, steps)
    callbacks = [progress]
    has_val = len(val_labels) > 0
    if has_val:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss", patience=config.patience, restore_best_weights=True))  # fmt: skip
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.BackupAndRestore(str(checkpoint_dir / f"{phase}_backup")),
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
        verbose=0,
    )
    return progress.history


def _head_model(features: int, dropout: float, seed: int) -> keras.Model:
    """Dropout + Dense ``logits`` + softmax: the classifier head alone, for cached features."""
    inputs = keras.Input((features,))
    x = keras.layers.Dropout(dropout, seed=seed)(inputs)
    logits = keras.layers.Dense(len(CLASS_NAMES), name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def backbone_features(
    model: keras.Model, images: np.ndarray, config: FitConfig, *, views: int = 1,
    progress: ProgressCallback | None = None,
) -> np.ndarray:  # fmt: skip
    """Pooled backbone features ``(views, N, F)``; view 0 is the plain image, others augmented."""
    extractor = keras.Model(model.input, model.get_layer("head_pool").output)
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
        strata: What oversampling equalises per row (:func:`balancing_strata`); the class
            when None.
    """
    keras.utils.set_random_seed(config.seed)  # same seed, same head, whatever ran before
    head = _head_model(train_x.shape[-1], dropout, config.seed)
    head.compile(optimizer=keras.optimizers.Adamax(config.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # fmt: skip
    order = np.arange(len(train_y))
    if config.balance in ("oversample", "source_class"):
        strata = train_y if strata is None else strata
        order = _balanced_indices(strata, np.random.default_rng(config.seed))
    epochs = max(config.epochs, 1)
    progress = _ProgressCallback(report, "head", epochs, math.ceil(len(order) / config.batch_size))
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


def _fit_cached(model, data, config, report, checkpoint_dir=None) -> list[dict]:
    """Phase one on cached features; the trained head is copied into ``model``."""
    train_images, train_labels, val_images, val_labels, strata = data
    recipe = zlib.crc32(f"{sorted(config.augmentations)} {config.stain_normalisation}".encode())
    key = (f"{config.architecture}_{config.size}_{config.seed}_{recipe:08x}_"
           f"{zlib.crc32(train_images[:, ::16, ::16].tobytes()):08x}")  # fmt: skip
    cache = (
        checkpoint_dir / f"features_{key}_v{config.feature_views}.npy" if checkpoint_dir else None
    )
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


def _best_val_loss(history: list[dict]) -> float:
    losses = [row["val_loss"] for row in history if "val_loss" in row]
    return min(losses) if losses else float("inf")


def fit(
    train: Sequence[CellRecord],
    val: Sequence[CellRecord],
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
        history = _fit_cached(model, data, config, progress, checkpoint_dir)
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
