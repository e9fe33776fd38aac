"""The whole analysis in named stages: segment -> crop -> classify -> count.

When the model folder has a domain reference, classifying also scores how far each cell is from
the training data (:mod:`leukemia_core.domain`, same forward pass); a field whose median cell
score is above the limit is warned and every one of its cells goes to review (``uncertain``).

Long work reports progress through a callback ``progress(stage, done, total)``; the core never
sees a UI object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from leukemia_core.calibration import blast_probability
from leukemia_core.classify import CellPrediction, Classifier, label_probability
from leukemia_core.counting import CellLabel, summarize_labels
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
from leukemia_core.domain import DomainAssessment, stain_statistics
from leukemia_core.segmentation import SegmentationParams, segment_wbc
from leukemia_core.single_cell import single_cell_crop
from leukemia_core.types import BlastCount, Cell, Segmentation

Progress = Callable[[str, int, int], None]
STAGES = ("segmenting", "cropping", "classifying", "counting")


@dataclass(frozen=True)
class AnalyzedCell:
    """A detected cell with the model's call.

    Attributes:
        cell: Geometry, masks and crops.
        blast_probability: Calibrated probability of a blast (also given for border cells).
        model_label: ``blast``/``normal``/``uncertain``, or ``border`` for cells cut by the edge
            (shown, never counted).
        domain_score: Distance to the training cells (about 1 in domain); None when the model
            has no domain reference.
    """

    cell: Cell
    blast_probability: float
    model_label: CellLabel
    domain_score: float | None = None

    @property
    def cell_id(self) -> int:
        return self.cell.cell_id


@dataclass(frozen=True)
class FieldAnalysis:
    """Everything found in one image.

    Attributes:
        name: File or field name.
        image: The analysed RGB image.
        segmentation: Label images (None in single-cell mode).
        cells: Analysed cells in label order.
        count: Blast count of this image from the model's labels.
        notes: Warnings for the user (scale, no cells, ...).
        seconds: Wall time per stage.
        domain: Median domain score of the cells against the model's limit; None when the
            model has no domain reference. When warned, every cell was sent to review.
    """

    name: str
    image: np.ndarray = field(repr=False)
    segmentation: Segmentation | None
    cells: tuple[AnalyzedCell, ...]
    count: BlastCount
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    domain: DomainAssessment | None = None


@dataclass(frozen=True)
class CropCalls:
    """The model's calls on a list of crops.

    Attributes:
        predictions: Probability and label per crop.
        domain_scores: ``(N,)`` domain score per crop; None without a domain reference.
    """

    predictions: list[CellPrediction]
    domain_scores: np.ndarray | None


def classify_crops(
    classifier: Classifier, crops: Sequence[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
) -> CropCalls:  # fmt: skip
    """Label crops and, when the model has a domain reference, score their domain (one pass)."""
    outputs = classifier.outputs(crops, progress)
    model = classifier.model
    probabilities = blast_probability(outputs.logits, model.config.calibration.temperature)
    predictions = [label_probability(p, model) for p in probabilities]
    scores = None
    if model.domain is not None:
        scores = model.domain.cell_scores(outputs.features, stain_statistics(crops))
    return CropCalls(predictions, scores)


def assess_domain(
    classifier: Classifier, scores: Sequence[float | None] | np.ndarray | None
) -> DomainAssessment | None:
    """The median of the cells' domain scores against the model's limit (None without one)."""
    reference = classifier.model.domain
    if reference is None or scores is None:
        return None
    return reference.assess([s for s in scores if s is not None])


def send_to_review(label: CellLabel) -> CellLabel:
    """The label a cell of a warned field gets: ``uncertain``, except border cells (never counted)."""
    return label if label == CellLabel.BORDER else CellLabel.UNCERTAIN


def _labels(cells: Iterable[AnalyzedCell]) -> list[str]:
    return [c.model_label for c in cells]


def analyze_field(
    image: np.ndarray,
    classifier: Classifier,
    *,
    name: str = "",
    params: SegmentationParams | None = None,
    crop_size: int = DEFAULT_CROP_SIZE,
    progress: Progress | None = None,
) -> FieldAnalysis:
    """Segment a smear field, classify every white cell and count blasts.

    Args:
        image: ``(H, W, 3)`` RGB uint8 field.
        classifier: A loaded model.
        name: Shown in results and exports.
        params: Segmentation tunables.
        crop_size: Side of the stored classifier-domain crops.
        progress: ``progress(stage, done, total)``.
    """
    seconds = {}
    start = time.perf_counter()
    _report(progress, "segmenting", 0, 1)
    segmentation = segment_wbc(image, params)
    seconds["segmenting"] = time.perf_counter() - start
    _report(progress, "cropping", 0, 1)
    start = time.perf_counter()
    cells = crop_cells(image, segmentation, size=crop_size)
    seconds["cropping"] = time.perf_counter() - start
    start = time.perf_counter()
    calls = classify_crops(
        classifier, [c.crop for c in cells], lambda d, t: _report(progress, "classifying", d, t)
    )
    scores = [None] * len(cells) if calls.domain_scores is None else calls.domain_scores
    domain = assess_domain(classifier, calls.domain_scores)
    seconds["classifying"] = time.perf_counter() - start
    analyzed = []
    for c, p, score in zip(cells, calls.predictions, scores, strict=True):
        label = CellLabel.BORDER if c.touches_border else p.label
        label = send_to_review(label) if domain is not None and domain.warned else label
        analyzed.append(AnalyzedCell(c, p.blast_probability, label,
                                     None if score is None else float(score)))  # fmt: skip
    _report(progress, "counting", 1, 1)
    return FieldAnalysis(
        name, image, segmentation, tuple(analyzed), summarize_labels(_labels(analyzed)),
        segmentation.notes, seconds, domain,
    )  # fmt: skip


def analyze_single_cells(
    images: Sequence[np.ndarray],
    classifier: Classifier,
    *,
    names: Sequence[str] | None = None,
    params: SegmentationParams | None = None,
    progress: Progress | None = None,
) -> list[FieldAnalysis]:
    """Classify single-cell images (one cell each); each becomes a one-cell analysis.

    Each cell gets its domain score, but no image its own assessment (the median of one cell
    is too noisy for a limit fitted on fields); :func:`review_warned_sample` judges the set.
    """
    names = list(names or [f"cell {i + 1}" for i in range(len(images))])
    crops = []
    for i, image in enumerate(images):
        crops.append(single_cell_crop(image, params=params))
        _report(progress, "cropping", i + 1, len(images))
    calls = classify_crops(
        classifier, [c.crop for c in crops], lambda d, t: _report(progress, "classifying", d, t)
    )
    scores = [None] * len(crops) if calls.domain_scores is None else calls.domain_scores
    out = []
    for image, name, crop, prediction, score in zip(
        images, names, crops, calls.predictions, scores, strict=True
    ):
        ys, xs = np.nonzero(crop.cell_mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        mask = crop.cell_mask[box[1] : box[3], box[0] : box[2]]
        cell = Cell(1, box, (float(xs.mean()), float(ys.mean())), int(mask.sum()), 0, False,
                    mask, np.zeros_like(mask), crop.crop, crop.crop)  # fmt: skip
        # No assessment per one-cell image: review_warned_sample judges the set of them.
        analyzed = (AnalyzedCell(cell, prediction.blast_probability, prediction.label,
                                 None if score is None else float(score)),)  # fmt: skip
        out.append(FieldAnalysis(name, image, None, analyzed,
                                 summarize_labels(_labels(analyzed)), crop.notes))  # fmt: skip
    return out


def sample_count(analyses: Iterable[FieldAnalysis]) -> BlastCount:
    """Blast count over all images of one sample (model labels)."""
    return summarize_labels([label for a in analyses for label in _labels(a.cells)])


def review_warned_sample(
    analyses: Sequence[FieldAnalysis], classifier: Classifier
) -> tuple[list[FieldAnalysis], DomainAssessment | None]:
    """The sample's domain assessment (median over all its cells); when warned, every cell of
    every field goes to review.

    Returns:
        The analyses (relabelled when the sample is warned) and the sample assessment (None
        without a domain reference).
    """
    scores = [c.domain_score for a in analyses for c in a.cells]
    domain = assess_domain(classifier, scores if any(s is not None for s in scores) else None)
    if domain is None or not domain.warned:
        return list(analyses), domain
    out = []
    for a in analyses:
        cells = tuple(replace(c, model_label=send_to_review(c.model_label)) for c in a.cells)
        out.append(replace(a, cells=cells, count=summarize_labels(_labels(cells))))
    return out, domain


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress:
        progress(stage, done, total)
