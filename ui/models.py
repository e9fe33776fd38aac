"""The classifier models: listed from the models folder, loaded once per process.

A model is loaded with ``st.cache_resource`` keyed by its name, its weights' checksum, its
calibration and test-time views, and the models folder, so a retrained or recalibrated folder is
picked up and every session shares one read-only copy.
:class:`leukemia_core.classify.Classifier` keeps no state between calls, so sharing it is safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import streamlit as st

from leukemia_core.calibration import calls_in_words
from leukemia_core.classify import Classifier
from leukemia_core.cropping import DEFAULT_CROP_SIZE
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models.adapted_check import activation_refusals
from leukemia_core.models.config import architecture_words
from leukemia_core.models.folder import (
    MODELS_ENV_VAR,
    ModelConfig,
    active_model_name,
    kept_versions,
    list_models,
    load_model,
    models_dir,
    read_config,
    set_active_model,
)
from ui import auth
from ui.common import flash
from ui.startup import warm_up_wanted


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """Let glibc's allocator keep at most ``arenas`` arenas (unless ``MALLOC_ARENA_MAX`` is set).

    By default every TensorFlow worker thread gets its own arena and memory freed in one is not
    reused by another, so the app's peak on the same 2592x1944 field varied from 1.7 to 2.5 GB
    between runs; with two arenas it stayed at 1.7-1.9 GB (bench/app.py).
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (e.g. musl): leave it
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 is M_ARENA_MAX in glibc's malloc.h


_fewer_malloc_arenas()


def _close_matplotlib_figures() -> None:
    """What Streamlit cleans after a run, but Keras: open matplotlib figures are closed."""
    if "matplotlib.pyplot" in sys.modules:
        with contextlib.suppress(Exception):  # as Streamlit: never fail a run over it
            sys.modules["matplotlib.pyplot"].close("all")


def _keep_keras_between_runs() -> None:
    """Stop Streamlit from clearing Keras' session after every script run.

    Streamlit calls ``keras.backend.clear_session()`` after each run, for apps that build a model
    per run. This app loads each model once (``st.cache_resource``) and builds none per run; the
    clear cost 0.17 s of every rerun (a full garbage collection of TensorFlow's objects) and
    emptied TensorFlow's kernel cache, so the next run's Keras calls (Grad-CAM, and the network
    before ONNX Runtime) ran about 1.7x slower than in a plain process.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if hasattr(script_runner, "_clean_problem_modules"):  # a later Streamlit may not have it
        script_runner._clean_problem_modules = _close_matplotlib_figures


_keep_keras_between_runs()


def no_model_help() -> str:
    """What to do when no model folder exists (shown instead of the model picker)."""
    return (
        "**No classifier model is installed** (looked in the models folder: `models/` beside "
        f"the app, or the folder the `{MODELS_ENV_VAR}` setting names). You can still "
        "analyse images: the app finds and outlines every white cell and you label each one "
        "yourself, like a manual differential. For blast classification, copy a model folder "
        "(`<name>/` with `config.json` and `model.keras`, as in this repository's `models/`) "
        "into that folder, or train one with `python -m train fit --data DATASET --name NAME`."
    )


def available_models() -> list[str]:
    """Model folder names, the active (default) model first."""
    return list_models()


def model_config(name: str) -> ModelConfig:
    """The config of a model folder (cheap: weights are not read).

    Raises:
        ModelNotFoundError, ModelIntegrityError: No such folder, or a broken config.
    """
    return read_config(name)


def show_model_card(name: str) -> None:
    """The model folder's card (data, training, figures, limits), headings made small enough
    to sit under a page's own; nothing when the folder has no card."""
    card = models_dir() / name / "card.md" if name else None
    if card is not None and card.is_file():
        st.markdown(re.sub(r"^(#+) ", r"\1### ", card.read_text(encoding="utf-8"), flags=re.M))


@st.dialog("Model card", width="large")
def model_card_dialog(name: str) -> None:
    """The card in a wide dialog: its tables made the narrow column beside the upload box,
    and so the whole page, scroll sideways."""
    show_model_card(name)


BATCH_SIZE = 8
"""Cells per network call in the app. Larger batches are no faster on a CPU, but TensorFlow's
working memory grows with them: batches of 32 took the app past 3 GB (EfficientNet-Lite0)."""


WARM_UP_WAIT_S = 300  # a conversion on a busy 2-core server took 25-30 s; never wait forever
_warm_up_lock = threading.Lock()
_warm_up_started, _warm_up_finished = threading.Event(), threading.Event()
_warming: list[tuple[str, str, str]] = []  # the cache key being loaded in the background
_warmed: dict[tuple[str, str, str], Classifier] = {}  # handed to the cache, or dropped


def warm_up_in_background() -> threading.Thread | None:
    """Load the active model in a background thread, once per server process (the first page
    request starts it), so that the first analysis finds the network loaded and converted for
    ONNX Runtime: with an empty cache that took 11 s of a first analysis on 2 idle cores and
    25-30 s on a busy server. ``LEUKEMIA_WARM_UP=0`` (or ``false``, ``off``, ``no``) turns it
    off.
    """
    if not warm_up_wanted():
        return None
    with _warm_up_lock:  # two first requests at once start one load
        if _warm_up_started.is_set():
            return None
        _warm_up_started.set()
    thread = threading.Thread(target=_warm_up, name="model-warm-up", daemon=True)
    thread.start()
    return thread


def _warm_up() -> None:
    try:
        name = active_model_name()
        if name is not None:
            key = _cache_key(name)
            _warming.append(key)
            _warmed[key] = _load(name, key[2])
    except Exception:  # the page that uses the model says what is wrong; the log says it now
        logging.getLogger(__name__).warning("Loading the active model failed", exc_info=True)
    finally:
        _warm_up_finished.set()


def _load(name: str, root: str) -> Classifier:
    classifier = Classifier(load_model(name, Path(root)), batch_size=BATCH_SIZE, runtime="auto")
    # One blank crop through the network traces its graph now, not on the first sample.
    classifier.outputs(np.zeros((1, DEFAULT_CROP_SIZE, DEFAULT_CROP_SIZE, 3), np.uint8))
    return classifier


@st.cache_resource(show_spinner="Loading the classifier model …", max_entries=4)
def _classifier(name: str, version: str, root: str) -> Classifier:
    key = (name, version, root)
    if key in _warming:  # the same network is not loaded and converted twice at once
        _warm_up_finished.wait(WARM_UP_WAIT_S)
    warmed = _warmed.pop(key, None)
    _warmed.clear()  # a model warmed for a key nobody asks for (another model made active,
    # or the folder recalibrated meanwhile) is not kept beside the cache
    return warmed if warmed is not None else _load(name, root)


def _cache_key(name: str) -> tuple[str, str, str]:
    # A retrained or recalibrated folder changes the key, and is loaded again.
    config = read_config(name)
    return name, f"{config.sha256} {config.decision_settings()}", str(models_dir())


def get_classifier(name: str) -> Classifier:
    """The loaded model ``name`` (verified against its checksum; loaded once per process).

    Raises:
        ModelNotFoundError, ModelIntegrityError: Missing folder or damaged weights.
    """
    return _classifier(*_cache_key(name))


def plain_summary(config: ModelConfig) -> str:
    """The model in a hematology reader's words: what it is, what it learnt from, what it does
    with the cells it is unsure of (the numbers are in :func:`describe`)."""
    cells = (config.training.get("data_summary") or {}).get("n_cells")
    trained = f", trained and checked on {cells:,} labelled cells" if cells else ""
    c = config.calibration
    unsure = (
        "cells it is unsure of are marked uncertain for your review"
        if c.uncertain_high > c.uncertain_low
        else "every call is shown for review"
    )
    adapted = config.training.get("adapted") or {}
    if adapted.get("base"):  # a lab's version: what it was adapted on, not only its base
        check = adapted.get("check") or {}
        on = (f" on {check['cells']:,} of this lab's cells ({check['groups']} samples)"
              if check.get("cells") and check.get("groups") else " on this lab's cells")  # fmt: skip
        trained += f", then adapted{on} from {adapted['base']}"
    return f"{architecture_words(config.architecture)} network{trained}; {unsure}."


def adapted_check_words(config: ModelConfig) -> str:
    """An adapted version's grouped check in one line ("" for other models): the figures its
    adaptation was judged by, from its folder, for whoever decides later."""
    check = (config.training.get("adapted") or {}).get("check") or {}
    before, after = check.get("before") or {}, check.get("after") or {}
    figures = [(label, before.get(key), after.get(key)) for key, label in (
        ("balanced_accuracy", "balanced accuracy"), ("sensitivity", "sensitivity"),
        ("confident_miss_rate", "confident misses"))]  # fmt: skip
    shown = [f"{label} {b:.3f} → {a:.3f}" for label, b, a in figures
             if isinstance(b, int | float) and isinstance(a, int | float)]  # fmt: skip
    if not shown:
        return ""
    return (
        f"Its adaptation's check on {check.get('cells', '?')} of the lab's cells "
        f"({check.get('groups', '?')} samples), before → after: {'; '.join(shown)}."
    )


def describe(config: ModelConfig) -> str:
    """One line about a model for its details: architecture, input size, decision threshold,
    review band and out-of-domain check."""
    c = config.calibration
    calls = calls_in_words(c.threshold, c.uncertain_low, c.uncertain_high) or "no threshold"
    views = config.test_time_views
    domain = (
        f"out-of-domain warning above a median score of {config.domain['threshold']:.2f}"
        if config.domain
        else "no out-of-domain check"
    )
    return (
        f"{config.architecture}, {config.input_size} px input"
        f"{f', {views} views per cell' if views > 1 else ''}, {calls}, {domain}; weights "
        f"sha256 {config.sha256[:12]}…"
    )


def model_status() -> None:
    """Sidebar: which model is active, or how to get one."""
    names = available_models()
    if not names:
        st.warning("No classifier model installed: cells are found, you label them.")
        return
    try:
        config = model_config(names[0])
    except LeukemiaCoreError as error:
        st.error(str(error))
        return
    st.caption(f"Active model: **{config.name}**  \n{plain_summary(config)}")


def activate(name: str, confirm_key: str) -> None:
    """Make ``name`` the active model (a button's callback; the core checks the account's role
    and records the change), and clear the confirmation box ``confirm_key``."""
    try:
        set_active_model(name, user=auth.acting_user())
    except LeukemiaCoreError as error:
        flash(f"Not made active: {error}")
        return
    st.session_state["model"] = name  # the Analyze page's model picker
    st.session_state[confirm_key] = False
    flash(f"`{name}` is now the active model; the Analyze page uses it from now on.", "success")


def active_model_section() -> None:
    """Which model new analyses use, and another one made active with a confirmation: the way
    back after a promotion or adaptation that did not convince."""
    st.subheader("5. Active model")
    names = available_models()
    if not names:
        st.info(no_model_help())
        return
    active = active_model_name(names=names)
    st.markdown(f"New analyses use **{active}**.")
    try:  # made active before such versions were refused: said, so someone acts on it
        if active and (refusals := activation_refusals(model_config(active).training)):
            st.warning(f"`{active}` would not be made active today: {'; '.join(refusals)}. "
                       "Make another model active below.")  # fmt: skip
    except LeukemiaCoreError:
        pass  # said where the model is loaded
    if active and st.button(f"Read the model card of {active}", key="active_model_card",
                            icon=":material/description:"):  # fmt: skip
        model_card_dialog(active)
    # The model active before the last change first (the way back it is for), then the kept
    # versions a promotion or adaptation into the same name set aside, named as such.
    kept = [name for name in kept_versions() if name != active]
    others = [name for name in names if name != active] + kept
    if not others:
        st.caption("No other model is installed.")
        return
    changes = auth.accounts().model_changes(1)
    before = changes[0]["from_model"] if changes else None
    others.sort(key=lambda name: name != before)
    picked = st.selectbox(
        "Make another model active", others, key="activate_pick",
        format_func=lambda name: name + (" (active before the last change)" if name == before
                                         else " (kept version, replaced by a newer one)"
                                         if name in kept else ""),
    )  # fmt: skip
    try:
        config = model_config(picked)
    except LeukemiaCoreError as error:
        st.error(f"`{picked}` cannot be used: {error}")
        return
    st.caption(f"{plain_summary(config)} {describe(config)}")
    if said := adapted_check_words(config):  # kept in the folder: shown in any later session
        st.caption(said)
    if refusals := activation_refusals(config.training):  # the core refuses it too
        st.error(f"`{picked}` cannot become the active model: {'; '.join(refusals)}.")
        return
    confirmed = st.checkbox(f"Make `{picked}` the model every new analysis uses.",
                            key="activate_confirm")  # fmt: skip
    st.button("Make active", key="activate_model", disabled=not confirmed, on_click=activate,
              args=(picked, "activate_confirm"), icon=":material/published_with_changes:")  # fmt: skip
