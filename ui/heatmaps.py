"""Grad-CAM-family heatmaps for the whole gallery: one batched call, cached per model and sample.

The heatmaps come from :mod:`leukemia_core.explain`; this module only caches them and draws the
overlays at the opacity the reviewer picks (cheap, so not cached).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from leukemia_core import explain
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.review import Review
from ui.models import BATCH_SIZE, get_classifier, model_config

METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
DEFAULT_METHOD = "gradcam"
DEFAULT_OPACITY = 0.4
SCORE_MAPS = 8  # Score-CAM with a few activation maps: seconds, not minutes, on a CPU


def methods() -> tuple[str, ...]:
    """Heatmap methods of :mod:`leukemia_core.explain`, in its order."""
    return tuple(explain.METHODS)


def unavailable_reason(session: Review) -> str | None:
    """Why heatmaps cannot be computed for this sample (None when they can)."""
    if not session.has_model:
        return "Heatmaps need a classifier model; these cells were found by segmentation only."
    try:
        config = model_config(session.model_name)
    except LeukemiaCoreError as error:
        return f"Model {session.model_name!r} is not available here ({error})."
    if session.model_checksum and config.sha256 != session.model_checksum:
        return (
            f"The installed model {session.model_name!r} has other weights than the one that "
            "labelled this case, so its heatmaps would not explain these labels."
        )
    return None


@st.cache_data(show_spinner=False, max_entries=8)
def _heatmaps(
    model_name: str, checksum: str, sample_digest: str, method: str, _crops: tuple
) -> np.ndarray:
    del checksum, sample_digest  # cache key: the crops are identified by the sample digest
    return _maps(model_name, method, _crops)


def _maps(model_name: str, method: str, crops) -> np.ndarray:
    """Heatmaps of crops by the model, as uint8 0-255 (a quarter of float32's memory)."""
    model = get_classifier(model_name).model
    maps = explain.compute_heatmaps(
        model, list(crops), method=method, score_maps=SCORE_MAPS, batch_size=BATCH_SIZE
    )
    return np.rint(np.asarray(maps) * 255).astype(np.uint8)


def gallery_heatmaps(session: Review, method: str) -> dict[tuple[int, int], np.ndarray]:
    """Heatmap of every cell of the sample as uint8 0-255 (one batched call; cached).

    Raises:
        LeukemiaCoreError: The model or the explanation failed.
    """
    cells = [c for c in session.cells if c.crop is not None]
    if not cells:
        return {}
    crops = tuple(c.crop for c in cells)
    maps = _heatmaps(session.model_name, session.model_checksum, session.digest, method, crops)
    return {cell.key: heatmap for cell, heatmap in zip(cells, maps, strict=True)}


def overlay(crop: np.ndarray, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """The crop with its heatmap (as :func:`gallery_heatmaps` gives it) blended in."""
    heat = np.asarray(heatmap, np.float32) / 255.0
    return np.asarray(explain.overlay_heatmap(crop, heat, opacity=opacity))


def record_explainer(session: Review):
    """Overlays for the cells a split or merge makes, as :func:`overlays_for_record` makes the
    saved ones (the reviewer's method and opacity); None when heatmaps are unavailable. A failed
    heatmap leaves the new cell without one rather than stopping the split."""
    if unavailable_reason(session) is not None:
        return None
    method = st.session_state.get("gradcam_method", DEFAULT_METHOD)
    opacity = st.session_state.get("gradcam_opacity", DEFAULT_OPACITY)

    def explain_crops(crops: list[np.ndarray]) -> list[np.ndarray | None]:
        try:
            maps = _maps(session.model_name, method, crops)
        except LeukemiaCoreError:
            return [None] * len(crops)
        return [overlay(c, m, opacity) for c, m in zip(crops, maps, strict=True)]

    return explain_crops


def overlays_for_record(session: Review, method: str, opacity: float) -> dict:
    """Overlays of every cell to keep in the case record; empty when heatmaps are unavailable."""
    if unavailable_reason(session) is not None:
        return {}
    maps = gallery_heatmaps(session, method)
    return {key: overlay(session.cell(*key).crop, m, opacity) for key, m in maps.items()}
