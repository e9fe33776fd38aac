"""The report's flagged cells: each one's crop (and where the model looked), by final label,
blasts first. Part of :mod:`leukemia_core.report`."""

from __future__ import annotations

import base64
import html
from collections import Counter

from leukemia_core.case_record import CaseRecord
from leukemia_core.imaging import png_bytes
from leukemia_core.types import LABEL_WORDS, Cell, CellLabel

_FLAGGED_LABELS = (CellLabel.BLAST.value, CellLabel.UNCERTAIN.value)
_CARD_ORDER = {CellLabel.BLAST: 0, CellLabel.UNCERTAIN: 1, CellLabel.NORMAL: 2}  # blasts first


def html_text(value: object) -> str:
    """``value`` as text safe inside HTML (attributes included)."""
    return html.escape(str(value), quote=True)


_e = html_text


def flagged_cells(record: CaseRecord) -> tuple[Cell, ...]:
    """Cells a reader should see: labelled blast or uncertain, relabelled by the reviewer, or
    made by the reviewer's split or merge."""
    return tuple(c for c in record.cells
                 if c.label in _FLAGGED_LABELS or c.changed_by_reviewer or c.origin)  # fmt: skip


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _by_label(cells) -> list[Cell]:
    """Blasts first, then uncertain, then the rest; by field and cell within a label."""
    return sorted(cells, key=lambda c: (_CARD_ORDER.get(c.label, len(_CARD_ORDER)), c.key))


def shown_cells(flagged: tuple[Cell, ...], limit: int) -> list[Cell]:
    """The flagged cells the report shows, at most ``limit``: the reviewer's changes first (a
    second reader checks those), up to half the room, so that a long list of them never
    pushes the blasts out; then blasts, then uncertain cells; in label order."""
    changed = [c for c in _by_label(flagged) if c.changed_by_reviewer or c.origin]
    first = changed[: max(limit // 2, min(limit, 1))]
    taken = {c.key for c in first}
    return _by_label((first + [c for c in _by_label(flagged) if c.key not in taken])[:limit])


def _label_text(cell: Cell) -> str:
    """The cell's label in the pages' words, and whose call it is."""
    words = LABEL_WORDS.get(cell.label, str(cell.label)).lower()
    if cell.changed_by_reviewer:
        return f"model: {LABEL_WORDS.get(cell.model_label, cell.model_label).lower()} → reviewer: {words}"
    if cell.awaits_review:  # a provisional report: nobody has looked at this call yet
        return f"{words} (the model's call, not reviewed yet)"
    return words


def cells_section(record: CaseRecord, limit: int) -> str:
    names = {f.index: f.name for f in record.fields}
    flagged = flagged_cells(record)
    shown = shown_cells(flagged, limit)
    groups: dict[str, list[str]] = {}
    for cell in shown:
        where = (
            f"Field {cell.field_index + 1} ({names.get(cell.field_index, '')}), cell {cell.cell_id}"
        )
        images = [
            f'<img src="{_data_uri(png_bytes(image))}" alt="{_e(where)}{what}">'
            for image, what in ((cell.crop, ""), (cell.overlay, ": where the model looked"))
            if image is not None
        ]
        image = "".join(images) if images else "<p>(no image stored)</p>"
        probability = "—" if cell.blast_probability is None else f"{cell.blast_probability:.2f}"
        change = _e(_label_text(cell))
        if cell.origin:  # a piece of a reviewer's split or merge
            change += f"<br>made by the reviewer ({_e(cell.origin)})"
        css = f"{_e(cell.label)} changed" if cell.changed_by_reviewer else _e(cell.label)
        groups.setdefault(LABEL_WORDS.get(cell.label, str(cell.label)), []).append(
            f'<figure class="{css}">{image}<figcaption>{_e(where)}<br>{change}<br>'
            f"blast probability {probability}</figcaption></figure>"
        )
    more = (
        f" Showing {len(shown)} of {len(flagged)}: the reviewer's changes first, then blasts, "
        "then uncertain cells."
        if len(shown) < len(flagged)
        else ""
    )
    in_all = Counter(LABEL_WORDS.get(c.label, str(c.label)) for c in flagged)
    sections = "".join(  # "48 of 59 shown": the heading must not read as the blast count
        f"<h3>{_e(words)} ({len(cards)}"
        + (f" of {in_all[words]} shown" if len(cards) < in_all[words] else "")
        + f')</h3><div class="cells">{"".join(cards)}</div>'
        for words, cards in groups.items()
    )
    with_maps = sum(c.overlay is not None for c in shown)
    maps = (
        " Beside a crop, where the model looked (Grad-CAM): warm colours pushed it towards its "
        "call. Warmth on the black around a cell is not part of the cell: a map that dwells "
        "there says the call rests on little of the cell, so weigh that call less."
        + (f" Maps are kept for the cells they were shown for during review ({with_maps} of "
           f"{len(shown)} here)." if with_maps < len(shown) else "")
        if with_maps
        else ""
    )  # fmt: skip
    return (
        "<h2>Flagged cells</h2><p>Cells labelled blast or uncertain, relabelled by the reviewer "
        "(dashed frame), or made by the reviewer's split or merge: "
        f"{len(flagged)}, by their final label.{more}{maps}</p>" + sections
    )
