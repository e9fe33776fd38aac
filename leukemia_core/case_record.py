"""The case record's data: what :class:`~leukemia_core.store.CaseStore` gives back.

A case holds the core's own :class:`~leukemia_core.types.Field` and
:class:`~leukemia_core.types.Cell` (the store saves exactly those) plus its version, sign-off and
audit trail. Plain frozen dataclasses, no database code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leukemia_core.counting import count_cells
from leukemia_core.domain import DomainAssessment
from leukemia_core.types import MODE_CELLS, BlastCount, Cell, CellLabel, Field

STATUS_OPEN = "open"
STATUS_SIGNED = "signed"


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit trail.

    ``action`` is created, relabel (``from_label`` -> ``to_label``), reviewed (the reviewer
    accepted the cell's label), edit (another reviewer-editable attribute; the note says which),
    signed or reopened.
    """

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
    first_signed_by: str | None = field(default=None, kw_only=True)
    first_signed_at: str | None = field(default=None, kw_only=True)
    patient_id: str = field(default="", kw_only=True)  # optional; the lab's own identifier

    @property
    def is_signed(self) -> bool:
        return self.status == STATUS_SIGNED

    @property
    def awaits_second_signature(self) -> bool:
        """Signed once where the lab's rule asks for two signers (see ``Review.sign``)."""
        return not self.is_signed and self.first_signed_by is not None


@dataclass(frozen=True)
class CaseState(CaseHeader):
    """What a review needs to follow a stored case: status, what reviewers set, audit trail.

    ``edits`` holds, per cell key, the value of every reviewer-editable attribute
    (``types.REVIEWER_EDITABLE``: the label, the reviewed flag, ...). Read without any image, so
    checking a case for changes made elsewhere costs little.
    """

    edits: dict[tuple[int, int], dict[str, Any]]
    audit: tuple[AuditEntry, ...]

    @property
    def labels(self) -> dict[tuple[int, int], CellLabel]:
        return {key: values["label"] for key, values in self.edits.items()}

    @property
    def reviewed(self) -> frozenset[tuple[int, int]]:
        return frozenset(key for key, values in self.edits.items() if values["reviewed"])

    @property
    def token(self) -> int:
        """The last audit id: any change to the case adds an audit row, so this names a state."""
        return self.audit[-1].audit_id if self.audit else 0


REVIEW_ACTIONS = ("relabel", "reviewed", "edit")  # audit actions of a person reviewing cells


@dataclass(frozen=True)
class CaseRecord(CaseHeader):
    """A whole case version as stored: metadata, fields, cells and audit trail.

    ``domain`` is the sample's out-of-domain assessment (None for cases analysed without one,
    including every case stored before the check existed). ``altered`` lists what the audit hash
    chain says was changed outside the app (empty for an intact record). ``cells`` are the live
    cells; ``replaced`` those a reviewer split or merged into others (kept for the audit trail).
    ``superseded_by`` is the newer version a signed record was reopened as (None: none);
    ``amends`` the signed version this one was reopened from, with its counts (None: none).
    """

    model_name: str
    model_checksum: str
    thresholds: dict[str, Any]
    fields: tuple[Field, ...]
    cells: tuple[Cell, ...]
    audit: tuple[AuditEntry, ...]
    domain: DomainAssessment | None = None
    altered: tuple[str, ...] = ()
    comment: str = ""
    replaced: tuple[Cell, ...] = ()
    superseded_by: CaseHeader | None = None  # the version this one was reopened as, if any
    amends: CaseSummary | None = None  # the version this one was reopened from, if any
    # (version, reviewer) of the earlier versions this one was reopened from: a reopened case
    # keeps their reviewed cells, and the report names who reviewed them
    earlier_reviewers: tuple[tuple[int, str], ...] = ()

    @property
    def token(self) -> int:
        """The last audit id (see :attr:`CaseState.token`)."""
        return self.audit[-1].audit_id if self.audit else 0

    @property
    def model_words(self) -> str:
        """The model in words (name, network, dates); its folder name for older cases."""
        return str(self.thresholds.get("model_description") or self.model_name)

    @property
    def n_unreviewed(self) -> int:
        """Cells no reviewer has relabelled or accepted (border cells need no review)."""
        return sum(c.awaits_review for c in self.cells)

    @property
    def single_cells(self) -> bool:
        """The images were single-cell crops, not smear fields (the analysis mode kept with
        the thresholds)."""
        return self.thresholds.get("mode") == MODE_CELLS

    def counts(self) -> BlastCount:
        """Blast count of the whole sample from the current (reviewed) labels."""
        return count_cells(self.cells, single_cells=self.single_cells)

    def model_counts(self) -> BlastCount:
        """Blast count of the whole sample from the model's labels, before review."""
        return count_cells(self.cells, single_cells=self.single_cells, model=True)

    def field_cells(self, field_index: int) -> tuple[Cell, ...]:
        """The live cells of one field."""
        return tuple(c for c in self.cells if c.field_index == field_index)

    def field_counts(self) -> tuple[BlastCount, ...]:
        """Blast count of each field from the current labels, in field order."""
        return tuple(count_cells(self.field_cells(f.index), single_cells=self.single_cells)
                     for f in self.fields)  # fmt: skip


@dataclass(frozen=True)
class CaseSummary(CaseHeader):
    """One line of :meth:`CaseStore.list_cases`: metadata and counts of current labels."""

    n_cells: int
    n_blasts: int
    n_counted: int
    n_uncertain: int
    n_unreviewed: int = 0  # cells no person has decided on yet: the counts are provisional
    out_of_domain: bool = False  # the sample as a whole unlike the training data
    n_fields_out_of_domain: int = 0  # fields unlike it (the sample may still resemble it)
    n_fields_failing_quality: int = 0

    @property
    def blast_percent(self) -> float | None:
        """Blasts of the cells counted, in percent (None: nothing counted)."""
        return 100 * self.n_blasts / self.n_counted if self.n_counted else None
