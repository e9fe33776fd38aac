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
from leukemia_core.io import read_image, write_text_atomic
from leukemia_core.pipeline import (
    FieldAnalysis,
    analyze_field,
    analyze_single_cells,
    review_warned_sample,
    sample_count,
)
from leukemia_core.types import BlastCount

RESEARCH_USE = "Research use only; not for diagnosis. Every cell needs review by a qualified person."
CELL_COLUMNS = ("image", "cell_id", "x0", "y0", "x1", "y1", "blast_probability", "label",
                "uncertain", "touches_border", "domain_score")  # fmt: skip


def count_dict(count: BlastCount) -> dict:
    """A :class:`BlastCount` as JSON-ready values."""
    return asdict(count)


def _image_summary(analysis: FieldAnalysis, model: str) -> dict:
    labels = [c.model_label for c in analysis.cells]
    return {
        "image": analysis.name,
        "model": model,
        "cells_found": len(analysis.cells),
        "uncertain": labels.count(CellLabel.UNCERTAIN),
        "border": labels.count(CellLabel.BORDER),
        "count": count_dict(analysis.count),
        "notes": list(analysis.notes),
        "domain": None if analysis.domain is None else analysis.domain.to_dict(),
        "research_use": RESEARCH_USE,
    }


def analyze_files(
    paths: list[Path], out: Path, classifier: Classifier, *, single_cells: bool = False
) -> tuple[int, dict]:
    """Analyse every image into ``out``; returns (number of failed images, set summary)."""
    out.mkdir(parents=True, exist_ok=True)
    analyses, failures, rows, stems = [], [], [], []
    for path in tqdm(paths, desc="analysing", unit="image", file=sys.stderr):
        try:
            rgb = read_image(path).rgb
            if single_cells:
                analysis = analyze_single_cells([rgb], classifier, names=[path.name])[0]
            else:
                analysis = analyze_field(rgb, classifier, name=path.name)
        except (LeukemiaCoreError, OSError) as error:
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            failures.append({"image": str(path), "error": str(error)})
            continue
        analyses.append(analysis)
        stems.append(path.stem)
        for note in analysis.notes:
            tqdm.write(f"{path.name}: {note}", file=sys.stderr)
        if analysis.domain is not None and analysis.domain.warned:
            tqdm.write(f"{path.name}: WARNING: {analysis.domain.message}", file=sys.stderr)
    analyses, domain = review_warned_sample(analyses, classifier)
    for analysis, stem in zip(analyses, stems, strict=True):
        for cell in analysis.cells:
            score = "" if cell.domain_score is None else round(cell.domain_score, 4)
            rows.append((analysis.name, cell.cell_id, *cell.cell.bbox,
                         round(cell.blast_probability, 4), cell.model_label.value,
                         cell.model_label == CellLabel.UNCERTAIN, cell.cell.touches_border,
                         score))  # fmt: skip
        summary = _image_summary(analysis, classifier.model.name)
        write_text_atomic(out / f"{stem}.json", json.dumps(summary, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CELL_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(out / "cells.csv", buffer.getvalue())
    total = {
        "images_analysed": len(analyses),
        "images_failed": failures,
        "model": classifier.model.name,
        "model_sha256": classifier.model.checksum,
        "model_calibration": classifier.model.config.decision_settings(),
        "mode": "single cells" if single_cells else "whole fields",
        "count": count_dict(sample_count(analyses)),
        "domain": None if domain is None else domain.to_dict(),
        "warned_images": [a.name for a in analyses if a.domain is not None and a.domain.warned],
        "research_use": RESEARCH_USE,
    }
    write_text_atomic(out / "summary.json", json.dumps(total, indent=2) + "\n")
    return len(failures), total
