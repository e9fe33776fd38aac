"""Headless analysis of many images: ``python -m leukemia_core analyze IMAGE... --out DIR``.

Writes ``cells.csv`` (one row per cell of every image, one with the cell columns empty for an
image without cells), ``<image stem>.json`` per image and
``summary.json`` for the whole set; every file is written atomically, and a bad image is reported
and skipped without stopping the batch. When the model has a domain reference, each cell gets its
domain score and each image and the whole set an out-of-domain assessment; a warned image (or a
warned set: all its images) has every cell labelled ``uncertain``, for review.

Each image is analysed on its own (:func:`analyze_image`, the same :func:`~leukemia_core.pipeline.
analyze` the app calls) into a part file under ``.parts/``; the outputs are then assembled from
the parts (:func:`write_outputs`). So a rerun into the same folder skips the images already done
from the same file with the same weights and decision settings, and an engine that analyses
images elsewhere (``batch_ray``) gives the same rows: only the place where :func:`analyze_image`
runs differs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from leukemia_core.batch_folder import (
    PARTS_DIR,
    RESEARCH_USE,
    SUMMARY_FILE,
    foreign_json_stems,
    refuse_a_labs_own_tables,
    remove_stale_image_files,
)
from leukemia_core.batch_set import (
    count_dict,
    folder_counts,
    unreviewed_count,
    without_repeated_fields,
)
from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.domain import DomainAssessment
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.fingerprints import (
    code_fingerprint,
    content_digest,
    field_signature,
    file_fingerprint,
)
from leukemia_core.imaging import read_for_analysis
from leukemia_core.io import MultiFrameImageWarning
from leukemia_core.jpeg_check import is_damaged
from leukemia_core.labellers import Labeller, labeller_for, send_to_review
from leukemia_core.outputs import (
    RESEARCH_USE_CELL,
    field_warnings_text,
    output_stems,
    renamed_note,
    spreadsheet_text,
    write_text_atomic,
)
from leukemia_core.pipeline import MODE_CELLS, MODE_FIELDS, Analysis, analyze
from leukemia_core.types import Field

PART_FORMAT = 4  # raise when the rows an image gives change, so older parts are redone
CELL_COLUMNS = ("image", "cell_id", "x0", "y0", "x1", "y1", "blast_probability", "label",
                "uncertain", "touches_border", "domain_score", "field_warnings", "file",
                "research_use")  # fmt: skip
_LABEL, _UNCERTAIN = CELL_COLUMNS.index("label"), CELL_COLUMNS.index("uncertain")


@dataclass(frozen=True)
class ImageResult:
    """One image's share of the outputs, before the whole set's domain check.

    Attributes:
        file: The input path.
        stem: Its output name (unique in the batch).
        model_fingerprint: The weights and decision settings that labelled it
            (:func:`model_fingerprint`).
        image_fingerprint: The file's :func:`~leukemia_core.fingerprints.file_fingerprint`
            when it was read.
        single_cells: The mode it was analysed in.
        rows: Its ``cells.csv`` rows.
        summary: Its ``<stem>.json`` (None when it failed).
        scores: Each cell's domain score (None without a reference).
        messages: Notes and warnings for the console.
        failure: Why it could not be analysed (None when it was).
        failed_as: How the failure names the image: its path when it could not be read, else
            its name.
        repeat_of: The input it repeats, byte for byte (then it is not analysed) or as the
            same field in another file (:func:`~leukemia_core.fingerprints.same_field`: then its
            cells are left out when the outputs are written): not a failure either, its cells
            are counted once, under that input.
        field_signature: :func:`~leukemia_core.fingerprints.field_signature` of the decoded
            image (a small view: one field in two files is counted once).
        reused: Taken from an earlier run into the same folder (not stored in the part).
    """

    file: str
    stem: str
    model_fingerprint: str
    image_fingerprint: str
    single_cells: bool
    rows: list[list] = ()
    summary: dict | None = None
    scores: list[float | None] = ()
    messages: list[str] = ()
    failure: str | None = None
    failed_as: str = ""
    repeat_of: str | None = None
    field_signature: str = ""
    reused: bool = False

    @property
    def name(self) -> str:
        return f"{self.stem}{Path(self.file).suffix}"


def _image_summary(analysis: Analysis, field: Field) -> dict:
    cells = analysis.field_cells(field.index)
    labels = [c.model_label for c in cells]
    return {
        "image": field.name,
        "model": analysis.model_name,
        "cells_found": len(cells),
        # Boxes are in the analysed pixels: divide by scale to place them on the file's own.
        "original_size": list(field.original_size),
        "analysed_size": [field.width, field.height],
        "scale": round(field.scale, 6),
        "uncertain": labels.count(CellLabel.UNCERTAIN),
        "border": labels.count(CellLabel.BORDER),
        "count": count_dict(analysis.count(field.index)),
        "notes": list(field.notes),
        "quality_warnings": [asdict(w) for w in field.quality],
        "field_warnings": field_warnings_text(field),  # as its rows in cells.csv say them
        "damaged": is_damaged(field.notes),  # decoded with missing or grey parts: cells reviewed
        "domain": None if field.domain is None else field.domain.to_dict(),
        "research_use": RESEARCH_USE,
    }


def model_fingerprint(labeller: Labeller) -> str:
    """What a finished image depends on besides the image: the weights, the calibration, the
    views, the domain limit, what runs the network (Keras and ONNX Runtime differ in the fifth
    decimal, and summary.json names one), :data:`PART_FORMAT` and the code (a run resumed after
    an upgrade redoes its images: the segmentation may find other cells)."""
    settings = {"weights": labeller.checksum, "settings": labeller.decision_settings(),
                "format": PART_FORMAT, "code": code_fingerprint(),
                "runtime": labeller.runtime}  # fmt: skip
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def model_summary(labeller: Labeller) -> dict:
    """The model's part of ``summary.json``: its name, weights, decision settings and runtime."""
    return {"model": labeller.name, "model_description": labeller.description,
            "model_sha256": labeller.checksum, "model_calibration": labeller.decision_settings(),
            "model_runtime": labeller.runtime}  # fmt: skip


def failed_result(path: Path, stem: str, labeller: Labeller, single_cells: bool, why: str):
    """The result of an image that could not be read or analysed at all."""
    return ImageResult(str(path), stem, model_fingerprint(labeller), file_fingerprint(path),
                       single_cells, failure=why, failed_as=str(path))  # fmt: skip


def analyze_image(path: Path, stem: str, labeller: Labeller, *, single_cells: bool) -> ImageResult:
    """Read and analyse one image (never raises for a bad image: the result says why).

    The domain of the whole set is not checked here but by :func:`write_outputs`, over every
    image's cells (as the app checks a sample's).
    """
    result = ImageResult(str(path), stem, model_fingerprint(labeller), file_fingerprint(path),
                         single_cells)  # fmt: skip
    try:  # the app's reader: the same pixels (and the same downscaling of a huge field)
        with warnings.catch_warnings():  # several pages: said in the image's notes instead
            warnings.simplefilter("ignore", MultiFrameImageWarning)
            image = read_for_analysis(path, result.name, input_size=labeller.input_size)
    except (LeukemiaCoreError, OSError) as error:
        return failed_result(path, stem, labeller, single_cells, str(error))
    except Exception as error:  # a reader's untyped failure must fail this image, not the batch
        return failed_result(path, stem, labeller, single_cells,
                             f"{result.name} could not be read ({type(error).__name__}: {error}); "
                             "copy or export it again.")  # fmt: skip
    analysis = analyze([image], labeller, mode=MODE_CELLS if single_cells else MODE_FIELDS,
                       sample_check=False)  # fmt: skip
    result = replace(result, field_signature=field_signature(image.rgb))
    if analysis.failures:
        return replace(result, failure=analysis.failures[0].message, failed_as=result.name)
    (field,) = analysis.fields
    damaged = is_damaged(field.notes)  # every cell was sent to review: said as a warning
    messages = [f"{field.name}: {'WARNING: ' * damaged}{note}" for note in field.notes]
    if field.domain is not None and field.domain.warned:
        messages.append(f"{field.name}: WARNING: {field.domain.message}")
    messages += [f"{field.name}: WARNING: {w.message}" for w in field.quality]
    warned = field_warnings_text(field)
    rows = []
    for cell in analysis.cells:
        score = "" if cell.domain_score is None else round(cell.domain_score, 4)
        p = "" if cell.blast_probability is None else round(cell.blast_probability, 4)
        rows.append([spreadsheet_text(field.name), cell.cell_id, *cell.bbox, p,
                     cell.model_label.value,
                     cell.model_label == CellLabel.UNCERTAIN, cell.touches_border, score, warned])  # fmt: skip
    summary = {**_image_summary(analysis, field), "file": str(path)}
    scores = [c.domain_score for c in analysis.cells]
    return replace(result, rows=rows, summary=summary, scores=scores, messages=messages)


def plan(paths: Sequence[Path], out: Path, labeller: Labeller, *, single_cells: bool):
    """``(path, stem)`` of every input and the results of those a previous run finished from the
    same file (:func:`~leukemia_core.fingerprints.file_fingerprint`) with the same weights,
    decision settings, code and mode (read from ``out/.parts``); failed images are tried
    again."""
    refuse_a_labs_own_tables(out)
    fingerprint = model_fingerprint(labeller)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    planned, done, first_of = [], {}, {}
    sizes = [_size(path) for path in paths]
    shared = {s for s in sizes if s is not None and sizes.count(s) > 1}  # only these can repeat
    reserved = [Path(SUMMARY_FILE).stem, *foreign_json_stems(out)]
    for path, stem, size in zip(paths, output_stems(paths, reserved=reserved), sizes,
                                strict=True):  # fmt: skip
        planned.append((path, stem))
        digest = content_digest(path) if size in shared else None
        if digest is not None and digest in first_of:  # counted once, whatever its name
            why = (f"the same file as {first_of[digest]} (given twice?): analysed once, so its "
                   "cells are not counted twice")  # fmt: skip
            repeat = failed_result(path, stem, labeller, single_cells, why)
            done[stem] = replace(repeat, repeat_of=first_of[digest])
            tqdm.write(f"repeat left out: {path} is {why}", file=sys.stderr)
            continue
        if note := renamed_note(path, stem):
            tqdm.write(note, file=sys.stderr)
        if digest is not None:
            first_of[digest] = str(path)
        part = out / PARTS_DIR / f"{stem}.json"
        try:
            result = ImageResult(**json.loads(part.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        same = (result.file, result.model_fingerprint, result.image_fingerprint,
                result.single_cells) == (str(path), fingerprint, file_fingerprint(path),
                                         single_cells)  # fmt: skip
        if same and result.failure is None:
            done[stem] = replace(result, reused=True)
            for message in result.messages:  # its notes and warnings hold for this run too
                tqdm.write(message, file=sys.stderr)
    if reused := sum(r.reused for r in done.values()):
        tqdm.write(f"{reused} of {len(paths)} image(s) were analysed by an earlier run into "
                   f"{out} (same file, model and settings): their results are reused.",
                   file=sys.stderr)  # fmt: skip
    return planned, done


def _size(path: Path) -> int | None:
    """The size of a regular file (None otherwise: its analysis will say why)."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def keep_part(out: Path, result: ImageResult) -> None:
    """Store one finished image (atomically: a killed run leaves whole parts only)."""
    stored = {k: v for k, v in asdict(result).items() if k != "reused"}
    write_text_atomic(out / PARTS_DIR / f"{result.stem}.json", json.dumps(stored) + "\n")
    for message in result.messages:
        tqdm.write(message, file=sys.stderr)
    if result.failure is not None:
        tqdm.write(f"skipped {result.failed_as}: {result.failure}", file=sys.stderr)


def analyze_files(
    paths: list[Path], out: Path, classifier: Classifier | Labeller, *, single_cells: bool = False
) -> tuple[int, dict]:
    """Analyse every image into ``out`` in this process; returns (number of failed images, set
    summary).

    Outputs are named after each file's stem, made unique (:func:`~leukemia_core.outputs.output_stems`)
    when two inputs share a name; the image JSON names the file it came from. In ``cells.csv``
    an image name that starts like a spreadsheet formula gets a leading apostrophe.
    """
    labeller = labeller_for(classifier)
    planned, done = plan(paths, out, labeller, single_cells=single_cells)
    for path, stem in tqdm(planned, desc="analysing", unit="image", file=sys.stderr):
        if stem not in done:
            done[stem] = analyze_image(path, stem, labeller, single_cells=single_cells)
            keep_part(out, done[stem])
    results = [done[stem] for _, stem in planned]
    return write_outputs(out, results, labeller.assess, model=model_summary(labeller),
                         single_cells=single_cells)  # fmt: skip


def write_outputs(
    out: Path,
    results: Sequence[ImageResult],
    assess: Callable[[list[float | None]], DomainAssessment | None],
    *,
    model: dict,
    single_cells: bool,
) -> tuple[int, dict]:
    """Write ``cells.csv``, each image's JSON and ``summary.json`` from the images' results,
    after the whole set's domain check (``assess``: the labeller's); returns (number of failed
    images, set summary)."""
    results = without_repeated_fields(results)
    analysed = [r for r in results if r.failure is None]
    domain = assess([s for r in analysed for s in r.scores])
    rows, table, by_folder = [], [], {}
    for result in analysed:
        image_rows, summary = result.rows, dict(result.summary)
        if domain is not None and domain.warned:  # the whole set differs: every cell to review
            image_rows = [_to_review(row) for row in image_rows]
            labels = [CellLabel(row[_LABEL]) for row in image_rows]
            summary["uncertain"] = labels.count(CellLabel.UNCERTAIN)
            summary["count"] = count_dict(unreviewed_count(labels, single_cells))
            # said in the image's own file too, whose "domain" may read "resemble" on its own
            summary["set_domain"] = domain.to_dict() | {
                "note": "The images of this run as a whole differ from the training data: every "
                "cell of every image was sent to review."}  # fmt: skip
        # The input's path, added here rather than kept in the parts: fields of several patients
        # often share file names, and the name column alone then needs the JSON to trace back.
        image_rows = [
            [*row, spreadsheet_text(result.file), RESEARCH_USE_CELL] for row in image_rows
        ]
        rows += image_rows
        table += image_rows or [_no_cell_row(result, summary)]
        by_folder.setdefault(str(Path(result.file).resolve().parent), []).extend(
            CellLabel(row[_LABEL]) for row in image_rows
        )
        write_text_atomic(out / f"{result.stem}.json", json.dumps(summary, indent=2) + "\n")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([CELL_COLUMNS, *table])
    write_text_atomic(out / "cells.csv", buffer.getvalue())
    remove_stale_image_files(out, {r.stem for r in analysed})
    failed = [r for r in results if r.failure is not None and r.repeat_of is None]
    total = {
        "images_analysed": len(analysed),
        "images_failed": [{"image": r.failed_as, "error": r.failure} for r in failed],
        "images_repeated": [
            {"image": r.file, "same_as": r.repeat_of} for r in results if r.repeat_of is not None
        ],
        "cells_found": len(rows),
        **model,
        "mode": "single cells" if single_cells else "whole fields",
        "count": count_dict(
            unreviewed_count([CellLabel(row[_LABEL]) for row in rows], single_cells)
        ),  # as the app reads them before review
        "count_by_folder": folder_counts(by_folder, single_cells),
        "domain": None if domain is None else domain.to_dict(),
        "warned_images": [r.name for r in analysed if (r.summary["domain"] or {}).get("warned")],
        "quality_warned_images": [r.name for r in analysed if r.summary["quality_warnings"]],
        "damaged_images": [r.name for r in analysed if r.summary.get("damaged")],
        "research_use": RESEARCH_USE,
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(total, indent=2) + "\n")
    return len(failed), total


def _no_cell_row(result: ImageResult, summary: dict) -> list:
    """The row of an image where no cell was found (cell columns empty): the table names it
    and its warnings, and a run without cells is no bare header lacking the research-use line."""
    return [spreadsheet_text(result.name), *[""] * (len(CELL_COLUMNS) - 4),
            summary["field_warnings"], spreadsheet_text(result.file), RESEARCH_USE_CELL]  # fmt: skip


def _to_review(row: list) -> list:
    label = send_to_review(CellLabel(row[_LABEL])).value
    row = list(row)
    row[_LABEL], row[_UNCERTAIN] = label, label == CellLabel.UNCERTAIN
    return row
