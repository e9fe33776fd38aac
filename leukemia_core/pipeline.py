"""The one analysis entry point: images -> cells -> labels -> counts (:func:`analyze`).

Fields are segmented (:func:`leukemia_core.segmentation.segment_wbc`) and every white cell is
cropped (:func:`leukemia_core.cropping.crop_cells`); single-cell images give one cell each. A
labeller (:mod:`leukemia_core.labellers`) then labels the crops: the model, or nobody when no
model is loaded (every cell starts ``uncertain`` for the reviewer). When the model has a domain
reference, a field whose median cell score is above the limit is warned and its cells go to
review, and so does every cell of a sample whose median is above it.

Long work reports progress through ``progress(image_index, n_images, stage, done, total)``; the
core never sees a UI object.

Example:
    >>> from leukemia_core.imaging import prepare_field
    >>> from leukemia_core.synthetic import make_demo_smear
    >>> analysis = analyze([prepare_field(make_demo_smear().image, "demo.png")], None)
    >>> analysis.count().n_counted, len(analysis.cells) > 0
    (0, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from leukemia_core.classify import Classifier
from leukemia_core.counting import count_cells
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
from leukemia_core.domain import DomainAssessment
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.fingerprints import field_signature, same_field
from leukemia_core.imaging import PreparedImage, mask_outline
from leukemia_core.jpeg_check import is_damaged
from leukemia_core.labellers import NO_MODEL, CropCalls, Labeller, labeller_for, send_to_review
from leukemia_core.pressed import clump_note, possible_clumps
from leukemia_core.quality import NO_RED_CELLS, check_field
from leukemia_core.segmentation import NO_RED_CELLS_NOTE, SegmentationParams, segment_wbc
from leukemia_core.single_cell import single_cell_crop
from leukemia_core.types import MODE_CELLS, MODE_FIELDS, MODES, BlastCount, Cell, CellLabel, Field

# progress(image_index, n_images, stage, done, total)
Progress = Callable[[int, int, str, int, int], None]


class AnalysisError(LeukemiaCoreError, ValueError):
    """The analysis cannot run as asked (unknown mode, ...)."""


@dataclass(frozen=True)
class ImageFailure:
    """An image of the batch that could not be analysed, and why (a message for the user)."""

    name: str
    message: str


@dataclass(frozen=True)
class Analysis:
    """Everything found in the images of one sample.

    Attributes:
        mode: :data:`MODE_FIELDS` (smear fields, segmented) or :data:`MODE_CELLS` (one cell per
            image).
        fields: Analysed images, in order.
        cells: Every detected cell, in field then cell-id order (labels are the model's).
        failures: Images that could not be analysed.
        domain: Out-of-domain assessment of the whole sample (median over all its cells); None
            without a domain reference. When warned, every cell went to review.
        model_name: Model that labelled the cells; :data:`NO_MODEL` when none did.
        model_checksum: SHA-256 of the model's weights ('' without a model).
        calibration: The model's threshold, review band and test-time views.
        model_description: The model in words (name, network, dates); '' without a model.
    """

    mode: str
    fields: tuple[Field, ...]
    cells: tuple[Cell, ...]
    failures: tuple[ImageFailure, ...] = ()
    domain: DomainAssessment | None = None
    model_name: str = NO_MODEL
    model_checksum: str = ""
    calibration: dict = field(default_factory=dict)
    model_description: str = ""

    @property
    def has_model(self) -> bool:
        return self.model_name != NO_MODEL

    def field_cells(self, field_index: int) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.field_index == field_index)

    def count(self, field_index: int | None = None) -> BlastCount:
        """Blast count of one field or (None) the whole sample, from the cells' labels; its
        reading says "With N cells still to review" while any awaits a person, as the app's."""
        cells = self.cells if field_index is None else self.field_cells(field_index)
        return count_cells(cells, single_cells=self.mode == MODE_CELLS)


def analyze(
    images: Sequence[PreparedImage | np.ndarray],
    classifier: Classifier | Labeller | None,
    *,
    mode: str = MODE_FIELDS,
    names: Sequence[str] | None = None,
    failures: Sequence[ImageFailure] = (),
    params: SegmentationParams | None = None,
    crop_size: int = DEFAULT_CROP_SIZE,
    keep_segmentation: bool = False,
    progress: Progress | None = None,
    sample_check: bool = True,
) -> Analysis:
    """Analyse the images of one sample.

    An image the core rejects (a :class:`LeukemiaCoreError`) becomes an :class:`ImageFailure`
    and the rest of the batch goes on.

    Args:
        images: Prepared images (see :func:`leukemia_core.imaging.read_for_analysis`) or RGB
            uint8 arrays.
        classifier: The model (or a labeller); None finds and outlines cells only.
        mode: :data:`MODE_FIELDS` or :data:`MODE_CELLS`.
        names: Names of array images (default ``image 1``, ...).
        failures: Images that already failed to read, kept in the result.
        params: Segmentation tunables.
        crop_size: Side of the classifier-domain crops.
        keep_segmentation: Keep each field's label images (for evaluation against experts).
        progress: ``progress(image_index, n_images, stage, done, total)``.
        sample_check: Assess the domain of all the images' cells together and send every cell
            to review when they differ (False when the caller assesses a larger set itself, as
            the batch engines do image by image).
    """
    if mode not in MODES:
        raise AnalysisError(f"mode must be one of {MODES}, got {mode!r}.")
    if names is not None and len(names) != len(images):
        raise AnalysisError(
            f"{len(names)} names for {len(images)} images: give one name per image."
        )
    labeller = labeller_for(classifier)
    prepared, repeated = _without_repeats([_prepared(im, i, names) for i, im in enumerate(images)],
                                          exact=mode == MODE_CELLS)  # fmt: skip
    run = _cells_mode if mode == MODE_CELLS else _fields_mode
    fields, cells, failed = run(prepared, labeller, params, crop_size, keep_segmentation, progress)
    failed = [*repeated, *failed]
    domain = labeller.assess([c.domain_score for c in cells]) if sample_check else None
    if domain is not None and domain.warned:  # the whole sample differs: every cell to review
        cells = [_to_review(c) for c in cells]
    return Analysis(mode, tuple(fields), tuple(cells), (*failures, *failed), domain,
                    labeller.name, labeller.checksum, labeller.decision_settings(),
                    labeller.description)  # fmt: skip


def _prepared(image: PreparedImage | np.ndarray, index: int, names) -> PreparedImage:
    if isinstance(image, PreparedImage):
        return image
    name = names[index] if names is not None else f"image {index + 1}"
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise AnalysisError(
            f"{name} is a {type(image).__name__}, not an image array: read files with "
            "leukemia_core.imaging.read_for_analysis(path) and pass what it returns."
        )
    return PreparedImage(image, name, (int(image.shape[1]), int(image.shape[0])))


def _without_repeats(images: list[PreparedImage], *, exact: bool) -> tuple[list, list]:
    """The images, each field once; a repeat (the same picture, whatever its name, also saved
    again at another quality or size; only the very same picture when ``exact``) is a
    failure, so that no cell is counted twice."""
    if len(images) < 2:  # nothing to compare: no view of the usual one-field sample
        return images, []
    kept, failures, seen = [], [], []
    for image in images:
        signature = field_signature(image.rgb)
        first = next((name for name, other in seen
                      if same_field(signature, other, exact=exact)), None)  # fmt: skip
        if first is not None:
            what = ("was given twice" if first == image.name else
                    f"shows the same field as '{first}' (uploaded twice, or saved again at "
                    "another quality or size?)")  # fmt: skip
            failures.append(ImageFailure(image.name, (
                f"'{image.name}' {what}: it was analysed once, so its cells are not counted "
                "twice. Different fields that look alike go in separate samples.")))  # fmt: skip
            continue
        seen.append((image.name, signature))
        kept.append(image)
    return kept, failures


def label_cells(
    found: Sequence[Cell], labeller: Labeller, field_index: int, progress=None
) -> list[Cell]:
    """The model's call (or none) on each found cell, placed in field ``field_index``."""
    calls = labeller.label([c.crop for c in found], progress)
    return [_labelled(c, calls, k, field_index) for k, c in enumerate(found)]


def _labelled(cell: Cell, calls: CropCalls, i: int, field_index: int) -> Cell:
    prediction = calls.predictions[i]
    score = None if calls.domain_scores is None else float(calls.domain_scores[i])
    label = cell.model_label
    if prediction is not None and label != CellLabel.BORDER:
        label = prediction.label
    probability = None if prediction is None else prediction.blast_probability
    return replace(cell, field_index=field_index, blast_probability=probability,
                   model_label=label, label=label, domain_score=score)  # fmt: skip


def _to_review(cell: Cell) -> Cell:
    label = send_to_review(cell.model_label)
    return replace(cell, model_label=label, label=label)


def _fields_mode(images, labeller, params, crop_size, keep_segmentation, progress):
    fields, cells, failures = [], [], []
    for i, image in enumerate(images):

        def report(stage: str, done: int, total: int, i: int = i) -> None:
            if progress:
                progress(i, len(images), stage, done, total)

        seconds = {}
        try:
            start = time.perf_counter()
            report("segmenting", 0, 1)
            segmentation = segment_wbc(image.rgb, params)
            quality = check_field(image.rgb, segmentation)
            seconds["segmenting"] = time.perf_counter() - start
            report("cropping", 0, 1)
            start = time.perf_counter()
            found = crop_cells(image.rgb, segmentation, size=crop_size)
            seconds["cropping"] = time.perf_counter() - start
            start = time.perf_counter()
            labelled = label_cells(found, labeller, len(fields),
                                   lambda d, t: report("classifying", d, t))  # fmt: skip
            seconds["classifying"] = time.perf_counter() - start
        except LeukemiaCoreError as error:
            failures.append(ImageFailure(image.name, str(error)))
            continue
        index = len(fields)
        notes = (*image.notes, *segmentation.notes)
        if any(w.check == NO_RED_CELLS for w in quality):  # said once, by the quality warning
            notes = tuple(n for n in notes if not n.startswith(NO_RED_CELLS_NOTE))
        clumps = {c.cell_id for c in possible_clumps(labelled)}  # a reviewer decides on a split
        if clumps:
            labelled = [_to_review(c) if c.cell_id in clumps else c for c in labelled]
            notes += (clump_note(clumps),)
        domain = labeller.assess([c.domain_score for c in labelled])
        # Cells of a field that fails a quality check, was decoded damaged, or looks unlike the
        # training data, are not trusted to the model's confident calls: a reviewer sees each.
        if quality or is_damaged(image.notes) or (domain is not None and domain.warned):
            labelled = [_to_review(c) for c in labelled]
        cells += labelled
        fields.append(Field(index, image.name, image.rgb, image.original_size, image.scale, notes,
                            seconds, domain, segmentation if keep_segmentation else None,
                            quality))  # fmt: skip
        report("counting", 1, 1)
    return fields, cells, failures


def _cells_mode(images, labeller, params, crop_size, keep_segmentation, progress):
    crops, kept, failures = [], [], []
    for i, image in enumerate(images):
        if progress:
            progress(i, len(images), "cropping", i, len(images))
        try:
            crops.append(single_cell_crop(image.rgb, size=crop_size, params=params))
            kept.append(image)
        except LeukemiaCoreError as error:
            failures.append(ImageFailure(image.name, str(error)))

    def report(done: int, total: int) -> None:
        if progress:
            progress(len(images) - 1, len(images), "classifying", done, total)

    calls = labeller.label([c.crop for c in crops], report)
    fields, cells = [], []
    for index, (image, crop) in enumerate(zip(kept, crops, strict=True)):
        ys, xs = np.nonzero(crop.cell_mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        cell = Cell(1, bbox, (float(xs.mean()), float(ys.mean())), mask_outline(crop.cell_mask),
                    crop.crop, cell_area_px=len(xs))  # fmt: skip
        cell = _labelled(cell, calls, index, index)
        # No cell found (the model saw the whole picture), or a field given as a cell: a
        # person decides.
        cells.append(_to_review(cell) if crop.to_review or is_damaged(image.notes) else cell)
        # One cell per image: no field assessment (a median of one cell is too noisy for the
        # limit); the sample's, over all its cells, decides (analyze).
        fields.append(Field(index, image.name, image.rgb, image.original_size, image.scale,
                            (*image.notes, *crop.notes)))  # fmt: skip
    if progress and images:
        progress(len(images) - 1, len(images), "counting", 1, 1)
    return fields, cells, failures
