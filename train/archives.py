"""Unpack an uploaded dataset zip safely: every member checked before anything is written.

An archive is unpacked once: its folder is named after the SHA-256 of its bytes, so unpacking the
same archive again returns the folder already there, and unpacked folders not used for
:data:`KEEP_UNPACKED_DAYS` days are removed when the next archive is unpacked.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, NoReturn

from leukemia_core.io import FILE_SUFFIXES
from train.records import DatasetError, DatasetNotFoundError, EmptyDatasetError

MiB = 1 << 20
GiB = 1 << 30
_RATIO_FLOOR_BYTES = MiB  # a member expanding to less cannot be a bomb, whatever its ratio
_CHUNK = MiB
MAX_NAME_BYTES = 255  # longest file or folder name most file systems take
MAX_PATH_BYTES = 1024  # longest member path unpacked
KEEP_UNPACKED_DAYS = 7.0
_DIGEST_CHARS = 16  # of the archive's SHA-256 in its folder's name
_STALE_EXTRACT_S = 24 * 3600  # a hidden .extract-* folder this old is left from a crash
_UNPACKED = re.compile(rf"^[A-Za-z0-9._-]+-[0-9a-f]{{{_DIGEST_CHARS}}}$")  # <stem>-<digest>
_JUNK_DIRS = frozenset({"__MACOSX"})
_JUNK_FILES = frozenset({".DS_Store"})


class UnsafeArchiveError(DatasetError):
    """An uploaded archive is not a zip, is corrupt, or holds a member that is unsafe to unpack."""


def extract_zip(
    archive: str | os.PathLike[str] | bytes | BinaryIO,
    dest_root: Path,
    *,
    max_archive_bytes: int = 500 * MiB,
    max_total_bytes: int = 4 * GiB,
    max_files: int = 100_000,
    max_ratio: float = 200,
    keep_days: float = KEEP_UNPACKED_DAYS,
) -> Path:
    """Unpack a zip into a folder under ``dest_root``, refusing anything unsafe.

    Every member is checked before anything is written; sizes are checked again while
    writing, since declared sizes can lie. The archive goes to a hidden temporary folder that
    is renamed to ``dest_root/<stem>-<first 16 hex digits of its SHA-256>`` at the end, and
    removed on any failure. The same archive unpacked again returns that folder (its time is
    renewed); folders under ``dest_root`` unused for ``keep_days`` are removed first.
    ``__MACOSX/`` and ``.DS_Store`` entries are skipped.

    Args:
        archive: Path, bytes, or a binary file-like (e.g. Streamlit's ``UploadedFile``).
        dest_root: Folder that receives the unpacked folder (created if missing).
        max_archive_bytes: Largest archive accepted.
        max_total_bytes: Most bytes written in all.
        max_files: Most entries (files and folders) in the archive.
        max_ratio: Highest uncompressed/compressed size of a member of 1 MiB or more, and of
            the whole archive once it unpacks to 1 MiB or more.
        keep_days: Unpacked folders unused this long are removed.

    Returns:
        The single top-level folder of the archive if it has exactly one, else the new folder.

    Raises:
        UnsafeArchiveError: Not a zip or corrupt; too large; too many members; a member with an
            absolute path, drive letter or ``..``; a symlink or other special file; an
            encrypted member; a zip bomb (size or ratio over the limits, per member or in all);
            clashing names; a name too long for the file system; a member that cannot be
            written.
        EmptyDatasetError: The archive holds no files.
        DatasetNotFoundError: ``archive`` is a path that does not exist.
    """
    name, source, size = _open_archive(archive, max_archive_bytes)
    digest = _sha256(source)[:_DIGEST_CHARS]
    dest_root = Path(dest_root)
    remove_old_unpacked(dest_root, keep_days * 86400, keep=digest)
    done = _unpacked(dest_root, digest)
    if done is not None:
        return _top(done)
    # Python's zipfile reads every entry's record before anything can be counted: 300,000
    # entries took 165 MB and 17 s before the refusal. The count the archive declares at its
    # end refuses it first.
    declared = _declared_entries(source)
    if declared is not None and declared > max_files:
        raise UnsafeArchiveError(
            f"{name} holds {declared:,} entries, more than the limit of {max_files:,}; split "
            "the dataset into smaller zips."
        )
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as error:
        raise UnsafeArchiveError(
            f"{name} is not a zip archive, or is corrupt ({error}); upload a .zip of the "
            "dataset folder."
        ) from None
    with zf:
        infos = zf.infolist()
        members = _checked_members(name, infos, max_files, max_total_bytes, max_ratio)
        _check_total_ratio(name, infos, size, max_ratio)
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".extract-"))
        try:
            _write_members(name, zf, members, tmp, max_total_bytes)
            final = _rename(tmp, dest_root / f"{_safe_stem(archive)}-{digest}", digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _top(final)


def remove_old_unpacked(dest_root: Path, max_age_s: float, *, keep: str = "") -> list[str]:
    """Remove the unpacked folders (``<stem>-<digest>``) under ``dest_root`` not used for
    ``max_age_s`` seconds, and hidden ``.extract-*`` folders left by a crash a day ago, except
    the one of digest ``keep``; anything else there is left alone.

    Returns:
        The names removed.
    """
    if not dest_root.is_dir():
        return []
    now, removed = time.time(), []
    for folder in dest_root.iterdir():
        hidden = folder.name.startswith(".extract-")
        ours = hidden or (_UNPACKED.match(folder.name) and not folder.name.endswith(f"-{keep}"))
        if not ours or folder.is_symlink() or not folder.is_dir():
            continue
        if now - folder.stat().st_mtime < (_STALE_EXTRACT_S if hidden else max_age_s):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _sha256(source: Path | BinaryIO) -> str:
    digest = hashlib.sha256()
    stream = source.open("rb") if isinstance(source, Path) else source
    try:
        stream.seek(0)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    finally:
        if isinstance(source, Path):
            stream.close()
        else:
            stream.seek(0)
    return digest.hexdigest()


def _unpacked(dest_root: Path, digest: str) -> Path | None:
    """The folder this archive was unpacked to before (its time renewed), or None."""
    if not dest_root.is_dir():
        return None
    for folder in sorted(dest_root.glob(f"*-{digest}")):
        if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
            os.utime(folder)
            return folder
    return None


def _top(folder: Path) -> Path:
    """The single top-level folder of an unpacked archive if it has exactly one beside files
    that are not images (a README, a licence), else the archive's own folder."""
    top = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    folders = [p for p in top if p.is_dir()]
    loose_images = [p for p in top if p.is_file() and p.suffix.lower() in FILE_SUFFIXES]
    return folders[0] if len(folders) == 1 and not loose_images else folder


def _check_total_ratio(
    name: str, infos: list[zipfile.ZipInfo], size: int, max_ratio: float
) -> None:
    """Refuse an archive whose members together expand more than ``max_ratio``-fold (many
    members each just under the per-member floor would otherwise pass)."""
    total = sum(info.file_size for info in infos)
    ratio = total / max(size, 1)
    if total >= _RATIO_FLOOR_BYTES and ratio > max_ratio:
        raise UnsafeArchiveError(
            f"{name} expands {ratio:.0f}-fold in all ({_bytes(size)} -> {_bytes(total)} in "
            f"{len(infos)} members), over the limit of {max_ratio:g} (a zip bomb?). Nothing "
            "was unpacked; zip the dataset's image files as they are."
        )


def _declared_entries(source: Path | BinaryIO) -> int | None:
    """The number of entries a zip declares in its end-of-central-directory record (ZIP64's
    too), read from its last 64 KiB; None when there is no such record (zipfile then says the
    archive is no zip)."""
    if isinstance(source, Path):
        with source.open("rb") as stream:
            return _declared_entries(stream)
    size = source.seek(0, io.SEEK_END)
    source.seek(max(0, size - 65_557))
    tail = source.read()
    source.seek(0)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) < end + 22:
        return None
    entries = int.from_bytes(tail[end + 10 : end + 12], "little")
    zip64 = tail.rfind(b"PK\x06\x06", 0, end)
    if entries == 0xFFFF and zip64 >= 0 and len(tail) >= zip64 + 40:
        entries = int.from_bytes(tail[zip64 + 32 : zip64 + 40], "little")
    return entries


def _open_archive(archive: object, max_bytes: int) -> tuple[str, Path | BinaryIO, int]:
    """Display name, the path or seekable stream of the archive, and its size; refuses one over
    max_bytes."""
    if isinstance(archive, str | os.PathLike):
        path = Path(archive).expanduser()
        if not path.is_file():
            kind = "is a folder, not a zip file" if path.is_dir() else "does not exist"
            raise DatasetNotFoundError(f"Archive {path} {kind}; check the path.")
        _check_archive_size(str(path), path.stat().st_size, max_bytes)
        return str(path), path, path.stat().st_size
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
    return name, stream, size


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
        longest = max(parts, key=lambda p: len(p.encode()), default="")
        if len(longest.encode()) > MAX_NAME_BYTES:
            _refuse(name, member, f"has a name of {len(longest.encode())} bytes ('{longest[:40]}"
                                  f"...'), over the {MAX_NAME_BYTES} a file system takes")  # fmt: skip
        if len("/".join(parts).encode()) > MAX_PATH_BYTES:
            _refuse(name, member, f"has a path over {MAX_PATH_BYTES} bytes long")
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
        except OSError as error:  # e.g. a name this file system refuses, or a full disk
            _refuse(name, info.filename, f"cannot be written here ({error.strerror or error})")
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


def _rename(tmp: Path, final: Path, digest: str) -> Path:
    """Rename ``tmp`` to ``final``; when the same archive was unpacked meanwhile (another
    session), that folder is used and ``tmp`` removed."""
    try:
        if final.exists():  # rename would replace an empty folder: make sure there is none
            raise FileExistsError(final)
        os.rename(tmp, final)
        return final
    except OSError:
        done = _unpacked(final.parent, digest)
        if done is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return done
