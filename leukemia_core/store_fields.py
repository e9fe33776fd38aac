"""Adding fields to an open case (mixed into :class:`~leukemia_core.store.CaseStore`).

A count of 40 cells asks for more fields of the same smear; a lab adds them to the case it has
begun reviewing rather than analysing every field again. The new fields and their cells are
stored in one transaction with one audit row, the sample's out-of-domain assessment is replaced
by the one over all its cells, and the fields' digest is written again. When the sample differs
from the training data with the new cells, the cells held already that nobody has reviewed go to
review too, as every cell of a warned sample does when it is analysed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from leukemia_core.domain import DomainAssessment
from leukemia_core.store_digest import fields_digest
from leukemia_core.store_rows import (
    CaseInputError,
    StorePart,
    audit,
    cell_row,
    domain_json,
    field_row,
    insert,
    reviewer_name,
    withdraw_first_signature,
)
from leukemia_core.types import Cell, Field


class CaseFields(StorePart):
    """More fields for an open case."""

    def add_fields(
        self, case_id: str, fields: Sequence[Field], cells: Sequence[Cell], *, reviewer: str,
        domain: DomainAssessment | None, model_checksum: str, send_held_to_review: bool = False,
        left_out: Sequence[str] = (),
    ) -> list[int]:  # fmt: skip
        """Append ``fields`` (numbered after the case's own) and their ``cells`` (their
        ``field_index`` counted within ``fields``); returns the audit ids.

        Args:
            domain: The sample's out-of-domain assessment over all its cells now (None: none).
            model_checksum: The weights that labelled the new cells: the case's, or refused.
            send_held_to_review: Make the cells held already that are unreviewed and called
                blast or normal ``uncertain`` (the sample is out of domain now).
            left_out: Why each image of the upload that could not be analysed was left out.

        Raises:
            CaseSignedError: The case is signed.
            CaseInputError: No fields, another model's cells, or a value that cannot be stored.
        """
        reviewer = reviewer_name(reviewer)
        if not fields:
            raise CaseInputError("No fields to add; choose at least one field image.")
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            if model_checksum != case["model_checksum"]:
                raise CaseInputError(
                    "These fields were labelled by another model than the case's; analyse them "
                    "with the case's model (the one named on the Case page) to add them."
                )
            rows = conn.execute("SELECT image_sha256, name FROM fields WHERE case_id = ?",
                                (case["case_id"],)).fetchall()  # fmt: skip
            held, first = dict(rows), len(rows)
            total = first + len(fields)
            for offset, entry in enumerate(fields):
                row = field_row(first + offset, entry)
                if row["image_sha256"] and (same := held.get(row["image_sha256"])):
                    raise CaseInputError(  # two windows adding one picture: checked here, at once
                        f"{entry.name} is the field {same} the case holds already (the same "
                        "picture); leave it out and add the others."
                    )
                held[row["image_sha256"]] = entry.name
                insert(conn, "fields", {"case_id": case["case_id"], **row})
            for position, cell in enumerate(cells):
                moved = replace(cell, field_index=first + cell.field_index)
                insert(conn, "cells", {"case_id": case["case_id"],
                                       **cell_row(position, moved, total)})  # fmt: skip
            conn.execute("UPDATE cases SET fields_sha256 = ?, domain = ? WHERE case_id = ?",
                         (fields_digest(conn, case["case_id"]), domain_json(domain),
                          case["case_id"]))  # fmt: skip
            names = ", ".join(f.name for f in fields)
            note = (f"{len(fields)} field{'s' * (len(fields) != 1)} added ({names}) with "
                    f"{len(cells)} cell{'s' * (len(cells) != 1)}")  # fmt: skip
            if left_out:  # as the case's "created" row says of its first upload
                note += "; left out of the upload: " + " ".join(left_out)
            sent = _send_to_review(conn, case, first, reviewer) if send_held_to_review else 0
            if sent:
                note += (f"; the sample now differs from the training data, so {sent} unreviewed "
                         f"cell{'s' * (sent != 1)} already in the case went to review")  # fmt: skip
            ids = [audit(conn, case, "fields added", reviewer, note)]
            ids += withdraw_first_signature(conn, case, reviewer, f"by the {note}")
        return ids


def _send_to_review(conn, case, n_held_fields: int, reviewer: str) -> int:
    """Make the unreviewed model calls of the first ``n_held_fields`` fields ``uncertain``, one
    audit row per cell; returns how many changed (a reviewer's label is kept). Unreviewed cells
    a split or merge set aside get the same model call, so an undo brings them back to review."""
    held = (case["case_id"], n_held_fields)
    calls = conn.execute(
        "SELECT field_index, cell_id, label FROM cells WHERE case_id = ? AND field_index < ? "
        "AND reviewed = 0 AND label = model_label AND label IN ('blast', 'normal')", held,
    ).fetchall()  # fmt: skip
    for field_index, cell_id, label in calls:
        conn.execute("UPDATE cells SET model_label = 'uncertain', label = 'uncertain' WHERE "
                     "case_id = ? AND field_index = ? AND cell_id = ?",
                     (case["case_id"], field_index, cell_id))  # fmt: skip
        audit(conn, case, "sent to review", reviewer, "the sample differs from the training "
              "data with the fields added", field_index, cell_id, label, "uncertain")  # fmt: skip
    conn.execute("UPDATE cells SET model_label = 'uncertain' WHERE case_id = ? AND field_index < ? "
                 "AND reviewed = 0 AND label = 'replaced' AND model_label IN ('blast', 'normal')",
                 held)  # fmt: skip
    return len(calls)
