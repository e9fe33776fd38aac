"""Single-cell datasets: C-NMC 2019, ALL-IDB2, one folder per class, and CSV manifests.

Every loader returns a :class:`CellTable` of :class:`LabelledCrop` rows. Each row has a label
(``"blast"`` or ``"normal"``) and a *group*: the unit that must never be split between
training and evaluation (a subject, a smear field, or the file itself when nothing better is
known). :mod:`train.splits` keeps equal group strings together, even across sources.
Loaders read the layout only (folder structure and naming scheme), never a list of file names.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from leukemia_core.io import FILE_SUFFIXES
from train.manifest import load_manifest as load_manifest  # re-exported
from train.manifest import read_csv
from train.records import (
    BLAST,
    LABELS,
    NORMAL,
    NORMAL_CELL_TYPES,
    CellTable,
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    LabelledCrop,
    MissingGroupError,
    SingleClassError,
    UnknownClassFolderError,
    default_label,
    listed,
    verify_images,
)
from train.records import ManifestError as ManifestError  # re-exported
from train.records import UnreadableFileError as UnreadableFileError  # re-exported
from train.records import summarize as summarize  # re-exported
from train.same_cell import crop_centre, each_cell_once

FORMATS = ("cnmc", "allidb2", "folders", "manifest")
IMAGE_SUFFIXES = frozenset(FILE_SUFFIXES)  # what the app reads (a .webp cell was skipped unsaid)
_CNMC_SUBJECT = re.compile(r"^UID_([A-Za-z]*\d+)_", re.IGNORECASE)
_CNMC_CLASS_DIRS = {"all": BLAST, "hem": NORMAL}
_CNMC_LAYOUT = "training_data/fold_<n>/{all,hem}/UID_<subject>_<image>_<cell>_{all,hem}.bmp"
_IDB2_NAME = re.compile(r"^.+_([01])$")
_TIFF = (".tif", ".tiff")


def _existing_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        kind = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetNotFoundError(f"Dataset folder {root} {kind}; check the path.")
    return root


def _images_in(folder: Path, recursive: bool = False, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
    )


def _csvs_with_columns(paths: Iterable[Path], *columns: str) -> list[Path]:
    found = []
    for path in sorted(paths):
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                header = {c.strip().lower() for c in next(csv.reader(f), [])}
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        found += [path] if set(columns) <= header else []
    return found


def _scan_cnmc(root: Path) -> tuple[list[Path], dict[Path, list[Path]], list[Path]]:
    """Images in ``all``/``hem`` folders, images of test folders, and labels CSVs under root."""
    train, tests, csvs = [], {}, []
    for path in sorted(root.rglob("*")):
        suffix, folder = path.suffix.lower(), path.parent.name.lower()
        if path.name.startswith(".") or not path.is_file():
            continue
        if suffix == ".csv":
            csvs.append(path)
        elif suffix in IMAGE_SUFFIXES and folder in _CNMC_CLASS_DIRS:
            train.append(path)
        elif suffix in IMAGE_SUFFIXES and "test" in folder:
            tests.setdefault(path.parent, []).append(path)
    return train, tests, _csvs_with_columns(csvs, "new_names", "labels")


def _cnmc_test(
    folder: Path, images: list[Path], label_csvs: list[Path]
) -> tuple[list[LabelledCrop], str | None]:
    names = {p.name for p in images}  # test folders reuse names (1.bmp, ...): match CSV to folder
    for csv_path in (
        c
        for c in label_csvs
        if c.parent == folder or c.stem.lower().startswith(folder.name.lower())
    ):
        by_name = {r["new_names"]: r for r in read_csv(csv_path)[1] if r.get("new_names") in names}
        if not by_name:
            continue
        records, unlabelled = [], []
        for path in images:
            row = by_name.get(path.name, {})
            if row.get("labels") not in ("0", "1"):
                unlabelled.append(path.name)
                continue
            patient = row.get("patient_id", "")
            match = _CNMC_SUBJECT.match(patient)
            group = (match.group(1).upper() if match else patient) or f"{folder.name}/{path.name}"
            label = BLAST if row["labels"] == "1" else NORMAL
            records.append(LabelledCrop(path, label, group, "cnmc", folder.name))
        if not unlabelled:
            return records, None
        return records, f"Skipped {len(unlabelled)} image(s) of {folder.name} with no 0/1 label."
    note = (
        f"Skipped {len(images)} unlabelled image(s) in {folder.name}: no labels CSV "
        "(Patient_ID,new_names,labels) names them (the C-NMC final test set has no public labels)."
    )
    return [], note


def load_cnmc(root: str | Path) -> CellTable:
    """Load C-NMC 2019: ``training_data/fold_<n>/{all,hem}/UID_<subject>_..._{all,hem}.bmp``.

    ``root`` may be the dataset root, ``training_data`` or one fold. ``all`` cells are blasts,
    ``hem`` cells normal; the group is the subject (``"3"``, healthy ``"H11"``). Test folders
    are read when a CSV with columns ``Patient_ID,new_names,labels`` (1 = ALL) lies in them or
    is named after them (``<test folder>_labels.csv``); unlabelled ones are skipped with a note.
    """
    root = _existing_dir(root)
    train, tests, label_csvs = _scan_cnmc(root)
    records, no_subject, mismatched, notes = [], [], [], []
    for path in train:
        label, match = _CNMC_CLASS_DIRS[path.parent.name.lower()], _CNMC_SUBJECT.match(path.name)
        if not match:
            no_subject.append(path.relative_to(root).as_posix())
        elif _CNMC_CLASS_DIRS.get(path.stem.lower().rsplit("_", 1)[-1], label) != label:
            mismatched.append(path.relative_to(root).as_posix())
        else:
            subject = match.group(1).upper()
            records.append(LabelledCrop(path, label, subject, "cnmc", path.parent.parent.name))
    if no_subject:
        raise MissingGroupError(
            f"{len(no_subject)} file(s) under {root} are not named UID_<subject>_<image>_<cell>_"
            f"{{all,hem}}.bmp, so their subject is unknown: {listed(no_subject)}. Rename them "
            "or list the cells in a CSV manifest (path,label,group)."
        )
    if mismatched:
        raise DatasetError(f"File name and folder disagree on the class: {listed(mismatched)}.")
    for folder, images in tests.items():
        found, note = _cnmc_test(folder, images, label_csvs)
        records += found
        notes += [note] if note else []
    if not records:
        raise EmptyDatasetError(
            f"No C-NMC cells under {root}: expected {_CNMC_LAYOUT}. " + " ".join(notes)
        )
    return CellTable(tuple(records), tuple(notes))


def load_allidb2(root: str | Path) -> CellTable:
    """Load ALL-IDB2 crops ``images/ImXXX_Y.tif`` (``Y=1`` blast, ``Y=0`` normal).

    The group is the ALL-IDB1 field the crop was cut from, read from a CSV with columns
    ``crop,idb1_field`` (``source_fields.csv``); without it each crop is its own group and the
    table says ``groups_known=False``.
    """
    root = _existing_dir(root)
    folder = root / "images" if (root / "images").is_dir() else root
    files = _images_in(folder, suffixes=_TIFF)
    if not files:
        raise EmptyDatasetError(f"No ALL-IDB2 crops (ImXXX_Y.tif) in {folder}.")
    odd = [p.name for p in files if not _IDB2_NAME.match(p.stem)]
    if odd:
        raise DatasetError(
            f"{len(odd)} file(s) in {folder} do not end in _0 or _1 (the "
            f"ALL-IDB2 label): {listed(odd)}."
        )
    fields_csv = next(iter(_csvs_with_columns(root.glob("*.csv"), "crop", "idb1_field")), None)
    fields, centres = {}, {}
    for row in read_csv(fields_csv)[1] if fields_csv else []:
        if row.get("idb1_field"):
            fields[row["crop"]] = fields[Path(row["crop"]).stem] = row["idb1_field"]
            centres[Path(row["crop"]).stem] = crop_centre(row)
    records, ungrouped, notes = [], [], []
    for path in files:
        group = fields.get(path.name) or fields.get(path.stem)
        if not group:
            ungrouped.append(path.name)
        label = BLAST if _IDB2_NAME.match(path.stem).group(1) == "1" else NORMAL
        records.append(LabelledCrop(path, label, group or path.name, "allidb2"))
    records, repeats = each_cell_once(records, centres)
    notes += repeats
    if fields_csv is None:
        notes.append(
            "No source-field CSV (crop,idb1_field): each crop is its own group, so crops "
            "cut from one ALL-IDB1 field may fall on both sides of a split."
        )
    elif ungrouped:
        notes.append(
            f"Crop(s) missing from {fields_csv.name}, each its own group: {listed(ungrouped)}."
        )
    return CellTable(tuple(records), tuple(notes), groups_known=not ungrouped)


def _refuse_nested_classes(root: Path, labels: Mapping[str, str | None]) -> None:
    """Refuse a class folder holding class folders of another label: the folder above the
    dataset was picked (or a zip held it with a README), and ``leukemia_cells/normal/...``
    would be read as blasts."""
    for name, label in labels.items():
        inner = {d.name: default_label(d.name) for d in (root / name).iterdir()
                 if d.is_dir() and not d.name.startswith(".")}  # fmt: skip
        other = sorted(n for n, inner_label in inner.items()
                       if inner_label is not None and inner_label != label)  # fmt: skip
        if other:
            raise DatasetError(
                f"{root / name} is read as a class folder ({label or 'no label'}), but it holds "
                f"class folders itself ({listed(sorted(n for n in inner if inner[n]))}): pick "
                f"{root / name}, the folder that holds the class folders, as the dataset."
            )


def load_class_folders(
    root: str | Path, label_map: Mapping[str, str | None] | None = None, source: str | None = None
) -> CellTable:
    """Load ``<class>/[<subject>/]*.{jpg,png,bmp,tif}``, one folder per cell type.

    Images in a subfolder of a class folder are grouped by that first subfolder's name, across
    classes (``blast/P01/a.png`` and ``normal/P01/b.png`` share group ``P01``). An image lying
    directly in its class folder has no subject id: it is its own group (its path) and the table
    says ``groups_known=False``.

    Args:
        root: Folder holding one subfolder per class.
        label_map: Folder name -> ``"blast"``, ``"normal"`` or None (leave out); folders not
            named here are labelled by :func:`default_label`.
        source: Source name of the records; the folder name of ``root`` by default.
    """
    root = _existing_dir(root)
    label_map = dict(label_map or {})
    folders = {
        d.name: _images_in(d, recursive=True)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    bad = {k: v for k, v in label_map.items() if k not in folders or v not in (*LABELS, None)}
    if bad:
        raise DatasetError(
            f"label_map entries {bad} name no folder of {root} or no label "
            f"('blast', 'normal' or None); the folders are: {listed(folders)}."
        )
    folders = {name: files for name, files in folders.items() if files}
    if not folders:
        loose = " (images lie directly in it: use one subfolder per class)" * bool(_images_in(root))
        raise EmptyDatasetError(f"No class subfolders with images in {root}{loose}.")
    labels = {n: label_map[n] if n in label_map else default_label(n) for n in folders}
    _refuse_nested_classes(root, labels)
    unknown = [n for n in folders if n not in label_map and labels[n] is None]
    if unknown and len(unknown) == len(folders) and default_label(root.name) is not None:
        # e.g. lab/blast picked instead of lab: its subject folders look like classes
        raise EmptyDatasetError(
            f"{root} looks like one class folder (it holds {default_label(root.name)} cells), "
            f"and its subfolders ({listed(unknown)}) look like subjects: pick the folder above "
            f"it, {root.parent}, which holds the class folders."
        )
    if unknown:
        raise UnknownClassFolderError(
            f"Cannot tell whether folder(s) {listed(unknown)} in {root} hold blasts or normal "
            "cells. Name each class folder for what it holds (names with 'blast', 'all' or "
            f"'leuk' -> blast; {', '.join(sorted(NORMAL_CELL_TYPES))} -> normal), or list the "
            "images in a CSV manifest (path,label,group), or give each folder its label: on the "
            f"Retrain page, with --class-label '{unknown[0]}=<blast|normal|none>' for python -m "
            "train inspect or compare, or python -m train.evaluate cells or normals (none leaves the "
            "folder out), or label_map in Python.",
            tuple(folders),
            tuple(unknown),
            root.name,
        )
    records, loose, subjects = [], 0, set()
    for name, files in folders.items():
        for p in files if labels[name] else ():
            inside = p.relative_to(root / name).parts
            if len(inside) > 1:  # subjects are shared across classes, so no class prefix
                group = inside[0]
                subjects.add(group)
            else:
                group, loose = p.relative_to(root).as_posix(), loose + 1
            records.append(
                LabelledCrop(p, labels[name], group, source or root.name, cell_type=name)
            )
    notes = [_folder_labels_note(root.name, labels, label_map)]
    if subjects:
        notes.append(
            f"{root.name}: grouped by the subfolders of the class folders (<class>/<subject>/): "
            f"{len(subjects)} subject(s); a subject's cells stay on one side of a split."
        )
    if records and loose == len(records):
        notes.append(
            "Class folders carry no subject ids: each file is its own group, so cells of one "
            "donor may fall on both sides of a split."
        )
    elif loose:
        notes.append(
            f"{loose} of {len(records)} file(s) lie directly in a class folder, not in a "
            "<class>/<subject>/ subfolder: each of those is its own group."
        )
    left_out = [n for n in folders if labels[n] is None]
    notes += [f"Left out folder(s) by label_map: {listed(left_out)}."] if left_out else []
    return CellTable(tuple(records), tuple(notes), groups_known=not loose)


def _folder_labels_note(name: str, labels: Mapping[str, str | None], given) -> str:
    """Which class folder became which label, so a lab can check the guesses from names."""
    parts = [f"{label}: {listed(sorted(f for f, lab in labels.items() if lab == label))}"
             for label in LABELS if label in labels.values()]  # fmt: skip
    guessed = [f for f, label in labels.items() if label and f not in given]
    by_name = " (read from the folder names: check them)" if guessed else ""
    return f"{name}: class folders as labels{by_name}: {'; '.join(parts)}."


def detect_format(root: str | Path) -> str:
    """Guess the layout of ``root`` (a folder, or a CSV manifest): one of :data:`FORMATS`."""
    path = Path(root).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    path = _existing_dir(path)
    if (path / "images").is_dir() and (path / "xyc").is_dir():
        raise DatasetError(
            f"{path} looks like ALL-IDB1 (whole smear fields with blast "
            "centroids), not single cells; crop the cells first."
        )
    train, tests, label_csvs = _scan_cnmc(path)
    if any(_CNMC_SUBJECT.match(p.name) for p in train) or (tests and label_csvs):
        return "cnmc"
    tifs = _images_in(path / "images" if (path / "images").is_dir() else path, suffixes=_TIFF)
    if tifs and all(_IDB2_NAME.match(p.stem) for p in tifs):
        return "allidb2"
    if any(d.is_dir() and _images_in(d, recursive=True) for d in path.iterdir()):
        return "folders"
    loose = " (images lie directly in it: use one subfolder per class)" * bool(_images_in(path))
    if not any(path.iterdir()):
        raise EmptyDatasetError(f"{path} is empty: copy the labelled cells into it first.")
    raise EmptyDatasetError(
        f"No C-NMC, ALL-IDB2 or class-folder layout in {path}{loose}; or "
        "pass a CSV manifest (path,label,group)."
    )


_LOADERS = {
    "cnmc": load_cnmc,
    "allidb2": load_allidb2,
    "folders": load_class_folders,
    "manifest": load_manifest,
}


def load_dataset(
    root: str | Path,
    format: str | None = None,
    *,
    label_map: Mapping[str, str | None] | None = None,
    verify: bool = False,
    require_both_classes: bool = True,
) -> CellTable:
    """Load a dataset of any supported layout (detected when ``format`` is None).

    Args:
        root: Dataset folder, or a CSV manifest.
        format: One of :data:`FORMATS`; detected by :func:`detect_format` when None.
        label_map: Passed to :func:`load_class_folders`.
        verify: Decode every image with PIL first (:func:`verify_images`).
        require_both_classes: Raise :class:`SingleClassError` when one class is missing.
    """
    fmt = format or detect_format(root)
    if fmt not in _LOADERS:
        raise DatasetError(f"Unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if label_map is not None and fmt != "folders":
        raise DatasetError(f"label_map applies to class folders only, not to {fmt!r}.")
    table = _LOADERS[fmt](root, label_map) if fmt == "folders" else _LOADERS[fmt](root)
    if not table.records:
        raise EmptyDatasetError(f"No cells were loaded from {root}.")
    classes = Counter(r.label for r in table)
    if require_both_classes and len(classes) < 2:
        ((label, n),) = classes.items()
        raise SingleClassError(
            f"{root} holds only {label} cells ({n}); training and comparing need blast and "
            "normal cells. Add a dataset of the other class beside it (another --data, or "
            "another dataset on the Retrain page)."
        )
    if verify:
        verify_images(table)
    return table
