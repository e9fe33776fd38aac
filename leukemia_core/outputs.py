"""Writing results: output folders, unique output names, spreadsheet-safe text, atomic files.

Every file the command line and the app write goes through :func:`write_text_atomic` (a
half-written file is never left behind); names taken from users pass :func:`spreadsheet_text`
before they reach a CSV.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from leukemia_core import errors
from leukemia_core.jpeg_check import is_damaged

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_AFTER_SEPARATOR = re.compile(r"([;\t])([=+\-@])")


# A cell's box and centroid as CSV columns, in the order of Cell.bbox then Cell.centroid.
GEOMETRY_COLUMNS = ("x0", "y0", "x1", "y1", "centroid_x", "centroid_y")
RESEARCH_USE_CELL = "research use only; not for diagnosis"
"""The ``research_use`` column of every per-cell CSV (the app's export and the CLI's): a row
copied on its own into another sheet still says it."""


def prepare_output_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (with its parents) if missing and check a file can be written.

    Raises:
        errors.OutputFolderError: ``path`` is empty, is a file, lies under a file, or cannot be
            written to; the message says which and what to do.
    """
    if not str(path).strip():
        raise errors.OutputFolderError(
            "the output folder is empty; name one, e.g. results (or . for the current folder)."
        )
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == path else f"lies under the file {blocking}"
        raise errors.OutputFolderError(
            f"the output folder {path} {where}; name a new or an existing folder."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise errors.OutputFolderError(
            f"cannot write into the output folder {path} ({error.strerror or error}); choose a "
            "folder you may write to."
        ) from error
    return path


def output_stems(paths: Sequence[Path], reserved: Iterable[str] = ()) -> list[str]:
    """One output name stem per input, unique regardless of case.

    The first input of a stem keeps it; a later one of the same stem (the same file name in
    another folder) gets ``-2``, ``-3``, ... , as does an input whose stem is ``reserved`` (the
    name of a file the command writes itself).

    >>> output_stems([Path("a/x.png"), Path("b/x.png"), Path("c/x-2.jpg"), Path("summary.png")],
    ...              reserved=["summary"])
    ['x', 'x-3', 'x-2', 'summary-2']
    """
    blocked = {r.casefold() for r in reserved}
    names = [short_stem(path.stem) for path in paths]
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        first.setdefault(name.casefold(), index)
    taken = blocked | first.keys()
    stems = []
    for index, name in enumerate(names):
        key = name.casefold()
        if first[key] == index and key not in blocked:
            stems.append(name)
            continue
        number = 2
        while f"{key}-{number}" in taken:
            number += 1
        taken.add(f"{key}-{number}")
        stems.append(f"{name}-{number}")
    return stems


MAX_STEM_BYTES = 120
"""Longest output name stem: ``.<stem>.json.XXXXXXXX`` and ``<stem>_overlay.png`` must stay
under the file systems' 255-byte names (a 250-byte name, legal, stopped a whole batch)."""


def short_stem(stem: str) -> str:
    """``stem``, or when over :data:`MAX_STEM_BYTES` its start and a hash of the whole.

    >>> len(short_stem("é" * 200).encode()) <= MAX_STEM_BYTES, short_stem("field1")
    (True, 'field1')
    """
    stem = printable(stem)
    if len(stem.encode()) <= MAX_STEM_BYTES:
        return stem
    start = stem.encode()[: MAX_STEM_BYTES - 10].decode(errors="ignore")  # whole characters
    return f"{start}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"


def printable(name: str) -> str:
    """``name`` with the bytes of a name that is not UTF-8 (Latin-1 from an old share arrives
    as surrogate escapes) spelled ``?``, so every writer, CSV and JSON included, can write it.

    >>> printable(os.fsdecode(b"M\\xfcller")), printable("Müller")
    ('M?ller', 'Müller')
    """
    return os.fsencode(name).decode(errors="replace").replace("\ufffd", "?")


def renamed_note(path: Path, stem: str) -> str | None:
    """What to tell the user when ``path``'s outputs are named ``stem`` (None: its own stem)."""
    if stem == path.stem:
        return None
    short = short_stem(path.stem)
    if stem.startswith(short) and short != path.stem:
        why = ("is not UTF-8 text (its odd bytes are written as ?)"
               if printable(path.stem) != path.stem
               else "is too long for its outputs' file names")  # fmt: skip
        return (f"{printable(str(path))}: its name {why}, so its outputs are named {stem} and "
                f"it is {stem}{path.suffix} in the tables")  # fmt: skip
    return (f"{printable(str(path))}: another input (or an output of this command) has the "
            f"same name, so its outputs are named {stem} and it is {stem}{path.suffix} in the "
            "tables")  # fmt: skip


def spreadsheet_text(value: str) -> str:
    """``value`` for a CSV cell: a leading apostrophe when it starts like a formula (``=``,
    ``+``, ``-``, ``@``, tab or carriage return), so spreadsheets show it instead of running it;
    the same after a ``;`` or tab inside it, where a spreadsheet set to split on those (as in
    many European locales) would start a new cell.

    >>> spreadsheet_text("=HYPERLINK(1).png"), spreadsheet_text("S-7;=cmd")
    ("'=HYPERLINK(1).png", "S-7;'=cmd")
    """
    value = _FORMULA_AFTER_SEPARATOR.sub(r"\1'\2", value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename.

    Readers see the old file or the whole new one, never a half-written one. UTF-8; a file
    name that is not (surrogate escapes) is written with ``?`` for its odd bytes.
    """
    return _write_atomic(path, text, "w", newline="", encoding="utf-8", errors="replace")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` as :func:`write_text_atomic` writes text."""
    return _write_atomic(path, data, "wb")


def readable_as_folder(path: Path) -> int:
    """Permission bits for a new file at ``path``: those of the file it replaces, else its
    folder's without the execute bits. ``mkstemp`` makes files only their owner can read, so a
    model or status file written by the app was unreadable to a service running as another
    account, where a plain ``open`` would have followed the folder (and the umask)."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    # The umask still applies, as it would to ``open``: a shared drop folder (0777) must not
    # make results any local account can change.
    return stat.S_IMODE(path.parent.stat().st_mode) & 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where ``/proc`` says it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a moment, at start of a write)
    os.umask(mask)
    return mask


def _write_atomic(path: str | os.PathLike, content: str | bytes, mode: str, **options) -> Path:
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, readable_as_folder(path))
        with os.fdopen(handle, mode, **options) as stream:
            stream.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


DAMAGED_WORDS = "damaged file"  # the ``field_warnings`` word of an image that decoded damaged


def field_warnings_text(field) -> str:
    """A field's ``field_warnings`` cell in every per-cell CSV: ``damaged file`` and the
    names of the quality checks it failed, ``; ``-separated (empty: none)."""
    return "; ".join([DAMAGED_WORDS] * is_damaged(field.notes) + [w.check for w in field.quality])
