"""Checks of a model folder's files: checksums, and the network Keras reads in safe mode.

:mod:`leukemia_core.models.folder` finds and loads folders with these; a file that was changed,
damaged or mixed up with another folder's is refused with a typed error naming the model and
its file, never the server's folders.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import keras

from leukemia_core.errors import ModelIntegrityError, WeightsFileError
from leukemia_core.models.config import WEIGHTS_FILE, ModelConfig


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, missing: str, changed: str, fix: str) -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` exists with the sha256 ``expected``.

    Args:
        path: A file of a model folder.
        expected: Its checksum as ``config.json`` declares it.
        missing: The whole message when the file is absent.
        changed: The start of the mismatch message, up to "match the checksum".
        fix: What to do besides restoring the folder.
    """
    if not path.is_file():
        raise ModelIntegrityError(missing)
    actual = sha256_of(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{changed} match the checksum in its config.json (expected sha256 {expected[:12]}..., "
            f"found {actual[:12]}...): the file was changed or damaged. Restore the folder "
            f"(git checkout models/) or {fix}."
        )


def check_weights_fit_config(model: keras.Model, config: ModelConfig) -> None:
    """The network in the weights file is the one ``config.json`` describes: a folder whose
    files were mixed up fails here, named, not at its first cell with Keras' words."""
    from leukemia_core.models.architectures import ARCHITECTURES

    size = config.input_size
    layers = {layer.name for layer in model.layers}
    inputs = tuple(model.input_shape[1:]) if model.input_shape else None
    outputs = model.output_shape[-1] if model.output_shape else None
    problems = []
    if inputs not in ((size, size, 3), (None, None, 3)):
        problems.append(f"its input is {inputs} where config.json says {size}x{size} RGB")
    if outputs != len(config.class_names):
        problems.append(f"it has {outputs} outputs for the {len(config.class_names)} classes "
                        f"{list(config.class_names)}")  # fmt: skip
    missing = sorted({"logits", "head_pool", config.gradcam_layer or "logits"} - layers)
    if missing:
        problems.append(f"it lacks the layer(s) {missing} a classifier of this app has")
    if model.name in ARCHITECTURES and model.name != config.architecture:
        problems.append(f"the network is {model.name} where config.json says {config.architecture}")
    if problems:
        raise ModelIntegrityError(
            f"The weights of model {config.name!r} ({WEIGHTS_FILE}) do not fit its config.json: "
            f"{'; '.join(problems)}. The folder's files were mixed up; restore the folder from "
            "its source or retrain it."
        )


_KERAS_LOAD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RuntimeError, OSError,
                      zipfile.BadZipFile)  # fmt: skip


def load_keras(path: Path, name: str) -> keras.Model:
    """The Keras model of ``path`` read in safe mode; a typed error when Keras refuses it."""
    if not zipfile.is_zipfile(path):
        raise WeightsFileError(
            f"the weights file {path.name} of model {name!r} is not a Keras .keras file (not a "
            "zip archive); restore the folder from its source or retrain the model."
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except _KERAS_LOAD_ERRORS as error:
        said = str(error).strip("'\"").split(". ")[0].replace(str(path), path.name)[:300]
        raise WeightsFileError(
            f"the weights file {path.name} of model {name!r} cannot be loaded safely (Keras: "
            f"{said}). It must be a Keras .keras file without code (Lambda layers and custom "
            "objects are refused); restore the folder from its source or retrain the model."
        ) from error
