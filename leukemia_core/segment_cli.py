"""``python -m leukemia_core segment``: white cells found and cut out, without a model.

Each image gets a folder of crops (``cell_001.png`` ...) and ``overlay.png``, the field with its
outlines; ``cells.csv`` lists every cell. Written last and atomically, the table never holds a
half-done run; an image whose files cannot be written is skipped, a full or read-only disk
stops the run. Only the command's own files are replaced: a ``cells.csv`` it did not write
(``analyze``'s, a lab's) stops the run, and a folder of the lab's that is named like an image
is left alone (that image's folder gets ``-2``).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import re
import sys
import warnings
from pathlib import Path

import cv2
from tqdm import tqdm

from leukemia_core.batch_folder import refuse_foreign_files, table_header
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells, draw_overlay
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.imaging import read_for_analysis
from leukemia_core.io import MultiFrameImageWarning
from leukemia_core.outputs import (
    GEOMETRY_COLUMNS,
    RESEARCH_USE_CELL,
    output_stems,
    renamed_note,
    spreadsheet_text,
    write_text_atomic,
)
from leukemia_core.segmentation import segment_wbc

OVERLAY_FILE = "overlay.png"  # the field with its outlines, in the image's crop folder
CSV_FILE = "cells.csv"
CSV_COLUMNS = (
    "image",
    "cell_id",
    *GEOMETRY_COLUMNS,
    "cell_area_px",
    "nucleus_area_px",
    "nucleus_cytoplasm_ratio",
    "touches_border",
    "crop_path",
    "file",
    "research_use",
)


def _write_png(path: Path, rgb) -> None:
    """Write an RGB image as PNG; the system's OSError when it cannot be (a full disk says so:
    OpenCV's imwrite only returns False)."""
    encoded, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not encoded:
        raise OSError(f"could not encode {path.name} as PNG")
    path.write_bytes(data.tobytes())


_STOP_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)  # no later image can be written either
_CROP_NAME = re.compile(r"cell_\d{3,}\.png")  # the crops this command writes, and only those


def _others_folders(out: Path) -> list[str]:
    """Names of folders in ``out`` that hold anything this command does not write (its crops
    and overlay): never written into. (An interrupted run's folder, crops without an overlay
    yet, is still the command's own.) A folder that cannot be listed counts as another's."""
    return [path.name for path in out.iterdir() if path.is_dir() and not _own_folder(path)]


def _own_folder(folder: Path) -> bool:
    try:
        return all(_written_here(p.name) for p in folder.iterdir())
    except OSError:
        return False


def _written_here(name: str) -> bool:
    """A crop or overlay file name this command writes into an image's folder."""
    return bool(_CROP_NAME.fullmatch(name)) or name == OVERLAY_FILE


def _cell_row(cell, stem: str, path: Path, crop_path: Path, out: Path) -> tuple:
    return (
        spreadsheet_text(f"{stem}{path.suffix}"),
        cell.cell_id,
        *cell.bbox,
        round(cell.centroid[0], 1),
        round(cell.centroid[1], 1),
        cell.cell_area_px,
        cell.nucleus_area_px,
        round(cell.nucleus_cytoplasm_ratio, 3),
        cell.touches_border,
        spreadsheet_text(crop_path.relative_to(out).as_posix()),
        spreadsheet_text(str(path)),
        RESEARCH_USE_CELL,
    )


def segment_files(paths: list[Path], out: Path, crop_size: int = DEFAULT_CROP_SIZE) -> int:
    """Segment each image into ``out``; returns the number of images that failed.

    Outputs are named after each file's stem, made unique (:func:`~leukemia_core.outputs.output_stems`)
    when two inputs share a name. In ``cells.csv`` a name or crop path that starts like a
    spreadsheet formula gets a leading apostrophe.
    """
    out.mkdir(parents=True, exist_ok=True)
    header = table_header(out / CSV_FILE)  # its own, of any version: image, cell_id, ... crop_path
    ours = header is None or (header[:2] == ["image", "cell_id"] and "crop_path" in header)
    refuse_foreign_files(out, [] if ours else [CSV_FILE])
    failures = 0
    rows = []
    stems = output_stems(paths, reserved=[CSV_FILE, *_others_folders(out)])
    bar = tqdm(zip(paths, stems, strict=True), total=len(paths), desc="segmenting", unit="image",
               file=sys.stderr)  # fmt: skip
    for path, stem in bar:
        if note := renamed_note(path, stem):
            tqdm.write(note, file=sys.stderr)
        try:  # the app's reader: the same pixels (a huge field is downscaled, with a note)
            with warnings.catch_warnings():  # several pages: said in the notes instead
                warnings.simplefilter("ignore", MultiFrameImageWarning)
                loaded = read_for_analysis(path)
        except (LeukemiaCoreError, OSError) as error:
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        rgb = loaded.rgb
        segmentation = segment_wbc(rgb)
        for note in (*loaded.notes, *segmentation.notes):
            tqdm.write(f"{stem}{path.suffix}: {note}", file=sys.stderr)
        folder = out / stem
        image_rows, written, made = [], [], not folder.exists()
        try:
            folder.mkdir(exist_ok=True)
            for stale in folder.iterdir():  # an earlier run's crops and overlay
                if _written_here(stale.name):
                    stale.unlink()
            for cell in crop_cells(rgb, segmentation, size=crop_size):
                crop_path = folder / f"cell_{cell.cell_id:03d}.png"
                written.append(crop_path)
                _write_png(crop_path, cell.crop)
                image_rows.append(_cell_row(cell, stem, path, crop_path, out))
            # beside its crops, not in --out itself: with --out the image folder, a second run
            # took the overlays for fields and cut crops from the drawn outlines
            written.append(folder / OVERLAY_FILE)
            _write_png(folder / OVERLAY_FILE, draw_overlay(rgb, segmentation))
        except OSError as error:  # this image's files, not the run: the others go on
            for done in written:  # no crops of an image said skipped; nothing else removed
                done.unlink(missing_ok=True)
            if made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if error.errno in _STOP_ERRNOS:
                raise
            tqdm.write(f"skipped {path}: its outputs could not be written ({error})",
                       file=sys.stderr)  # fmt: skip
            failures += 1
            continue
        rows += image_rows
    # Written last and atomically, so an interrupted run never leaves a half-written table.
    text = io.StringIO()
    csv.writer(text).writerows([CSV_COLUMNS, *rows])
    write_text_atomic(out / CSV_FILE, text.getvalue())
    return failures
