"""One cell counted once where a dataset cuts it into two crops (ALL-IDB2 repeats some cells
of a field as new crops: Im222-227 as Im256-260, only one of them byte for byte)."""

from __future__ import annotations

from train.records import listed

SAME_CELL_PX = 32  # crop centres this close in one field show one cell (cells are ~100 px)


def crop_centre(row: dict) -> tuple[float, float] | None:
    """A crop's centre in its field (``source_fields.csv``'s x, y); None when the row has none,
    and such a crop is never taken for a repeat."""
    try:
        return float(row["x"]), float(row["y"])
    except (KeyError, TypeError, ValueError):
        return None


def each_cell_once(records: list, centres: dict) -> tuple[list, list[str]]:
    """ALL-IDB2 crops cut around one cell of one field (centres within :data:`SAME_CELL_PX`,
    by ``source_fields.csv``; the set repeats some cells as new crops, Im222-227 as Im256-260)
    counted once; one cell under both labels is left out."""
    kept, seen, repeated, conflicting = [], [], [], []
    for record in records:
        centre = centres.get(record.path.stem)
        twin = None if centre is None else next(
            (k for k, c in seen if k.group == record.group
             and abs(c[0] - centre[0]) <= SAME_CELL_PX and abs(c[1] - centre[1]) <= SAME_CELL_PX),
            None)  # fmt: skip
        if twin is None:
            kept.append(record)
            if centre is not None:
                seen.append((record, centre))
        elif twin.label == record.label:
            repeated.append(f"{record.path.name} (= {twin.path.name})")
        else:
            conflicting += [record.path.name, twin.path.name]
    kept = [r for r in kept if r.path.name not in conflicting]
    notes = []
    if repeated:
        notes.append(f"{len(repeated)} crop(s) show a cell another crop shows (same field, "
                     f"centres within {SAME_CELL_PX} px), each counted once: {listed(repeated)}.")  # fmt: skip
    if conflicting:
        notes.append(f"One cell labelled both blast and normal, left out: {listed(conflicting)}.")
    return kept, notes
