"""An ``analyze`` output folder, which may be a lab's own folder of images and files.

The command's files carry the research-use statement (:data:`RESEARCH_USE`), which tells them
from a lab's: a lab's JSON beside its image is never overwritten (that image's outputs get
``-2``), a ``summary.json`` or ``cells.csv`` the command did not write stops the run, and an
earlier run's image JSON for an image not analysed now is removed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from leukemia_core.errors import SettingError

SUMMARY_FILE = "summary.json"
PARTS_DIR = ".parts"  # one finished image per file: what a rerun skips
RESEARCH_USE = (
    "Research use only; not for diagnosis. Every cell needs review by a qualified person."
)


def foreign_json_stems(out: Path) -> list[str]:
    """Stems of JSON files in ``out`` that this command did not write (a lab's sidecar files
    beside its images, when ``--out`` is the image folder): never overwritten, so an image of
    that stem gets ``-2`` outputs."""
    return [path.stem for path in out.glob("*.json") if not written_here(path)]


def written_here(path: Path) -> bool:
    """True for a results JSON of this command (it carries the research-use statement)."""
    try:
        return json.loads(path.read_text()).get("research_use") == RESEARCH_USE
    except (OSError, ValueError, AttributeError):
        return False


def table_header(table: Path) -> list[str] | None:
    """The first row of a CSV file (``[]`` when unreadable), or None when there is no file."""
    if not table.exists():
        return None
    try:
        with table.open(newline="", encoding="utf-8") as stream:
            return next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def refuse_foreign_files(out: Path, foreign: list[str]) -> None:
    """Stop before writing when ``out`` holds files of these names that the command would
    replace but did not write."""
    if foreign:
        raise SettingError(
            f"{out} holds {' and '.join(foreign)} that this command did not write; it would "
            "replace them. Give --out another folder (e.g. a new results/ folder)."
        )


def refuse_a_labs_own_tables(out: Path) -> None:
    """A ``summary.json`` or ``cells.csv`` in ``out`` that this command did not write (a lab's
    own, when ``--out`` is a folder of its files) is never replaced."""
    header = table_header(out / "cells.csv")
    summary = out / SUMMARY_FILE
    foreign = [name for name, ours in (
        (SUMMARY_FILE, not summary.exists() or written_here(summary)),
        ("cells.csv", header is None or ("cell_id" in header and "blast_probability" in header)),
    ) if not ours]  # fmt: skip
    refuse_foreign_files(out, foreign)


def remove_stale_image_files(out: Path, current: set[str]) -> None:
    """Remove the ``<stem>.json`` an earlier run wrote (it has a part file) for an image this run
    did not analyse, so the folder's image files match its ``summary.json``; the parts stay, so
    a later run with that image still skips it."""
    for part in (out / PARTS_DIR).glob("*.json"):
        stale = out / part.name
        if part.stem not in current and stale.is_file() and written_here(stale):
            stale.unlink()
