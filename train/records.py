"""Labelled crops and their tables, labels, the dataset errors, image checks and summaries.

The data model that the loaders of :mod:`train.data` and the splits of :mod:`train.splits`
share; :mod:`train.data` re-exports every public name here, so ``from train.data import
LabelledCrop`` keeps working.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from leukemia_core.errors import LeukemiaCoreError

BLAST = "blast"
NORMAL = "normal"
LABELS = (BLAST, NORMAL)
NO_LABEL = "none"  # a class folder left out (--class-label FOLDER=none; "Leave out" on the page)
NEGATIONS = frozenset({"non", "no", "not", "neg", "negative", "without", "free"})
NOT_LEUKEMIC_BLASTS = ("megaloblast",)  # erythroid, not a leukemic blast: ask
LEUKEMIA_WORDS = ("leukemi", "leukaemi")  # leukemia, leukemic, leukaemic, ...
NORMAL_CELL_TYPES = frozenset(
    {
        "normoblast",
        "neutrophil",
        "lymphocyte",
        "monocyte",
        "eosinophil",
        "basophil",
        "ig",
        "erythroblast",
        "platelet",
        "hem",
        "normal",
    }
)


class DatasetError(LeukemiaCoreError, ValueError):
    """A dataset folder or manifest cannot be used for training or evaluation."""


class DatasetNotFoundError(DatasetError):
    """The dataset folder or manifest does not exist."""


class EmptyDatasetError(DatasetError):
    """The dataset holds no usable images."""


class SingleClassError(DatasetError):
    """The dataset holds cells of one class only."""


class MissingGroupError(DatasetError):
    """Some cells carry no group (subject or field), so a leak-free split is impossible."""


class UnknownClassFolderError(DatasetError):
    """Class-folder names that cannot be mapped to ``blast``/``normal`` automatically.

    ``folders``: every class folder with images, ``unknown``: those without a label, and
    ``dataset``: the name of the folder holding them, so a caller (the Retrain page) can ask for
    the labels.
    """

    def __init__(
        self, message: str, folders: tuple[str, ...] = (), unknown: tuple[str, ...] = (),
        dataset: str = "",
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.folders, self.unknown, self.dataset = folders, unknown, dataset


class ManifestError(DatasetError):
    """A CSV manifest has missing columns or bad rows."""


class UnreadableFileError(DatasetError):
    """Image files that PIL cannot decode."""


@dataclass(frozen=True)
class LabelledCrop:
    """One single-cell image file (a crop) with its label and its leak-free grouping unit.

    Training and evaluation data, read from disk; the app's detected cell is
    :class:`leukemia_core.types.Cell`.

    Attributes:
        path: Image file.
        label: ``"blast"`` or ``"normal"``.
        group: Unit that stays on one side of a split (subject, smear field or file).
        source: Dataset the cell comes from (``"cnmc"``, ``"allidb2"``, a folder name, ...).
        subset: Part of the source it was found in (``"fold_0"``, a test folder), if any.
        cell_type: Finer cell type (the class-folder name), for per-type reporting.
    """

    path: Path
    label: str
    group: str
    source: str
    subset: str | None = None
    cell_type: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise DatasetError(f"Label {self.label!r} of {self.path} is not one of {LABELS}.")
        if not str(self.group).strip():
            raise MissingGroupError(f"{self.path} has an empty group; give it a subject id.")


@dataclass(frozen=True)
class CellTable:
    """Records of a loaded dataset plus human-readable notes about how it was read.

    Attributes:
        records: The cells.
        notes: How the layout was read, what was skipped.
        groups_known: False when some cells carry no subject or field id and stand in as
            their own group (loose class-folder files, ALL-IDB2 crops without their
            source-field CSV): cells of one donor may then fall on both sides of a split.
    """

    records: tuple[LabelledCrop, ...]
    notes: tuple[str, ...] = ()
    groups_known: bool = True

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[LabelledCrop]:
        return iter(self.records)

    def to_frame(self) -> pd.DataFrame:
        """One row per cell: path, label, group, source, subset, cell_type."""
        columns = ["path", "label", "group", "source", "subset", "cell_type"]
        return pd.DataFrame([asdict(r) for r in self.records], columns=columns)

    @classmethod
    def concat(cls, *tables: CellTable) -> CellTable:
        """Join several tables (e.g. C-NMC plus extra normal cells), keeping all notes."""
        records = tuple(r for t in tables for r in t.records)
        notes = tuple(n for t in tables for n in t.notes)
        return cls(records, notes, all(t.groups_known for t in tables))


def listed(items: Iterable[object], limit: int = 8) -> str:
    """``items`` for a message: the first ``limit``, then how many more."""
    items = [str(i) for i in items]
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def default_label(folder_name: str) -> str | None:
    """Label implied by a class-folder name, or None when it is unknown or ambiguous.

    A negation (``non_blast``, ``ALL_negative``), a blast that is not a leukemic one
    (``megaloblast``) or a word for any white cell (``leukocytes``) is unknown, so the lab is
    asked: guessing "blast" there would teach the model the opposite of the folder.

    >>> default_label("lymphoblast"), default_label("Erythroblasts"), default_label("Early")
    ('blast', 'normal', None)
    >>> default_label("non_blast"), default_label("ALL negative"), default_label("leukocytes")
    (None, None, None)
    """
    hits = set()
    for token in re.split(r"[^a-z0-9]+", folder_name.lower()):
        if token.endswith("s") and token[:-1] in NORMAL_CELL_TYPES:
            token = token[:-1]
        if token in NEGATIONS or re.match(r"(non|not|no)blast", token):
            return None
        if token in NORMAL_CELL_TYPES:
            hits.add(NORMAL)
        elif token.startswith(NOT_LEUKEMIC_BLASTS) or token.startswith("leukocyte"):
            return None
        elif token and ("blast" in token or token == "all" or token.startswith(LEUKEMIA_WORDS)):
            hits.add(BLAST)
    return hits.pop() if len(hits) == 1 else None


def parse_class_label(text: str) -> tuple[str, str | None]:
    """``"Pre=blast"`` -> ``("Pre", "blast")``; ``FOLDER=none`` leaves the folder out (None).

    >>> parse_class_label("Benign = normal"), parse_class_label("Other=none")
    (('Benign', 'normal'), ('Other', None))
    """
    name, sep, label = text.partition("=")
    name, label = name.strip(), label.strip().lower()
    if not sep or not name or label not in (*LABELS, NO_LABEL):
        raise ValueError(
            f"{text!r} is not FOLDER=blast, FOLDER=normal or FOLDER={NO_LABEL} (leave it out), "
            "e.g. Pre=blast."
        )
    return name, None if label == NO_LABEL else label


def unreadable_images(records: Iterable[LabelledCrop]) -> list[tuple[LabelledCrop, str]]:
    """Every record whose image PIL cannot decode fully, with why."""
    bad = []
    for record in records:
        try:
            with Image.open(record.path) as image:
                image.load()
        except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as error:
            bad.append((record, f"{record.path} ({_why_unreadable(error)})"))
    return bad


def _why_unreadable(error: BaseException) -> str:
    """What is wrong with a file PIL could not decode, in words (not an exception's name)."""
    text = str(error)
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels to be a cell image"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not a picture file: empty, or text or another kind of file with an image name"
    if "truncated" in text.lower() or isinstance(error, (SyntaxError, EOFError)):
        return "cut off or damaged: the file ends before its pixel data does"
    return f"cannot be decoded: {text}"


def verify_images(records: Iterable[LabelledCrop]) -> None:
    """Decode every image fully with PIL; raise :class:`UnreadableFileError` listing failures."""
    if bad := unreadable_images(records):
        raise UnreadableFileError(
            f"{len(bad)} image(s) cannot be decoded: {listed([why for _, why in bad])}. "
            'Re-copy them, or leave them out ("Leave out images that cannot be read" on the '
            "Retrain page, --skip-unreadable on the command line)."
        )


def summarize(records: Iterable[LabelledCrop]) -> dict:
    """Counts per class, source, cell type and group, and how many groups are pure or mixed."""
    records = list(records)
    by_group: dict[str, Counter] = {}
    for r in records:
        by_group.setdefault(r.group, Counter())[r.label] += 1
    purity = Counter("mixed" if len(c) > 1 else f"all_{min(c)}" for c in by_group.values())
    return {
        "n_cells": len(records),
        "n_groups": len(by_group),
        "per_class": {label: sum(r.label == label for r in records) for label in LABELS},
        "per_source": dict(Counter(r.source for r in records)),
        "per_cell_type": dict(Counter(r.cell_type for r in records if r.cell_type)),
        "per_group": {g: sum(c.values()) for g, c in by_group.items()},
        "groups_by_class": {k: purity[k] for k in ("all_blast", "all_normal", "mixed")},
    }
