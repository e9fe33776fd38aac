"""The review of one sample: what the model said about every cell, what the reviewer decided, counts.

A :class:`ReviewSession` is the one object the app keeps per browser tab. It is built either by
:func:`analyze_sample` from freshly read images, or by :meth:`ReviewSession.from_record` from a
case in the case record. Labels live in one dictionary keyed by ``(field_index, cell_id)``; every
count is recomputed from them with :func:`leukemia_core.counting.summarize_labels`, so a
reclassified cell changes every count at once and nothing can drift out of step.

Without a classifier model the same flow works as a digital manual differential: cells are found
and outlined, every cell starts as ``uncertain`` and the reviewer labels each one.

Example:
    >>> from leukemia_core.imaging import prepare_field
    >>> from leukemia_core.synthetic import make_demo_smear
    >>> field = prepare_field(make_demo_smear().image, "demo.png")
    >>> session = analyze_sample([field], None, sample_id="S-1")
    >>> session.count().n_counted, session.n_uncertain > 0
    (0, True)
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from leukemia_core.classify import Classifier
from leukemia_core.counting import INVESTIGATE_PERCENT, WHO_ACUTE_LEUKEMIA_PERCENT, CellLabel
from leukemia_core.counting import summarize_labels as _summarize
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
from leukemia_core.domain import DomainAssessment
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import (
    PreparedImage,
    cell_view,
    mask_from_crop,
    mask_outline,
    png_bytes,
    rgb_from_png,
)
from leukemia_core.pipeline import analyze_field, assess_domain, classify_crops, send_to_review
from leukemia_core.segmentation import segment_wbc
from leukemia_core.single_cell import single_cell_crop
from leukemia_core.store import STATUS_SIGNED, CaseRecord, CellEntry, FieldEntry
from leukemia_core.types import BlastCount

MODE_FIELDS = "fields"
MODE_CELLS = "cells"
MODES = (MODE_FIELDS, MODE_CELLS)
STATUS_UNSAVED = "unsaved"
NO_MODEL = "none (cells found by segmentation, labelled by the reviewer)"
REVIEW_CHOICES = (CellLabel.BLAST, CellLabel.NORMAL, CellLabel.NOT_WBC, CellLabel.EXCLUDED)
"""Labels a reviewer gives with one click (uncertain and border come only from the machine)."""

LEFT_OUT = (CellLabel.EXCLUDED, CellLabel.NOT_WBC, CellLabel.BORDER)

# progress(image_index, n_images, stage, done, total)
SampleProgress = Callable[[int, int, str, int, int], None]


class ReviewError(LeukemiaCoreError, ValueError):
    """A review action cannot be done as asked (signed case, unknown cell, no reviewer name)."""


@dataclass(frozen=True)
class ImageFailure:
    """An image of the batch that could not be analysed, and why (a message for the user)."""

    name: str
    message: str


@dataclass(frozen=True)
class ReviewField:
    """One analysed image of the sample.

    Attributes:
        index: Position in the sample (0-based), the ``field_index`` of its cells.
        name: Field name shown to the user (file name unless renamed).
        image: The analysed RGB pixels (downscaled when the file was very large).
        original_size: ``(width, height)`` of the file.
        scale: Analysed pixels per original pixel.
        notes: Notes for the user (downscaling, no cells found, ...).
        seconds: Wall time per analysis stage.
        digest: Content hash of ``image`` (for caches keyed by pixels).
        domain: Out-of-domain assessment of the field's cells (None without a domain check).
    """

    index: int
    name: str
    image: np.ndarray = field(repr=False)
    original_size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    notes: tuple[str, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    digest: str = ""
    domain: DomainAssessment | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class ReviewCell:
    """One detected cell as the reviewer sees it.

    Attributes:
        field_index: Its field.
        cell_id: Id within the field (label number of the segmentation).
        bbox: ``(x0, y0, x1, y1)`` in analysed-field pixels.
        centroid: ``(x, y)`` in analysed-field pixels.
        blast_probability: Calibrated probability from the model; None without a model.
        model_label: What the machine said (``blast``/``normal``/``uncertain``/``border``).
        crop: The classifier's input crop (cell on black), ``(S, S, 3)`` uint8.
        view: The cell among its neighbours with its outline drawn, for display.
        outline: ``(K, 2)`` outline of the cell in field coordinates.
        domain_score: Distance of the cell to the training cells (about 1 in domain), or None.
    """

    field_index: int
    cell_id: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    blast_probability: float | None
    model_label: CellLabel
    crop: np.ndarray = field(repr=False)
    view: np.ndarray = field(repr=False)
    outline: np.ndarray = field(repr=False)
    domain_score: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.field_index, self.cell_id)


@dataclass(frozen=True)
class LabelChange:
    """One reviewer decision: who changed which cell from what to what, when (UTC ISO 8601)."""

    field_index: int
    cell_id: int
    from_label: str
    to_label: str
    reviewer: str
    at: str


@dataclass(frozen=True)
class CellGroup:
    """Cells of one gallery section, most blast-like first."""

    key: str
    title: str
    cells: tuple[ReviewCell, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=12).hexdigest()


def _as_label(value: object) -> CellLabel:
    try:
        return CellLabel(str(value).strip().lower())
    except ValueError:
        valid = ", ".join(label.value for label in CellLabel)
        raise ReviewError(f"{value!r} is not a cell label; expected one of: {valid}.") from None


@dataclass(eq=False)
class ReviewSession:
    """A sample under review (mutable: labels change as the reviewer works).

    Attributes:
        sample_id: Specimen identifier (no patient names needed).
        mode: :data:`MODE_FIELDS` or :data:`MODE_CELLS`.
        model_name: Model that labelled the cells; None when cells were only segmented.
        model_checksum: SHA-256 of the model's weights.
        calibration: The model's threshold, review band and test-time views
            (``ModelConfig.decision_settings()``).
        fields: Analysed images, in order.
        cells: Every detected cell, in field then cell-id order.
        failures: Images that could not be analysed.
        labels: Current label of each cell, keyed by ``(field_index, cell_id)``.
        changes: Reviewer decisions in order.
        case_id: Id in the case record once saved.
        version: Case version (1 for a new case; reopening adds one).
        status: ``unsaved``, ``open`` or ``signed``.
        signed_by: Who signed (signed cases).
        signed_at: When (UTC).
        overlays: Explanation overlays kept with a stored case, by cell key.
        domain: Out-of-domain assessment of the whole sample (median over all its cells); None
            when the model has no domain reference. When warned, every cell went to review.
        token: Random id of this analysis (for cache keys and widget names).
    """

    sample_id: str
    mode: str
    model_name: str | None
    model_checksum: str = ""
    calibration: dict = field(default_factory=dict)
    fields: tuple[ReviewField, ...] = ()
    cells: tuple[ReviewCell, ...] = ()
    failures: tuple[ImageFailure, ...] = ()
    labels: dict[tuple[int, int], CellLabel] = field(default_factory=dict)
    changes: list[LabelChange] = field(default_factory=list)
    case_id: str | None = None
    version: int = 0
    status: str = STATUS_UNSAVED
    signed_by: str | None = None
    signed_at: str | None = None
    overlays: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    domain: DomainAssessment | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ReviewError(f"mode must be one of {MODES}, got {self.mode!r}.")
        self._by_key = {cell.key: cell for cell in self.cells}
        for cell in self.cells:
            self.labels.setdefault(cell.key, cell.model_label)

    # ---- lookups --------------------------------------------------------------------------
    def cell(self, field_index: int, cell_id: int) -> ReviewCell:
        """The cell with this key.

        Raises:
            ReviewError: No such cell in this sample.
        """
        try:
            return self._by_key[(int(field_index), int(cell_id))]
        except (KeyError, TypeError, ValueError):
            raise ReviewError(
                f"This sample has no cell {cell_id!r} in field {field_index!r}; pick a cell "
                "shown in the gallery."
            ) from None

    def label(self, field_index: int, cell_id: int) -> CellLabel:
        return self.labels[self.cell(field_index, cell_id).key]

    def field_cells(self, field_index: int) -> tuple[ReviewCell, ...]:
        return tuple(c for c in self.cells if c.field_index == field_index)

    @property
    def has_model(self) -> bool:
        return self.model_name is not None

    @property
    def is_saved(self) -> bool:
        return self.case_id is not None

    @property
    def is_signed(self) -> bool:
        return self.status == STATUS_SIGNED

    @property
    def n_uncertain(self) -> int:
        return sum(label == CellLabel.UNCERTAIN for label in self.labels.values())

    @property
    def n_changed(self) -> int:
        """Cells whose current label differs from the machine's."""
        return sum(self.labels[c.key] != c.model_label for c in self.cells)

    @property
    def digest(self) -> str:
        """Content hash of all fields and cell boxes (cache key of the gallery's heatmaps)."""
        parts = [f.digest for f in self.fields] + [f"{c.key}{c.bbox}" for c in self.cells]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()

    # ---- counts ---------------------------------------------------------------------------
    def count(self, field_index: int | None = None) -> BlastCount:
        """Blast count from the current labels, of one field or (None) the whole sample."""
        return _summarize([self.labels[c.key] for c in self._scope(field_index)])

    def model_count(self, field_index: int | None = None) -> BlastCount:
        """Blast count from the machine's labels, before review."""
        return _summarize([c.model_label for c in self._scope(field_index)])

    def field_counts(self) -> tuple[BlastCount, ...]:
        return tuple(self.count(f.index) for f in self.fields)

    def tally(self, *, model: bool = False) -> Counter[str]:
        """Cells per label (current labels, or the machine's with ``model=True``)."""
        return Counter((c.model_label if model else self.labels[c.key]).value for c in self.cells)

    def _scope(self, field_index: int | None) -> tuple[ReviewCell, ...]:
        return self.cells if field_index is None else self.field_cells(field_index)

    def groups(self) -> tuple[CellGroup, ...]:
        """Gallery sections: the uncertain queue first, then blasts, normal cells, left out.

        Within a section cells are sorted by blast probability, highest first.
        """

        def order(cell: ReviewCell) -> tuple[float, int, int]:
            p = -1.0 if cell.blast_probability is None else cell.blast_probability
            return (-p, cell.field_index, cell.cell_id)

        sections = (
            ("uncertain", "Uncertain: review these first", (CellLabel.UNCERTAIN,)),
            ("blast", "Blasts", (CellLabel.BLAST,)),
            ("normal", "Normal white cells", (CellLabel.NORMAL,)),
            ("left_out", "Left out of the count", LEFT_OUT),
        )
        return tuple(
            CellGroup(key, title, tuple(sorted(
                (c for c in self.cells if self.labels[c.key] in labels), key=order)))
            for key, title, labels in sections
        )  # fmt: skip

    # ---- changes --------------------------------------------------------------------------
    def relabel(
        self, field_index: int, cell_id: int, new_label: str, *, reviewer: str
    ) -> LabelChange | None:
        """Set a cell's label; returns the change, or None when the label is already that.

        Raises:
            ReviewError: Unknown cell or label, empty reviewer name, or the case is signed.
        """
        if self.is_signed:
            raise ReviewError(
                f"Case {self.sample_id!r} version {self.version} is signed and frozen; reopen "
                "it as a new version to change labels."
            )
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise ReviewError(
                "Enter your name as reviewer first: every change is recorded with who made it."
            )
        cell = self.cell(field_index, cell_id)
        label = _as_label(new_label)
        old = self.labels[cell.key]
        if old == label:
            return None
        self.labels[cell.key] = label
        change = LabelChange(*cell.key, old.value, label.value, reviewer.strip(), _now())
        self.changes.append(change)
        return change

    # ---- the case record ------------------------------------------------------------------
    def thresholds(self) -> dict:
        """What decided the labels, stored with the case (JSON values only)."""
        return {
            "model_calibration": dict(self.calibration),
            "blast_percent_thresholds": [INVESTIGATE_PERCENT, WHO_ACUTE_LEUKEMIA_PERCENT],
            "mode": self.mode,
        }

    def case_entries(
        self, overlays: Mapping[tuple[int, int], np.ndarray] | None = None
    ) -> tuple[list[FieldEntry], list[CellEntry]]:
        """Fields and cells for :meth:`leukemia_core.store.CaseStore.create_case`.

        Args:
            overlays: Explanation overlay per cell key (RGB uint8), stored with each cell.
        """
        overlays = overlays or {}
        fields = [FieldEntry(f.name, f.width, f.height, png_bytes(f.image, 1), f.domain)
                  for f in self.fields]  # fmt: skip
        cells = [
            CellEntry(
                c.field_index, c.cell_id, c.bbox, c.centroid, c.blast_probability,
                c.model_label.value, png_bytes(c.crop),
                png_bytes(overlays[c.key]) if c.key in overlays else None, c.domain_score,
            )
            for c in self.cells
        ]  # fmt: skip
        return fields, cells

    def apply_record(self, record: CaseRecord) -> None:
        """Take the case id, version, status and labels from the stored record (the truth).

        Raises:
            ReviewError: The record holds other cells than this session.
        """
        keys = {(c.field_index, c.cell_id) for c in record.cells}
        if keys != set(self._by_key):
            raise ReviewError(
                f"Case {record.case_id} holds other cells than the sample on screen; open it "
                "from the case list instead."
            )
        self.case_id, self.version, self.status = record.case_id, record.version, record.status
        self.sample_id = record.sample_id
        self.signed_by, self.signed_at = record.signed_by, record.signed_at
        self.labels = {(c.field_index, c.cell_id): CellLabel(c.label) for c in record.cells}
        self.changes = _changes(record)

    @classmethod
    def from_record(cls, record: CaseRecord) -> ReviewSession:
        """Rebuild a review from a stored case (images decoded from its PNGs)."""
        fields = []
        for f in record.fields:
            image = (
                rgb_from_png(f.image_png)
                if f.image_png
                else np.full((f.height, f.width, 3), 235, np.uint8)
            )
            fields.append(ReviewField(f.field_index, f.name, image, (f.width, f.height),
                                      digest=_digest(image), domain=f.domain))  # fmt: skip
        images = {f.index: f.image for f in fields}
        cells, overlays = [], {}
        for c in record.cells:
            crop = (
                rgb_from_png(c.crop_png)
                if c.crop_png
                else np.zeros((DEFAULT_CROP_SIZE, DEFAULT_CROP_SIZE, 3), np.uint8)
            )
            mask = mask_from_crop(crop, c.bbox)
            outline = mask_outline(mask, c.bbox[:2])
            view = cell_view(images[c.field_index], c.bbox, outline)
            cells.append(ReviewCell(c.field_index, c.cell_id, c.bbox, c.centroid,
                                    c.blast_probability, CellLabel(c.model_label), crop, view,
                                    outline, c.domain_score))  # fmt: skip
            if c.overlay_png:
                overlays[(c.field_index, c.cell_id)] = rgb_from_png(c.overlay_png)
        thresholds = record.thresholds
        session = cls(
            sample_id=record.sample_id,
            mode=thresholds.get("mode", MODE_FIELDS),
            model_name=None if record.model_name == NO_MODEL else record.model_name,
            model_checksum=record.model_checksum,
            calibration=dict(thresholds.get("model_calibration", {})),
            fields=tuple(fields),
            cells=tuple(cells),
            overlays=overlays,
            domain=record.domain,
        )
        session.apply_record(record)
        return session


def _changes(record: CaseRecord) -> list[LabelChange]:
    return [
        LabelChange(
            a.field_index, a.cell_id, a.from_label or "", a.to_label or "", a.reviewer, a.at
        )
        for a in record.audit
        if a.action == "relabel" and a.field_index is not None and a.cell_id is not None
    ]


# ---- analysis -------------------------------------------------------------------------------
def analyze_sample(
    images: Sequence[PreparedImage],
    classifier: Classifier | None,
    *,
    sample_id: str,
    mode: str = MODE_FIELDS,
    failures: Sequence[ImageFailure] = (),
    progress: SampleProgress | None = None,
) -> ReviewSession:
    """Analyse the images of one sample into a :class:`ReviewSession`.

    An image the core rejects (a :class:`LeukemiaCoreError`) becomes an :class:`ImageFailure`
    and the rest of the batch goes on.

    Args:
        images: Read and prepared images (see :func:`leukemia_core.imaging.read_for_analysis`).
        classifier: The model; None finds and outlines cells only (all start ``uncertain``).
        sample_id: Specimen identifier.
        mode: :data:`MODE_FIELDS` (smear fields, segmented) or :data:`MODE_CELLS` (one cell per
            image).
        failures: Images that already failed to read, kept in the result.
        progress: ``progress(image_index, n_images, stage, done, total)``.
    """
    if mode not in MODES:
        raise ReviewError(f"mode must be one of {MODES}, got {mode!r}.")
    run = _analyze_cells if mode == MODE_CELLS else _analyze_fields
    fields, cells, failed = run(images, classifier, progress)
    domain = None
    if classifier is not None:
        domain = assess_domain(classifier, [c.domain_score for c in cells]
                               if any(c.domain_score is not None for c in cells) else None)  # fmt: skip
    if domain is not None and domain.warned:  # the whole sample differs: every cell to review
        cells = [replace(c, model_label=send_to_review(c.model_label)) for c in cells]
    model = classifier.model if classifier is not None else None
    return ReviewSession(
        sample_id=sample_id,
        mode=mode,
        model_name=model.name if model else None,
        model_checksum=model.checksum if model else "",
        calibration=model.config.decision_settings() if model else {},
        fields=tuple(fields),
        cells=tuple(cells),
        failures=(*failures, *failed),
        domain=domain,
    )


def _analyze_fields(images, classifier, progress):
    fields, cells, failures = [], [], []
    for i, image in enumerate(images):

        def report(stage: str, done: int, total: int, i: int = i) -> None:
            if progress:
                progress(i, len(images), stage, done, total)

        try:
            if classifier is not None:
                analysis = analyze_field(image.rgb, classifier, name=image.name, progress=report)
                found = [(a.cell, a.blast_probability, a.model_label, a.domain_score)
                         for a in analysis.cells]  # fmt: skip
                notes, seconds, domain = analysis.notes, analysis.seconds, analysis.domain
            else:
                start = time.perf_counter()
                report("segmenting", 0, 1)
                segmentation = segment_wbc(image.rgb)
                report("cropping", 0, 1)
                found = [
                    (c, None, CellLabel.BORDER if c.touches_border else CellLabel.UNCERTAIN, None)
                    for c in crop_cells(image.rgb, segmentation)
                ]
                notes, seconds = segmentation.notes, {"segmenting": time.perf_counter() - start}
                domain = None
        except LeukemiaCoreError as error:
            failures.append(ImageFailure(image.name, str(error)))
            continue
        index = len(fields)
        fields.append(ReviewField(index, image.name, image.rgb, image.original_size, image.scale,
                                  (*image.notes, *notes), seconds, _digest(image.rgb), domain))  # fmt: skip
        for cell, probability, label, score in found:
            x0, y0 = cell.bbox[:2]
            outline = mask_outline(cell.cell_mask, (x0, y0))
            cells.append(ReviewCell(
                index, cell.cell_id, tuple(int(v) for v in cell.bbox),
                (float(cell.centroid[0]), float(cell.centroid[1])),
                None if probability is None else float(probability), CellLabel(label), cell.crop,
                cell_view(image.rgb, cell.bbox, outline), outline, score,
            ))  # fmt: skip
        report("counting", 1, 1)
    return fields, cells, failures


def _analyze_cells(images, classifier, progress):
    crops, kept, failures = [], [], []
    for i, image in enumerate(images):
        if progress:
            progress(i, len(images), "cropping", i, len(images))
        try:
            crops.append(single_cell_crop(image.rgb))
            kept.append(image)
        except LeukemiaCoreError as error:
            failures.append(ImageFailure(image.name, str(error)))
    predictions, scores = [None] * len(crops), [None] * len(crops)
    if classifier is not None and crops:

        def report(done: int, total: int) -> None:
            if progress:
                progress(len(images) - 1, len(images), "classifying", done, total)

        calls = classify_crops(classifier, [c.crop for c in crops], report)
        predictions = calls.predictions
        if calls.domain_scores is not None:
            scores = [float(s) for s in calls.domain_scores]
    fields, cells = [], []
    for index, (image, crop, prediction, score) in enumerate(
        zip(kept, crops, predictions, scores, strict=True)
    ):
        ys, xs = np.nonzero(crop.cell_mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        outline = mask_outline(crop.cell_mask[bbox[1] : bbox[3], bbox[0] : bbox[2]], bbox[:2])
        probability = None if prediction is None else prediction.blast_probability
        label = CellLabel.UNCERTAIN if prediction is None else prediction.label
        # One cell per image: no field assessment (a median of one cell is too noisy for the
        # limit); the sample's, over all its cells, decides (analyze_sample).
        fields.append(ReviewField(index, image.name, image.rgb, image.original_size, image.scale,
                                  (*image.notes, *crop.notes), {}, _digest(image.rgb)))  # fmt: skip
        cells.append(ReviewCell(index, 1, bbox, (float(xs.mean()), float(ys.mean())), probability,
                                label, crop.crop, cell_view(image.rgb, bbox, outline, context=1.1),
                                outline, score))  # fmt: skip
    if progress and images:
        progress(len(images) - 1, len(images), "counting", 1, 1)
    return fields, cells, failures
