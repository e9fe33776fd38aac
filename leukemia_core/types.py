"""Result records of the core library: frozen dataclasses, never bare tuples.

Pixel conventions used everywhere: images are ``(height, width, 3)`` RGB ``uint8`` arrays;
boxes are ``(x0, y0, x1, y1)`` in full-resolution pixels with ``x1``/``y1`` exclusive;
points are ``(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LoadedImage:
    """An image read by :func:`leukemia_core.io.read_image`, normalised to RGB uint8.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 pixels, EXIF orientation applied.
        name: File name, or ``"<bytes>"`` when read from memory.
        format: Container format reported by the decoder (``"JPEG"``, ``"PNG"``, ...).
        original_mode: Pixel mode before conversion (``"RGB"``, ``"I;16"``, ``"CMYK"``, ...).
        original_size: ``(width, height)`` as stored in the file, before EXIF rotation.
        n_frames: Frames or pages in the file; only the first is read.
        notes: Human-readable warnings about the conversion (e.g. "took the first of 3 pages").
    """

    rgb: np.ndarray
    name: str
    format: str
    original_mode: str
    original_size: tuple[int, int]
    n_frames: int = 1
    notes: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass(frozen=True)
class Segmentation:
    """White-cell segmentation of one field.

    Attributes:
        nucleus_labels: ``(H, W)`` int32; 0 is background, ``k`` marks the nucleus of cell ``k``.
        cell_labels: ``(H, W)`` int32; ``k`` marks the whole cell ``k`` (nucleus + cytoplasm).
        red_cell_diameter_px: Typical red-cell diameter estimated from the image, in input pixels;
            every size threshold is expressed relative to it.
        working_scale: Factor the field was resized by for detection (1.0 = full resolution).
        border_cell_ids: Ids of cells cut by the image border.
        notes: Human-readable warnings (e.g. "no white cells found").
    """

    nucleus_labels: np.ndarray
    cell_labels: np.ndarray
    red_cell_diameter_px: float
    working_scale: float
    border_cell_ids: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def n_cells(self) -> int:
        return int(self.cell_labels.max()) if self.cell_labels.size else 0


@dataclass(frozen=True)
class Cell:
    """One detected white cell and its crops.

    Attributes:
        cell_id: Label of the cell in :attr:`Segmentation.cell_labels` (1-based).
        bbox: ``(x0, y0, x1, y1)`` of the whole cell in the field, ``x1``/``y1`` exclusive.
        centroid: ``(x, y)`` centroid of the whole-cell mask in the field.
        cell_area_px: Whole-cell area in field pixels.
        nucleus_area_px: Nucleus area in field pixels.
        touches_border: True when the cell is cut by the image border (excluded from counts).
        cell_mask: Bool mask of the cell, cropped to ``bbox``.
        nucleus_mask: Bool mask of the nucleus, cropped to ``bbox``.
        crop: Classifier-domain crop (C-NMC style): the cell centred on a square black canvas,
            everything outside the cell mask black, at a fixed scale of a few red-cell
            diameters per side (see :func:`leukemia_core.cropping.crop_cells`),
            ``(size, size, 3)`` uint8.
        context_crop: Square crop around the cell with its neighbourhood, for display.
    """

    cell_id: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    cell_area_px: int
    nucleus_area_px: int
    touches_border: bool
    cell_mask: np.ndarray = field(repr=False)
    nucleus_mask: np.ndarray = field(repr=False)
    crop: np.ndarray = field(repr=False)
    context_crop: np.ndarray = field(repr=False)

    @property
    def nucleus_cytoplasm_ratio(self) -> float:
        """Nucleus area over whole-cell area (blasts are typically > 0.7)."""
        return self.nucleus_area_px / self.cell_area_px if self.cell_area_px else 0.0


@dataclass(frozen=True)
class BlastCount:
    """Blast count of a field or a sample, with its denominator and uncertainty.

    Attributes:
        n_blasts: Cells counted as blasts.
        n_counted: Denominator: white cells counted (blasts + normal).
        n_excluded: Cells left out of the denominator (border, not a white cell, reviewer exclusion).
        percent: Blast percentage, or None when nothing was counted.
        ci_low_percent: Lower end of the 95% Wilson interval, in percent (None when nothing counted).
        ci_high_percent: Upper end of the 95% Wilson interval, in percent.
        interpretation: Plain-language reading against the 5% and 20% thresholds.
        hint: Advice such as "count more cells" when the interval straddles a threshold, else None.
    """

    n_blasts: int
    n_counted: int
    n_excluded: int
    percent: float | None
    ci_low_percent: float | None
    ci_high_percent: float | None
    interpretation: str
    hint: str | None = None
