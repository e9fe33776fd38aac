"""Headless analysis of many images: ``python -m leukemia_core analyze IMAGE... --out DIR``.

Writes ``cells.csv`` (one row per cell of every image), ``<image stem>.json`` per image and
``summary.json`` for the whole set; every file is written atomically, and a bad image is reported
and skipped without stopping the batch. When the model has a domain reference, each cell gets its
domain score and each image and the whole set an out-of-domain assessment; a warned image (or a
warned set: all its images) has every cell labelled ``uncertain``, for review.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import PreparedImage
from leukemia_core.io import read_image
from leukemia_core.outputs import output_stems, renamed_note, spreadsheet_text, write_text_atomic
from leukemia_core.pipeline import MODE_CELLS, MODE_FIELDS, Analysis, ImageFailure, analyze
from leukemia_core.types import BlastCount, Field

SUMMARY_FILE = "summary.json"
RESEARCH_USE = (
    "Research use only; not for diagnosis. Every cell needs review by a qualified person."
)
CELL_COLUMNS = ("image", "cell_id", "x0", "y0", "x1", "y1", "blast_probability", "label",
                "uncertain", "touches_border", "domain_score", "field_warnings")  # fmt: skip


def count_dict(count: BlastCount) -> dict:
    """A :class:`BlastCount` as JSON-ready values."""
    return asdict(count)


def _image_summary(analysis: Analysis, field: Field) -> dict:
    cells = analysis.field_cells(field.index)
    labels = [c.model_label for c in cells]
    return {
        "image": field.name,
        "model": analysis.model_name,
        "cells_found": len(cells),
        "uncertain": labels.count(CellLabel.UNCERTAIN),
        "border": labels.count(CellLabel.BORDER),
        "count": count_dict(analysis.count(field.index)),
        "notes": list(field.notes),
        "quality_warnings": [asdict(w) for w in field.quality],
        "domain": None if field.domain is None else field.domain.to_dict(),
        "research_use": RESEARCH_USE,
    }


def analyze_files(
    paths: list[Path], out: Path, classifier: Classifier, *, single_cells: bool = False
) -> tuple[int, dict]:
    """Analyse every image into ``out``; returns (number of failed images, set summary).

    Outputs are named after each file's stem, made unique (:func:`~leukemia_core.outputs.output_stems`)
    when two inputs share a name; the image JSON names the file it came from. In ``cells.csv``
    an image name that starts like a spreadsheet formula gets a leading apostrophe.
    """
    out.mkdir(parents=True, exist_ok=True)
    images, failures, stems, files = [], [], {}, {}
    reserved = [Path(SUMMARY_FILE).stem]
    for path, stem in zip(paths, output_stems(paths, reserved=reserved), strict=True):
        if note := renamed_note(path, stem):
            tqdm.write(note, file=sys.stderr)
        name = f"{stem}{path.suffix}"
        try:
            loaded = read_image(path)
        except (LeukemiaCoreError, OSError) as error:
            failures.append(ImageFailure(str(path), str(error)))
            continue
        size = (loaded.width, loaded.height)
        images.append(PreparedImage(loaded.rgb, name, size, notes=loaded.notes))
        stems[name], files[name] = stem, str(path)
    with tqdm(total=len(images), desc="analysing", unit="image", file=sys.stderr) as bar:

        def progress(index: int, total: int, stage: str, done: int, of: int) -> None:
            bar.n = index + (stage == "counting")
            bar.refresh()

        analysis = analyze(images, classifier, mode=MODE_CELLS if single_cells else MODE_FIELDS,
                           failures=failures, progress=progress)  # fmt: skip
    for failure in analysis.failures:
        tqdm.write(f"skipped {failure.name}: {failure.message}", file=sys.stderr)
    rows = []
    for field in analysis.fields:
        for note in field.notes:
            tqdm.write(f"{field.name}: {note}", file=sys.stderr)
        if field.domain is not None and field.domain.warned:
            tqdm.write(f"{field.name}: WARNING: {field.domain.message}", file=sys.stderr)
        for warning in field.quality:
            tqdm.write(f"{field.name}: WARNING: {warning.message}", file=sys.stderr)
        warned = "; ".join(w.check for w in field.quality)
        for cell in analysis.field_cells(field.index):
            score = "" if cell.domain_score is None else round(cell.domain_score, 4)
            rows.append((spreadsheet_text(field.name), cell.cell_id, *cell.bbox, round(cell.blast_probability, 4),
                         cell.model_label.value, cell.model_label == CellLabel.UNCERTAIN,
                         cell.touches_border, score, warned))  # fmt: skip
        summary = {**_image_summary(analysis, field), "file": files[field.name]}
        write_text_atomic(out / f"{stems[field.name]}.json", json.dumps(summary, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CELL_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(out / "cells.csv", buffer.getvalue())
    domain = analysis.domain
    total = {
        "images_analysed": len(analysis.fields),
        "images_failed": [{"image": f.name, "error": f.message} for f in analysis.failures],
        "model": classifier.model.name,
        "model_sha256": classifier.model.checksum,
        "model_calibration": classifier.model.config.decision_settings(),
        "mode": "single cells" if single_cells else "whole fields",
        "count": count_dict(analysis.count()),
        "domain": None if domain is None else domain.to_dict(),
        "warned_images": [
            f.name for f in analysis.fields if f.domain is not None and f.domain.warned
        ],
        "quality_warned_images": [f.name for f in analysis.fields if f.quality],
        "research_use": RESEARCH_USE,
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(total, indent=2) + "\n")
    return len(analysis.failures), total
