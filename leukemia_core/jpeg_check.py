"""Structure check of JPEG files: libjpeg decodes corrupt image data silently.

Pillow drops libjpeg's warnings, so a JPEG with bytes overwritten in the middle decodes without
complaint and part of the picture is wrong. :func:`jpeg_damage` walks the file's markers to find
such damage; :func:`jpeg_damage_notes` says it in a per-image note.
"""

from __future__ import annotations

import numpy as np

DAMAGED = "damaged image: results unreliable"
"""How a note about pixels that were decoded from damaged data starts."""
GREY_TAIL_MIN_FRACTION = 0.02  # of the rows: a cut-off JPEG's grey fill (:func:`grey_filled_tail`)


def jpeg_damage(data: bytes) -> str | None:
    """Where the structure of a JPEG file is broken; None for a sound one.

    libjpeg decodes corrupt image data silently (Pillow drops its warnings), leaving part of the
    picture wrong. This walks the file's segments up to its end marker and the image data
    between them, where only stuffed ``FF00`` bytes and restart markers ``RST0``-``RST7`` in
    turn may appear: bytes overwritten in the middle of a file nearly always break that.

    >>> jpeg_damage(bytes.fromhex("ffd8 ffda0002 12ff0034ffd056 ffd9"))  # SOI, SOS, data, EOI
    >>> jpeg_damage(bytes.fromhex("ffd8 ffda0002 12ffd356 ffd9"))
    'restart markers out of order at byte 7'
    """
    size, pos = len(data), 2
    if not data.startswith(b"\xff\xd8"):
        return "no start marker"
    refined: dict[int, set[int]] | None = None  # progressive: coefficients final per component
    while True:
        if pos < size and data[pos] != 0xFF:
            return f"bytes outside any segment at byte {pos:,}"
        while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos + 1 > size:
            return "the file ends before its end marker"
        marker, pos = data[pos], pos + 1
        if marker == 0xD9:  # EOI: later bytes (e.g. an MPO's other pictures) are not ours
            if refined and any(len(done) < 64 for done in refined.values()):
                # a progressive file cut off and closed: each scan refines the whole picture,
                # so the cut leaves no grey rows, only a blur (blasts then look normal)
                return "a progressive JPEG that ends before its last scans"
            return None
        if marker == 0x01:  # TEM: no length
            continue
        if marker < 0xC0 or 0xD0 <= marker <= 0xD7:
            return f"an unexpected marker 0xFF{marker:02X} at byte {pos - 2:,}"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            return f"a segment running past the end of the file at byte {pos - 2:,}"
        segment = data[pos + 2 : pos + length]
        pos += length
        if marker in (0xC2, 0xC6, 0xCA, 0xCE) and len(segment) >= 6:  # SOF of a progressive file
            count = segment[5]
            refined = {segment[6 + 3 * i]: set() for i in range(count) if 6 + 3 * i < len(segment)}
        if marker == 0xDA and refined is not None:
            _note_scan(segment, refined)
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            pos = _after_scan(data, pos)
            if isinstance(pos, str):
                return pos


def _note_scan(header: bytes, refined: dict[int, set[int]]) -> None:
    """Mark the coefficients a progressive scan makes final (its low bit ``Al`` is 0)."""
    if not header:
        return
    count = header[0]
    tail = 1 + 2 * count
    if len(header) < tail + 3:
        return
    first, last, low_bit = header[tail], header[tail + 1], header[tail + 2] & 0x0F
    if low_bit:
        return
    for i in range(count):
        component = header[1 + 2 * i]
        if component in refined:
            refined[component].update(range(first, min(last, 63) + 1))


def _after_scan(data: bytes, pos: int) -> int | str:
    """Position of the marker that ends the scan data at ``pos``, or what is wrong in it."""
    expected = 0xD0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return "the file ends inside the image data"
        following = data[pos + 1]
        if following == 0xFF:  # fill byte
            pos += 1
        elif following == 0x00:  # stuffed 0xFF data byte
            pos += 2
        elif 0xD0 <= following <= 0xD7:
            if following != expected:
                return f"restart markers out of order at byte {pos:,}"
            expected, pos = 0xD0 + (following - 0xCF) % 8, pos + 2
        else:
            return pos


def grey_filled_tail(rgb: np.ndarray) -> float:
    """Share of the picture's rows, from the bottom, that are one flat mid-grey colour.

    A JPEG cut off and closed with an end marker passes the structure check, and libjpeg fills
    the missing rows with grey (128); no camera gives rows of one exact colour. Black or white
    margins are left alone (they may be real), and so is a picture flat all over.
    """
    last = rgb[-1, 0].astype(int)
    if not (np.all(np.abs(last - 128) <= 24) and np.all(rgb[-1] == rgb[-1, 0])):
        return 0.0
    flat_rows = np.all(rgb == rgb[-1, 0], axis=(1, 2))
    other = np.flatnonzero(~flat_rows)
    if not len(other):  # one flat picture: not a cut-off photo (other checks say what it is)
        return 0.0
    return (len(flat_rows) - (other[-1] + 1)) / len(flat_rows)


def jpeg_damage_notes(data: bytes, rgb: np.ndarray) -> list[str]:
    """The note for a damaged JPEG (none for a sound one): its structure broken
    (:func:`jpeg_damage`), or cut off and closed, which leaves rows of flat grey at the bottom
    of the picture as stored (:func:`grey_filled_tail`)."""
    if damage := jpeg_damage(data):
        return [f"{DAMAGED}: the JPEG data is corrupt ({damage}), so part of the picture was "
                "decoded wrong; use an undamaged copy of the file"]  # fmt: skip
    if (flat := grey_filled_tail(rgb)) >= GREY_TAIL_MIN_FRACTION:
        return [f"{DAMAGED}: the lower {flat:.0%} of the picture is flat grey, as when a file "
                "cut off in a copy is decoded; use an undamaged copy of the file"]  # fmt: skip
    return []


def is_damaged(notes) -> bool:
    """True when an image's notes say it was decoded damaged (its cells go to review)."""
    return any(note.startswith(DAMAGED) for note in notes)
