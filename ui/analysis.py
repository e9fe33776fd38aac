"""Run the analysis of a batch of images with a progress bar per image and per stage."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import read_for_analysis
from leukemia_core.pipeline import ImageFailure, analyze
from leukemia_core.review import Review
from ui.models import get_classifier

STAGE_TEXT = {
    "segmenting": "finding white cells",
    "cropping": "cutting out each cell",
    "classifying": "classifying cells",
    "counting": "counting",
}


def run_analysis(
    files: Sequence[tuple[str, bytes]],
    *,
    mode: str,
    model_name: str | None,
    sample_id: str,
) -> Review:
    """Read and analyse ``files`` (``(name, bytes)``) of one sample; bad files become failures.

    Raises:
        LeukemiaCoreError: The model could not be loaded (nothing was analysed).
    """
    classifier = get_classifier(model_name) if model_name else None
    input_size = classifier.input_size if classifier else None
    n = len(files)
    overall = st.progress(0.0, text=f"Reading {n} image{'s' if n != 1 else ''} …")
    stage = st.progress(0.0, text="")
    prepared, failures = [], []
    for i, (name, data) in enumerate(files):
        overall.progress(i / max(n, 1), text=f"Reading image {i + 1} of {n}: {name}")
        try:
            prepared.append(read_for_analysis(data, name, input_size=input_size))
        except LeukemiaCoreError as error:
            failures.append(ImageFailure(name, str(error)))

    def progress(index: int, total_images: int, name: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        overall.progress(
            min(1.0, (index + fraction) / max(total_images, 1)),
            text=f"Image {index + 1} of {total_images}: {prepared[index].name}",
        )
        stage.progress(min(1.0, fraction), text=f"Stage: {STAGE_TEXT.get(name, name)}")

    analysis = analyze(prepared, classifier, mode=mode, failures=failures, progress=progress)
    session = Review(analysis, sample_id=sample_id)
    overall.empty()
    stage.empty()
    return session
