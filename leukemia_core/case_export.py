"""Machine-readable exports of a stored case: a per-cell CSV and the JSON record.

Both say what the model labelled and what the reviewer decided, like the printable report
(:mod:`leukemia_core.report`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from leukemia_core.outputs import (
    GEOMETRY_COLUMNS,
    RESEARCH_USE_CELL,
    field_warnings_text,
    spreadsheet_text,
)
from leukemia_core.pressed import field_notes_now
from leukemia_core.report import RESEARCH_USE_STATEMENT
from leukemia_core.store import CaseRecord
from leukemia_core.types import CellLabel

CSV_COLUMNS = (
    "case_id",
    "version",
    "sample_id",
    "field_index",
    "field_name",
    "cell_id",
    *GEOMETRY_COLUMNS,
    "blast_probability",
    "model_label",
    "label",
    "changed_by_reviewer",
    "domain_score",
    "field_warnings",
    # added later, at the end: imports that read columns by position keep working
    "case_status",
    "field_number",
    "reviewed",
    "origin",
    "superseded_by_version",
    "record_altered",
    "research_use",
    "model_name",
    "signed_by",
    "signed_at_utc",
)


def cells_csv(record: CaseRecord) -> bytes:
    """One row per cell (columns :data:`CSV_COLUMNS`) as UTF-8 CSV bytes.

    A field where no white cell was found gets one row whose cell columns (``cell_id``, the
    box, ``blast_probability``, the labels, ``reviewed``, ``origin``) are empty, so the file
    names every field and its warnings.

    ``field_number`` counts from 1, as the app and the report name fields ("Field 1");
    ``field_index`` is the same field counted from 0, as the JSON and the library do.
    ``case_status`` is ``signed`` only for a signed case (``open``: a draft whose counts may
    still change); ``reviewed`` is ``true`` once a person has decided on the cell (until then
    ``label`` is the model's call), empty for a cell cut by the border, which is never counted
    and needs no review; ``changed_by_reviewer`` is ``true`` when the current label
    differs from the model's; ``origin`` names the reviewer's split or merge that made the cell
    (``split of 6``, ``merge of 3+4``), empty for a cell of the segmentation.
    ``superseded_by_version`` names the version a signed case was reopened as (its counts, not
    these, are the current result; empty while this version is current); ``record_altered`` is
    ``true`` when the audit hash chain found the record changed outside the app (do not rely
    on it); ``research_use`` repeats on every row that the file is not for diagnosis;
    ``model_name`` is the model that labelled the cells, ``signed_by`` and ``signed_at_utc``
    the (second) signer and the time (ISO 8601, UTC; empty while unsigned). An empty
    ``blast_probability`` means the cell was not classified,
    an empty ``domain_score`` that no out-of-domain check was made. Sample ids and field names
    starting with ``=``, ``+``, ``-`` or ``@`` get a leading apostrophe so that spreadsheets do
    not run them as formulas.
    """
    case_columns = {
        "case_id": record.case_id,
        "version": record.version,
        "sample_id": spreadsheet_text(record.sample_id),
        "case_status": record.status,
        "superseded_by_version": (
            "" if record.superseded_by is None else record.superseded_by.version
        ),
        "record_altered": "true" if record.altered else "false",
        "research_use": RESEARCH_USE_CELL,
        "model_name": spreadsheet_text(record.model_name),
        "signed_by": spreadsheet_text(record.signed_by or "") if record.is_signed else "",
        "signed_at_utc": (record.signed_at or "") if record.is_signed else "",
    }
    field_columns = {
        f.index: {
            "field_index": f.index,
            "field_number": f.index + 1,
            "field_name": spreadsheet_text(f.name),
            "field_warnings": field_warnings_text(f),
        }
        for f in record.fields
    }
    cells_by_field: dict[int, list] = {}
    for c in record.cells:
        cells_by_field.setdefault(c.field_index, []).append(c)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, CSV_COLUMNS, restval="")
    writer.writeheader()
    for index in sorted(field_columns.keys() | cells_by_field.keys()):
        fixed = {**case_columns, **field_columns.get(index, {"field_index": index,
                 "field_number": index + 1})}  # fmt: skip
        # A field where no white cell was found still gets a row (its cell columns empty), so
        # the file names every field and its warnings, and a case with no cell is not bare.
        for c in cells_by_field.get(index) or [None]:
            writer.writerow(fixed if c is None else {**fixed, **_cell_columns(c)})
    return buffer.getvalue().encode("utf-8")


def _cell_columns(c) -> dict:
    return {
        "cell_id": c.cell_id,
        **dict(zip(GEOMETRY_COLUMNS, (*c.bbox, *c.centroid), strict=True)),
        "blast_probability": "" if c.blast_probability is None else c.blast_probability,
        "model_label": c.model_label,
        "label": c.label,
        "changed_by_reviewer": "true" if c.changed_by_reviewer else "false",
        "domain_score": "" if c.domain_score is None else c.domain_score,
        "reviewed": "" if c.label == CellLabel.BORDER else ("true" if c.reviewed else "false"),
        "origin": c.origin,
    }


_JSON_CELL_SKIP = ("bbox", "centroid", "outline", "crop", "overlay")  # written apart or as flags


def case_json(record: CaseRecord) -> str:
    """The case as JSON text: metadata, counts, fields and cells (no image bytes), audit trail.

    ``domain`` (sample) and each field's ``domain`` hold the out-of-domain assessment (score,
    limit, warned, n_cells, statistic, message) or null; each cell has its ``domain_score``.
    ``superseded_by`` is the version a signed case was reopened as (case_id, version,
    created_at, created_by; null while this one is current), ``amends`` the signed version
    this one was reopened from (with its signers and counts; null: none); ``altered`` lists
    what the audit hash chain found changed outside the app (empty: intact). ``provisional``
    is true while ``n_unreviewed`` cells await a person's review (the counts may change).
    Each field has its ``notes`` (how it was read, possible clumps, damage), its size in the
    file (``original_size``) and the ``scale`` it was analysed at (boxes are in analysed
    pixels: divide by ``scale`` for the file's).
    """
    cells: list[dict[str, Any]] = []
    for c in record.cells:
        cell = {f.name: getattr(c, f.name) for f in fields(c) if f.name not in _JSON_CELL_SKIP}
        cell.update(bbox=list(c.bbox), centroid=list(c.centroid))
        cell.update(
            outline=np.round(c.outline).astype(int).tolist(),
            changed_by_reviewer=c.changed_by_reviewer,
            has_crop=c.crop is not None,
            has_overlay=c.overlay is not None,
        )
        cells.append(cell)
    document = {
        "format": "leukemia-screen case",
        "research_use_only": RESEARCH_USE_STATEMENT,
        **{
            k: getattr(record, k)
            for k in (
                "case_id",
                "version",
                "parent_id",
                "sample_id",
                "patient_id",
                "status",
                "created_at",
                "created_by",
                "model_name",
                "model_checksum",
                "thresholds",
                "signed_by",
                "signed_at",
                "first_signed_by",
                "first_signed_at",
                "comment",
            )
        },
        "earlier_reviewers": [
            {"version": version, "reviewer": name} for version, name in record.earlier_reviewers
        ],
        "provisional": record.n_unreviewed > 0,
        "n_unreviewed": record.n_unreviewed,
        "amends": None if record.amends is None else asdict(record.amends),
        "superseded_by": None
        if record.superseded_by is None
        else {
            k: getattr(record.superseded_by, k)
            for k in ("case_id", "version", "created_at", "created_by")
        },
        "altered": list(record.altered),
        "domain": None if record.domain is None else record.domain.to_dict(),
        "counts": asdict(record.counts()),
        "model_counts": asdict(record.model_counts()),
        "field_counts": [
            {"field_index": f.index, "field_number": f.index + 1, **asdict(count)}
            for f, count in zip(record.fields, record.field_counts(), strict=True)
        ],
        "fields": [
            {
                "field_index": f.index,
                "field_number": f.index + 1,
                "name": f.name,
                "width": f.width,
                "height": f.height,
                "domain": None if f.domain is None else f.domain.to_dict(),
                "quality_warnings": [asdict(w) for w in f.quality],
                "notes": list(field_notes_now(f.notes, record.field_cells(f.index))),
                "original_size": list(f.original_size),
                "scale": f.scale,
            }
            for f in record.fields
        ],
        "cells": cells,
        "audit": [asdict(a) for a in record.audit],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)
