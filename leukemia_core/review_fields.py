"""More fields for a case under review (mixed into :class:`leukemia_core.review.Review`).

"Count at least 60 more cells" means more fields of the same smear: they are analysed with the
case's model and added to the open case, with the labels already given kept. The sample's
out-of-domain assessment is made again over all its cells (warned, its unreviewed cells all go
to review, the held ones too); a field the case holds already
(the same picture saved again) is refused, as the upload refuses it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from leukemia_core.errors import ReviewError
from leukemia_core.fingerprints import field_signature, same_field
from leukemia_core.labellers import labeller_for, send_to_review
from leukemia_core.roles import Permission, User, require

if TYPE_CHECKING:
    from leukemia_core.classify import Classifier
    from leukemia_core.labellers import Labeller
    from leukemia_core.pipeline import Analysis
    from leukemia_core.store import CaseStore


class ReviewFields:
    """Adding fields on :class:`leukemia_core.review.Review` (mixed in)."""

    def add_fields(
        self, store: CaseStore, analysis: Analysis, classifier: Classifier | Labeller | None,
        *, user: User,
    ) -> int:  # fmt: skip
        """Add the fields of ``analysis`` (made with this case's model, ``classifier``) to the
        open case; returns how many cells came with them. The review then holds the stored case.

        Raises:
            PermissionDeniedError: The account may not review.
            ReviewError: Not saved, signed, other images or another model, or a field the
                case holds already.
        """
        require(user, Permission.REVIEW)
        self._require_saved("fields are added to a saved case")
        self.refresh(store)  # fields another window added count as held (and are refused again)
        if self.is_signed:
            raise ReviewError("The case is signed: reopen it to add fields.")
        if analysis.mode != self.mode:
            raise ReviewError(f"This case holds {self.mode}; analyse the new images as "
                              f"{self.mode} to add them.")  # fmt: skip
        if analysis.model_checksum != self.model_checksum:
            raise ReviewError(
                f"The new images were labelled by {analysis.model_name}, the case by "
                f"{self.model_name}; analyse them with the case's model to add them."
            )
        if not analysis.fields:
            raise ReviewError(
                "None of the new images could be analysed (each one's reason is said with it)."
            )
        held = [(f.name, field_signature(f.image)) for f in self.fields]
        for new in analysis.fields:
            signature = field_signature(new.image)
            if repeat := next((name for name, sig in held if same_field(sig, signature)), None):
                raise ReviewError(f"{new.name} is the field {repeat} the case holds already (the "
                                  "same picture); leave it out and add the others.")  # fmt: skip
        cells = list(analysis.cells)
        scores = [c.domain_score for c in (*self.cells, *cells)]
        domain = labeller_for(classifier).assess(scores)
        warned = domain is not None and domain.warned  # the sample as a whole differs now
        if warned:
            cells = [replace(c, model_label=(label := send_to_review(c.model_label)),
                             label=label) for c in cells]  # fmt: skip
        store.add_fields(self.case_id, analysis.fields, cells, reviewer=user.name, domain=domain,
                         model_checksum=analysis.model_checksum, send_held_to_review=warned,
                         left_out=[f.message for f in analysis.failures])  # fmt: skip
        self._take_record(store.load_case(self.case_id))
        return len(cells)

    def _take_record(self, record) -> None:
        """Hold the stored case whole (its fields changed, not only its labels)."""
        fresh = type(self).from_record(record)
        self.analysis, self._cells = fresh.analysis, fresh._cells
        self._views.clear()
        self._follow(record)
