"""The whole analysis in named stages: segment -> crop -> classify -> count.

Long work reports progress through a callback ``progress(stage, done, total)``; the core never
sees a UI object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel, summarize_labels
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
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
    """

    cell: Cell
    blast_probability: float
    model_label: CellLabel

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
    """

    name: str
    image: np.ndarray = field(repr=False)
    segmentation: Segmentation | None
    cells: tuple[AnalyzedCell, ...]
    count: BlastCount
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)


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
    predictions = classifier.predict(
        [c.crop for c in cells], lambda d, t: _report(progress, "classifying", d, t)
    )
    seconds["classifying"] = time.perf_counter() - start
    analyzed = tuple(
        AnalyzedCell(c, p.blast_probability, CellLabel.BORDER if c.touches_border else p.label)
        for c, p in zip(cells, predictions, strict=True)
    )
    _report(progress, "counting", 1, 1)
    return FieldAnalysis(
        name, image, segmentation, analyzed, summarize_labels(_labels(analyzed)),
        segmentation.notes, seconds,
    )  # fmt: skip


def analyze_single_cells(
    images: Sequence[np.ndarray],
    classifier: Classifier,
    *,
    names: Sequence[str] | None = None,
    params: SegmentationParams | None = None,
    progress: Progress | None = None,
) -> list[FieldAnalysis]:
    """Classify single-cell images (one cell each); each becomes a one-cell analysis."""
    names = list(names or [f"cell {i + 1}" for i in range(len(images))])
    crops = []
    for i, image in enumerate(images):
        crops.append(single_cell_crop(image, params=params))
        _report(progress, "cropping", i + 1, len(images))
    predictions = classifier.predict(
        [c.crop for c in crops], lambda d, t: _report(progress, "classifying", d, t)
    )
    out = []
    for image, name, crop, prediction in zip(images, names, crops, predictions, strict=True):
        ys, xs = np.nonzero(crop.cell_mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        mask = crop.cell_mask[box[1] : box[3], box[0] : box[2]]
        cell = Cell(1, box, (float(xs.mean()), float(ys.mean())), int(mask.sum()), 0, False,
                    mask, np.zeros_like(mask), crop.crop, crop.crop)  # fmt: skip
        analyzed = (AnalyzedCell(cell, prediction.blast_probability, prediction.label),)
        out.append(FieldAnalysis(name, image, None, analyzed,
                                 summarize_labels(_labels(analyzed)), crop.notes))  # fmt: skip
    return out


def sample_count(analyses: Iterable[FieldAnalysis]) -> BlastCount:
    """Blast count over all images of one sample (model labels)."""
    return summarize_labels([label for a in analyses for label in _labels(a.cells)])


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress:
        progress(stage, done, total)
