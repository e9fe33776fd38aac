"""Reviewer changes to cells (mixed into :class:`~leukemia_core.store.CaseStore`).

A new label, an accepted label or another reviewer-editable attribute is written with its audit
row in the same transaction; a change to a case with a first signature withdraws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from leukemia_core.store_rows import (
    CaseInputError,
    CellNotFoundError,
    StorePart,
    audit,
    label_value,
    require_cell_unchanged,
    reviewer_name,
    whole,
    withdraw_first_signature,
)
from leukemia_core.types import MACHINE_ONLY_LABELS, REVIEWER_EDITABLE, CellLabel


class CaseEdits(StorePart):
    """Cell edits of the case database (mixed into :class:`~leukemia_core.store.CaseStore`)."""

    def relabel_cell(
        self, case_id: str, field_index: int, cell_id: int, new_label: str, *,
        reviewer: str, note: str = "",
    ) -> int | None:  # fmt: skip
        """Sets a cell's current label (marking it reviewed) and records who did it.

        Returns:
            The audit id of the change; None when the cell already had that label (nothing is
            written, not even the reviewed mark: use :meth:`mark_reviewed` to accept a label).

        Raises:
            CaseInputError: Empty reviewer name or unknown label.
            CaseNotFoundError, CellNotFoundError: No such case or cell.
            CaseSignedError: The case is signed.
        """
        ids = self.edit_cell(case_id, field_index, cell_id, reviewer=reviewer, note=note,
                             label=new_label)  # fmt: skip
        return ids[0] if ids else None

    def mark_reviewed(
        self, case_id: str, keys: Iterable[tuple[int, int]], *, reviewer: str, note: str = "",
        expected: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    ) -> list[int]:  # fmt: skip
        """Accepts the current label of each cell (``(field_index, cell_id)``) in one transaction.

        Cells already reviewed are left as they are, and so are uncertain ones: a reviewer
        decides those with a label (:meth:`relabel_cell`). ``expected`` holds, per key, what
        the reviewer saw (as :meth:`edit_cell`'s): a label changed since refuses them all, so an
        accept of a call another reviewer has just changed is never passed over unsaid.
        Returns the new audit ids.
        """
        reviewer = reviewer_name(reviewer)
        keys = [(whole(f, "field_index"), whole(c, "cell_id")) for f, c in keys]
        ids = []
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            for field_index, cell_id in keys:
                seen = (expected or {}).get((field_index, cell_id))
                ids += self._edit(conn, case, field_index, cell_id, reviewer, note,
                                  {"reviewed": True}, seen, skip_uncertain=True)  # fmt: skip
        return ids

    def edit_cell(
        self, case_id: str, field_index: int, cell_id: int, *, reviewer: str, note: str = "",
        expected: Mapping[str, Any] | None = None, **changes: Any,
    ) -> list[int]:  # fmt: skip
        """Changes reviewer-editable attributes of one cell (``types.REVIEWER_EDITABLE``).

        A new label is a ``relabel`` audit row and marks the cell reviewed; ``reviewed=True`` is
        a ``reviewed`` row; any other attribute an ``edit`` row whose note names it. Values
        equal to the stored ones write nothing. ``expected`` holds the values the reviewer saw
        (e.g. ``{"label": "normal"}``): when another reviewer has changed one since, nothing is
        written (:class:`CaseChangedError` says who), so no call is overwritten unseen.

        Returns:
            The new audit ids.
        """
        reviewer = reviewer_name(reviewer)
        field_index, cell_id = whole(field_index, "field_index"), whole(cell_id, "cell_id")
        unknown = sorted(set(changes) - REVIEWER_EDITABLE)
        if unknown or not changes:
            raise CaseInputError(
                f"A reviewer can change {sorted(REVIEWER_EDITABLE)} of a cell, got "
                f"{unknown or 'nothing'}; the other attributes are the machine's."
            )
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            return self._edit(conn, case, field_index, cell_id, reviewer, note, changes,
                              expected)  # fmt: skip

    def _edit(self, conn, case, field_index, cell_id, reviewer, note, changes,
              expected=None, *, skip_uncertain: bool = False) -> list[int]:  # fmt: skip
        """Apply ``changes`` to one cell and audit them; an uncertain cell only marked reviewed
        is refused, or passed over with ``skip_uncertain`` (a batch accept)."""
        key = (case["case_id"], field_index, cell_id)
        row = conn.execute(
            "SELECT * FROM cells WHERE case_id = ? AND field_index = ? AND cell_id = ?", key
        ).fetchone()
        if row is None:
            raise CellNotFoundError(
                f"Case {case['case_id']} has no cell {cell_id!r} in field {field_index!r}; "
                "use the field index and cell id shown in the case."
            )
        require_cell_unchanged(conn, row, expected)
        if row["label"] == CellLabel.REPLACED:
            raise CaseInputError(
                f"Cell {cell_id} of field {field_index} was split or merged into other cells; "
                "undo that on the Review page to change it again."
            )
        if "label" in changes:
            changes = {**changes, "label": label_value(changes["label"], "new_label")}
            if changes["label"] in MACHINE_ONLY_LABELS:
                raise CaseInputError(
                    f"{changes['label']!r} is set only by the machine; a reviewer labels a cell "
                    "blast, normal, not_wbc or excluded."
                )
            if changes["label"] != row["label"]:
                changes["reviewed"] = True
            else:  # the label it has: what is left is an accept (or a withdrawal), audited so
                changes = {k: v for k, v in changes.items() if k != "label"}
        accepting = changes.get("reviewed") and "label" not in changes
        if accepting and row["label"] == CellLabel.UNCERTAIN:
            if skip_uncertain:
                return []
            raise CaseInputError(
                f"Cell {cell_id} of field {field_index} is uncertain: review it by giving it a "
                "label (blast, normal, not a white cell or excluded); accepting it would leave "
                "it undecided."
            )
        if "reviewed" in changes:  # "no" is truthy: only a real yes or no is taken
            if not isinstance(changes["reviewed"], bool | int) or changes["reviewed"] not in (0, 1):
                raise CaseInputError(f"reviewed is True or False, got {changes['reviewed']!r}.")
            changes["reviewed"] = int(changes["reviewed"])
        entries = []  # every update first, then the audit rows (each records the state after)
        for name, value in changes.items():
            if row[name] == value:
                continue
            conn.execute(f"UPDATE cells SET {name} = ? WHERE case_id = ? AND field_index = ? "
                         "AND cell_id = ?", (value, *key))  # fmt: skip
            if name == "label":
                entries.append(("relabel", str(note), row["label"], value))
            elif name == "reviewed" and "label" not in changes:
                action = "reviewed" if value else "review withdrawn"
                entries.append((action, str(note), row["label"], row["label"]))
            elif name != "reviewed":
                what = f"{name}: {row[name]!r} -> {value!r}" + (f"; {note}" if note else "")
                entries.append(("edit", what, None, None))
        ids = []
        for action, words, before, after in entries:
            ids.append(audit(conn, case, action, reviewer, words, field_index, cell_id, before,
                              after))  # fmt: skip
        if entries:
            ids += withdraw_first_signature(conn, case, reviewer, f"by the change of cell "
                                            f"{cell_id}", field_index, cell_id, None, None)  # fmt: skip
        return ids
