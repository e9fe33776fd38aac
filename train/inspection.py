"""Inspect picked datasets before training: load, check for leaks, describe.

The library behind the "Retrain & compare" page's data step. :func:`inspect_datasets` loads
folders (or CSV manifests) with :func:`train.data.load_dataset`, checks that together they can
train a leak-free model and describes them as a :class:`DatasetSummary`. Given data roots (the
app does; the command line does not), it reads only under them (:mod:`train.data_roots`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from leukemia_core.fingerprints import content_digest
from train.data import detect_format, load_dataset
from train.data_roots import (
    load_under_roots,
    relative_messages,
    relative_name,
    resolve_under_roots,
    shorten,
)
from train.records import (
    BLAST,
    LABELS,
    NORMAL,
    CellTable,
    DatasetError,
    EmptyDatasetError,
    MissingGroupError,
    SingleClassError,
    listed,
    unreadable_images,
    verify_images,
)

_UNGROUPED_FIX = (
    "Put each subject's cells in <class>/<subject>/ subfolders, or give a CSV manifest with "
    "columns path,label,group, or allow cells without subject ids (the Retrain page's box, "
    "--allow-ungrouped on the command line) and read the scores as optimistic."
)


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
    roots: Sequence[str | os.PathLike[str]] | None = None,
    skip_unreadable: bool = False,
    class_labels: Mapping[str, str | None] | None = None,
) -> tuple[CellTable, DatasetSummary]:
    """Load several datasets as one; both classes are needed in the union only.

    Args:
        locations: Folders or manifests (layout detected), or :class:`DatasetSource` items.
        verify: Decode every image with PIL (:func:`train.records.verify_images`).
        allow_ungrouped: Accept cells without a subject or field id (each its own group);
            the summary then says ``groups_known=False`` and notes the risk.
        skip_unreadable: With ``verify``, leave out images that cannot be decoded (the
            summary's notes say how many and which) instead of refusing the dataset.
        roots: Read only under these data roots (:func:`train.data_roots.load_under_roots`):
            locations may be relative to a root, and the summary and every message name
            paths relative to their root. None (the command line): any readable path.
        class_labels: Class-folder name -> ``"blast"``, ``"normal"`` or None (leave out), for
            every class-folder location without a ``label_map`` of its own; names a location
            has no folder of are ignored there.

    Raises:
        NoDataRootsError, OutsideDataRootsError: ``roots`` is given and empty, or a location
            or one of its images lies outside them.
        DatasetNotFoundError: A location does not exist.
        EmptyDatasetError: No locations, or a location holds no usable images.
        SingleClassError: The union holds blast or normal cells only.
        MissingGroupError: Some cells have no group and ``allow_ungrouped`` is False.
        UnreadableFileError: Some images cannot be decoded (``verify=True`` without
            ``skip_unreadable``).
        DatasetError: Any other problem of a layout (see :mod:`train.data`).
    """
    sources = [s if isinstance(s, DatasetSource) else DatasetSource(s) for s in locations]
    if not sources:
        raise EmptyDatasetError("No dataset location was given; pick at least one folder.")
    labels = dict(class_labels or {})
    if roots is None:
        return _inspect(sources, verify, allow_ungrouped, None, skip_unreadable, labels)
    with relative_messages(roots):
        return _inspect(sources, verify, allow_ungrouped, roots, skip_unreadable, labels)


def _inspect(
    sources: Sequence[DatasetSource],
    verify: bool,
    allow_ungrouped: bool,
    roots: Sequence[str | os.PathLike[str]] | None,
    skip_unreadable: bool,
    class_labels: Mapping[str, str | None],
) -> tuple[CellTable, DatasetSummary]:
    tables, formats, ungrouped, names = [], [], [], []
    located = [_located(source, roots, class_labels) for source in sources]
    _check_class_labels(class_labels, located)
    for source, (path, fmt, label_map, _) in zip(sources, located, strict=True):
        options = {"label_map": label_map, "require_both_classes": False}
        if roots is None:
            table = load_dataset(source.location, fmt, **options)
            names.append(str(source.location))
        else:
            table, fmt = load_under_roots(path, roots, fmt, **options)
            names.append(relative_name(path, roots))
        tables.append(table)
        formats += [fmt] if fmt not in formats else []
        ungrouped += [] if table.groups_known else [names[-1]]
    table = CellTable.concat(*tables)
    where = "; ".join(names)
    n_read = len(table)
    if verify and skip_unreadable:  # before the class checks: they count what is left
        table = _readable(table, roots)
        if not table:
            raise EmptyDatasetError(
                f"None of the {n_read} images of {where} can be decoded: re-copy the dataset "
                "(an incomplete copy, or Git LFS pointers instead of pictures?)."
            )
    n_left_out = n_read - len(table)
    table = without_duplicates(table)  # after: identical damaged stubs are each left out
    if not table:
        raise EmptyDatasetError(
            f"Every picture of {where} is filed both as blast and as normal: label each picture "
            "once (the same bytes under both labels can teach either lesson)."
        )
    left_out = f" and {n_left_out} unreadable image(s), left out" if n_left_out else ""
    classes = Counter(r.label for r in table)
    if len(classes) < 2:
        ((label, n),) = classes.items()
        other = NORMAL if label == BLAST else BLAST
        raise SingleClassError(
            f"{where} holds only {label} cells ({n}){left_out}{_undecodable(table, verify)}; a "
            f"classifier needs blast and normal cells. Add a dataset with {other} cells "
            "(several locations can be combined)."
        )
    if ungrouped and not allow_ungrouped:
        raise MissingGroupError(
            f"Cells in {listed(ungrouped)} carry no subject or field id (images directly in "
            "the class folders, or ALL-IDB2 crops without source_fields.csv), so each file "
            "would be its own group: cells of one donor could land on both sides of the split "
            f"and the test scores would be inflated. {_UNGROUPED_FIX}"
        )
    if ungrouped:
        note = (
            f"Groups unknown for {listed(ungrouped)} (allowed): cells of one donor may be on "
            "both sides of the split, so test scores are likely optimistic."
        )
        table = CellTable(table.records, (*table.notes, note), table.groups_known)
    if notes := _mix_notes(table):
        table = CellTable(table.records, (*table.notes, *notes), table.groups_known)
    if verify and not skip_unreadable:  # last: decoding every image is the slow check
        verify_images(table)
    return table, summarize_table(table, where, "+".join(formats))


MINORITY_SHARE = 0.10  # below this share of the cells, one class's figures rest on few cells


def _mix_notes(table: CellTable) -> tuple[str, ...]:
    """What the mix of classes and sources risks: a source giving one class teaches "this
    source's look = that class" (shortcut learning, the cause of confident misses on another
    lab's cells), and a rare class leaves its figures resting on few cells."""
    per_source: dict[str, Counter] = {}
    for r in table:
        per_source.setdefault(r.source, Counter())[r.label] += 1
    notes = []
    one_class = {s: next(iter(c)) for s, c in per_source.items() if len(c) == 1}
    if len(per_source) > 1 and one_class:
        listed = ", ".join(f"{s} ({per_source[s][label]:,} {label})"
                           for s, label in sorted(one_class.items()))  # fmt: skip
        notes.append(
            f"One class only in {listed}: a model can learn that a source's look means its "
            "class (shortcut learning), and that source's figures say nothing about the other "
            "class. Add cells of both classes from each source where you can, and choose "
            "recipes with the leave-one-source-out protocol."
        )
    classes = Counter(r.label for r in table)
    rare, n_rare = min(classes.items(), key=lambda item: item[1])
    if len(classes) == 2 and n_rare < MINORITY_SHARE * len(table):
        notes.append(
            f"{rare.capitalize()} cells are {n_rare:,} of {len(table):,} "
            f"({n_rare / len(table):.0%}): training balances the classes, but the {rare} "
            "figures rest on few cells and their intervals are wide."
        )
    return tuple(notes)


def _readable(table: CellTable, roots) -> CellTable:
    """The cells whose image decodes; the notes name those left out (relative to ``roots``)."""
    bad = unreadable_images(table)
    if not bad:
        return table
    left_out = {id(record) for record, _ in bad}
    kept = tuple(r for r in table if id(r) not in left_out)
    note = (f"{len(bad)} image(s) cannot be decoded and were left out: "
            f"{listed([why for _, why in bad])}.")  # fmt: skip
    note = note if roots is None else shorten(note, roots)  # no server paths on the page
    return CellTable(kept, (*table.notes, note), table.groups_known)


def _undecodable(table: CellTable, verify: bool) -> str:
    """`` (none of them decodes as a picture)`` and the like, when checking decodes the files:
    a folder of damaged files read as "only normal cells (1)", not as what it is."""
    if not verify or not (bad := unreadable_images(table)):
        return ""
    return (" (none of them decodes as a picture: " if len(bad) == len(table) else
            f" ({len(bad)} of them cannot be decoded: ") + f"{listed([w for _, w in bad])})"  # fmt: skip


def without_duplicates(table: CellTable) -> CellTable:
    """Each picture once, by its bytes: one file named by two locations, or the same picture
    copied under two names or subjects, could sit in train and test at once. A picture
    labelled both blast and normal is left out: either label would teach the model a wrong
    lesson."""
    copies: dict[object, list] = {}
    for record in table:
        copies.setdefault(_picture_key(record.path), []).append(record)
    kept, n_repeats, conflicting = set(), 0, []
    for records in copies.values():
        if len({r.label for r in records}) > 1:
            conflicting += records
            continue
        kept.add(id(records[0]))
        n_repeats += len(records) - 1
    if not n_repeats and not conflicting:
        return table
    notes = []
    if n_repeats:
        notes.append(f"{n_repeats} image(s) repeated a picture listed before (the same file or "
                     "the same bytes under another name); each picture is used once, so it "
                     "cannot sit in training and test at once.")  # fmt: skip
    if conflicting:
        names = sorted({Path(r.path).name for r in conflicting})
        notes.append(f"{len(conflicting)} image(s) are one picture labelled both blast and "
                     f"normal and were left out: {listed(names)}. Label each picture once.")  # fmt: skip
    return CellTable(tuple(r for r in table if id(r) in kept), (*table.notes, *notes),
                     table.groups_known)  # fmt: skip


def _picture_key(path) -> object:
    """The file's bytes' hash; its resolved path when it cannot be read (the check that
    decodes images names it)."""
    return content_digest(Path(path)) or Path(path).resolve()


def _located(source: DatasetSource, roots, class_labels: Mapping[str, str | None]):
    """``(path, layout, label map, class folders)`` of a source: the class labels that name
    one of its own folders, when it is a class-folder dataset without a label map of its own."""
    path = (Path(source.location).expanduser() if roots is None
            else resolve_under_roots(source.location, roots))  # fmt: skip
    fmt = source.format or detect_format(path)
    if source.label_map is not None or not class_labels or fmt != "folders":
        return path, fmt, source.label_map, set()
    found = {p.name for p in path.iterdir() if p.is_dir()}
    return path, fmt, {k: v for k, v in class_labels.items() if k in found} or None, found


def _check_class_labels(class_labels: Mapping[str, str | None], located: list) -> None:
    """Refuse class labels that name no class folder (a typo would be silently ignored)."""
    labelled = {name for _, _, label_map, found in located if found for name in label_map or ()}
    if unmatched := sorted(set(class_labels) - labelled):
        folders = sorted(set().union(*(found for *_, found in located)))
        raise DatasetError(
            f"Class label(s) for {listed(unmatched)} name no class folder of these datasets "
            f"(names are case-sensitive); the class folders are: {listed(folders) or 'none'}."
        )


def inspect_dataset(
    location: str | os.PathLike[str],
    format: str | None = None,
    *,
    verify: bool = True,
    allow_ungrouped: bool = False,
    label_map: Mapping[str, str | None] | None = None,
    skip_unreadable: bool = False,
) -> tuple[CellTable, DatasetSummary]:
    """Load one dataset folder (or CSV manifest), check it can train a model, and describe it.

    Same checks and errors as :func:`inspect_datasets`.

    Example:
        >>> table, summary = inspect_dataset("../shared/data/cnmc")  # doctest: +SKIP
        >>> summary.per_class, summary.n_groups  # doctest: +SKIP
        ({'blast': 6, 'normal': 6}, 6)
    """
    source = DatasetSource(location, format, label_map)
    return inspect_datasets([source], verify=verify, allow_ungrouped=allow_ungrouped,
                            skip_unreadable=skip_unreadable)  # fmt: skip
