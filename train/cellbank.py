"""Turn the public datasets into one bank of classifier-domain crops plus a CSV manifest.

Every source goes through the same core pipeline the app uses (segmentation, then the C-NMC-style
cell-on-black crop), so the classifier is trained on what it will see. What each source gives:

- ALL-IDB1 fields (``images/`` + ``xyc/``): a detected cell holding an expert centroid is a blast;
  every cell of a healthy ``_0`` field is normal. In ``_1`` fields the experts marked every blast,
  so a cell without a mark is taken as a non-blast (lymphocytes, neutrophils, smudged cells),
  except when it touches a marked cell: such a piece is most likely the other half of a blast the
  segmentation split, and is left out. Cells cut by the border are left out as the app leaves
  them out of counts. Group: a block of four
  consecutive field numbers (fields of one patient are numbered consecutively; no patient ids
  are published), shared with the ALL-IDB2 crops cut from those fields.
- ALL-IDB2 crops: the centre cell; the label from the file name; grouped with its ALL-IDB1 field.
- C-NMC 2019: cells are already on black; grouped by subject.
- Class folders (PBC: normal cell types; deepapl: ``blast`` plus normal types, one sub-folder
  per patient): the centre cell; platelets are left out (not leukocytes). Grouped by patient
  folder where there is one, else by file. The deepapl blasts (myeloid, from another lab's
  CellaVision) are what stops "CellaVision look = normal" from being learnable: PBC alone gives
  that instrument's crops as one class only.
- BCCD fields: detected cells inside an expert WBC box, all normal; grouped by field.

Zheng et al. crops are not used: they are too small to show the red cells that fix a crop's
scale.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
from leukemia_core.errors import InvalidImageError, NoCellError
from leukemia_core.io import read_image
from leukemia_core.outputs import write_text_atomic
from leukemia_core.segmentation import segment_wbc
from leukemia_core.single_cell import WHOLE_IMAGE, single_cell_crop
from train.data import load_allidb2, load_class_folders, load_cnmc
from train.evaluate.segmentation import cells_at_points, image_files, read_voc_boxes, read_xyc
from train.groups import bank_group, idb1_group
from train.records import BLAST, NORMAL

MANIFEST_COLUMNS = ("path", "label", "group", "source", "subset", "cell_type")
SKIPPED_FILE = "skipped.csv"  # unreadable source images, with the reader's message

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BankRow:
    """One crop of the bank, before it is written."""

    crop: np.ndarray
    name: str
    label: str
    group: str
    source: str
    cell_type: str = ""


@dataclass(frozen=True)
class SkippedImage:
    """A source image that could not be read; the bank goes on without it."""

    path: Path
    reason: str


def _touching(labels: np.ndarray, ids: set[int]) -> set[int]:
    """Labels of cells that touch any cell in ``ids`` (within 2 px)."""
    if not ids:
        return set()
    grown = cv2.dilate(np.isin(labels, list(ids)).astype(np.uint8), np.ones((5, 5), np.uint8))
    return set(np.unique(labels[grown.astype(bool)]).tolist()) - {0} - ids


def allidb1_rows(root: Path, size: int, progress: Progress | None = None):
    """Crops of every ALL-IDB1 field (see the module docstring for the labelling rule)."""
    fields = image_files(root / "images")  # every suffix the evaluation reads; none: an error
    for i, path in enumerate(fields):
        rgb = read_image(path).rgb
        seg = segment_wbc(rgb)
        xyc = root / "xyc" / f"{path.stem}.xyc"
        blasts = cells_at_points(read_xyc(xyc) if xyc.exists() else [], seg.cell_labels)
        near_blast = _touching(seg.cell_labels, set(blasts))
        for cell in crop_cells(rgb, seg, size=size):
            if cell.touches_border or (cell.cell_id not in blasts and cell.cell_id in near_blast):
                continue
            label = BLAST if cell.cell_id in blasts else NORMAL
            name = f"{path.stem}_cell{cell.cell_id:03d}"
            yield BankRow(cell.crop, name, label, idb1_group(path.stem), "allidb1")
        if progress:
            progress(i + 1, len(fields), path.name)


def _single_cell_rows(table, size, progress, group_of=bank_group):
    for i, record in enumerate(table.records):
        try:
            crop = single_cell_crop(read_image(record.path).rgb, size=size)
        except (InvalidImageError, NoCellError) as error:  # one bad file must not stop the bank
            yield SkippedImage(record.path, str(error))
            continue
        if crop.method != WHOLE_IMAGE:
            yield BankRow(
                crop.crop,
                record.path.stem,
                record.label,
                group_of(record),
                record.source,
                record.cell_type or "",
            )
        if progress:
            progress(i + 1, len(table), record.path.name)


def allidb2_rows(root: Path, size: int, progress: Progress | None = None):
    """Centre cells of ALL-IDB2 crops, grouped with the ALL-IDB1 field they were cut from."""
    yield from _single_cell_rows(load_allidb2(root), size, progress)


def cnmc_rows(root: Path, size: int, progress: Progress | None = None):
    """C-NMC cells (already on black), grouped by subject."""
    yield from _single_cell_rows(load_cnmc(root), size, progress)


def folder_rows(root: Path, size: int, progress: Progress | None = None):
    """Centre cells of class folders (PBC or deepapl layout); platelets are left out."""
    table = load_class_folders(
        root, label_map={"platelet": None} if (root / "platelet").is_dir() else None
    )
    yield from _single_cell_rows(table, size, progress)


def bccd_rows(root: Path, size: int, progress: Progress | None = None):
    """Detected cells inside BCCD expert WBC boxes; all normal, grouped by field."""
    fields = image_files(root / "images")
    for i, path in enumerate(fields):
        boxes = read_voc_boxes(root / "annotations" / f"{path.stem}.xml")
        rgb = read_image(path).rgb
        for cell in crop_cells(rgb, segment_wbc(rgb), size=size):
            x, y = cell.centroid
            if not cell.touches_border and any(b.contains(x, y) for b in boxes):
                name = f"{path.stem}_cell{cell.cell_id:03d}"
                yield BankRow(cell.crop, name, NORMAL, f"bccd:{path.stem}", "bccd")
        if progress:
            progress(i + 1, len(fields), path.name)


SOURCES = {
    "allidb1": allidb1_rows,
    "allidb2": allidb2_rows,
    "cnmc": cnmc_rows,
    "pbc": folder_rows,
    "deepapl": folder_rows,
    "bccd": bccd_rows,
}


def _free_name(stem: str, group: str, taken: set[str]) -> str:
    """``<stem>.png``, or with its group (then a number) added when another crop has that name:
    two patients' ``c1.jpg`` wrote one crop, listed under both labels."""
    name, number = stem, 1
    while name.casefold() in taken:
        number += 1
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", group.partition(":")[2] or group)
        name = f"{stem}__{tag}" + (f"-{number - 1}" if number > 2 else "")
    taken.add(name.casefold())
    return f"{name}.png"


def build_bank(
    sources: dict[str, Path],
    out: Path,
    *,
    size: int = DEFAULT_CROP_SIZE,
    progress: Callable[[str], Progress] | None = None,
) -> Path:
    """Write every source's crops under ``out/<source>/`` and ``out/manifest.csv``.

    Args:
        sources: Source kind (a key of :data:`SOURCES`) -> its folder.
        out: Output folder; the manifest is replaced atomically at the end.
        size: Crop side in pixels.
        progress: Called with the source name, returns that source's progress callback.

    Returns:
        The manifest path (columns :data:`MANIFEST_COLUMNS`, paths relative to ``out``).
        Unreadable source images are left out and listed in :data:`SKIPPED_FILE` beside it.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"Unknown source kind(s) {unknown}; known: {sorted(SOURCES)}.")
    missing = [
        f"--{kind} {folder}" for kind, folder in sources.items() if not Path(folder).is_dir()
    ]
    if missing:  # checked first: a typo in the last source stopped a bank hours in
        raise FileNotFoundError(f"No such folder: {', '.join(missing)}. Check the path(s).")
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped, taken = [], [], set()
    for kind, folder in sources.items():
        (out / kind).mkdir(exist_ok=True)
        for row in SOURCES[kind](Path(folder), size, progress(kind) if progress else None):
            if isinstance(row, SkippedImage):
                skipped.append((str(row.path), row.reason))
                continue
            relative = _free_name(f"{kind}/{row.name}", row.group, taken)
            cv2.imwrite(str(out / relative), cv2.cvtColor(row.crop, cv2.COLOR_RGB2BGR))
            rows.append((relative, row.label, row.group, row.source, kind, row.cell_type))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    skipped_text = io.StringIO()
    csv.writer(skipped_text).writerows([("path", "reason"), *skipped])
    write_text_atomic(out / SKIPPED_FILE, skipped_text.getvalue())
    return write_text_atomic(out / "manifest.csv", buffer.getvalue())
