"""The bytes of an image source (a path, bytes, an upload), checked before they are decoded."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

from leukemia_core import errors

DEFAULT_MAX_BYTES = 1 << 30
"""Largest file read (1 GiB: an uncompressed 60-megapixel 16-bit RGB TIFF has 360 MB)."""


def read_bytes(
    source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[bytes, str]:
    """The bytes of an image source (see :func:`read_image`) and the name messages use.

    Raises:
        errors.InvalidImageError: Not a regular file, or over ``max_bytes``;
            :class:`~leukemia_core.errors.UnreadableFileError` when it cannot be read.
        FileNotFoundError: ``source`` is a path that does not exist (the message says so).
        TypeError: ``source`` is neither a path, bytes nor a binary file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        if not os.fspath(source):
            raise errors.NotAnImageError(
                "The image path is empty; give the path of a picture file."
            )
        name = name or Path(source).name
        data = _read_path(Path(source), name, max_bytes)
    elif hasattr(source, "getvalue") or hasattr(source, "read"):
        text_mode = isinstance(source, io.TextIOBase)
        data = "" if text_mode else (source.getvalue() if hasattr(source, "getvalue")
                                     else source.read(max_bytes + 1))  # fmt: skip
        if isinstance(data, str):
            raise TypeError(
                "read_image got text from a file opened in text mode; open it with "
                "open(path, 'rb'), or pass the path itself."
            )
        own = getattr(source, "name", None)
        data, name = bytes(data), name or (Path(own).name if isinstance(own, str) else "<bytes>")
    else:
        raise TypeError(
            f"read_image takes a path, bytes or a binary file, not {type(source).__name__}"
        )
    if len(data) > max_bytes:
        raise _too_many_bytes(name, f"over {len(data) - 1:,}", max_bytes)
    return data, name


def _read_path(path: Path, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before and while reading)."""
    try:
        info = path.stat()
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"'{path}' does not exist: check the path and its spelling."
        ) from error
    except OSError as error:
        raise _unreadable(path, error) from error
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        raise errors.NotAnImageError(
            f"'{name}' is {kind}, not an image file; give the path of a picture file."
        )
    if info.st_size > max_bytes:
        raise _too_many_bytes(name, f"{info.st_size:,}", max_bytes)
    try:
        with path.open("rb") as stream:  # a file that grows while read stops one byte past it
            return stream.read(max_bytes + 1)
    except OSError as error:
        raise _unreadable(path, error) from error


def _unreadable(path: Path, error: OSError) -> errors.UnreadableFileError:
    if error.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
        why = f"its path is not valid ({error.strerror}): check the path"
    elif isinstance(error, PermissionError):
        why = ("this account may not read it (permission denied): ask for read access, or copy "
               "it into a folder the app can read")  # fmt: skip
    else:
        why = (f"reading it failed ({error.strerror or error}): the disk or network share may be "
               "failing; copy it again")  # fmt: skip
    return errors.UnreadableFileError(f"'{path}' cannot be read: {why}.")


def _too_many_bytes(name: str, size: str, max_bytes: int) -> errors.ImageTooLargeError:
    return errors.ImageTooLargeError(
        f"'{name}' is {size} bytes, over the limit of {max_bytes:,} bytes for one image: "
        "export it smaller (e.g. as JPEG) or cut it into fields."
    )
