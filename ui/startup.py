"""Work a server starts before the login form renders, without importing TensorFlow in the
page's own thread: the first request of a fresh server imported it (5 s idle, 10 s and more on a
busy machine) before anything but Streamlit's bare page list appeared."""

from __future__ import annotations

import os
import threading

WARM_UP_ENV_VAR = "LEUKEMIA_WARM_UP"
_started = threading.Event()
_lock = threading.Lock()


def warm_up_wanted() -> bool:
    """False when ``LEUKEMIA_WARM_UP`` is ``0``, ``false``, ``off`` or ``no``."""
    return os.environ.get(WARM_UP_ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def warm_up_model_soon() -> None:
    """Load the active model in the background, once per server process
    (:func:`ui.models.warm_up_in_background`, imported in that thread too)."""
    if not warm_up_wanted():
        return
    with _lock:
        if _started.is_set():
            return
        _started.set()
    threading.Thread(target=_import_and_warm_up, name="model-warm-up-import", daemon=True).start()


def _import_and_warm_up() -> None:
    from ui.models import warm_up_in_background  # TensorFlow: imported here, off the page

    warm_up_in_background()
