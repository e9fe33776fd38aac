"""Splitting and merging cells in a stored case (mixed into :class:`~leukemia_core.store.CaseStore`).

A reviewer who finds two cells outlined as one (or one cell cut in two) replaces them: the old
cells keep their rows, labelled ``replaced`` (never shown or counted), and the new cells are
added with their own ids. Undo is the same operation the other way round. Every step is one
transaction with one audit row per cell it touches, so the trail says who split what into what.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from leukemia_core.store_rows import (
    CaseInputError,
    StorePart,
    audit,
    cell_row,
    insert,
    reviewer_name,
    whole,
    withdraw_first_signature,
)
from leukemia_core.types import Cell, CellLabel


class CaseReshape(StorePart):
    """Split, merge and undo in the case database."""

    def reshape_cells(
        self, case_id: str, *, retire: Iterable[tuple[int, int]], add: Sequence[Cell] = (),
        revive: Iterable[tuple[int, int]] = (), reviewer: str, action: str, note: str,
    ) -> list[int]:  # fmt: skip
        """Replace cells by new ones in one transaction; returns the audit ids.

        Args:
            retire: Keys of live cells that become ``replaced``.
            add: New cells (ids not used in their field yet), stored as they are.
            revive: Keys of ``replaced`` cells brought back (undo), as they were before: the
                label they had when replaced, and their review (a cell replaced before that
                was recorded gets the model's label and awaits review).
            reviewer: Who did it.
            action: The audit action (``split``, ``merge``, ``undo split``...).
            note: What happened, in words.

        Raises:
            CaseSignedError: The case is signed.
            CaseInputError: A key is unknown, a retired cell is not live, a revived one not
                replaced, or a new cell's id is taken.
        """
        reviewer = reviewer_name(reviewer)
        retire = [(whole(f, "field_index"), whole(c, "cell_id")) for f, c in retire]
        revive = [(whole(f, "field_index"), whole(c, "cell_id")) for f, c in revive]
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            n_fields = conn.execute(
                "SELECT COUNT(*) FROM fields WHERE case_id = ?", (case["case_id"],)
            ).fetchone()[0]
            rows = [cell_row(i, cell, n_fields) for i, cell in enumerate(add)]
            updates = []
            for key in retire:
                label = self._label(conn, case, key)
                if label == CellLabel.REPLACED:
                    raise CaseInputError(f"Cell {key[1]} of field {key[0]} is already replaced.")
                updates.append((key, label, CellLabel.REPLACED.value, "label = ?"))
            for key in revive:
                if self._label(conn, case, key) != CellLabel.REPLACED:
                    raise CaseInputError(f"Cell {key[1]} of field {key[0]} is not replaced.")
                before = conn.execute(_LABEL_WHEN_REPLACED,
                                      (case["case_id"], *key, CellLabel.REPLACED.value)).fetchone()  # fmt: skip
                (reviewed,) = conn.execute(
                    "SELECT reviewed FROM cells WHERE case_id = ? AND field_index = ? AND "
                    "cell_id = ?", (case["case_id"], *key)).fetchone()  # fmt: skip
                # Unreviewed, it comes back with the model's call as it is now (a sample found
                # out of domain since has sent it to review), not the one it was set aside with.
                if not reviewed or before is None or before[0] in (None, CellLabel.REPLACED.value):
                    updates.append((key, CellLabel.REPLACED.value, None,
                                    "label = model_label, reviewed = 0"))  # fmt: skip
                else:
                    updates.append((key, CellLabel.REPLACED.value, before[0], "label = ?"))
            for row in rows:
                if self._label(conn, case, (row["field_index"], row["cell_id"]), missing=True):
                    raise CaseInputError(
                        f"Field {row['field_index']} already has a cell {row['cell_id']}."
                    )
                insert(conn, "cells", {"case_id": case["case_id"], **row})
            for key, _, to_label, assignment in updates:
                values = (to_label,) if to_label else ()
                conn.execute(f"UPDATE cells SET {assignment} WHERE case_id = ? AND field_index = ? "
                             "AND cell_id = ?", (*values, case["case_id"], *key))  # fmt: skip
            ids = []  # one row per cell, each saying what became of that cell (4 rows read alike)
            for key, before, _, _ in updates:
                after = self._label(conn, case, key)
                what = "set aside" if after == CellLabel.REPLACED else "back"
                ids.append(audit(conn, case, action, reviewer, f"{note}: cell {key[1]} {what}",
                                 *key, before, after))  # fmt: skip
            for row in rows:
                ids.append(audit(conn, case, action, reviewer,
                                 f"{note}: cell {row['cell_id']} made", row["field_index"],
                                 row["cell_id"], None, row["label"]))  # fmt: skip
            ids += withdraw_first_signature(conn, case, reviewer, f"by the {action}: {note}")
        return ids

    @staticmethod
    def _label(conn, case, key, *, missing: bool = False) -> str | None:
        row = conn.execute(
            "SELECT label FROM cells WHERE case_id = ? AND field_index = ? AND cell_id = ?",
            (case["case_id"], *key),
        ).fetchone()
        if row is None and not missing:
            raise CaseInputError(f"Case {case['case_id']} has no cell {key[1]} in field {key[0]}.")
        return None if row is None else row["label"]


# The label a cell had when it was replaced, in this version or the versions it was reopened
# from (a split made before signing and undone after reopening brings back the signed label).
_LABEL_WHEN_REPLACED = (
    "WITH RECURSIVE lineage(case_id) AS (SELECT ? UNION ALL SELECT c.parent_id FROM cases AS c "
    "JOIN lineage AS l ON c.case_id = l.case_id WHERE c.parent_id IS NOT NULL) "
    "SELECT from_label FROM audit WHERE case_id IN lineage AND field_index = ? AND cell_id = ? "
    "AND to_label = ? ORDER BY audit_id DESC LIMIT 1"
)
