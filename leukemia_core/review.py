"""The review of one sample: the one workflow from an analysis to a signed case record.

A :class:`Review` starts from :func:`leukemia_core.pipeline.analyze` (or a stored case) and owns
the order of the work: save the case, relabel or accept cells, sign, reopen. Every change goes
to the case record first (:class:`~leukemia_core.store.CaseStore`, which keeps the record whole
and refuses what it forbids: signed cases, empty reviewer names, sign-off with uncertain cells)
and is then read back, so the screen never runs ahead of the record. A review follows changes
made elsewhere (another tab) by an exact token: the case's last audit id.

Labels live on the cells (:class:`~leukemia_core.types.Cell`); every count is recomputed from
them with :func:`leukemia_core.counting.count_cells`, so nothing can drift out of step.

Example:
    >>> import pathlib, tempfile
    >>> from leukemia_core.roles import Role, User
    >>> from leukemia_core.pipeline import analyze
    >>> from leukemia_core.store import CaseStore
    >>> from leukemia_core.synthetic import make_demo_smear
    >>> review = Review(analyze([make_demo_smear().image], None), sample_id="S-1")
    >>> store = CaseStore(pathlib.Path(tempfile.mkdtemp()) / "cases.sqlite3")
    >>> ana = User("A. Reviewer", frozenset({Role.REVIEWER}))
    >>> case_id = review.save(store, user=ana)
    >>> cell = review.cells[1]
    >>> review.relabel(store, *cell.key, "blast", user=ana)
    True
    >>> review.count().n_blasts, review.cell(*cell.key).reviewed
    (1, True)
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from leukemia_core.case_record import STATUS_SIGNED, CaseRecord, CaseState
from leukemia_core.counting import (
    INVESTIGATE_PERCENT,
    WHO_ACUTE_LEUKEMIA_PERCENT,
)
from leukemia_core.errors import PossibleClumpError, ReviewError
from leukemia_core.imaging import VIEW_SIZE, cell_view
from leukemia_core.labellers import NO_MODEL
from leukemia_core.pipeline import MODE_CELLS, MODE_FIELDS, Analysis
from leukemia_core.reshape import ReviewReshape
from leukemia_core.review_fields import ReviewFields
from leukemia_core.review_queue import CellGroup, ReviewTallies
from leukemia_core.review_signoff import ReviewSignoff
from leukemia_core.roles import Permission, User, require
from leukemia_core.store import CaseStore
from leukemia_core.types import (
    REVIEWER_EDITABLE,
    Cell,
    CellLabel,
    live,
)

STATUS_UNSAVED = "unsaved"
REVIEW_CHOICES = (CellLabel.BLAST, CellLabel.NORMAL, CellLabel.NOT_WBC, CellLabel.EXCLUDED)
"""Labels a reviewer gives, in gallery order: all but ``types.MACHINE_ONLY_LABELS``, which the
store refuses."""
COUNTED_LABELS = frozenset({CellLabel.BLAST.value, CellLabel.NORMAL.value})


class Review(ReviewTallies, ReviewReshape, ReviewSignoff, ReviewFields):
    """A sample under review (mutable: labels change as the reviewer works).

    Attributes:
        analysis: What the pipeline found (fields, failures, the model's calls).
        sample_id: Specimen identifier (no patient names needed).
        case_id: Id in the case record once saved.
        version: Case version (1 for a new case; reopening adds one).
        status: ``unsaved``, ``open`` or ``signed``.
        signed_by: Who signed (signed cases).
        signed_at: When (UTC).
        audit_token: The case's last audit id as last read (0 before saving).
        token: Random id of this review (for cache keys and widget names).
    """

    def __init__(self, analysis: Analysis, *, sample_id: str) -> None:
        self.analysis = analysis
        self.sample_id = sample_id
        self.case_id: str | None = None
        self.version = 0
        self.status = STATUS_UNSAVED
        self.signed_by: str | None = None
        self.signed_at: str | None = None
        self.first_signed_by: str | None = None  # where the lab's rule asks for two signers
        self.audit_token = 0
        self.altered: tuple[str, ...] = ()  # what the audit chain says changed outside the app
        self.token = uuid.uuid4().hex
        self._cells = _by_key(analysis.cells)
        self._views: dict[tuple, np.ndarray] = {}

    # ---- what was analysed -----------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.analysis.mode

    @property
    def fields(self):
        return self.analysis.fields

    @property
    def failures(self):
        return self.analysis.failures

    @property
    def domain(self):
        return self.analysis.domain

    @property
    def has_model(self) -> bool:
        return self.analysis.has_model

    @property
    def model_name(self) -> str | None:
        """The model that labelled the cells; None when cells were only segmented."""
        return self.analysis.model_name if self.has_model else None

    @property
    def model_checksum(self) -> str:
        return self.analysis.model_checksum

    @property
    def calibration(self) -> dict:
        return self.analysis.calibration

    @property
    def cells(self) -> tuple[Cell, ...]:
        """Every cell with its current label, in field then cell-id order (cells replaced by a
        split or merge are kept in the record only)."""
        return live(self._cells.values())

    # ---- lookups ----------------------------------------------------------------------------
    def view(
        self, cell: Cell, colour: tuple[int, int, int] | None = None, size: int = VIEW_SIZE
    ) -> np.ndarray:
        """The cell among its neighbours with its outline drawn (in ``colour``, e.g. its
        label's), ``size`` pixels square, for display; cached."""
        key = (cell.key, cell.bbox, colour)
        if size == VIEW_SIZE and key in self._views:
            return self._views[key]
        context = 1.1 if self.mode == MODE_CELLS else 1.5
        image = self.fields[cell.field_index].image
        extra = {} if colour is None else {"colour": colour}
        view = cell_view(image, cell.bbox, cell.outline, context=context, size=size, **extra)
        if size == VIEW_SIZE:  # the gallery's many small views; a large one is one cell's
            self._views[key] = view
        return view

    @property
    def is_saved(self) -> bool:
        return self.case_id is not None

    @property
    def is_signed(self) -> bool:
        return self.status == STATUS_SIGNED

    @property
    def digest(self) -> str:
        """Content hash of all fields and cell boxes (cache key of the gallery's heatmaps)."""
        parts = [f.digest for f in self.fields] + [f"{c.key}{c.bbox}" for c in self.cells]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()

    def thresholds(self) -> dict:
        """What decided the labels, stored with the case (JSON values only)."""
        described = self.analysis.model_description
        return {
            "model_calibration": dict(self.calibration),
            "blast_percent_thresholds": [INVESTIGATE_PERCENT, WHO_ACUTE_LEUKEMIA_PERCENT],
            "mode": self.mode,
            **({"model_description": described} if described else {}),
        }

    # ---- the workflow: record first, then the screen ----------------------------------------
    def save(
        self,
        store: CaseStore,
        *,
        user: User,
        sample_id: str | None = None,
        overlays: Mapping[tuple[int, int], np.ndarray] | None = None,
    ) -> str:
        """Store the sample as a new case in one transaction; later changes are recorded in it.

        Args:
            store: The case record.
            user: Who saves (recorded as the case's creator); needs the review permission.
            sample_id: Specimen identifier (default: the review's).
            overlays: Explanation overlay per cell key, kept with each cell.

        Raises:
            PermissionDeniedError: The account may not review.
            ReviewError: Already saved.
            CaseStoreError: The record refused it (empty sample id, ...).
        """
        require(user, Permission.REVIEW)
        if self.is_saved:
            raise ReviewError(f"This sample is already saved as case {self.case_id}.")
        overlays = overlays or {}
        cells = [replace(c, overlay=overlays[c.key]) if c.key in overlays else c
                 for c in self.cells]  # fmt: skip
        case_id = store.create_case(
            self.sample_id if sample_id is None else sample_id, self.fields, cells,
            model_name=self.analysis.model_name, model_checksum=self.model_checksum,
            thresholds=self.thresholds(), created_by=user.name, domain=self.domain,
            left_out=[f.message for f in self.analysis.failures],
        )  # fmt: skip
        self._cells = {c.key: c for c in cells}
        self.case_id = case_id
        self._follow(store.case_state(case_id))
        return case_id

    def relabel(
        self, store: CaseStore, field_index: int, cell_id: int, label: str | CellLabel, *,
        user: User, note: str = "review gallery", as_one_cell: bool = False,
    ) -> bool:  # fmt: skip
        """Reclassify one cell (which marks it reviewed); False when it already had the label.

        A possible clump of pressed cells (:meth:`is_possible_clump`) labelled blast or normal
        would be counted once: that needs ``as_one_cell=True`` (the reviewer saw it is one cell),
        else :class:`PossibleClumpError` asks to split it or confirm.

        Raises:
            PermissionDeniedError: The account may not review.
            ReviewError: Not saved, or an unknown cell; PossibleClumpError (above).
            CaseStoreError: The record refused it (signed case, a label only the machine
                gives, ...).
        """
        cell = self.cell(field_index, cell_id)
        counted = str(label).strip().lower() in COUNTED_LABELS
        if counted and not as_one_cell and self.is_possible_clump(cell):
            raise PossibleClumpError(
                f"Cell {cell_id} may be two or more cells pressed together, and one label counts "
                f"it as one cell. Split it first (Correct an outline), or give it {label} again "
                "to count it as one cell."
            )
        changed = self.edit(store, field_index, cell_id, user=user, note=note, label=label)
        return changed and self.cell(field_index, cell_id).label == str(label).strip().lower()

    def edit(
        self, store: CaseStore, field_index: int, cell_id: int, *, user: User,
        note: str = "", **changes: object,
    ) -> bool:  # fmt: skip
        """Change reviewer-editable attributes of one cell (``types.REVIEWER_EDITABLE``), each
        change audited; True when something was written."""
        require(user, Permission.REVIEW)
        self._require_saved("every change is recorded in it")
        cell = self.cell(field_index, cell_id)
        # The label this review shows: another reviewer's newer call is refused, not
        # overwritten unseen (the review then shows it).
        seen = {"label": cell.label} if "label" in changes else None
        try:
            ids = store.edit_cell(self.case_id, *cell.key, reviewer=user.name, note=note,
                                  expected=seen, **changes)  # fmt: skip
        finally:
            self.refresh(store)
        return bool(ids)

    def accept(
        self, store: CaseStore, keys: Iterable[tuple[int, int]], *, user: User,
        note: str = "accepted as labelled",
    ) -> int:  # fmt: skip
        """Mark cells reviewed with their current labels; returns how many were newly marked."""
        require(user, Permission.REVIEW)
        self._require_saved("every review is recorded in it")
        cells = self.cells_of(keys)
        seen = {c.key: {"label": c.label.value} for c in cells}  # a call changed since: refused
        ids = store.mark_reviewed(self.case_id, list(seen), reviewer=user.name, note=note,
                                  expected=seen)  # fmt: skip
        self.refresh(store)
        return len(ids)

    def decide(
        self, store: CaseStore, field_index: int, cell_id: int, label: str | None = None, *,
        user: User, note: str = "reviewed cell by cell", as_one_cell: bool = False,
    ) -> bool:  # fmt: skip
        """Review one cell: give it ``label``, or accept its current label (``label`` None or
        the same); True when something was written.

        Raises:
            ReviewError: Accepting an uncertain cell (it needs a call), or an unknown cell.
        """
        cell = self.cell(field_index, cell_id)
        if label is None or str(label).strip().lower() == cell.label:
            if cell.label == CellLabel.UNCERTAIN:
                raise ReviewError(
                    f"Cell {cell_id} is uncertain, so there is no call to accept: label it blast "
                    "or normal (or not a white cell, or exclude it)."
                )
            return self.accept(store, [cell.key], user=user, note=note) > 0
        return self.relabel(store, field_index, cell_id, label, user=user, note=note,
                            as_one_cell=as_one_cell)  # fmt: skip

    def refresh(self, store: CaseStore) -> bool:
        """Take any change made to the saved case elsewhere; True when something changed.

        Costs one small query when nothing changed (the case's last audit id is compared).
        """
        if not self.is_saved or store.last_audit_id(self.case_id) == self.audit_token:
            return False
        before = self._state()
        state = store.case_state(self.case_id)
        if set(state.edits) != set(self._cells):  # cells split or merged elsewhere
            self._reload(store)
        else:
            self._follow(state)
        return self._state() != before

    @classmethod
    def from_record(cls, record: CaseRecord) -> Review:
        """The review of a stored case (images and cells as stored)."""
        thresholds = record.thresholds
        analysis = Analysis(
            thresholds.get("mode", MODE_FIELDS), record.fields, record.cells, (), record.domain,
            record.model_name, record.model_checksum,
            dict(thresholds.get("model_calibration", {})),
            str(thresholds.get("model_description", "")),
        )  # fmt: skip
        review = cls(analysis, sample_id=record.sample_id)
        review._cells = _by_key((*record.cells, *record.replaced))
        review.case_id = record.case_id
        review.altered = record.altered
        review._follow(record)
        return review

    @classmethod
    def open(cls, store: CaseStore, case_id: str) -> Review:
        return cls.from_record(store.load_case(case_id))

    # ---- internals ---------------------------------------------------------------------------
    def _require_saved(self, why: str) -> None:
        if not self.is_saved:
            raise ReviewError(f"Save the case first: {why}.")

    def _reload(self, store: CaseStore) -> None:
        """Take the whole stored case: cells were split or merged (here or elsewhere)."""
        record = store.load_case(self.case_id)
        screen = [(f.name, f.width, f.height) for f in self.fields]
        stored = [(f.name, f.width, f.height) for f in record.fields]
        if stored[: len(screen)] != screen:
            raise ReviewError(
                f"Case {record.case_id} holds other cells than the sample on screen; open it "
                "from the case list instead."
            )
        if len(stored) > len(screen):  # fields added in another window: the case whole
            self._take_record(record)
            return
        self._cells = _by_key((*record.cells, *record.replaced))
        self._views.clear()
        self._follow(record)

    def _state(self) -> tuple:
        edits = tuple(tuple(getattr(c, name) for name in sorted(REVIEWER_EDITABLE))
                      for c in self.cells)  # fmt: skip
        return (self.status, self.version, self.first_signed_by, edits)

    def _follow(self, state: CaseState | CaseRecord) -> None:
        """Take the record's status, version and reviewers' edits (the record is the truth)."""
        if isinstance(state, CaseRecord):
            edits = {c.key: {n: getattr(c, n) for n in REVIEWER_EDITABLE}
                     for c in (*state.cells, *state.replaced)}  # fmt: skip
        else:
            edits = state.edits
        if set(edits) != set(self._cells):
            raise ReviewError(
                f"Case {state.case_id} holds other cells than the sample on screen; open it "
                "from the case list instead."
            )
        for key, cell in self._cells.items():
            if any(getattr(cell, name) != value for name, value in edits[key].items()):
                self._cells[key] = replace(cell, **edits[key])
        self.case_id, self.version, self.status = state.case_id, state.version, state.status
        self.sample_id = state.sample_id
        self.signed_by, self.signed_at = state.signed_by, state.signed_at
        self.first_signed_by = state.first_signed_by
        self.audit_token = state.token


def _by_key(cells: Iterable[Cell]) -> dict[tuple[int, int], Cell]:
    """Cells by key, in field then cell-id order (the order every view shows them in)."""
    return {c.key: c for c in sorted(cells, key=lambda c: c.key)}


__all__ = ["NO_MODEL", "REVIEW_CHOICES", "CellGroup", "Review", "ReviewError"]
