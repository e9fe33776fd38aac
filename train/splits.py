"""Leak-free splits: every group (subject, smear field, file) lands on exactly one side.

Groups are assigned whole, stratified by class: first each side receives one group of each
class where the data allow it (so validation and test can measure both sensitivity and
specificity), then the remaining groups go, largest first, to the side whose per-class
counts are furthest below their targets. The result depends only on the set of records and
the seed, not on their order.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np

from train.data import LABELS, DatasetError, LabelledCrop
from train.groups import idb1_fields_of, linked_groups

SIDES = ("train", "val", "test")


class SplitError(DatasetError):
    """The records cannot be split as asked (too few groups, bad fractions)."""


@dataclass(frozen=True)
class SplitResult:
    """Records of each side of a split, in input order.

    Attributes:
        train: Records to fit the model on.
        val: Records for early stopping, calibration and threshold choice (may be empty).
        test: Held-out records for the final, reported evaluation.
        seed: Seed the assignment was made with.
    """

    train: tuple[LabelledCrop, ...]
    val: tuple[LabelledCrop, ...]
    test: tuple[LabelledCrop, ...]
    seed: int = 0

    def sides(self) -> dict[str, tuple[LabelledCrop, ...]]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {side: getattr(self, side) for side in SIDES}

    def groups(self, side: str) -> set[str]:
        """Groups found on one side."""
        return {r.group for r in getattr(self, side)}


def units_of(records: Sequence[LabelledCrop]) -> dict[str, str]:
    """Each group's split unit (:func:`~train.groups.linked_groups`), told by the ALL-IDB1
    fields the records name: an ALL-IDB1 cell by its file, an ALL-IDB2 crop by its field."""
    return linked_groups({r.group for r in records}, idb1_fields_of(records))


def _unit_counts(records: Sequence[LabelledCrop]) -> tuple[dict[str, tuple[int, ...]], dict]:
    """Per-class cell counts of each split unit (groups of one likely patient joined), and
    each group's unit."""
    unit_of = units_of(records)
    counts: dict[str, list[int]] = {}
    for r in records:
        counts.setdefault(unit_of[r.group], [0] * len(LABELS))[LABELS.index(r.label)] += 1
    return {u: tuple(c) for u, c in counts.items()}, unit_of


def assign_groups(
    records: Iterable[LabelledCrop], fractions: Sequence[float], seed: int = 0
) -> dict[str, int]:
    """Map each group to a part index so that part ``i`` holds about ``fractions[i]`` of each class;
    groups of one split unit (one ALL-IDB1 smear run) always get the same part.

    Args:
        records: Cells with ``label`` and ``group``.
        fractions: Non-negative shares summing to 1; parts with share 0 stay empty.
        seed: Seed of the tie-breaking order.

    Raises:
        SplitError: On bad fractions, or fewer groups than parts with a positive share.
    """
    if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise SplitError(f"Fractions must be non-negative and sum to 1, got {tuple(fractions)}.")
    counts, unit_of = _unit_counts(list(records))
    parts = [i for i, f in enumerate(fractions) if f > 0]
    if len(counts) < len(parts):
        raise SplitError(
            f"{len(counts)} group(s) cannot fill {len(parts)} parts: each group (subject or "
            "field) goes to one side only. Use fewer parts (e.g. fractions=(0.8, 0, 0.2) or a "
            "smaller k), or add data from more subjects."
        )
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    totals = [sum(c[k] for c in counts.values()) for k in range(len(LABELS))]
    held = [[0] * len(LABELS) for _ in fractions]
    part_of: dict[str, int] = {}

    def put(group: str, part: int) -> None:
        part_of[group] = part
        for k, n in enumerate(counts[group]):
            held[part][k] += n

    # 1. Seed: each part gets one group of each class, smallest groups first, biggest parts
    #    first, never taking a group that an empty part still needs.
    by_share = sorted(parts, key=lambda i: -fractions[i])
    for k in range(len(LABELS)):
        for part in by_share:
            free = [g for g in order if g not in part_of]
            empty = sum(1 for i in parts if not any(held[i]) and i != part)
            candidates = [g for g in free if counts[g][k]]
            if held[part][k] or not candidates or (any(held[part]) and len(free) <= empty):
                continue
            put(min(candidates, key=lambda g: sum(counts[g])), part)
    for part in parts:  # a part still empty takes the smallest free group
        free = [g for g in order if g not in part_of]
        if not any(held[part]) and free:
            put(min(free, key=lambda g: sum(counts[g])), part)

    # 2. Greedy: largest groups first, each to the part where it shrinks the squared gap
    #    between held and target shares, summed over classes.
    def cost(group: str, part: int) -> float:
        gain = 0.0
        for k, n in enumerate(counts[group]):
            if totals[k]:
                x, d = n / totals[k], held[part][k] / totals[k] - fractions[part]
                gain += x * (2 * d + x)
        return gain

    for group in sorted((g for g in order if g not in part_of), key=lambda g: -sum(counts[g])):
        put(group, min(parts, key=lambda i: (cost(group, i), -fractions[i], i)))
    return {group: part_of[unit] for group, unit in unit_of.items()}


def grouped_split(
    records: Iterable[LabelledCrop], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> SplitResult:
    """Split records into train/val/test with every group on exactly one side.

    >>> from pathlib import Path
    >>> cells = [LabelledCrop(Path(f"{i}.bmp"), LABELS[i % 2], f"s{i}", "demo") for i in range(20)]
    >>> split = grouped_split(cells, seed=1)
    >>> len(split.train), len(split.val), len(split.test)
    (14, 2, 4)
    """
    records = list(records)
    if len(fractions) != len(SIDES):
        raise SplitError(f"Give 3 fractions (train, val, test), got {tuple(fractions)}.")
    part_of = assign_groups(records, fractions, seed)
    sides = [tuple(r for r in records if part_of[r.group] == i) for i in range(len(SIDES))]
    return SplitResult(*sides, seed=seed)


def grouped_kfold(records: Iterable[LabelledCrop], k: int = 5, seed: int = 0) -> list[SplitResult]:
    """K folds of groups; fold ``i`` tests on part ``i`` and trains on the rest (``val`` empty)."""
    records = list(records)
    if k < 2:
        raise SplitError(f"k-fold needs k >= 2, got k={k}.")
    part_of = assign_groups(records, [1 / k] * k, seed)
    return [
        SplitResult(
            train=tuple(r for r in records if part_of[r.group] != i),
            val=(),
            test=tuple(r for r in records if part_of[r.group] == i),
            seed=seed,
        )
        for i in range(k)
    ]


def describe(split: SplitResult) -> dict:
    """Cells per class, groups and blast share on each side, plus any group found on two sides.

    ``shared_groups`` is empty for every split made here; it is there to check splits read
    from elsewhere.
    """
    summary: dict = {}
    for side, records in split.sides().items():
        per_class = {label: sum(r.label == label for r in records) for label in LABELS}
        summary[side] = {
            "n_cells": len(records),
            **per_class,
            "n_groups": len({r.group for r in records}),
            "blast_fraction": per_class[LABELS[0]] / len(records) if records else None,
        }
    seen: dict[str, set[str]] = {}
    for side, records in split.sides().items():
        for r in records:
            seen.setdefault(r.group, set()).add(side)
    summary["shared_groups"] = sorted(g for g, sides in seen.items() if len(sides) > 1)
    return summary


def _source_strata(records: Sequence[LabelledCrop]) -> dict[str, str]:
    """Source -> stratum; sources sharing a group (ALL-IDB2 crops of ALL-IDB1 fields) merge."""
    parent = {r.source: r.source for r in records}

    def root(source: str) -> str:
        while parent[source] != source:
            source = parent[source]
        return source

    first_source: dict[str, str] = {}
    unit_of = units_of(records)  # one smear run's ALL-IDB1 fields and ALL-IDB2 crops: one stratum
    for r in records:
        other = first_source.setdefault(unit_of[r.group], r.source)
        a, b = root(other), root(r.source)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {source: root(source) for source in parent}


def split_per_source(
    records: Iterable[LabelledCrop], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> SplitResult:
    """:func:`grouped_split` within each source, so every source is on every side.

    Sources that share groups are split together. A source with too few groups to fill every
    side goes to training whole (its cells are then never on the test side).
    """
    records = list(records)
    strata = _source_strata(records)
    sides: list[list[LabelledCrop]] = [[], [], []]
    for stratum in sorted(set(strata.values())):
        members = [r for r in records if strata[r.source] == stratum]
        try:
            part = grouped_split(members, fractions, seed)
        except SplitError:
            sides[0] += members
            continue
        for i, side in enumerate(SIDES):
            sides[i] += getattr(part, side)
    return SplitResult(*(tuple(s) for s in sides), seed=seed)


def read_split_file(path: Path) -> dict[str, str]:
    """Group -> side of a ``split.csv`` (columns ``group``, ``side``), as model folders hold.

    Raises:
        SplitError: The file is missing or malformed, or names a side other than :data:`SIDES`.
    """
    path = Path(path)
    try:
        with open(path, newline="") as stream:
            side_of = {row["group"]: row["side"] for row in csv.DictReader(stream)}
    except (OSError, KeyError, csv.Error) as error:
        raise SplitError(
            f"Cannot read the split file {path} ({error}); it needs the columns group,side, as "
            "the split.csv of a model folder has."
        ) from error
    bad_sides = sorted(set(side_of.values()) - set(SIDES))
    if bad_sides:
        raise SplitError(f"{path} names unknown sides {bad_sides}; use {list(SIDES)}.")
    return side_of


def split_from_file(records: Iterable[LabelledCrop], path: Path) -> SplitResult:
    """The sides a ``split.csv`` (columns ``group``, ``side``) gives each record's group.

    Re-using a model's split makes a new model comparable with it: same validation cells for
    calibration and choice, same held-out groups for the test. Groups the file does not name
    (cells found since, e.g. by a better segmentation) go to training, so that the validation
    and test sides stay exactly those of the file.

    Raises:
        SplitError: The file is missing or malformed, or puts one split unit (an ALL-IDB1 smear
            run, :func:`units_of`) on two sides, as splits written before 2026-12-07 could.
    """
    split = split_by_sides(records, read_split_file(path))
    sides_of: dict[str, set[str]] = {}
    unit_of = units_of([*split.train, *split.val, *split.test])
    for side in SIDES:
        for r in getattr(split, side):
            sides_of.setdefault(unit_of[r.group], set()).add(side)
    if torn := sorted(u for u, sides in sides_of.items() if len(sides) > 1):
        raise SplitError(
            f"{path} puts {len(torn)} smear run(s) on two sides ({', '.join(torn[:3])}: ALL-IDB1 "
            "blocks numbered next to each other, likely one patient each); it was written "
            "before runs were kept whole. Split anew (leave out --split-from), or give each "
            "run's blocks one side in the file."
        )
    return split


def split_by_sides(records: Iterable[LabelledCrop], side_of: dict[str, str]) -> SplitResult:
    """Records put on the side ``side_of`` (group -> side) names; unnamed groups go to train."""
    records = list(records)
    return SplitResult(
        *(tuple(r for r in records if side_of.get(r.group, "train") == side) for side in SIDES),
        seed=-1,
    )


MIN_UNITS_TO_TEST = 3  # test one unit, validate on one, train on at least one


def folds_per_source(
    records: Iterable[LabelledCrop], k: int = 5, seed: int = 0
) -> list[SplitResult]:
    """``k`` grouped folds within each source; every cell is tested exactly once.

    Fold ``i`` tests on part ``i``, validates (early stopping, calibration) on part ``i + 1``
    (mod ``k``) and trains on the rest. Sources that share groups are split together. A source
    with fewer split units than ``k`` but at least :data:`MIN_UNITS_TO_TEST` (ALL-IDB: 4 smear
    runs) gets one unit in each of its first folds, so it is tested too, always trained on at
    least one unit; a source with fewer trains in every fold and is never tested.
    """
    if k < 3:
        raise SplitError(f"Folds with a validation part need k >= 3, got k={k}; use 1 split.")
    records = list(records)
    strata = _source_strata(records)
    part: list[int | None] = [None] * len(records)
    for stratum in sorted(set(strata.values())):
        members = [i for i, r in enumerate(records) if strata[r.source] == stratum]
        chosen = [records[i] for i in members]
        unit_of = units_of(chosen)
        n_units = len(set(unit_of.values()))
        if n_units < MIN_UNITS_TO_TEST:
            continue
        part_of = assign_groups(chosen, [1 / k] * k, seed) if n_units >= k else (
            _one_unit_per_part(chosen, unit_of, seed))  # fmt: skip
        for i in members:
            part[i] = part_of[records[i].group]
    folds = []
    for fold in range(k):
        sides: dict[str, list[LabelledCrop]] = {side: [] for side in SIDES}
        for record, p in zip(records, part, strict=True):
            side = "test" if p == fold else "val" if p == (fold + 1) % k else "train"
            sides[side if p is not None else "train"].append(record)
        folds.append(SplitResult(*(tuple(sides[s]) for s in SIDES), seed=seed))
    return folds


def units_with_blasts(records: Sequence[LabelledCrop], unit_of: dict[str, str]):
    """``(units holding a blast, units holding none)``, each sorted (ALL-IDB: the ALL smear
    runs and the healthy ones); ``unit_of`` is :func:`units_of` of the records."""
    with_blasts = {unit_of[r.group] for r in records if r.label == LABELS[0]}
    return sorted(with_blasts), sorted({unit_of[r.group] for r in records} - with_blasts)


def _one_unit_per_part(
    records: Sequence[LabelledCrop], unit_of: dict[str, str], seed: int
) -> dict[str, int]:
    """Group -> part for a source of fewer units than folds: one unit per part, units with
    blasts and units without taking turns, so that every fold trains on both kinds where the
    source has both (ALL-IDB: ALL run, healthy run, ALL run, healthy run)."""
    kinds = list(units_with_blasts(records, unit_of))
    for kind in kinds:
        random.Random(seed).shuffle(kind)
    order = [u for pair in zip_longest(*kinds) for u in pair if u is not None]
    return {group: order.index(unit) for group, unit in unit_of.items()}


def loso_units(records: Iterable[LabelledCrop]) -> dict[str, str]:
    """Source -> the unit it is left out with: sources sharing a group (ALL-IDB2 crops of
    ALL-IDB1 fields) are one unit, named by their sources joined with ``+``."""
    strata = _source_strata(list(records))
    members: dict[str, list[str]] = {}
    for source, root in strata.items():
        members.setdefault(root, []).append(source)
    return {s: "+".join(sorted(members[root])) for s, root in strata.items()}


def leave_one_source_out(
    records: Iterable[LabelledCrop], val_fraction: float = 0.2, seed: int = 0
) -> list[tuple[str, SplitResult]]:
    """One split per source unit: test on all of its cells, train and validate on the others.

    Validation takes ``val_fraction`` of the groups of every other source (grouped within each
    source, as :func:`split_per_source`), so the threshold is fitted on sources the model was
    trained on and the left-out source is seen by nothing but the test. No group and no source
    is ever on two sides.

    Raises:
        SplitError: Fewer than two source units, or a bad fraction.
    """
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction must lie between 0 and 1, got {val_fraction}.")
    records = list(records)
    unit_of = loso_units(records)
    units = sorted(set(unit_of.values()))
    if len(units) < 2:
        raise SplitError(
            f"Leave-one-source-out needs cells of at least two sources; these come from "
            f"{', '.join(units) or 'none'} only. Add another dataset, or use the grouped "
            "protocol."
        )
    splits = []
    for unit in units:
        rest = [r for r in records if unit_of[r.source] != unit]
        inner = split_per_source(rest, (1 - val_fraction, val_fraction, 0.0), seed)
        test = tuple(r for r in records if unit_of[r.source] == unit)
        splits.append((unit, SplitResult(inner.train, inner.val, test, seed=seed)))
    return splits


def split_rows(split: SplitResult, index: dict[int, int]) -> dict[str, np.ndarray]:
    """Row numbers (into the comparison's records) of each side of a split."""
    return {side: np.array([index[id(r)] for r in getattr(split, side)], dtype=int)
            for side in ("train", "val", "test")}  # fmt: skip
