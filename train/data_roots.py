"""Server folders the app may read datasets from: the data roots (``LEUKEMIA_DATA_ROOTS``).

A user of the app types the dataset to train or adapt on as a path; the app runs as the
server's service account, which can read far more than datasets (configuration, keys, other
labs' data). So the pages read a typed path only when it lies under one of the folders the
administrator listed in ``LEUKEMIA_DATA_ROOTS`` (``os.pathsep``-separated, ``:`` on Linux),
after resolving ``..`` and symbolic links, and so does every image a dataset names (a link
inside a root, or a manifest row, pointing elsewhere is refused before anything is read).
Messages name paths relative to their root, never the server's absolute folders.

Unset or empty means no server folder at all (fail closed): the pages then say how to set the
variable, and uploaded zips and the cells of signed cases still work. The command line
(``python -m train ...``) is not restricted: it runs as the shell user, who can read those
folders anyway.

Example:
    >>> roots = data_roots("/srv/datasets")  # doctest: +SKIP
    >>> resolve_under_roots("cnmc/training_data", roots)  # doctest: +SKIP
    PosixPath('/srv/datasets/cnmc/training_data')
    >>> resolve_under_roots("/etc", roots)  # doctest: +SKIP
    Traceback (most recent call last):
    OutsideDataRootsError: '/etc' is outside the data roots ...
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from train.data import detect_format, load_dataset
from train.manifest import read_csv
from train.records import CellTable, DatasetError, ManifestError, listed

ROOTS_ENV_VAR = "LEUKEMIA_DATA_ROOTS"
NOT_CONFIGURED = (
    "Reading datasets from server folders is switched off: no data root is configured. The "
    f"server's administrator can allow it by setting {ROOTS_ENV_VAR} to the folder(s) that "
    f"hold datasets (separated by '{os.pathsep}') and restarting the app. Meanwhile, upload a "
    "zip or use the cells of signed cases."
)
_ONLY_UNDER = (
    f"only folders under the data roots ({ROOTS_ENV_VAR}) can be read here. Type a path "
    "relative to a data root, e.g. cnmc/training_data or lab/manifest.csv."
)


class DataRootError(DatasetError):
    """A typed dataset path cannot be read from the app (see :mod:`train.data_roots`)."""


class NoDataRootsError(DataRootError):
    """No data root is configured, so no server folder can be read from the app."""


class OutsideDataRootsError(DataRootError):
    """A path, or an image a dataset names, lies outside the data roots."""


def data_roots(value: str | None = None) -> tuple[Path, ...]:
    """The configured data roots, resolved; empty when none is configured.

    Args:
        value: ``os.pathsep``-separated folders; ``$LEUKEMIA_DATA_ROOTS`` when None. Empty
            entries are ignored.
    """
    value = os.environ.get(ROOTS_ENV_VAR, "") if value is None else value
    roots: list[Path] = []
    for entry in value.split(os.pathsep):
        if entry.strip():
            root = Path(entry.strip()).expanduser().resolve()
            roots += [] if root in roots else [root]
    return tuple(roots)


def _resolved_roots(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    return [Path(r).resolve() for r in roots]


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _real_under(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies under a root (False for a link loop)."""
    try:
        return _under(path.resolve(), roots)
    except (OSError, RuntimeError, ValueError):  # ValueError: a NUL byte in the path
        return False


def resolve_under_roots(
    path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]]
) -> Path:
    """The real path of a typed dataset location, or a typed error when it is not under a root.

    A relative path is taken under the first root where it exists (the first root when it
    exists nowhere); an absolute one must lie under a root. ``..`` and symbolic links are
    resolved first, so neither leads out. Existence is not checked beyond choosing the root:
    the loaders say what is missing.

    Raises:
        NoDataRootsError: ``roots`` is empty.
        DataRootError: The path is empty.
        OutsideDataRootsError: The path resolves outside every root.
    """
    if not roots:
        raise NoDataRootsError(NOT_CONFIGURED)
    text = os.fspath(path).strip()
    if not text:
        raise DataRootError("Type the path of a dataset folder or CSV manifest, relative to a "
                            "data root.")  # fmt: skip
    if "\x00" in text:
        raise OutsideDataRootsError(f"{text!r} is not a valid path; {_ONLY_UNDER}")
    resolved_roots = _resolved_roots(roots)
    given = Path(text)
    candidates = [given] if given.is_absolute() else [root / given for root in resolved_roots]
    candidate = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links
        raise OutsideDataRootsError(
            f"{text!r} cannot be resolved (a loop of symbolic links); {_ONLY_UNDER}"
        ) from None
    if _under(real, resolved_roots):
        return real
    if _under(Path(os.path.normpath(candidate)), resolved_roots):
        raise OutsideDataRootsError(
            f"{text!r} leads outside the data roots through a symbolic link; {_ONLY_UNDER}"
        )
    where = "is outside the data roots" if given.is_absolute() else "leads out of the data roots"
    raise OutsideDataRootsError(f"{text!r} {where}; {_ONLY_UNDER}")


def relative_name(path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]]) -> str:
    """``path`` relative to the first root it lies under (lexically), for messages.

    ``.`` for a root itself; a path under no root is named by its file name only.
    """
    path = Path(os.path.normpath(Path(path).absolute()))
    for root in _resolved_roots(roots):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix() or "."
    return path.name or "."


def shorten(text: str, roots: Sequence[str | os.PathLike[str]]) -> str:
    """``text`` with every root's absolute path replaced by names relative to that root."""
    for root in sorted(_resolved_roots(roots), key=lambda r: len(str(r)), reverse=True):
        if root.parent == root:  # the file system's root: names stay as they are
            continue
        prefix = r"(?<![\w.-])" + re.escape(str(root))
        text = re.sub(prefix + re.escape(os.sep), "", text)
        text = re.sub(prefix + r"(?![\w-]|\.[\w.-])", ".", text)  # not /root.previous
    return text


@contextlib.contextmanager
def relative_messages(roots: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Re-raise dataset errors (and read errors) with paths relative to the roots."""
    try:
        yield
    except DatasetError as error:
        shortened = type(error)(shorten(str(error), roots))
        shortened.__dict__.update(error.__dict__)  # what the error carries besides its words
        raise shortened from None
    except OSError as error:
        what = relative_name(error.filename, roots) if error.filename else "a file"
        raise DatasetError(f"{what} cannot be read: {error.strerror or error}.") from None


def check_within_roots(
    table: CellTable, roots: Sequence[str | os.PathLike[str]], location: str
) -> None:
    """Refuse a loaded dataset some of whose images lie outside the roots (symbolic links).

    Raises:
        OutsideDataRootsError: Naming the images (relative to their root) and ``location``.
    """
    resolved_roots = _resolved_roots(roots)
    outside = [r.path for r in table if not _real_under(Path(r.path), resolved_roots)]
    if outside:
        raise OutsideDataRootsError(
            f"{len(outside)} image(s) of {location} lead outside the data roots through "
            f"symbolic links: {listed(relative_name(p, roots) for p in outside)}; {_ONLY_UNDER}"
        )


def check_manifest_rows(csv_path: Path, roots: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a manifest naming files outside the roots, before any of them is looked at.

    Raises:
        OutsideDataRootsError: Naming the rows (and the paths as the manifest writes them).
        ManifestError: The file is not a UTF-8 CSV, or holds NUL bytes.
    """
    name = relative_name(csv_path, roots)
    try:
        _, rows = read_csv(csv_path)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ManifestError(f"Manifest {name} is not a UTF-8 CSV file ({error}).") from None
    if damaged := [
        line for line, row in enumerate(rows, start=2) if "\0" in "".join(map(str, row.values()))
    ]:
        raise ManifestError(
            f"Manifest {name} holds NUL bytes on line(s) {listed([str(n) for n in damaged])} "
            "(a write cut short?); write the manifest again."
        )
    resolved_roots = _resolved_roots(roots)
    outside = [
        f"line {line} ({row['path']!r})"
        for line, row in enumerate(rows, start=2)
        if row.get("path") and not _real_under(csv_path.parent / row["path"], resolved_roots)
    ]
    if outside:
        raise OutsideDataRootsError(
            f"Manifest {name} names {len(outside)} file(s) outside the data roots: "
            f"{listed(outside)}; {_ONLY_UNDER}"
        )


def load_under_roots(
    location: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    format: str | None = None,
    **load_options,
) -> tuple[CellTable, str]:
    """:func:`train.data.load_dataset` of a typed location, only under ``roots``.

    Args:
        location: Dataset folder or CSV manifest, relative to a root or absolute under one.
        roots: The data roots (:func:`data_roots`).
        format: Layout; detected when None.
        **load_options: Passed to :func:`train.data.load_dataset`.

    Returns:
        The cells, and the layout read.

    Raises:
        NoDataRootsError, DataRootError, OutsideDataRootsError: See :func:`resolve_under_roots`;
            also when images of the dataset lie outside the roots.
        DatasetError: Any problem of the layout, with paths relative to the roots.
    """
    path = resolve_under_roots(location, roots)
    with relative_messages(roots):
        fmt = format or detect_format(path)
        if fmt == "manifest":
            check_manifest_rows(path, roots)
        table = load_dataset(path, fmt, **load_options)
    check_within_roots(table, roots, relative_name(path, roots))
    return table, fmt
