"""Result records of the core library: frozen dataclasses, never bare tuples.

Pixel conventions used everywhere: images are ``(height, width, 3)`` RGB ``uint8`` arrays;
boxes are ``(x0, y0, x1, y1)`` in full-resolution pixels with ``x1``/``y1`` exclusive;
points are ``(x, y)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property

import numpy as np

from leukemia_core.domain import DomainAssessment
from leukemia_core.masks import outline_mask
from leukemia_core.quality import QualityWarning
from leukemia_core.stain import StainEstimate


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
        stain: The field's glass and red-cell colour (:class:`leukemia_core.stain.StainEstimate`).
        low_red_cell_diameter_px: The lower red-cell size estimate (see
            :class:`leukemia_core.scale.RedCellScale`); blur and overlapping red
            cells inflate it less than ``red_cell_diameter_px``.
        red_cells_merged_share: Share of the red-cell area in the largest connected mass (see
            :class:`leukemia_core.scale.RedCellScale`); high in thick areas and blurred fields.
    """

    nucleus_labels: np.ndarray
    cell_labels: np.ndarray
    red_cell_diameter_px: float
    working_scale: float
    border_cell_ids: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    stain: StainEstimate | None = None
    low_red_cell_diameter_px: float = 0.0
    red_cells_merged_share: float = 0.0

    @property
    def n_cells(self) -> int:
        return int(self.cell_labels.max()) if self.cell_labels.size else 0


def _equal_records(a: object, b: object) -> bool:
    """Field-by-field equality of two dataclasses of one type, arrays compared by value."""
    if type(a) is not type(b):
        return NotImplemented
    for spec in fields(a):
        x, y = getattr(a, spec.name), getattr(b, spec.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                return False
            if x.shape != y.shape or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


class CellLabel(StrEnum):
    """Label of one detected object, as set by the classifier or a reviewer.

    ``BLAST`` and ``NORMAL`` are counted; ``UNCERTAIN`` cells await review and are left out of
    the denominator until someone labels them; the rest are left out for good. ``REPLACED``
    marks a cell a reviewer split or merged into new cells: kept for the audit trail, never
    shown or counted.
    """

    BLAST = "blast"
    NORMAL = "normal"
    UNCERTAIN = "uncertain"
    EXCLUDED = "excluded"
    NOT_WBC = "not_wbc"
    BORDER = "border"
    REPLACED = "replaced"


LABEL_WORDS = {
    CellLabel.BLAST: "Blast",
    CellLabel.NORMAL: "Normal",
    CellLabel.UNCERTAIN: "Uncertain",
    CellLabel.EXCLUDED: "Excluded",
    CellLabel.NOT_WBC: "Not a white cell",
    CellLabel.BORDER: "Cut by the border",
}
"""Each shown label in words, for the pages and the report."""

AUDIT_LABEL_WORDS = {**LABEL_WORDS, CellLabel.REPLACED: "Split or merged"}
"""Every label in words, for audit trails (a cell a split or merge replaced is named there)."""


def as_label(value: object) -> CellLabel:
    """A :class:`CellLabel` from its value in any case and spacing.

    Raises:
        ValueError: Not a cell label (the message lists the valid ones).
    """
    try:
        return CellLabel(str(value).strip().lower())
    except ValueError:
        valid = ", ".join(label.value for label in CellLabel)
        raise ValueError(f"{value!r} is not a cell label; expected one of: {valid}.") from None


MODE_FIELDS = "fields"  # the images are smear fields: every white cell in them is counted
MODE_CELLS = "cells"  # the images are single-cell crops, picked by hand
MODES = (MODE_FIELDS, MODE_CELLS)

MACHINE_ONLY_LABELS = frozenset({CellLabel.UNCERTAIN, CellLabel.BORDER, CellLabel.REPLACED})
"""Labels only the machine gives: a reviewer decides, border cells are never counted, and
replaced cells change only by a split, merge or undo (:mod:`leukemia_core.reshape`)."""

NO_REVIEW_LABELS = frozenset({CellLabel.BORDER, CellLabel.REPLACED})
"""Cells no person reviews: border cells are never counted, replaced ones are gone."""

REVIEWER_EDITABLE = frozenset({"label", "reviewed"})
"""Cell attributes a reviewer may change (each change is audited); the rest are the machine's."""


@dataclass(frozen=True)
class Cell:
    """One white cell, from segmentation through the model's call and the review to the record.

    The same object is made by :func:`leukemia_core.cropping.crop_cells`, labelled by the
    pipeline, changed (as a copy) by the review workflow and stored as it is by the case store.

    Attributes:
        cell_id: Id within its field (the segmentation label, 1-based).
        bbox: ``(x0, y0, x1, y1)`` of the whole cell in the field, ``x1``/``y1`` exclusive.
        centroid: ``(x, y)`` centroid of the whole-cell mask in the field.
        outline: ``(K, 2)`` float32 ``(x, y)`` polygon of the cell in field coordinates (see
            :func:`leukemia_core.imaging.mask_outline`); :meth:`mask` rasterises it.
        crop: Classifier-domain crop (C-NMC style): the cell centred on a square black canvas,
            everything outside its mask black, at a fixed scale of a few red-cell diameters per
            side (see :func:`leukemia_core.cropping.crop_cells`), ``(S, S, 3)`` uint8; None when
            not kept (cases stored without crops).
        field_index: Position of its field in the sample (0-based).
        cell_area_px: Whole-cell area in field pixels.
        nucleus_area_px: Nucleus area in field pixels.
        touches_border: Cut by the image border (labelled ``border``: shown, never counted).
        blast_probability: Calibrated probability of a blast; None when no model labelled it.
        model_label: What the machine said.
        label: The current label (the reviewer's decision; the model's until changed).
        reviewed: True once a reviewer relabelled the cell or accepted its label.
        domain_score: Distance to the model's training cells (about 1 in domain), or None.
        overlay: Explanation overlay (RGB uint8) kept with the case, or None.
        origin: How a reviewer made this cell (``split of 5``, ``merge of 3+4``); empty for
            the segmentation's cells.
    """

    cell_id: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    outline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    crop: np.ndarray | None = field(default=None, repr=False)
    field_index: int = 0
    cell_area_px: int = 0
    nucleus_area_px: int = 0
    touches_border: bool = False
    blast_probability: float | None = None
    model_label: CellLabel = CellLabel.UNCERTAIN
    label: CellLabel | None = None
    reviewed: bool = False
    domain_score: float | None = None
    overlay: np.ndarray | None = field(default=None, repr=False)
    origin: str = ""

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ (labels may arrive as plain strings).
        object.__setattr__(self, "model_label", as_label(self.model_label))
        label = self.model_label if self.label is None else as_label(self.label)
        object.__setattr__(self, "label", label)

    def __eq__(self, other: object) -> bool:
        return _equal_records(self, other)

    __hash__ = None  # holds arrays: compared by value, never hashed

    @property
    def key(self) -> tuple[int, int]:
        """``(field_index, cell_id)``: unique within a sample."""
        return (self.field_index, self.cell_id)

    @property
    def awaits_review(self) -> bool:
        """Not yet relabelled or accepted by a reviewer (border cells are never counted, so they
        need no review; the store's sign-off applies the same rule)."""
        return not self.reviewed and self.label not in NO_REVIEW_LABELS

    @property
    def changed_by_reviewer(self) -> bool:
        """True when the current label differs from the model's own call. A cell a reviewer
        made by a split or merge (:attr:`origin`) waits as uncertain by rule, not by the model:
        labelling it is no disagreement with the model (False)."""
        return self.label != self.model_label and not self.origin

    @property
    def nucleus_cytoplasm_ratio(self) -> float:
        """Nucleus area over whole-cell area (blasts are typically > 0.7)."""
        return self.nucleus_area_px / self.cell_area_px if self.cell_area_px else 0.0

    def mask(self) -> np.ndarray:
        """Bool mask of the cell cropped to :attr:`bbox`, filled from its outline."""
        x0, y0, x1, y1 = self.bbox
        local = np.asarray(self.outline).reshape(-1, 2) - (x0, y0)
        return outline_mask(local, (y1 - y0, x1 - x0))


def plain_name(name: object) -> str:
    """``name`` with every character that prints nothing (controls, bidirectional overrides,
    line breaks, undecodable bytes) spelled ``?``: a right-to-left override in a file name
    printed "cell 10" as "cell 01" in the report, and a line break splits a CSV row.

    >>> plain_name("Im012_1\u202e.jpg"), plain_name("Müller 2.jpg")
    ('Im012_1?.jpg', 'Müller 2.jpg')
    """
    return "".join(c if c.isprintable() else "?" for c in str(name))


def live(cells: Iterable[Cell]) -> tuple[Cell, ...]:
    """The cells that are shown and counted (not replaced by a split or merge)."""
    return tuple(c for c in cells if c.label != CellLabel.REPLACED)


@dataclass(frozen=True)
class Field:
    """One analysed image of a sample (a smear field, or one single-cell image).

    Attributes:
        index: Position in the sample (0-based), the ``field_index`` of its cells.
        name: Shown to the user (the file name unless renamed).
        image: The analysed RGB pixels (downscaled when the file was very large).
        original_size: ``(width, height)`` of the file; the image's own size when not given.
        scale: Analysed pixels per original pixel.
        notes: Notes for the user (downscaling, no cells found, ...).
        seconds: Wall time per analysis stage.
        domain: Out-of-domain assessment of the field's cells (None without a domain check).
        segmentation: The label images, kept only when asked for (evaluation); None otherwise.
        quality: Failed field quality checks (:func:`leukemia_core.quality.check_field`).
    """

    index: int
    name: str
    image: np.ndarray = field(repr=False)
    original_size: tuple[int, int] | None = None
    scale: float = 1.0
    notes: tuple[str, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    domain: DomainAssessment | None = None
    segmentation: Segmentation | None = field(default=None, repr=False)
    quality: tuple[QualityWarning, ...] = ()

    def __post_init__(self) -> None:
        if self.original_size is None:
            object.__setattr__(self, "original_size", (self.width, self.height))
        # one cleaning for every way a field is made: the pipeline, a stored case, a test
        object.__setattr__(self, "name", plain_name(self.name))

    def __eq__(self, other: object) -> bool:
        return _equal_records(self, other)

    __hash__ = None  # holds arrays: compared by value, never hashed

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @cached_property
    def digest(self) -> str:
        """Content hash of the pixels (for caches keyed by the image)."""
        return hashlib.blake2b(np.ascontiguousarray(self.image).data, digest_size=12).hexdigest()


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
