"""Pick training data: inspect dataset folders, unpack uploaded zips, export reviewed cases.

The library behind the "Retrain & compare" page. :func:`inspect_dataset` loads a folder (or a
CSV manifest) with :func:`train.data.load_dataset`, checks that it can train a leak-free
model and describes it as a :class:`DatasetSummary`. :func:`extract_zip` unpacks an uploaded
archive safely. :func:`export_reviewed_cases` turns signed cases of the case record into a
manifest dataset, so a reviewer's corrections can become training data.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import pandas as pd

from leukemia_core.store import STATUS_SIGNED, CaseStore, CaseSummary
from train.data import detect_format, load_dataset
from train.records import (
    BLAST,
    LABELS,
    NORMAL,
    CellRecord,
    CellTable,
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    MissingGroupError,
    SingleClassError,
    _listed,
    verify_images,
)

MiB = 1 << 20
GiB = 1 << 30
REVIEWED_SOURCE = "reviewed_cases"
MANIFEST_COLUMNS = ("path", "label", "group", "source", "subset", "cell_type")
_RATIO_FLOOR_BYTES = MiB  # a member expanding to less cannot be a bomb, whatever its ratio
_CHUNK = MiB
_JUNK_DIRS = frozenset({"__MACOSX"})
_JUNK_FILES = frozenset({".DS_Store"})
_UNGROUPED_FIX = (
    "Put each subject's cells in <class>/<subject>/ subfolders, or give a CSV manifest with "
    "columns path,label,group, or allow ungrouped data explicitly (allow_ungrouped=True) and "
    "read the scores as optimistic."
)


class UnsafeArchiveError(DatasetError):
    """An uploaded archive is not a zip, is corrupt, or holds a member that is unsafe to unpack."""


# ----------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class GroupCount:
    """Cells of one group (subject, smear field, sample or file) per class."""

    group: str
    source: str
    n_blast: int
    n_normal: int


@dataclass(frozen=True)
class DatasetSummary:
    """What a picked dataset holds, for the page to show before training.

    Attributes:
        location: The folder(s) or manifest(s) read.
        format: Layout read (one of :data:`train.data.FORMATS`; ``+``-joined for several).
        n_cells: Number of cells.
        per_class: Cells per label, ``{"blast": n, "normal": n}``.
        n_groups: Distinct groups; a split keeps each whole on one side.
        groups_known: False when some cells are their own group for lack of a subject id.
        per_source: Cells per source.
        groups: Per-group counts, largest first; sources sharing a group are comma-joined.
        notes: How the data were read and what to keep in mind.
    """

    location: str
    format: str
    n_cells: int
    per_class: dict[str, int]
    n_groups: int
    groups_known: bool
    per_source: dict[str, int]
    groups: tuple[GroupCount, ...]
    notes: tuple[str, ...] = ()

    def group_frame(self) -> pd.DataFrame:
        """One row per group: group, source, blast, normal, total; largest first."""
        frame = pd.DataFrame(
            [(g.group, g.source, g.n_blast, g.n_normal) for g in self.groups],
            columns=["group", "source", "blast", "normal"],
        )
        frame["total"] = frame["blast"] + frame["normal"]
        frame = frame.sort_values(["total", "group"], ascending=[False, True], kind="stable")
        return frame.reset_index(drop=True)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form (lists instead of tuples)."""
        plain = asdict(self)
        plain["groups"] = [asdict(g) for g in self.groups]
        plain["notes"] = list(self.notes)
        return plain


def summarize_table(table: CellTable, location: str, format: str) -> DatasetSummary:
    """Describe a loaded table as a :class:`DatasetSummary`."""
    counts: dict[str, Counter] = {}
    sources: dict[str, set[str]] = {}
    for r in table:
        counts.setdefault(r.group, Counter())[r.label] += 1
        sources.setdefault(r.group, set()).add(r.source)
    groups = sorted(
        (
            GroupCount(g, ", ".join(sorted(sources[g])), c[BLAST], c[NORMAL])
            for g, c in counts.items()
        ),
        key=lambda g: (-(g.n_blast + g.n_normal), g.group),
    )
    return DatasetSummary(
        location=location,
        format=format,
        n_cells=len(table),
        per_class={label: sum(r.label == label for r in table) for label in LABELS},
        n_groups=len(counts),
        groups_known=table.groups_known,
        per_source=dict(Counter(r.source for r in table)),
        groups=tuple(groups),
        notes=table.notes,
    )


# ----------------------------------------------------------------------------- inspection
@dataclass(frozen=True)
class DatasetSource:
    """One location to read, with its own layout and class-folder labels.

    Attributes:
        location: Dataset folder, or a CSV manifest.
        format: One of :data:`train.data.FORMATS`; detected when None.
        label_map: Class-folder name -> ``"blast"``, ``"normal"`` or None (folders only).
    """

    location: str | os.PathLike[str]
    format: str | None = None
    label_map: Mapping[str, str | None] | None = None


def inspect_datasets(
    locations: Sequence[str | os.PathLike[str] | DatasetSource],
    *,
    verify: bool = True,
    allow_ungrouped: bool = False,
) -> tuple[CellTable, DatasetSummary]:
    """Load several datasets as one; both classes are needed in the union only.

    Args:
        locations: Folders or manifests (layout detected), or :class:`DatasetSource` items.
        verify: Decode every image with PIL (:func:`train.records.verify_images`).
        allow_ungrouped: Accept cells without a subject or field id (each its own group);
            the summary then says ``groups_known=False`` and notes the risk.

    Raises:
        DatasetNotFoundError: A location does not exist.
        EmptyDatasetError: No locations, or a location holds no usable images.
        SingleClassError: The union holds blast or normal cells only.
        MissingGroupError: Some cells have no group and ``allow_ungrouped`` is False.
        UnreadableFileError: Some images cannot be decoded (``verify=True``).
        DatasetError: Any other problem of a layout (see :mod:`train.data`).
    """
    sources = [s if isinstance(s, DatasetSource) else DatasetSource(s) for s in locations]
    if not sources:
        raise EmptyDatasetError("No dataset location was given; pick at least one folder.")
    tables, formats, ungrouped = [], [], []
    for source in sources:
        fmt = source.format or detect_format(source.location)
        table = load_dataset(
            source.location, fmt, label_map=source.label_map, require_both_classes=False
        )
        tables.append(table)
        formats += [fmt] if fmt not in formats else []
        ungrouped += [] if table.groups_known else [str(source.location)]
    table = _without_duplicates(CellTable.concat(*tables))
    where = "; ".join(str(s.location) for s in sources)
    classes = Counter(r.label for r in table)
    if len(classes) < 2:
        ((label, n),) = classes.items()
        other = NORMAL if label == BLAST else BLAST
        raise SingleClassError(
            f"{where} holds only {label} cells ({n}); a classifier needs blast and normal "
            f"cells. Add a dataset with {other} cells (several locations can be combined)."
        )
    if ungrouped and not allow_ungrouped:
        raise MissingGroupError(
            f"Cells in {_listed(ungrouped)} carry no subject or field id (images directly in "
            "the class folders, or ALL-IDB2 crops without source_fields.csv), so each file "
            "would be its own group: cells of one donor could land on both sides of the split "
            f"and the test scores would be inflated. {_UNGROUPED_FIX}"
        )
    if ungrouped:
        note = (
            f"Groups unknown for {_listed(ungrouped)} (allowed): cells of one donor may be on "
            "both sides of the split, so test scores are likely optimistic."
        )
        table = CellTable(table.records, (*table.notes, note), table.groups_known)
    if verify:
        verify_images(table)
    return table, summarize_table(table, where, "+".join(formats))


def _without_duplicates(table: CellTable) -> CellTable:
    """Each image file once: two locations naming one file could put it in train and test."""
    seen: set[Path] = set()
    kept = []
    for record in table:
        path = Path(record.path).resolve()
        if path not in seen:
            seen.add(path)
            kept.append(record)
    if len(kept) == len(table):
        return table
    note = (f"{len(table) - len(kept)} image(s) were named by more than one location; each is "
            "used once (its first listing).")  # fmt: skip
    return CellTable(tuple(kept), (*table.notes, note), table.groups_known)


def inspect_dataset(
    location: str | os.PathLike[str],
    format: str | None = None,
    *,
    verify: bool = True,
    allow_ungrouped: bool = False,
    label_map: Mapping[str, str | None] | None = None,
) -> tuple[CellTable, DatasetSummary]:
    """Load one dataset folder (or CSV manifest), check it can train a model, and describe it.

    Same checks and errors as :func:`inspect_datasets`.

    Example:
        >>> table, summary = inspect_dataset("../shared/data/cnmc")  # doctest: +SKIP
        >>> summary.per_class, summary.n_groups  # doctest: +SKIP
        ({'blast': 6, 'normal': 6}, 6)
    """
    source = DatasetSource(location, format, label_map)
    return inspect_datasets([source], verify=verify, allow_ungrouped=allow_ungrouped)


# ----------------------------------------------------------------------------- zip archives
def extract_zip(
    archive: str | os.PathLike[str] | bytes | BinaryIO,
    dest_root: Path,
    *,
    max_archive_bytes: int = 500 * MiB,
    max_total_bytes: int = 4 * GiB,
    max_files: int = 100_000,
    max_ratio: float = 200,
) -> Path:
    """Unpack a zip into a new folder under ``dest_root``, refusing anything unsafe.

    Every member is checked before anything is written; sizes are checked again while
    writing, since declared sizes can lie. The archive goes to a hidden temporary folder that
    is renamed to ``dest_root/<stem>-<random hex>`` at the end, and removed on any failure.
    ``__MACOSX/`` and ``.DS_Store`` entries are skipped.

    Args:
        archive: Path, bytes, or a binary file-like (e.g. Streamlit's ``UploadedFile``).
        dest_root: Folder that receives the unpacked folder (created if missing).
        max_archive_bytes: Largest archive accepted.
        max_total_bytes: Most bytes written in all.
        max_files: Most entries (files and folders) in the archive.
        max_ratio: Highest uncompressed/compressed size of a member of 1 MiB or more.

    Returns:
        The single top-level folder of the archive if it has exactly one, else the new folder.

    Raises:
        UnsafeArchiveError: Not a zip or corrupt; too large; too many members; a member with an
            absolute path, drive letter or ``..``; a symlink or other special file; an
            encrypted member; a zip bomb (size or ratio over the limits); clashing names.
        EmptyDatasetError: The archive holds no files.
        DatasetNotFoundError: ``archive`` is a path that does not exist.
    """
    name, source = _open_archive(archive, max_archive_bytes)
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as error:
        raise UnsafeArchiveError(
            f"{name} is not a zip archive, or is corrupt ({error}); upload a .zip of the "
            "dataset folder."
        ) from None
    with zf:
        members = _checked_members(name, zf.infolist(), max_files, max_total_bytes, max_ratio)
        dest_root = Path(dest_root)
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".extract-"))
        try:
            _write_members(name, zf, members, tmp, max_total_bytes)
            top = list(tmp.iterdir())
            single = top[0].name if len(top) == 1 and top[0].is_dir() else None
            final = _rename_fresh(tmp, dest_root, _safe_stem(archive))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final / single if single else final


def _open_archive(archive: object, max_bytes: int) -> tuple[str, Path | BinaryIO]:
    """Display name and the path or seekable stream of the archive; refuses one over max_bytes."""
    if isinstance(archive, str | os.PathLike):
        path = Path(archive).expanduser()
        if not path.is_file():
            kind = "is a folder, not a zip file" if path.is_dir() else "does not exist"
            raise DatasetNotFoundError(f"Archive {path} {kind}; check the path.")
        _check_archive_size(str(path), path.stat().st_size, max_bytes)
        return str(path), path
    if isinstance(archive, bytes | bytearray | memoryview):
        name, stream = "The uploaded archive", io.BytesIO(bytes(archive))
    elif hasattr(archive, "read"):
        name = str(getattr(archive, "name", "") or "The uploaded archive")
        seekable = getattr(archive, "seekable", lambda: False)()
        # A non-seekable stream is read into memory, at most one byte past the limit.
        stream = archive if seekable else io.BytesIO(archive.read(max_bytes + 1))
        stream.seek(0)
    else:
        raise TypeError(
            f"archive must be a path, bytes or a binary file-like, got {type(archive).__name__}."
        )
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    _check_archive_size(name, size, max_bytes)
    return name, stream


def _check_archive_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise UnsafeArchiveError(
            f"{name} is {_bytes(size)}, over the limit of {_bytes(max_bytes)}; split "
            "the dataset into smaller zips or put the folder on the server and give its path."
        )


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    return tuple(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))


def _is_junk(parts: tuple[str, ...]) -> bool:
    return bool(parts) and (parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES)


def _checked_members(
    name: str,
    infos: list[zipfile.ZipInfo],
    max_files: int,
    max_total_bytes: int,
    max_ratio: float,
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Members to write with their path parts; refuses the archive on the first unsafe one."""
    if len(infos) > max_files:
        raise UnsafeArchiveError(
            f"{name} holds {len(infos)} entries, more than the limit of {max_files} (from "
            f"member {infos[max_files].filename!r} on); split the dataset into smaller zips."
        )
    files: dict[tuple[str, ...], str] = {}
    folders: set[tuple[str, ...]] = set()
    total, members = 0, []
    for info in infos:
        member, parts = info.filename, _member_parts(info)
        if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
            _refuse(name, member, "has an absolute path")
        if ".." in parts:
            _refuse(name, member, "climbs out of the archive folder ('..' in its path)")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if stat.S_ISLNK(info.external_attr >> 16):
            _refuse(name, member, "is a symbolic link")
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            _refuse(name, member, f"is a special file (mode {oct(kind)}), not a regular file")
        if info.flag_bits & 0x1:
            _refuse(name, member, "is encrypted; zip it again without a password")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= _RATIO_FLOOR_BYTES and ratio > max_ratio:
            _refuse(
                name,
                member,
                f"expands {ratio:.0f}-fold ({info.compress_size} -> {info.file_size} bytes), "
                f"over the limit of {max_ratio:g} (a zip bomb?)",
            )
        total += info.file_size
        if total > max_total_bytes:
            _refuse(
                name,
                member,
                f"brings the unpacked size past the limit of {_bytes(max_total_bytes)}",
            )
        if not parts or _is_junk(parts):
            continue
        if info.is_dir():
            folders.add(parts)
        elif parts in files:
            _refuse(name, member, "appears twice")
        else:
            files[parts] = member
        folders.update(parts[:i] for i in range(1, len(parts)))
        members.append((info, parts))
    for parts in files.keys() & folders:
        _refuse(name, files[parts], "is both a file and a folder")
    return members


def _write_members(
    name: str,
    zf: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    tmp: Path,
    max_total_bytes: int,
) -> None:
    written, n_files = 0, 0
    for info, parts in members:
        target = tmp.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with zf.open(info) as source, target.open("xb") as sink:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    # zipfile stops at the declared size today; count anyway, never trust it.
                    if size > info.file_size:
                        why = f"unpacks to more than the {info.file_size} bytes it declares"
                        _refuse(name, info.filename, why)
                    if written > max_total_bytes:
                        why = (
                            f"brings the unpacked size past the limit of {_bytes(max_total_bytes)}"
                        )
                        _refuse(name, info.filename, why)
                    sink.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
            _refuse(name, info.filename, f"is corrupt or cannot be unpacked ({error})")
        n_files += 1
    if not n_files:
        raise EmptyDatasetError(f"{name} holds no files; zip the dataset folder itself.")


def _refuse(name: str, member: str, why: str) -> NoReturn:
    raise UnsafeArchiveError(
        f"{name}: member {member!r} {why}. Nothing was unpacked; zip the dataset folder "
        "again with plain files and relative paths."
    )


def _bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024
    return f"{n:.1f} GiB"


def _safe_stem(archive: object) -> str:
    """Folder-name-safe stem of the archive's file name; ``"archive"`` for bare bytes."""
    name = archive if isinstance(archive, str | os.PathLike) else getattr(archive, "name", "")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name or "")).stem).strip("._-")
    return stem[:60] or "archive"


def _rename_fresh(tmp: Path, dest_root: Path, stem: str) -> Path:
    """Rename ``tmp`` to a new ``dest_root/<stem>-<hex>`` (never onto an existing folder)."""
    while True:
        final = dest_root / f"{stem}-{secrets.token_hex(4)}"
        if not final.exists():  # rename would replace an empty folder: make sure there is none
            os.rename(tmp, final)
            return final


# ----------------------------------------------------------------------------- reviewed cases
def export_reviewed_cases(store: CaseStore, out_dir: Path) -> CellTable:
    """Write the reviewed blast/normal cells of signed cases as a manifest dataset.

    Takes the newest signed version of each case lineage (reopening creates a version whose
    ``parent_id`` is the old one); a signed case confirms every label. Each cell labelled
    blast or normal with a crop becomes ``out_dir/cells/<case>_f<field>_c<cell>.png`` and a
    row of ``out_dir/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`): group = the sample id
    (a sample stays on one side of a split), source ``"reviewed_cases"``, subset = case id,
    cell_type ``"corrected"`` where the reviewer changed the model's label, else
    ``"confirmed"``. Everything is written to a temporary folder and renamed into place; an
    earlier export in ``out_dir`` is replaced.

    Raises:
        EmptyDatasetError: No signed case holds reviewed blast or normal cells with crops.
        DatasetError: ``out_dir`` holds files that are not an earlier export.
    """
    out_dir = Path(out_dir).expanduser()
    _check_export_target(out_dir)
    chosen = _newest_signed(store)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        rows, skipped = [], Counter()
        for summary in chosen:
            case = store.load_case(summary.case_id)
            for cell in case.cells:
                if cell.label not in LABELS:
                    skipped["other"] += 1
                    continue
                if cell.crop_png is None:
                    skipped["no_crop"] += 1
                    continue
                relative = f"cells/{case.case_id}_f{cell.field_index}_c{cell.cell_id}.png"
                (tmp / relative).parent.mkdir(exist_ok=True)
                (tmp / relative).write_bytes(cell.crop_png)
                kind = "corrected" if cell.changed_by_reviewer else "confirmed"
                rows.append((relative, cell.label, case.sample_id, case.case_id, kind))
        if not rows:
            raise EmptyDatasetError(
                f"No signed case with reviewed blast or normal cells (with crop images) in "
                f"{store.path}: {len(chosen)} signed case(s) to read. To get some, analyze a "
                "smear, review its cells on the Case page (relabel what the model got wrong) "
                "and sign the case; then export again."
            )
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(
            (p, label, g, REVIEWED_SOURCE, case_id, kind) for p, label, g, case_id, kind in rows
        )
        (tmp / "manifest.csv").write_text(text.getvalue(), encoding="utf-8")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    records = tuple(
        CellRecord(out_dir / p, label, g, REVIEWED_SOURCE, case_id, kind)
        for p, label, g, case_id, kind in rows
    )
    n_samples = len({r.group for r in records})
    note = (
        f"{len(records)} reviewed cell(s) of {len(chosen)} signed case(s), {n_samples} "
        f"sample(s); left out {skipped['other']} cell(s) not labelled blast/normal and "
        f"{skipped['no_crop']} without a crop image."
    )
    return CellTable(records, (note,))


def _newest_signed(store: CaseStore) -> list[CaseSummary]:
    """The newest signed version of each case lineage, in (sample, creation) order."""
    cases = {c.case_id: c for c in store.list_cases(limit=sys.maxsize)}

    def lineage(case_id: str) -> str:
        while cases[case_id].parent_id in cases:
            case_id = cases[case_id].parent_id
        return case_id

    newest: dict[str, CaseSummary] = {}
    for case in cases.values():
        if case.status == STATUS_SIGNED:
            root = lineage(case.case_id)
            if root not in newest or case.version > newest[root].version:
                newest[root] = case
    return sorted(newest.values(), key=lambda c: (c.sample_id, c.created_at, c.case_id))


def _is_export(folder: Path) -> bool:
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return True
    if "manifest.csv" not in entries or not entries <= {"manifest.csv", "cells"}:
        return False
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return tuple(next(csv.reader(f), ())) == MANIFEST_COLUMNS


def _check_export_target(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and _is_export(out_dir)):
        found = "is a file" if not out_dir.is_dir() else "holds files of another kind"
        raise DatasetError(
            f"Export folder {out_dir} {found}; only an empty folder or an earlier export of "
            "reviewed cases (manifest.csv + cells/) is replaced. Choose a new folder."
        )


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, swapping out an earlier export as a whole."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
