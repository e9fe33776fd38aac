"""Bundled sample images (redistributable ones only; see samples/CREDITS.md)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from leukemia_core.imaging import png_bytes
from leukemia_core.pipeline import MODE_CELLS, MODE_FIELDS
from leukemia_core.synthetic import make_demo_smear

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
DEMO_NAME = "synthetic-demo-smear.png"
CREDITS = {
    MODE_FIELDS: (
        "Sample photographs: two normal-blood fields from the BCCD Dataset (no blasts; MIT "
        "license, github.com/Shenggan/BCCD_Dataset). No photograph with blasts may be "
        "redistributed here. Credits in the app's `samples/CREDITS.md`."
    ),
    MODE_CELLS: (
        "Sample cells: four C-NMC 2019 cells (SBILab, IIIT-Delhi / AIIMS; CC BY 3.0; Gupta & "
        "Gupta (eds.), ISBI 2019 C-NMC Challenge), two labelled ALL and two normal (`hem`) by the "
        "dataset. Their microscope and stain differ from the training data, so the bundled "
        "model's out-of-domain check sends all four to review (nothing is counted until you "
        "label them): a sample to practise the review on. Credits in the app's "
        "`samples/CREDITS.md`."
    ),
}
DRAWING_NOTE = (
    "The synthetic smear is a drawing made by this app, half its white cells drawn blast-like: "
    "a sample to practise the review on. A drawing is no photograph, so the model's calls on it "
    "mean nothing, and a model's out-of-domain check (the bundled model has one) sends every "
    "cell to review, as it would for an unfamiliar stain or microscope."
)


@st.cache_data(show_spinner=False, max_entries=1)
def _demo_png() -> bytes:
    return png_bytes(make_demo_smear().image)


def sample_files(mode: str) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the bundled photographs for ``mode`` (fields or single cells)."""
    folder = SAMPLES_DIR / ("cells" if mode == MODE_CELLS else "fields")
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*")) if p.is_file()]


def drawing_files() -> list[tuple[str, bytes]]:
    """The synthetic demo smear, a sample of its own: a drawing analysed beside photographs
    would make the whole sample look out of domain, photographs included."""
    return [(DEMO_NAME, _demo_png())]
