"""Process set-up that must run before TensorFlow is imported: which devices, how much logging.

:func:`configure_runtime` runs when ``leukemia_core`` is imported (``leukemia_core/__init__.py``),
so every entry point goes through it before anything imports Keras: ``python -m leukemia_core``,
``python -m train``, ``streamlit run app.py`` (through ``ui``), ``bench/`` and the tests.

- **Devices.** On a machine without a GPU (no NVIDIA or AMD device node), or with
  ``LEUKEMIA_DEVICE=cpu``, TensorFlow is told to use the CPU only (``CUDA_VISIBLE_DEVICES=""``
  and ``TF_ENABLED_DEVICE_TYPES=CPU``), so it never calls ``cuInit`` and never prints
  "failed call to cuInit: ... CUDA error". A machine with a GPU keeps using it;
  ``LEUKEMIA_DEVICE=gpu`` never hides one.
- **Logging.** ``TF_CPP_MIN_LOG_LEVEL`` defaults to 1 (TensorFlow's warnings and errors, not its
  info lines), and the info lines TensorFlow's shared libraries print while they load, before
  they read that variable ("Could not find cuda drivers on your machine", "oneDNN custom
  operations are on"), obey it too. ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.

A variable the user has set (``CUDA_VISIBLE_DEVICES``, ``TF_ENABLED_DEVICE_TYPES``,
``TF_CPP_MIN_LOG_LEVEL``) is never changed. A ``CUDA_VISIBLE_DEVICES`` that selects no device
(``""`` or ``-1``) counts as asking for the CPU.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping

DEVICE_CHOICES = ("auto", "cpu", "gpu")
"""Values of ``LEUKEMIA_DEVICE``: ``auto`` (default) uses a GPU when the machine has one."""

RUNTIMES = ("auto", "keras", "onnx")
"""What runs the classifier's network (:mod:`leukemia_core.models.onnx_runtime`): ``keras``,
Keras' compiled graph; ``onnx``, ONNX Runtime or an error saying why not; ``auto``, ONNX Runtime
where TensorFlow sees no GPU and the converted graph matches Keras on a probe batch, else Keras."""

DEFAULT_TF_LOG_LEVEL = "1"
"""``TF_CPP_MIN_LOG_LEVEL`` unless the user set one: 0 all, 1 no info, 2 no warnings, 3 no errors."""

GPU_DEVICE_PATTERNS = (
    "/dev/nvidia[0-9]*",  # NVIDIA GPUs, also inside containers given one
    "/proc/driver/nvidia/gpus/*",  # the NVIDIA driver's list of GPUs
    "/dev/dxg",  # WSL 2's GPU paravirtualisation
    "/dev/kfd",  # AMD ROCm
)
"""Paths of which any one existing means this machine has a GPU TensorFlow may use."""

_SEVERITIES = "IWEF"  # absl / TensorFlow log prefixes, in the order of TF_CPP_MIN_LOG_LEVEL
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d+:\d+:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)

_configured = False


def gpu_present(patterns: tuple[str, ...] = GPU_DEVICE_PATTERNS) -> bool:
    """Whether this machine exposes a GPU device node (see :data:`GPU_DEVICE_PATTERNS`)."""
    return any(glob.glob(pattern) for pattern in patterns)


def should_hide_gpus(environ: Mapping[str, str], has_gpu: bool) -> bool:
    """Whether TensorFlow should be kept to the CPU.

    Args:
        environ: the process environment (``LEUKEMIA_DEVICE``, ``CUDA_VISIBLE_DEVICES``).
        has_gpu: whether the machine has a GPU (:func:`gpu_present`).

    Returns:
        True for ``LEUKEMIA_DEVICE=cpu``; False for ``LEUKEMIA_DEVICE=gpu``; otherwise, when
        the user set ``CUDA_VISIBLE_DEVICES``, True only if it selects no device (``""``,
        ``-1``), else True only when the machine has no GPU.

    Raises:
        ValueError: ``LEUKEMIA_DEVICE`` is not one of :data:`DEVICE_CHOICES`.

    >>> should_hide_gpus({}, has_gpu=False), should_hide_gpus({}, has_gpu=True)
    (True, False)
    >>> should_hide_gpus({"LEUKEMIA_DEVICE": "cpu"}, has_gpu=True)
    True
    """
    device = environ.get("LEUKEMIA_DEVICE", "").strip().lower() or "auto"
    if device not in DEVICE_CHOICES:
        raise ValueError(
            f"LEUKEMIA_DEVICE={environ['LEUKEMIA_DEVICE']!r} is not a device choice; "
            f"set it to one of {', '.join(DEVICE_CHOICES)} or unset it"
        )
    if device != "auto":
        return device == "cpu"
    if "CUDA_VISIBLE_DEVICES" in environ:
        return environ["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1")
    return not has_gpu


def runtime_environment(environ: Mapping[str, str], has_gpu: bool) -> dict[str, str]:
    """The variables :func:`configure_runtime` adds: only those the user has not set."""
    wanted = {"TF_CPP_MIN_LOG_LEVEL": DEFAULT_TF_LOG_LEVEL}
    if should_hide_gpus(environ, has_gpu):
        wanted |= {"CUDA_VISIBLE_DEVICES": "", "TF_ENABLED_DEVICE_TYPES": "CPU"}
    return {name: value for name, value in wanted.items() if name not in environ}


def configure_runtime(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the device and logging variables, and quieten TensorFlow's import; once per process.

    Does nothing to devices once TensorFlow is imported (too late to matter), but is harmless.
    """
    global _configured
    if _configured:
        return
    _configured = True
    environ = os.environ if environ is None else environ
    environ.update(runtime_environment(environ, gpu_present()))
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def drop_quiet_lines(text: str, min_level: int) -> str:
    """``text`` without the log messages below ``min_level`` (``TF_CPP_MIN_LOG_LEVEL``).

    A message is a line starting with an absl prefix (``I0000 00:00:17.5 123 file.cc:31] ``) and
    the lines continuing it (indented, or TensorFlow's "To enable the following instructions");
    other text is kept. absl's banner saying that early messages go to stderr goes as well when
    ``min_level`` is 1 or more.

    >>> drop_quiet_lines("I0000 00:00:1.2 7 a.cc:3] hi\\n  more\\nW0000 00:00:1.3 7 b.cc:9] w\\n", 1)
    'W0000 00:00:1.3 7 b.cc:9] w\\n'
    """
    if min_level <= 0:
        return text
    kept: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            dropping = _SEVERITIES.index(match.group(1)) < min_level
        elif line.rstrip("\n") == _ABSL_BANNER:
            dropping = True
        elif dropping and line.startswith(("To enable the following", " ", "\t")):
            pass  # the rest of a dropped message
        else:
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr(min_level: int) -> Iterator[None]:
    """Catch what is written to file descriptor 2 inside, then write it back less quiet lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no usable stderr (closed, or replaced by an object without a descriptor)
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = drop_quiet_lines(caught.read().decode(errors="replace"), min_level)
            if kept:
                os.write(2, kept.encode())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first import of ``tensorflow`` inside :func:`_filtered_stderr`.

    TensorFlow's shared libraries log through absl while they load, before TensorFlow reads
    ``TF_CPP_MIN_LOG_LEVEL``; this applies that level to those lines too. It steps aside (and
    leaves the import as it is) when nothing would be dropped.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, finder: _QuietTensorFlowImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._finder)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        min_level = _min_log_level()
        if min_level <= 0:
            self._loader.exec_module(module)
            return
        with _filtered_stderr(min_level):
            self._loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def setting_number(name: str, low: float, high: float, what: str) -> float | None:
    """The number in environment variable ``name`` (None when unset or empty).

    Raises:
        ValueError: Not a number from ``low`` to ``high`` (the message names the variable).
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not low <= number <= high:
        raise ValueError(f"{name}={value!r} is not {what} from {low:g} to {high:g}")
    return number
