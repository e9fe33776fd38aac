"""What a stored result depends on, as short hashes: the code that made it and the file it
was made from. A resumed batch (``.parts``) and the comparison jobs' crop cache reuse a result
only while both are unchanged; :func:`content_digest` tells one file under two names, and
:func:`pixel_digest` one picture in two files (two exports of one capture)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

IMAGING_PACKAGES = ("numpy", "opencv-python-headless", "opencv-python", "scikit-image", "scipy",
                    "pillow", "tifffile")  # fmt: skip
"""Packages that decode, resample or segment: an upgrade can move a pixel or an outline."""
EDGE_BYTES = 1 << 16  # read from each end of a file for its fingerprint


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the ``leukemia_core`` sources and the imaging packages' versions."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.relative_to(Path(__file__).parent).as_posix().encode())
        digest.update(source.read_bytes())
    for package in IMAGING_PACKAGES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """The file's size, modification time and a hash of its first and last 64 KB ('' when it
    cannot be read). The bytes matter: a copy that keeps the old time (``cp -p``, ``rsync -a``,
    an unzip) of another picture of the same size, as every C-NMC crop is, is another file."""
    try:
        stat = path.stat()
        with open(path, "rb") as stream:
            head = stream.read(EDGE_BYTES)
            stream.seek(max(stat.st_size - EDGE_BYTES, len(head)))
            tail = stream.read(EDGE_BYTES)
    except OSError:
        return ""
    edges = hashlib.sha256(head + tail).hexdigest()[:16]
    return f"{stat.st_size}:{stat.st_mtime_ns}:{edges}"


def content_digest(path: Path) -> str | None:
    """SHA-256 of the file's bytes, read in 1 MB chunks (None when it cannot be read): the same
    picture under two names has one digest."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def pixel_digest(rgb) -> str:
    """Hash of a decoded image's shape, type and pixels: equal for one picture saved twice."""
    pixels = np.ascontiguousarray(rgb)
    digest = hashlib.blake2b(f"{pixels.shape}{pixels.dtype}".encode(), digest_size=16)
    digest.update(pixels.data)
    return digest.hexdigest()
