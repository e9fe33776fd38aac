"""Writing model folders: the checked ``config.json``, a whole new folder, a domain reference.

Every writer of a model's config goes through :func:`write_config`, so what it writes loads
(:mod:`leukemia_core.models.folder` reads and verifies). Folders and files are written to a
temporary name and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import keras

from leukemia_core.domain import STATISTIC, DomainReference
from leukemia_core.errors import ModelExistsError, ModelIntegrityError
from leukemia_core.models.config import (
    CONFIG_CHECKSUM,
    DOMAIN_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    config_checksum,
    parse_config,
)
from leukemia_core.models.files_check import sha256_of
from leukemia_core.models.folder import (
    ACTIVE_FILE,
    CONFIG_FILE,
    PREVIOUS,
    check_model_name,
    models_dir,
    read_config,
)
from leukemia_core.outputs import write_bytes_atomic, write_text_atomic


def write_config(folder: Path, values: dict, *, name: str | None = None) -> Path:
    """Check ``values`` and write them as ``folder/config.json`` with their checksum (atomic).

    Every writer of a model's config goes through here, so the config it writes loads.

    Raises:
        ModelIntegrityError: A value is missing or out of range (named); nothing is written.
    """
    name = name or folder.name
    try:
        parse_config(name, values)
    except (KeyError, TypeError, ValueError, ArithmeticError, RecursionError) as error:
        raise ModelIntegrityError(f"not writing config.json of model {name!r}: {error}") from error
    body = {k: v for k, v in values.items() if k != CONFIG_CHECKSUM}
    text = json.dumps({**body, CONFIG_CHECKSUM: config_checksum(body)}, indent=2) + "\n"
    return write_text_atomic(folder / CONFIG_FILE, text)


def seal_config(name: str, root: Path | None = None) -> Path:
    """Check a model folder's config and write its :data:`CONFIG_CHECKSUM` (for folders written
    before configs were checksummed, after a person has checked the values).

    Raises:
        ModelNotFoundError, ModelIntegrityError: No such folder, or a value out of range.
    """
    root = root or models_dir()
    config = read_config(name, root, verify=False)
    folder = root / config.name
    return write_config(folder, json.loads((folder / CONFIG_FILE).read_text()))


def write_domain_reference(
    name: str, reference: DomainReference, *, root: Path | None = None, data: str = ""
) -> Path:
    """Add or replace the domain reference of an existing model folder; weights stay as they are.

    The ``.npz`` is written to a temporary file and renamed into place, then ``config.json``
    is rewritten atomically with the file's checksum and the reference's limit.

    Args:
        name: Model folder.
        reference: The fitted reference (its ``limit`` becomes the config's threshold).
        root: Parent of model folders.
        data: Plain words about the cells it was fitted on, for the config.

    Returns:
        The path of ``domain.npz``.

    Raises:
        ModelNotFoundError, ModelIntegrityError: No such folder, or a broken config.
    """
    root = root or models_dir()
    config = read_config(name, root)
    folder = root / config.name
    content = reference.to_bytes()
    values = json.loads((folder / CONFIG_FILE).read_text())
    values["domain"] = {
        "file": DOMAIN_FILE, "sha256": hashlib.sha256(content).hexdigest(),
        "threshold": float(reference.limit),
        "statistic": STATISTIC, "limit_source": reference.limit_source,
        "n_train_cells": reference.n_train, "n_components": int(reference.components.shape[0]),
        "bank_cells": int(reference.feature_bank.shape[0]), "neighbours": reference.neighbours,
        "data": data,
    }  # fmt: skip
    try:  # checked before the file is replaced: a refused limit leaves the folder loadable
        parse_config(config.name, values)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelIntegrityError(
            f"not writing the domain reference of {name!r}: {error}"
        ) from error
    path = write_bytes_atomic(folder / DOMAIN_FILE, content)
    write_config(folder, values)
    return path


def save_model_folder(
    model: keras.Model,
    name: str,
    config: dict,
    *,
    metrics: dict | None = None,
    card: str = "",
    root: Path | None = None,
    extra_files: dict[str, str | bytes] | None = None,
    replace: bool = True,
) -> Path:
    """Write a complete model folder atomically; an existing one is kept as ``<name>.previous``
    (and one kept before that as ``<name>.<k>.previous``, k = 1, 2, ... in the order replaced).

    Args:
        model: Trained classifier.
        name: Folder name.
        config: Everything of :class:`ModelConfig` but the checksum, plus training details.
        metrics: Written to ``metrics.json``.
        card: Markdown model card.
        root: Parent folder (:func:`models_dir` by default).
        extra_files: More files to write into the folder (e.g. ``split.csv``): text, or
            bytes written as they are.
        replace: False: never replace a folder of that name, even one another save wrote
            while this one was writing (a new version, as adaptation makes).

    Returns:
        The folder path.

    Raises:
        ModelExistsError: ``replace`` is False and the name is taken; nothing is written.
    """
    check_model_name(name)
    root = root or models_dir()
    root.mkdir(parents=True, exist_ok=True)
    pointer = root / ACTIVE_FILE
    if pointer.is_file() and pointer.read_text().strip() == f"{name}{PREVIOUS}":
        raise ValueError(
            f"{name}{PREVIOUS} is the active model; saving {name} again would "
            "delete it. Make another model active first, or use another name."
        )
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        staging.chmod(stat.S_IMODE(root.stat().st_mode))  # mkdtemp's 0700: as the other folders
        # An uncompiled copy: the optimizer's slots would double the file and are not needed.
        clean = keras.Model.from_config(model.get_config())
        clean.set_weights(model.get_weights())
        clean.save(staging / WEIGHTS_FILE)
        values = {"format_version": FORMAT_VERSION, **config, "weights_file": WEIGHTS_FILE,
                  "sha256": sha256_of(staging / WEIGHTS_FILE)}  # fmt: skip
        write_config(staging, values, name=name)
        (staging / "metrics.json").write_text(json.dumps(metrics or {}, indent=2) + "\n")
        (staging / "card.md").write_text(card)
        for file_name, content in (extra_files or {}).items():
            if isinstance(content, bytes):
                (staging / file_name).write_bytes(content)
            else:
                (staging / file_name).write_text(content)
        target, previous = root / name, root / f"{name}{PREVIOUS}"
        if not replace:
            _rename_new(staging, target, previous)
            return target
        if target.exists():
            if previous.exists():  # older versions are kept too: a signed case may name one
                number = 1
                while (root / f"{name}.{number}{PREVIOUS}").exists():
                    number += 1
                os.replace(previous, root / f"{name}.{number}{PREVIOUS}")
            os.replace(target, previous)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _rename_new(staging: Path, target: Path, previous: Path) -> None:
    """Move ``staging`` to ``target`` only where no folder of that name (nor a kept version)
    exists: the rename itself refuses a model folder another save put there meanwhile."""
    taken = ModelExistsError(
        f"A model folder {target.name!r} exists already (another save wrote it meanwhile?); "
        "a new version never replaces one. Choose another name."
    )
    if target.exists() or previous.exists():
        raise taken
    try:
        os.rename(staging, target)  # onto a folder with files: refused by the system
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
            raise taken from error
        raise
