"""Shared widgets and cached loaders: the only module besides the pages that imports streamlit.

Every function here gathers or renders; the image work happens in :mod:`leukemia_core`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import streamlit as st

from leukemia_core.cropping import crop_cells, draw_overlay
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.io import read_image
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_demo_smear
from leukemia_core.types import Cell, LoadedImage, Segmentation

DISCLAIMER = (
    "**Research use only.** This is decision support for research; it is not a diagnosis. "
    "Every result must be reviewed by a qualified person."
)
NO_CLASSIFIER_NOTE = (
    "Blast classification arrives with the classifier model; this page shows segmentation only."
)
UPLOAD_TYPES = ("jpg", "jpeg", "png", "tif", "tiff", "bmp")
DEMO_NAME = "synthetic demo smear"
GALLERY_WIDTH = 128


class UploadedImage(Protocol):
    """What the pages need from ``st.file_uploader`` results (a named, readable buffer)."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class FieldView:
    """Everything the page shows for one field: the segmentation, its cells and the overlay.

    Attributes:
        segmentation: White-cell segmentation of the field.
        cells: Cells cropped from the field, in label order.
        overlay: Field with the cell and nucleus outlines drawn, ``(H, W, 3)`` uint8.
    """

    segmentation: Segmentation
    cells: tuple[Cell, ...]
    overlay: np.ndarray

    @property
    def n_border(self) -> int:
        """Cells cut by the image border; they are shown but left out of counts."""
        return len(self.segmentation.border_cell_ids)

    @property
    def n_counted(self) -> int:
        """White cells found that do not touch the border."""
        return self.segmentation.n_cells - self.n_border


def research_use_banner() -> None:
    """Show the research-use-only disclaimer; every page calls this first."""
    st.warning(DISCLAIMER, icon=":material/science:")


@st.cache_data(show_spinner=False, max_entries=1)
def load_demo_smear() -> LoadedImage:
    """Return the synthetic demo smear as a :class:`LoadedImage` (computed once per process)."""
    rgb = make_demo_smear().image
    return LoadedImage(
        rgb=rgb,
        name=DEMO_NAME,
        format="synthetic",
        original_mode="RGB",
        original_size=(int(rgb.shape[1]), int(rgb.shape[0])),
    )


# A 5-megapixel field's result holds ~60 MB (two int32 label images, overlay, crops): keep a few.
@st.cache_data(show_spinner=False, max_entries=10)
def analyse_field(rgb: np.ndarray) -> FieldView:
    """Segment one field and crop its cells (cached on the pixels).

    Raises:
        LeukemiaCoreError: When the core library rejects the field.
    """
    segmentation = segment_wbc(rgb)
    cells = tuple(sorted(crop_cells(rgb, segmentation), key=lambda cell: cell.cell_id))
    return FieldView(
        segmentation=segmentation, cells=cells, overlay=draw_overlay(rgb, segmentation)
    )


def show_upload(uploaded: UploadedImage) -> None:
    """Read one uploaded file and show its segmentation; typed errors are shown, not raised."""
    st.subheader(uploaded.name, divider="gray")
    try:
        loaded = read_image(uploaded)
        _show_field(loaded)
    except LeukemiaCoreError as error:
        st.error(str(error))


def show_demo() -> None:
    """Show the segmentation of the synthetic demo smear."""
    st.subheader("Synthetic demo smear", divider="gray")
    st.caption(
        "A generated field with a known number of white cells, for trying the app without data."
    )
    try:
        _show_field(load_demo_smear())
    except LeukemiaCoreError as error:
        st.error(str(error))


def _show_field(loaded: LoadedImage) -> None:
    for note in loaded.notes:
        st.info(note)
    with st.spinner(f"Finding white cells in {loaded.name} …"):
        view = analyse_field(loaded.rgb)
    segmentation = view.segmentation

    counted, border = st.columns(2)
    counted.metric("White cells found", view.n_counted)
    border.metric("Cut by the border (excluded)", view.n_border)
    st.caption(
        f"{loaded.width} × {loaded.height} px, {loaded.format}; typical red cell "
        f"≈ {segmentation.red_cell_diameter_px:.0f} px across; detection ran at "
        f"{segmentation.working_scale:.2g}× scale."
    )
    for note in segmentation.notes:
        st.warning(note)

    st.image(
        view.overlay,
        caption="Cells outlined in green (grey: cut by the border, excluded), nuclei in yellow",
        width="stretch",
    )
    if not view.cells:
        return
    in_context, crops = st.tabs(["Cells in context", "Classifier input crops"])
    captions = [_cell_caption(cell) for cell in view.cells]
    with in_context:
        st.image([cell.context_crop for cell in view.cells], caption=captions, width=GALLERY_WIDTH)
    with crops:
        st.image([cell.crop for cell in view.cells], caption=captions, width=GALLERY_WIDTH)


def _cell_caption(cell: Cell) -> str:
    caption = f"cell {cell.cell_id} · {cell.cell_area_px} px²"
    return f"{caption} · border, excluded" if cell.touches_border else caption
