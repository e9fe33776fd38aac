"""The case record's data: what goes into :class:`~leukemia_core.store.CaseStore` and comes out.

Plain frozen dataclasses, no database code; :mod:`leukemia_core.store` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leukemia_core.counting import summarize_labels
from leukemia_core.domain import DomainAssessment
from leukemia_core.types import BlastCount

STATUS_OPEN = "open"
STATUS_SIGNED = "signed"


@dataclass(frozen=True)
class FieldEntry:
    """One field of view of a sample, as handed to :meth:`CaseStore.create_case`.

    Attributes:
        name: Display name, e.g. the uploaded file name.
        width: Width in pixels.
        height: Height in pixels.
        image_png: The field as PNG bytes, or None to keep only its cells.
        domain: The field's out-of-domain assessment, or None when none was made.
    """

    name: str
    width: int
    height: int
    image_png: bytes | None = None
    domain: DomainAssessment | None = None


@dataclass(frozen=True)
class CellEntry:
    """One detected cell with the model's label, as handed to :meth:`CaseStore.create_case`.

    Attributes:
        field_index: Position of its field in the ``fields`` list (0-based).
        cell_id: Id of the cell within its field (unique per field).
        bbox: ``(x0, y0, x1, y1)`` in field pixels, ``x1``/``y1`` exclusive.
        centroid: ``(x, y)`` in field pixels.
        blast_probability: Calibrated blast probability, or None when not classified.
        model_label: A :class:`~leukemia_core.counting.CellLabel` value set by the model.
        crop_png: The cell crop as PNG bytes, or None.
        overlay_png: The crop with its explanation overlay as PNG bytes, or None.
        domain_score: Distance of the cell to the training cells (about 1 in domain), or None.
    """

    field_index: int
    cell_id: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    blast_probability: float | None
    model_label: str
    crop_png: bytes | None = None
    overlay_png: bytes | None = None
    domain_score: float | None = None


@dataclass(frozen=True)
class FieldRecord:
    """A stored field: :class:`FieldEntry` plus its index in the case."""

    field_index: int
    name: str
    width: int
    height: int
    image_png: bytes | None
    domain: DomainAssessment | None = None


@dataclass(frozen=True)
class CellRecord(CellEntry):
    """A stored cell: :class:`CellEntry` (what the model said) plus the current ``label``."""

    label: str = field(kw_only=True)

    @property
    def changed_by_reviewer(self) -> bool:
        """True when the current label differs from the model's."""
        return self.label != self.model_label


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit trail; ``action`` is created, relabel, signed or reopened."""

    audit_id: int
    case_id: str
    version: int
    action: str
    reviewer: str
    at: str
    field_index: int | None
    cell_id: int | None
    from_label: str | None
    to_label: str | None
    note: str


@dataclass(frozen=True)
class CaseHeader:
    """What identifies a case version and its sign-off; shared by records and list rows."""

    case_id: str
    version: int
    parent_id: str | None
    sample_id: str
    status: str
    created_at: str
    created_by: str
    signed_by: str | None
    signed_at: str | None

    @property
    def is_signed(self) -> bool:
        return self.status == STATUS_SIGNED


@dataclass(frozen=True)
class CaseRecord(CaseHeader):
    """A whole case version as stored: metadata, fields, cells and audit trail.

    ``domain`` is the sample's out-of-domain assessment (None for cases analysed without one,
    including every case stored before the check existed).
    """

    model_name: str
    model_checksum: str
    thresholds: dict[str, Any]
    fields: tuple[FieldRecord, ...]
    cells: tuple[CellRecord, ...]
    audit: tuple[AuditEntry, ...]
    domain: DomainAssessment | None = None

    def counts(self) -> BlastCount:
        """Blast count of the whole sample from the current (reviewed) labels."""
        return summarize_labels([cell.label for cell in self.cells])

    def model_counts(self) -> BlastCount:
        """Blast count of the whole sample from the model's labels, before review."""
        return summarize_labels([cell.model_label for cell in self.cells])

    def field_counts(self) -> tuple[BlastCount, ...]:
        """Blast count of each field from the current labels, in field order."""
        return tuple(
            summarize_labels([c.label for c in self.cells if c.field_index == f.field_index])
            for f in self.fields
        )


@dataclass(frozen=True)
class CaseSummary(CaseHeader):
    """One line of :meth:`CaseStore.list_cases`: metadata and counts of current labels."""

    n_cells: int
    n_blasts: int
    n_counted: int
    n_uncertain: int
