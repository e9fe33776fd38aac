"""The app loads the active model in the background while the first user logs in."""

from __future__ import annotations

import shutil
import time

import pytest

import ui.models as models
from leukemia_core.classify import Classifier
from leukemia_core.errors import ModelIntegrityError
from ui.startup import WARM_UP_ENV_VAR


@pytest.fixture
def fresh_process(monkeypatch):
    """The module's once-per-process state as in a server that has just started."""
    monkeypatch.setattr(models, "_warm_up_started", type(models._warm_up_started)())
    monkeypatch.setattr(models, "_warm_up_finished", type(models._warm_up_finished)())
    monkeypatch.setattr(models, "_warmed", {})
    monkeypatch.setattr(models, "_warming", [])
    monkeypatch.setenv(WARM_UP_ENV_VAR, "1")
    models._classifier.clear()
    yield
    models._classifier.clear()


def test_the_first_analysis_gets_the_model_loaded_in_the_background(
    fresh_process, monkeypatch, tiny_models_dir
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    thread = models.warm_up_in_background()
    assert thread is not None and thread.name == "model-warm-up"
    assert models.warm_up_in_background() is None  # once per process, not per page run
    thread.join(timeout=120)
    (warmed,) = models._warmed.values()
    assert isinstance(warmed, Classifier) and warmed.model.config.name == "tiny"
    assert models.get_classifier("tiny") is warmed  # handed over, not loaded a second time
    assert models._warmed == {}
    assert models.get_classifier("tiny") is warmed  # and cached from then on


@pytest.mark.parametrize("off", ["0", "false", " Off ", "no"])
def test_warm_up_can_be_turned_off(fresh_process, monkeypatch, off):
    monkeypatch.setenv(WARM_UP_ENV_VAR, off)
    assert models.warm_up_in_background() is None
    assert not models._warm_up_started.is_set()


def test_a_damaged_model_fails_where_it_is_used_not_in_the_background(
    fresh_process, monkeypatch, tiny_models_dir, tmp_path
):
    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    (root / "tiny" / "model.keras").write_bytes(b"not a model")
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(root))
    thread = models.warm_up_in_background()
    thread.join(timeout=120)
    assert models._warm_up_finished.is_set() and models._warmed == {}
    with pytest.raises(ModelIntegrityError, match="tiny"):
        models.get_classifier("tiny")


def test_the_first_analysis_waits_for_the_load_in_flight_instead_of_loading_again(
    fresh_process, monkeypatch, tiny_models_dir
):
    import threading

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    release, loads, real_load = threading.Event(), [], models._load

    def slow_load(name, root):
        loads.append(name)
        release.wait(60)  # the conversion is still running when the analysis asks
        return real_load(name, root)

    monkeypatch.setattr(models, "_load", slow_load)
    thread = models.warm_up_in_background()
    for _ in range(600):  # until the background load is under way
        if loads:
            break
        time.sleep(0.05)
    got = []
    asking = threading.Thread(target=lambda: got.append(models.get_classifier("tiny")))
    asking.start()
    asking.join(timeout=1)
    assert asking.is_alive() and loads == ["tiny"]  # waiting, not loading a second copy
    release.set()
    asking.join(timeout=120)
    thread.join(timeout=120)
    assert loads == ["tiny"] and isinstance(got[0], Classifier) and models._warmed == {}


def test_a_model_warmed_for_nobody_is_not_kept(fresh_process, monkeypatch, tiny_models_dir):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    models._warmed[("another", "v", str(tiny_models_dir))] = object()  # e.g. made inactive since
    classifier = models.get_classifier("tiny")
    assert isinstance(classifier, Classifier) and models._warmed == {}


def test_what_the_login_page_imports_leaves_tensorflow_to_the_background():
    """A fresh server's first request imported TensorFlow (5-10 s) before the login form showed:
    the modules app.py imports at its top (before the login gate) do not import it."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    tree = ast.parse((root / "app.py").read_text())
    modules = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    modules += [f"{n.module}.{a.name}" if n.module == "ui" else n.module
                for n in tree.body if isinstance(n, ast.ImportFrom) and n.module != "__future__"
                for a in n.names]  # fmt: skip
    assert "ui.auth" in modules and "ui.startup" in modules
    probe = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
             "print('tensorflow' in sys.modules or 'keras' in sys.modules)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=root, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
