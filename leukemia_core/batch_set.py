"""What a set of analysed images adds up to: a field given twice counted once, the model's
count before review, and each folder's own count when the images come from several."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from tqdm import tqdm

from leukemia_core.counting import CellLabel, summarize_labels
from leukemia_core.fingerprints import same_field
from leukemia_core.types import NO_REVIEW_LABELS, BlastCount

if TYPE_CHECKING:  # batch imports this module
    from leukemia_core.batch import ImageResult


def count_dict(count: BlastCount) -> dict:
    """A :class:`BlastCount` as JSON-ready values."""
    return asdict(count)


def unreviewed_count(labels: list[CellLabel], single_cells: bool) -> BlastCount:
    """The set's count by the model's labels: no person has reviewed any cell yet, so the
    reading says "With N cells still to review" (border cells are never counted nor reviewed)."""
    waiting = sum(label not in NO_REVIEW_LABELS for label in labels)
    return summarize_labels(labels, n_unreviewed=waiting, single_cells=single_cells)


def folder_counts(by_folder: dict[str, list], single_cells: bool) -> dict[str, dict]:
    """Each folder's own count when the images come from several (empty for one folder)."""
    if len(by_folder) < 2:
        return {}
    return {folder: count_dict(unreviewed_count(labels, single_cells))
            for folder, labels in by_folder.items()}  # fmt: skip


def without_repeated_fields(results: Sequence[ImageResult]) -> list[ImageResult]:
    """The results, a field given twice in different files (two exports of one capture, saved
    again at another quality or size) counted once, as the app counts an upload."""
    seen, kept = [], []
    for result in results:
        signature = result.field_signature if result.failure is None else ""
        first = None
        if signature:
            first = next((file for file, other in seen
                          if same_field(signature, other, exact=result.single_cells)), None)  # fmt: skip
        if first is not None:
            why = (f"the same field as {first} (saved again, at another quality or size?): "
                   "counted once, so its cells are not counted twice")  # fmt: skip
            tqdm.write(f"repeat left out: {result.file} is {why}", file=sys.stderr)
            result = replace(result, failure=why, failed_as=result.file, repeat_of=first)
        elif signature:
            seen.append((result.file, signature))
        kept.append(result)
    return kept
