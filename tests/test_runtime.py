"""leukemia_core.runtime: CPU only where there is no GPU, and TensorFlow quiet about CUDA."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leukemia_core import runtime
from leukemia_core.runtime import drop_quiet_lines, runtime_environment, should_hide_gpus

ROOT = Path(__file__).resolve().parents[1]
# What runtime.configure_runtime sets in this test process; a clean child must start without them.
RUNTIME_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_ENABLED_DEVICE_TYPES",
    "LEUKEMIA_DEVICE",
)
CUDA_NOISE = ("cuInit", "CUDA error", "cuda drivers", "cudart", "cuDNN", "cuBLAS", "TensorRT")


@pytest.mark.parametrize(
    ("environ", "has_gpu", "hide"),
    [
        ({}, False, True),
        ({}, True, False),
        ({"LEUKEMIA_DEVICE": "cpu"}, True, True),
        ({"LEUKEMIA_DEVICE": " CPU "}, True, True),
        ({"LEUKEMIA_DEVICE": "gpu"}, False, False),
        ({"LEUKEMIA_DEVICE": "auto"}, True, False),
        ({"LEUKEMIA_DEVICE": ""}, False, True),
        # The user's CUDA_VISIBLE_DEVICES decides under auto, whatever the machine has.
        ({"CUDA_VISIBLE_DEVICES": ""}, True, True),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, True, True),
        ({"CUDA_VISIBLE_DEVICES": "0"}, False, False),
        ({"CUDA_VISIBLE_DEVICES": "0", "LEUKEMIA_DEVICE": "cpu"}, True, True),
    ],
)
def test_should_hide_gpus(environ, has_gpu, hide):
    assert should_hide_gpus(environ, has_gpu) is hide


@pytest.mark.parametrize("value", ["cuda", "tpu", "0"])
def test_unknown_device_choice_is_refused(value):
    with pytest.raises(ValueError, match=rf"LEUKEMIA_DEVICE='{value}'.*auto, cpu, gpu"):
        should_hide_gpus({"LEUKEMIA_DEVICE": value}, has_gpu=False)


def test_runtime_environment_without_gpu_keeps_tensorflow_on_the_cpu():
    assert runtime_environment({}, has_gpu=False) == {
        "TF_CPP_MIN_LOG_LEVEL": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_ENABLED_DEVICE_TYPES": "CPU",
    }


def test_runtime_environment_with_gpu_only_sets_the_log_level():
    assert runtime_environment({}, has_gpu=True) == {"TF_CPP_MIN_LOG_LEVEL": "1"}


def test_runtime_environment_never_overrides_the_user():
    user = {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "0"}
    assert runtime_environment(user, has_gpu=False) == {"TF_ENABLED_DEVICE_TYPES": "CPU"}
    user = {"TF_ENABLED_DEVICE_TYPES": "CPU,GPU", "LEUKEMIA_DEVICE": "cpu"}
    assert runtime_environment(user, has_gpu=True) == {
        "TF_CPP_MIN_LOG_LEVEL": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def test_gpu_present_looks_for_device_nodes(tmp_path):
    assert not runtime.gpu_present((str(tmp_path / "nvidia[0-9]*"),))
    (tmp_path / "nvidia0").touch()
    assert runtime.gpu_present((str(tmp_path / "nvidia[0-9]*"),))


TENSORFLOW_IMPORT = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796424599.609647   22877 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796424599.610201   22877 cudart_stub.cc:31] Could not find cuda drivers on"
    " your machine, GPU will not be used.\n"
    "I0000 00:00:1796424599.969446   22877 cpu_feature_guard.cc:227] This TensorFlow binary is"
    " optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "W0000 00:00:1796424600.000001   22877 some.cc:12] a warning\n"
    "/site-packages/x.py:3: DeprecationWarning: a Python warning\n"
    "E0000 00:00:1796424602.813664   22877 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
)


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        (0, TENSORFLOW_IMPORT.splitlines()),
        (1, TENSORFLOW_IMPORT.splitlines()[5:]),
        (2, TENSORFLOW_IMPORT.splitlines()[6:]),
        (3, TENSORFLOW_IMPORT.splitlines()[6:7]),
    ],
)
def test_drop_quiet_lines_follows_the_log_level(level, kept):
    assert drop_quiet_lines(TENSORFLOW_IMPORT, level).splitlines() == kept


def test_runtime_doctests():
    assert doctest.testmod(runtime).failed == 0


def _clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in RUNTIME_VARIABLES}


def test_cli_prints_no_cuda_noise(tmp_path):
    """The batch CLI, run as a user would (no device or log variables set), prints no CUDA noise."""
    field = sorted((ROOT / "samples" / "fields").glob("*.jpg"))[0]
    result = subprocess.run(
        [sys.executable, "-m", "leukemia_core", "analyze", str(field), "--out", str(tmp_path)],
        cwd=ROOT,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "summary.json").is_file()
    noise = [line for line in result.stderr.splitlines() if any(n in line for n in CUDA_NOISE)]
    assert noise == [], result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_user_log_level_zero_shows_tensorflow_import_lines():
    """TF_CPP_MIN_LOG_LEVEL=0 set by the user is kept: TensorFlow's import lines come through."""
    environ = _clean_environment() | {"TF_CPP_MIN_LOG_LEVEL": "0", "LEUKEMIA_DEVICE": "cpu"}
    script = (
        "import os, leukemia_core, tensorflow as tf; tf.constant(1.0) + 1;"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['TF_ENABLED_DEVICE_TYPES'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "CPU"]
    assert "I0000" in result.stderr or "port.cc" in result.stderr, result.stderr
