"""Groups of cells that must share a side of every split: the dataset's subject, field or
file, named ``source:name`` in the crop bank's namespace (shared by training and evaluation),
and the split units that join groups of one likely patient (:func:`linked_groups`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

IDB1_BLOCK = 4  # consecutive ALL-IDB1 field numbers that form one group
_IDB1_NAME = re.compile(r"^Im(\d+)_([01])$", re.IGNORECASE)


def idb1_group(field_stem: str) -> str:
    """Group of an ALL-IDB1 field: ``allidb1:b<k>`` for blocks of :data:`IDB1_BLOCK` numbers."""
    match = _IDB1_NAME.match(field_stem)
    number = int(match.group(1)) if match else 0
    return f"allidb1:b{number // IDB1_BLOCK:03d}" if match else f"allidb1:{field_stem}"


_IDB1_BLOCK_GROUP = re.compile(r"^allidb1:b(\d+)$")
_IDB1_FIELD = re.compile(r"^Im(\d+)_([01])", re.IGNORECASE)  # a field's stem, or a name after it


def idb1_fields(names: Iterable[str]) -> dict[int, str]:
    """Field number -> its label (``"1"`` ALL, ``"0"`` healthy) of the ALL-IDB1 field names
    among ``names`` (``Im020_1.jpg``, ``Im020_1_cell003``); other names are ignored."""
    return {int(m.group(1)): m.group(2) for n in names if (m := _IDB1_FIELD.match(Path(n).name))}


def idb1_fields_of(records) -> dict[int, str]:
    """The ALL-IDB1 fields ``records`` name (:func:`idb1_fields`): an ALL-IDB1 cell by its
    file, an ALL-IDB2 crop by its field (the group it was loaded with)."""
    return idb1_fields([Path(r.path).name for r in records if r.source == "allidb1"]
                       + [str(r.group) for r in records if r.source == "allidb2"])  # fmt: skip


def linked_groups(groups: Iterable[str], fields: dict[int, str] | None = None) -> dict[str, str]:
    """Each group's split unit: the groups that must share a side.

    ALL-IDB1 publishes no patient ids, and one smear's fields are numbered consecutively:
    neighbouring blocks of field numbers are one run (likely one smear, so one patient), unless
    ``fields`` (:func:`idb1_fields`) shows the two fields where they meet carry different
    labels (an ALL field next to a healthy one: two people). Where the fields are not known
    the blocks stay joined: that costs groups, never a leak. A run is one unit, named by its
    first block (``allidb1:run005``); every other group is a unit of its own.
    """
    groups, fields = set(groups), fields or {}
    numbers = sorted({int(m.group(1)) for g in groups if (m := _IDB1_BLOCK_GROUP.match(g))})
    first_of, start = {}, None
    for i, number in enumerate(numbers):
        last, first = number * IDB1_BLOCK - 1, number * IDB1_BLOCK  # the fields where they meet
        parted = last in fields and first in fields and fields[last] != fields[first]
        if i == 0 or number != numbers[i - 1] + 1 or parted:
            start = number
        first_of[number] = start
    return {
        g: f"allidb1:run{first_of[int(m.group(1))]:03d}" if (m := _IDB1_BLOCK_GROUP.match(g)) else g
        for g in groups
    }


def bank_group(record) -> str:
    """Group of a loaded record in the bank's namespace (shared by training and evaluation).

    Groups that already carry a namespace (``source:...``, as in the bank's own manifest) are
    kept as they are.
    """
    if ":" in str(record.group):
        return str(record.group)
    if record.source == "allidb2":
        if str(record.group) == record.path.name:  # no source-field CSV: its field is unknown
            return f"allidb2:{record.path.stem}"  # (its own number is no ALL-IDB1 field's)
        return idb1_group(Path(record.group).stem)
    return f"{record.source}:{record.group}"


def interval_units(records) -> list[str]:
    """Each record's unit for intervals and group counts: its group in the bank's namespace,
    an ALL-IDB1 smear run's blocks joined (:func:`linked_groups`), so that one patient's run
    of six blocks counts once, not six times."""
    groups = [bank_group(r) for r in records]
    unit_of = linked_groups(groups, idb1_fields_of(records))
    return [unit_of[g] for g in groups]
