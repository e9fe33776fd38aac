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
        "Sample fields: two normal-blood fields from the BCCD Dataset (no blasts; MIT license, "
        "github.com/Shenggan/BCCD_Dataset) and a smear drawn by this app, half its white cells "
        "blast-like. A drawing is no photograph: the model's calls on it mean nothing, and "
        "the out-of-domain check may send the sample to review, as it does for an unfamiliar "
        "stain or microscope. No photograph with blasts may be redistributed here. Credits in "
        "the app's `samples/CREDITS.md`."
    ),
    MODE_CELLS: (
        "Sample cells: four C-NMC 2019 cells (SBILab, IIIT-Delhi / AIIMS; CC BY 3.0; Gupta & "
        "Gupta (eds.), ISBI 2019 C-NMC Challenge), two labelled ALL and two normal (`hem`) by the "
        "dataset. Credits in the app's `samples/CREDITS.md`."
    ),
}


@st.cache_data(show_spinner=False, max_entries=1)
def _demo_png() -> bytes:
    return png_bytes(make_demo_smear().image)


def sample_files(mode: str) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the bundled samples for ``mode`` (fields or single cells)."""
    folder = SAMPLES_DIR / ("cells" if mode == MODE_CELLS else "fields")
    files = [(p.name, p.read_bytes()) for p in sorted(folder.glob("*")) if p.is_file()]
    if mode == MODE_FIELDS:
        files.append((DEMO_NAME, _demo_png()))
    return files
