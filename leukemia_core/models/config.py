"""A model folder's ``config.json``: what it holds, its range checks and its own checksum.

:class:`ModelConfig` is the parsed config (architecture, input size, preprocessing, class names,
calibration, test-time views, the declared domain reference); :func:`parse_config` checks every
value against its range, naming the field that is wrong, and :func:`config_checksum` is the
``config_sha256`` that covers the file (see :mod:`leukemia_core.models.folder`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from leukemia_core.calibration import CLASS_NAMES, Calibration
from leukemia_core.domain import STATISTIC as DOMAIN_STATISTIC
from leukemia_core.models.architectures import ARCHITECTURES
from leukemia_core.models.inputs import InputSpec

WEIGHTS_FILE = "model.keras"
DOMAIN_FILE = "domain.npz"
CONFIG_CHECKSUM = "config_sha256"  # the key of the config's own checksum in config.json
FORMAT_VERSION = 1
_REQUIRED = ("architecture", "input_size", "preprocessing", "class_names", "sha256")
# Every key a config may hold: a misspelt one ("test_time_view") would otherwise leave its
# setting at a default that changes every call without a word.
_KNOWN = (*_REQUIRED, "calibration", "gradcam_layer", "training", "test_time_views", "domain",
          "stain_normalisation", "format_version", "weights_file", CONFIG_CHECKSUM)  # fmt: skip
# A cell has no up or down: its logits can be averaged over quarter turns (4) and their mirror
# images (8). 1 classifies the crop as it is.
TEST_TIME_VIEWS = (1, 4, 8)


def check_test_time_views(value: object) -> int:
    """``value`` if it is one of :data:`TEST_TIME_VIEWS` (a whole number, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views is {value!r}; use one of {TEST_TIME_VIEWS}")
    return value


_ARCHITECTURE_WORDS = {"inception_v3": "Inception-v3", "simple_cnn": "small convolutional",
                       "vgg16": "VGG-16", "vgg19": "VGG-19", "xception": "Xception"}  # fmt: skip


def architecture_words(architecture: str) -> str:
    """``efficientnet_lite0`` -> ``EfficientNet-Lite0``, ``resnet50`` -> ``ResNet-50``."""
    if architecture in _ARCHITECTURE_WORDS:
        return _ARCHITECTURE_WORDS[architecture]
    for prefix, words in (("efficientnet_", "EfficientNet-"), ("resnet", "ResNet-")):
        if architecture.startswith(prefix):
            return words + architecture[len(prefix) :].capitalize()
    return architecture


@dataclass(frozen=True)
class ModelConfig:
    """The parsed ``config.json`` of a model folder."""

    name: str
    architecture: str
    input_size: int
    preprocessing: str
    class_names: tuple[str, ...]
    sha256: str
    calibration: Calibration = field(default_factory=Calibration)
    gradcam_layer: str | None = None
    training: dict = field(default_factory=dict)
    test_time_views: int = 1
    domain: dict | None = None
    stain_normalisation: str = "none"

    def __post_init__(self) -> None:
        """Every field in its range; a ValueError names the field, what it is and what fits."""
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture is {self.architecture!r}; use one of "
                             f"{', '.join(ARCHITECTURES)}")  # fmt: skip
        if tuple(self.class_names) != CLASS_NAMES:
            raise ValueError(f"class_names is {list(self.class_names)!r}; every model here "
                             f"classifies {list(CLASS_NAMES)!r}, in that order")  # fmt: skip
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"sha256 is {self.sha256!r}; expected 64 hexadecimal digits")
        if not isinstance(self.calibration, Calibration):
            raise ValueError(f"calibration is {self.calibration!r}; expected an object")
        if self.gradcam_layer is not None and not isinstance(self.gradcam_layer, str):
            raise ValueError(f"gradcam_layer is {self.gradcam_layer!r}; expected a layer name")
        if not isinstance(self.training, dict):
            raise ValueError(f"training is {self.training!r}; expected an object")
        check_test_time_views(self.test_time_views)
        if self.domain is not None:
            _check_domain_entry(self.domain)
        self.input_spec  # noqa: B018 (validates size, preprocessing and stain normalisation)

    @property
    def input_spec(self) -> InputSpec:
        """The crop -> model-input path this model was trained with."""
        return InputSpec(self.input_size, self.preprocessing, self.stain_normalisation)

    @property
    def description(self) -> str:
        """The model in words for records and reports: name, network and dates, e.g.
        ``lite0_blast_v2: EfficientNet-Lite0 network, trained 2026-12-04``."""
        parts = [f"{architecture_words(self.architecture)} network"]
        if "created" in self.training:
            parts.append(f"trained {str(self.training['created'])[:10]}")
        recalibrated = self.training.get("recalibrated")
        if isinstance(recalibrated, dict) and "date" in recalibrated:
            parts.append(f"recalibrated {str(recalibrated['date'])[:10]}")
        return f"{self.name}: {', '.join(parts)}"

    def decision_settings(self) -> dict:
        """What turns a crop into a label besides the weights, as JSON: the input path (size,
        preprocessing, stain step: a resealed edit of one moves every probability), the
        calibration, test-time views and, when the folder has one, the out-of-domain limit.
        Results and cached classifiers are keyed on it."""
        settings = {**self.calibration.to_dict(), "test_time_views": self.test_time_views,
                    **self.input_spec.to_dict()}  # fmt: skip
        if self.domain is not None:
            settings["domain"] = {k: self.domain[k] for k in ("threshold", "statistic", "sha256")}
        return settings

    @classmethod
    def from_dict(cls, name: str, values: dict) -> ModelConfig:
        return cls(
            name=name,
            architecture=values["architecture"],
            input_size=values["input_size"],
            preprocessing=values["preprocessing"],
            class_names=_names(values["class_names"]),
            sha256=values["sha256"],
            calibration=Calibration.from_dict(
                _object(values.get("calibration", {}), "calibration")
            ),
            gradcam_layer=values.get("gradcam_layer"),
            training=values.get("training", {}),
            test_time_views=values.get("test_time_views", 1),
            domain=values.get("domain"),
            # Folders written before the stain step existed classified raw crops.
            stain_normalisation=values.get("stain_normalisation", "none"),
        )


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"class_names is {value!r}; expected a list of names, e.g. "
                         '["blast", "normal"]')  # fmt: skip
    return tuple(value)


def _object(value: object, key: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{key} is {value!r}; expected an object")
    return value


def _check_domain_entry(entry: object) -> None:
    """``entry`` is a config's ``domain`` object: file, sha256, threshold, statistic."""
    keys = ("file", "sha256", "threshold", "statistic")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise ValueError(f"its 'domain' entry is {entry!r}; expected an object with {keys}")
    if entry["file"] != DOMAIN_FILE or not isinstance(entry["threshold"], int | float):
        raise ValueError(f"its 'domain' entry names file {entry['file']!r} and threshold "
                         f"{entry['threshold']!r}; expected {DOMAIN_FILE!r} and a number")  # fmt: skip
    if entry["statistic"] != DOMAIN_STATISTIC:
        raise ValueError(f"domain.statistic is {entry['statistic']!r}; this app computes "
                         f"{DOMAIN_STATISTIC!r}")  # fmt: skip
    threshold = entry["threshold"]
    if isinstance(threshold, bool) or not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"domain.threshold is {threshold!r}; use a positive number (the median "
                         "cell score above which a field is warned, about 1 in domain)")  # fmt: skip
    if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
        raise ValueError(f"domain.sha256 is {entry['sha256']!r}; expected 64 hexadecimal digits")


def config_checksum(values: dict) -> str:
    """SHA-256 of a config's values other than :data:`CONFIG_CHECKSUM`, as canonical JSON
    (sorted keys, no spaces), so re-indenting the file does not change it but any value does."""
    body = {k: v for k, v in values.items() if k != CONFIG_CHECKSUM}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_config(name: str, values: object) -> ModelConfig:
    """The checked config (ValueError naming the field that is missing or out of range)."""
    values = _object(values, "the config")
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    unknown = sorted(k for k in values if k not in _KNOWN)
    if unknown:
        raise ValueError(f"it has unknown key(s) {', '.join(map(repr, unknown))}; a config holds "
                         f"{', '.join(_KNOWN)}")  # fmt: skip
    version = values.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or version not in range(1, FORMAT_VERSION + 1):
        raise ValueError(f"format_version is {version!r}; this version reads 1 to {FORMAT_VERSION}")
    if values.get("weights_file", WEIGHTS_FILE) != WEIGHTS_FILE:
        raise ValueError(f"weights_file is {values['weights_file']!r}; expected {WEIGHTS_FILE!r}")
    return ModelConfig.from_dict(name, values)
