"""Who labels the cells of an analysis: the model, or nobody yet (the reviewer will).

The pipeline asks a labeller for the calls on a list of crops and for the domain assessment of a
set of scores; it never branches on whether a model is loaded. :func:`labeller_for` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from leukemia_core.calibration import blast_probability
from leukemia_core.classify import CellPrediction, Classifier, label_probability
from leukemia_core.domain import DomainAssessment, stain_statistics
from leukemia_core.types import CellLabel

NO_MODEL = "none (cells found by segmentation, labelled by the reviewer)"
"""The model name stored with cases whose cells no model labelled."""

CropProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class CropCalls:
    """The calls on a list of crops.

    Attributes:
        predictions: Probability and label per crop; None per crop when no model labelled it.
        domain_scores: ``(N,)`` domain score per crop; None without a domain reference.
    """

    predictions: list[CellPrediction | None]
    domain_scores: np.ndarray | None


class Labeller(Protocol):
    """What the pipeline needs from whoever labels cells."""

    name: str
    checksum: str
    runtime: str  # what runs the network: "keras", "onnx", or "none"
    input_size: int | None  # the model's input side, which sets how far a large field may shrink
    description: str  # the model in words for records and reports ("" without a model)

    def decision_settings(self) -> dict: ...

    def label(
        self, crops: Sequence[np.ndarray], progress: CropProgress | None = None
    ) -> CropCalls: ...

    def assess(self, scores: Sequence[float | None]) -> DomainAssessment | None: ...


class ModelLabeller:
    """Labels crops with a loaded model and scores their domain in the same forward pass."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.name = classifier.model.name
        self.checksum = classifier.model.checksum
        self.runtime = classifier.runtime
        self.input_size = classifier.input_size
        self.description = classifier.model.config.description

    def decision_settings(self) -> dict:
        return self.classifier.model.config.decision_settings()

    def label(self, crops: Sequence[np.ndarray], progress: CropProgress | None = None) -> CropCalls:
        model = self.classifier.model
        outputs = self.classifier.outputs(crops, progress)
        probabilities = blast_probability(outputs.logits, model.config.calibration.temperature)
        predictions: list[CellPrediction | None] = [
            label_probability(p, model) for p in probabilities
        ]
        scores = None
        if model.domain is not None and len(crops):
            scores = model.domain.cell_scores(outputs.features, stain_statistics(crops))
        return CropCalls(predictions, scores)

    def assess(self, scores: Sequence[float | None]) -> DomainAssessment | None:
        """The median of the scores against the model's limit (None without a reference)."""
        reference = self.classifier.model.domain
        present = [s for s in scores if s is not None]
        if reference is None or not present:
            return None
        return reference.assess(present)


class ReviewerLabeller:
    """No model: every cell starts ``uncertain`` and the reviewer labels each one."""

    name = NO_MODEL
    checksum = ""
    runtime = "none"
    input_size = None
    description = ""

    def decision_settings(self) -> dict:
        return {}

    def label(self, crops: Sequence[np.ndarray], progress: CropProgress | None = None) -> CropCalls:
        if progress and len(crops):
            progress(len(crops), len(crops))
        return CropCalls([None] * len(crops), None)

    def assess(self, scores: Sequence[float | None]) -> DomainAssessment | None:
        return None


def labeller_for(classifier: Classifier | Labeller | None) -> Labeller:
    """The labeller of a classifier; :class:`ReviewerLabeller` for None; a labeller as it is."""
    if classifier is None:
        return ReviewerLabeller()
    if isinstance(classifier, Classifier):
        return ModelLabeller(classifier)
    return classifier


def send_to_review(label: CellLabel) -> CellLabel:
    """The label a cell of a warned field gets: ``uncertain``, except border cells (never counted)."""
    return label if label == CellLabel.BORDER else CellLabel.UNCERTAIN
