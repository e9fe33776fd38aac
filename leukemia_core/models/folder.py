"""Model folders: ``models/<name>/`` with weights, ``config.json``, ``metrics.json``, ``card.md``.

A folder is self-describing (as StarDist and MONAI bundles are): the config names the
architecture, input size, preprocessing scheme, class names, calibration and Grad-CAM layer, so
nothing about a model lives in constants elsewhere. The weights' SHA-256 is recorded in the config
and checked before Keras reads the file, which it does in safe mode (no arbitrary code). An
optional ``domain.npz`` (:class:`~leukemia_core.domain.DomainReference`, the out-of-domain check)
is declared and checksummed in the config the same way; folders without one still load.
The config itself is covered by ``config_sha256`` (:func:`config_checksum`), written by
:func:`leukemia_core.models.writing.write_config`, which every writer of a ``config.json``
calls (that module writes folders; this one finds, reads and verifies them), and every value is
checked against its range on reading, so a hand-edited config (a negative temperature, a
threshold of 2) is refused with the field named instead of silently changing every call.

Model names are folder names directly inside the models folder; a name that would lead
elsewhere (``../..``, an absolute path, a link pointing out) is refused.

The active model is named in ``models/ACTIVE``; without that file the first folder is used.
Messages name a model and its files, never the server's folders (shown to every app user).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras

from leukemia_core.accounts import Accounts, Permission, User, require
from leukemia_core.domain import DomainReference, DomainReferenceError
from leukemia_core.errors import ModelActivationRefused, ModelIntegrityError, ModelNotFoundError
from leukemia_core.models.adapted_check import activation_refusals
from leukemia_core.models.config import (
    CONFIG_CHECKSUM,
    DOMAIN_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    config_checksum,
    parse_config,
)
from leukemia_core.models.files_check import check_weights_fit_config, load_keras, verify_file
from leukemia_core.outputs import write_text_atomic

MODELS_ENV_VAR = "LEUKEMIA_MODELS_DIR"
CONFIG_FILE = "config.json"
ACTIVE_FILE = "ACTIVE"
PREVIOUS = ".previous"  # suffix of the folder a re-saved model's old version is kept in
_REPLACING_TRIES, _REPLACING_WAIT_S = 20, 0.05  # a save's two renames take microseconds


def replaced_model_name(folder_name: str) -> str | None:
    """The model a kept old version (``<name>.previous``, ``<name>.<k>.previous``) belongs to;
    None for any other folder name."""
    match = re.fullmatch(rf"(.+?)(?:\.\d+)?{re.escape(PREVIOUS)}", folder_name)
    return match.group(1) if match else None


PROMOTED_FROM = "promoted_from"  # config["training"] key: the comparison run a model came from


def models_dir() -> Path:
    """Folder holding model folders: ``$LEUKEMIA_MODELS_DIR`` or the repository's ``models/``."""
    configured = os.environ.get(MODELS_ENV_VAR)
    return Path(configured).expanduser() if configured else Path(__file__).parents[2] / "models"


@dataclass(frozen=True)
class LoadedModel:
    """A verified model folder with its Keras model."""

    config: ModelConfig
    path: Path
    keras_model: keras.Model = field(repr=False)
    domain: DomainReference | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def checksum(self) -> str:
        return self.config.sha256


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_model_name(name: str) -> str:
    """``name`` if it can name a model folder: letters, digits, ``-`` and ``_``, up to 64.

    Raises:
        ValueError: Otherwise (``ACTIVE`` and the ``.previous`` suffix are taken), saying why.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name == ACTIVE_FILE:
        raise ValueError(
            f"{name!r} cannot name a model folder: use 1-64 letters, digits, '-' "
            f"and '_', starting with a letter or digit (not {ACTIVE_FILE!r})."
        )
    return name


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _inside(folder: Path, root: Path) -> bool:
    """``folder`` lies directly in ``root`` once links are resolved."""
    return folder.resolve().parent == root.resolve()


def _model_folder(name: object, root: Path) -> Path:
    """The folder of model ``name``: a folder name directly in ``root``, never a path.

    Raises:
        ModelNotFoundError: ``name`` is not a plain folder name (``..``, an absolute path, a
            hidden staging folder), no model folder has it, or it is a link pointing out of
            ``root``; the message lists the valid names.
    """
    plain = isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".")
    if not plain or any(c in name for c in "/\\\0"):
        raise ModelNotFoundError(
            f"{name!r} is not a model name: a model is named by its folder in the models "
            f"folder, not by a path; valid names: {_valid_names(root)}"
        )
    folder = root / name
    for _ in range(_REPLACING_TRIES):
        # A save under this name swaps the new folder in by two renames: between them the
        # name is briefly missing while its staging folder (".<name>.*") exists. Wait it out.
        if _is_model_folder(folder) or not any(root.glob(f".{glob.escape(name)}.*")):
            break
        time.sleep(_REPLACING_WAIT_S)
    if not _is_model_folder(folder):
        raise ModelNotFoundError(_unknown(name, root))
    if not _inside(folder, root):
        raise ModelNotFoundError(
            f"model folder {name!r} is a link to a folder outside the models folder, which is "
            f"not read; copy the model folder in instead. Valid names: {_valid_names(root)}"
        )
    return folder


def list_models(root: Path | None = None) -> list[str]:
    """Names of the model folders under ``root`` (see :func:`models_dir`), active one first.

    Kept ``<name>.previous`` folders and hidden staging folders are not listed, unless a kept
    version was made active (a rollback); a previous folder still loads by its full name.
    """
    root = root or models_dir()
    names = sorted(
        p.name for p in root.iterdir()
        if _is_model_folder(p) and not p.name.startswith(".") and not p.name.endswith(PREVIOUS)
        and _inside(p, root)
    ) if root.is_dir() else []  # fmt: skip
    active = active_model_name(root, names)
    if active is not None and active not in names:  # a kept version rolled back to
        names.append(active)
    return sorted(names, key=lambda n: n != active)


def kept_versions(root: Path | None = None) -> list[str]:
    """The ``<name>.previous`` folders a re-saved model's old version is kept in: the way back
    after a promotion or adaptation into the same name (:func:`list_models` leaves them out)."""
    root = root or models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.endswith(PREVIOUS)
                  and _is_model_folder(p) and _inside(p, root))  # fmt: skip


def active_model_name(root: Path | None = None, names: list[str] | None = None) -> str | None:
    """The model named in ``ACTIVE`` if it exists (a kept ``.previous`` version too: a
    rollback), else the first folder, else None."""
    root = root or models_dir()
    if names is None:
        names = list_models(root)
    pointer = root / ACTIVE_FILE
    chosen = pointer.read_text().strip() if pointer.is_file() else ""
    if chosen in names or _is_kept_version(root, chosen):
        return chosen
    return sorted(names)[0] if names else None


def _is_kept_version(root: Path, name: str) -> bool:
    """``name`` is a kept ``<name>.previous`` model folder inside ``root``."""
    folder = root / name
    return (name.endswith(PREVIOUS) and not name.startswith(".") and "/" not in name
            and _is_model_folder(folder) and _inside(folder, root))  # fmt: skip


def set_active_model(
    name: str, root: Path | None = None, *, user: User, action: str = "activate", note: str = ""
) -> None:
    """Make ``name`` the model the app and commands use when none is named (atomic).

    Needs an account allowed to manage models; a folder whose files fail their checksums is
    refused (every analysis would fail). The change is recorded with who and when
    (``model_events`` of the case database); when that record cannot be written, the active
    model stays as it was.
    """
    require(user, Permission.MANAGE_MODELS)
    root = root or models_dir()
    config = verify_model_files(name, root)  # the config read once: checked, then judged
    if refusals := activation_refusals(config.training):
        raise ModelActivationRefused(f"{name!r} is not made active: " + "; ".join(refusals)
                                     + ". The active model stays as it is.")  # fmt: skip
    previous = active_model_name(root)
    pointer = root / ACTIVE_FILE
    before = pointer.read_text() if pointer.is_file() else None
    write_text_atomic(pointer, name + "\n")
    try:
        Accounts().record_model_change(
            user,
            action,
            previous,
            name,
            note=f"in the models folder {root.name}" + (f"; {note}" if note else ""),
        )
    except BaseException:  # unrecorded, so undone: no model change outside the trail
        if before is None:
            pointer.unlink(missing_ok=True)
        else:
            write_text_atomic(pointer, before)
        raise


def _valid_names(root: Path) -> str:
    names = list_models(root)
    return ", ".join(names) if names else "none (train one with `python -m train fit`)"


def _unknown(name: str, root: Path) -> str:
    return f"no model named {name!r} in the models folder; valid names: {_valid_names(root)}"


def read_config(
    name: str | None = None, root: Path | None = None, *, verify: bool = True
) -> ModelConfig:
    """The checked config of a model folder, without loading its weights.

    Args:
        name: Model folder (the active one when None).
        root: Parent of model folders.
        verify: Check the config's own checksum (only
            :func:`~leukemia_core.models.writing.seal_config` skips it).

    Raises:
        ModelNotFoundError: No such folder, or a name that is not a plain folder name.
        ModelIntegrityError: Not JSON, a value missing or out of range (the field is named),
            or the values do not match the config's checksum.
    """
    root = root or models_dir()
    name = name or active_model_name(root)
    if name is None:  # no model asked for, and none there to be the active one
        raise ModelNotFoundError(
            f"the models folder holds no model folder; if the models are elsewhere, set "
            f"{MODELS_ENV_VAR} to their folder, else train one with `python -m train fit`"
        )
    path = _model_folder(name, root) / CONFIG_FILE
    fix = "Restore the folder from its source or retrain it."
    try:
        values = json.loads(path.read_text())
        config = parse_config(name, values)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
            ArithmeticError, RecursionError) as error:  # fmt: skip
        raise ModelIntegrityError(
            f"config.json of model {name!r} is not a valid model config: {error}. {fix}"
        ) from error
    if verify and values.get(CONFIG_CHECKSUM) != config_checksum(values):
        why = ("has no config_sha256 (it was written before configs were checksummed)"
               if CONFIG_CHECKSUM not in values else
               "does not match its config_sha256: it was changed after it was written")  # fmt: skip
        raise ModelIntegrityError(
            f"config.json of model {name!r} {why}. {fix} If the values are known to be right, "
            f"seal it with `python -m train seal {name}`."
        )
    return config


def load_model(name: str | None = None, root: Path | None = None) -> LoadedModel:
    """Load and verify a model folder (the active one when ``name`` is None).

    Raises:
        ModelNotFoundError: No such folder; the message lists the valid names.
        ModelIntegrityError: Weights missing or not matching the checksum in ``config.json``.
        WeightsFileError: Keras refuses the weights file (not a ``.keras`` zip, or it holds
            code such as a Lambda layer, which safe mode does not run).
    """
    root = root or models_dir()
    name = name or active_model_name(root)
    for _ in range(3):
        before = _config_bytes(root, name)
        config = read_config(name, root)
        weights = _verify_weights(config, root / config.name)
        domain = _load_domain(config, root / config.name)
        model = load_keras(weights, config.name)
        # Saved again while it was read (Retrain, train fit): the files read may be of two
        # versions, one's config with the other's network. Every save changes config.json.
        if _config_bytes(root, config.name) == before:
            check_weights_fit_config(model, config)
            return LoadedModel(config, root / config.name, model, domain)
    raise ModelIntegrityError(
        f"model {name!r} was saved again each of 3 times it was read; try again once the save "
        "has finished."
    )


def verify_model_files(name: str, root: Path | None = None) -> ModelConfig:
    """The checked config of model folder ``name`` whose weights and domain reference match
    its checksums, without loading the network (what activating a model checks).

    Raises:
        ModelNotFoundError: No such folder.
        ModelIntegrityError: The config, the weights or the domain reference is damaged.
    """
    root = root or models_dir()
    config = read_config(name, root)
    _verify_weights(config, root / config.name)
    if config.domain is not None:
        _load_domain(config, root / config.name)
    return config


def _verify_weights(config: ModelConfig, folder: Path) -> Path:
    """The weights file of ``folder``, checked against the config's checksum."""
    weights = folder / WEIGHTS_FILE
    verify_file(
        weights,
        config.sha256,
        missing=f"model {config.name!r} has no weights file {WEIGHTS_FILE}; the folder is "
        "incomplete.",
        changed=f"weights of model {config.name!r} ({WEIGHTS_FILE}) do not",
        fix="retrain",
    )
    return weights


def _config_bytes(root: Path, name: str | None) -> bytes | None:
    with contextlib.suppress(OSError, TypeError):
        return (root / name / CONFIG_FILE).read_bytes()
    return None


def _load_domain(config: ModelConfig, folder: Path) -> DomainReference | None:
    """The folder's verified domain reference, its limit the config's threshold; None without."""
    if config.domain is None:
        return None
    path = folder / DOMAIN_FILE
    fix = f"write it again with `python -m train domain {config.name} --data BANK_MANIFEST`"
    verify_file(
        path,
        config.domain["sha256"],
        missing=f"model {config.name!r} declares a domain reference {DOMAIN_FILE} that is "
        f"missing; {fix}, or restore the folder.",
        changed=f"the domain reference {DOMAIN_FILE} of model {config.name!r} does not",
        fix=fix,
    )
    try:
        reference = DomainReference.load(path)
    except DomainReferenceError as error:
        said = str(error).replace(str(path), DOMAIN_FILE)  # the file's name, not its path
        raise ModelIntegrityError(f"model {config.name!r}: {said}") from error
    return replace(reference, limit=float(config.domain["threshold"]))
