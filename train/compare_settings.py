"""What a comparison runs: presets, settings and the initial weights of each architecture.

:class:`CompareSettings` is the one description of a comparison job (the CLI flags, the Retrain
page's widgets and a queued job's file all become one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from leukemia_core.calibration import THRESHOLD_RULES
from leukemia_core.errors import ImageNetWeightsUnavailableError
from leukemia_core.models import get_architecture, list_architectures
from leukemia_core.models.architectures import imagenet_weights, runs_offline
from leukemia_core.models.config import check_test_time_views
from train.augmentation import AUGMENTATIONS
from train.batches import BALANCING
from train.fit import FitConfig

SIZE_BASELINE = "size_only_baseline"
# "grouped": groups of every source on every side (in-distribution); "leave_one_source_out":
# each source is tested by a model that never saw it (how a new lab's cells are met).
PROTOCOLS = ("grouped", "leave_one_source_out")
MISSING_WEIGHTS = ("skip", "random")
RESULTS_FILE = "results.json"
TABLE_FILE = "comparison.csv"
PREDICTIONS_FILE = "predictions.csv"
MODELS_SUBDIR = "models"
TABLE_METRICS = ("accuracy", "balanced_accuracy", "weighted_f1", "sensitivity", "specificity",
                 "auroc", "ece")  # fmt: skip
FROZEN_RANDOM_WORDS = (
    "frozen random backbone (no ImageNet weights offline), head on cached "
    "features: a floor, not a transfer-learning result"
)
SPEED_CELLS = 64  # cells timed for inference speed, after one warm-up batch


class CompareCancelled(Exception):
    """Raised from the progress callback to stop a comparison between two batches."""


@dataclass(frozen=True)
class Preset:
    """A named set of architectures and settings; ``installed_only`` keeps the architectures
    that can start here without a download (:func:`runs_offline`), checked when applied."""

    title: str
    description: str
    architectures: tuple[str, ...]
    settings: dict = field(default_factory=dict)
    installed_only: bool = False

    def runnable(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(architectures it runs, architectures left out for want of ImageNet weights)``."""
        if not self.installed_only:
            return self.architectures, ()
        ready = tuple(a for a in self.architectures if runs_offline(a))
        return ready, tuple(a for a in self.architectures if a not in ready)


PRESETS = {
    "paper_a": Preset(
        "Source paper A: EfficientNet-B3, VGG16, a plain CNN, InceptionV3",
        "EfficientNet-B3 against VGG16, a plain CNN and InceptionV3 at 128 px, with minority "
        "oversampling, rotation/flip/scale augmentation and fine-tuning of the top layers.",
        ("efficientnet_b3", "vgg16", "simple_cnn", "inception_v3"),
        {
            "input_size": 128,
            "epochs": 15,
            "fine_tune_epochs": 10,
            "cached_features": False,
            "augmentations": ("hflip", "vflip", "rotate90", "scale"),
        },
    ),
    "paper_b": Preset(
        "Source paper B: seven frozen ImageNet backbones",
        "Seven frozen ImageNet backbones with global max pooling, dropout 0.5 and a 2-way head; "
        "Adamax 1e-3, batch 40, up to 15 epochs, early stopping with patience 5, flips.",
        ("vgg16", "vgg19", "inception_v3", "xception", "efficientnet_b0", "resnet50", "resnet101"),
        {
            "input_size": 224,
            "epochs": 15,
            "fine_tune_epochs": 0,
            "cached_features": False,
            "augmentations": ("hflip",),
        },
    ),
    "quick_cpu": Preset(
        "Quick CPU comparison",
        "Every registry architecture whose ImageNet weights are on this server, with a frozen "
        "backbone at 128 px; the head is trained on backbone features computed once (2 views "
        "per cell), so a CPU finishes in minutes; the plain CNN has no pretrained weights and "
        "is trained whole (most of the time).",
        tuple(list_architectures()),
        {
            "input_size": 128,
            "epochs": 15,
            "fine_tune_epochs": 0,
            "cached_features": True,
            "feature_views": 2,
        },
        installed_only=True,
    ),
}


@dataclass(frozen=True)
class CompareSettings:
    """One comparison job: which architectures, and how each is trained and tested.

    Attributes:
        architectures: Registry names, in the order they are trained.
        input_size: Square input side for every model (None: each architecture's default).
        epochs: Epochs of the first phase (head, or whole model from random weights).
        batch_size: Cells per step.
        fine_tune_epochs: Epochs unfreezing the top of a pretrained backbone (0: none).
        fine_tune_layers: Backbone layers unfrozen from the top when fine-tuning.
        augment: Augment training cells at all.
        augmentations: Which of :data:`train.augmentation.AUGMENTATIONS` to apply.
        balance: ``"oversample"``, ``"class_weight"`` or ``"none"``.
        cached_features: Train heads on backbone features computed once (frozen backbones).
        feature_views: Augmented views per cell in cached-feature mode.
        patience: Early-stopping patience in epochs, on validation loss.
        folds: 1 for one 70/10/20 split per source; k >= 3 for grouped k-fold.
        seed: Seed of the split, the weights and the augmentation.
        missing_weights: When ImageNet weights cannot be had offline: ``"skip"`` the
            architecture (its row says why) or start it from ``"random"`` weights (said so).
        protocol: One of :data:`PROTOCOLS`; ``leave_one_source_out`` ignores ``folds``.
        stain_normalisation: Step of the model-input path (``none``, ``grey``, ``cell_lab``).
        threshold_rule: A key of :data:`leukemia_core.calibration.THRESHOLD_RULES`.
    """

    architectures: tuple[str, ...]
    input_size: int | None = 128
    epochs: int = 15
    batch_size: int = 40
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 30
    augment: bool = True
    augmentations: tuple[str, ...] = AUGMENTATIONS
    balance: str = "oversample"
    cached_features: bool = True
    feature_views: int = 2
    test_time_views: int = 1
    patience: int = 5
    folds: int = 1
    seed: int = 0
    missing_weights: str = "skip"
    protocol: str = "grouped"
    stain_normalisation: str = "none"
    threshold_rule: str = "sensitivity_first"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}.")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {tuple(THRESHOLD_RULES)}, got "
                             f"{self.threshold_rule!r}.")  # fmt: skip
        object.__setattr__(self, "architectures", tuple(self.architectures))
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        if not self.architectures:
            raise ValueError("Choose at least one architecture to compare.")
        for name in self.architectures:
            get_architecture(name)  # unknown names fail here, listing the valid ones
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"An architecture is listed twice: {self.architectures}.")
        if self.folds != 1 and self.folds < 3:
            raise ValueError(
                f"folds must be 1 or at least 3 (train/val/test parts), got {self.folds}."
            )
        if self.balance not in BALANCING:
            raise ValueError(f"balance must be one of {BALANCING}, got {self.balance!r}.")
        if self.missing_weights not in MISSING_WEIGHTS:
            raise ValueError(f"missing_weights must be one of {MISSING_WEIGHTS}.")
        if self.cached_features and self.fine_tune_epochs:
            raise ValueError(
                "Fine-tuning changes the backbone, so it cannot train on cached "
                "features: set fine-tune epochs to 0 or turn cached features off."
            )
        check_test_time_views(self.test_time_views)
        if min(self.epochs, self.batch_size, self.feature_views) < 1:
            raise ValueError("epochs, batch_size and feature_views must be at least 1.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CompareSettings:
        """The settings of a :data:`PRESETS` entry, with some of them replaced."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
        preset = PRESETS[name]
        # Starting from random weights where ImageNet's are missing runs every one of them.
        every = overrides.get("missing_weights") == "random"
        architectures = preset.architectures if every else preset.runnable()[0]
        return cls(**{"architectures": architectures, **preset.settings, **overrides})

    @classmethod
    def from_dict(cls, values: dict) -> CompareSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return {**asdict(self), "architectures": list(self.architectures),
                "augmentations": list(self.augmentations)}  # fmt: skip

    def protocol_words(self) -> str:
        """How the cells are split, in words (job names tell jobs apart by it)."""
        if self.protocol == "leave_one_source_out":
            return "leave one source out"
        return f"{self.folds} folds" if self.folds > 1 else "grouped split"

    def title(self, preset: str | None) -> str:
        """The preset's title while these are its settings, else "Custom" (a job started from
        a preset and then edited must not carry the preset's name)."""
        if preset in PRESETS and self == CompareSettings.from_preset(preset):
            return PRESETS[preset].title
        return "Custom"

    def skipped_here(self) -> tuple[str, ...]:
        """Architectures this server would skip: ImageNet weights not installed, and
        ``missing_weights="skip"``."""
        if self.missing_weights == "random":
            return ()
        return tuple(a for a in self.architectures if not runs_offline(a))

    def fit_config(self, architecture: str, weights: str | None) -> FitConfig:
        """The :class:`FitConfig` of one architecture under these settings."""
        spec = get_architecture(architecture)
        size = self.input_size
        if size is not None and size < spec.min_input_size:
            size = spec.min_input_size
        return FitConfig(
            architecture=architecture, input_size=size, weights=weights, epochs=self.epochs,
            fine_tune_epochs=self.fine_tune_epochs, fine_tune_layers=self.fine_tune_layers,
            batch_size=self.batch_size, balance=self.balance, augment=self.augment,
            augmentations=self.augmentations,
            cached_features=self.cached_features and weights is not None,
            feature_views=self.feature_views, test_time_views=self.test_time_views,
            patience=self.patience, seed=self.seed, stain_normalisation=self.stain_normalisation,
            threshold_rule=self.threshold_rule,
        )  # fmt: skip


def initial_weights(architecture: str, missing: str = "skip") -> tuple[str | None, str, str | None]:
    """``(weights, init words, skip reason)`` for an architecture, without any download.

    Raises nothing: an architecture whose ImageNet weights cannot be had is skipped with the
    reason (``missing="skip"``), or starts from random weights, which its row then says.
    """
    if get_architecture(architecture).imagenet_source is None:
        return None, "random (no pretrained weights exist)", None
    try:
        imagenet_weights(architecture)
    except ImageNetWeightsUnavailableError as error:
        if missing == "random":
            return None, "random (ImageNet weights unavailable offline)", None
        return None, "", f"not run: ImageNet weights unavailable offline. {error}"
    return "imagenet", "ImageNet", None
