"""What a stored result depends on, as short hashes: the code that made it and the file it
was made from. A resumed batch (``.parts``) and the comparison jobs' crop cache reuse a result
only while both are unchanged; :func:`content_digest` tells one file under two names, and
:func:`same_field` one picture in two files (two exports of one capture, saved again or resized)."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2
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


def array_digest(settings: str, *arrays: np.ndarray) -> str:
    """BLAKE2b of ``settings`` and every byte of ``arrays`` (16 hex digits): what a training
    checkpoint or cached feature file was made from. Every pixel counts (a key from a sample
    of them read an edited crop's stale features as its own)."""
    digest = hashlib.blake2b(settings.encode(), digest_size=8)
    for array in arrays:
        array = np.ascontiguousarray(array)  # no copy when it is already (a fit's crops are)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))  # hashed in place, not copied to bytes
    return digest.hexdigest()


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


SAME_FIELD_MAX_DIFFERENCE = 1.0
"""Mean absolute difference (0-255) of two 32x32 views below which two pictures are one field:
a JPEG saved again at quality 80 differs by at most 0.3, two fields of one smear by 3.5 or more
(BCCD, ALL-IDB1 and deepbionet, 40 fields each, 2026-12-07)."""
_VIEW_SIDE = 32


def field_signature(rgb) -> str:
    """A small view of a decoded picture (its aspect and a 32x32 image), for :func:`same_field`:
    one field saved twice, at another quality or size, gives nearly the same signature."""
    pixels = np.ascontiguousarray(rgb)
    view = cv2.resize(pixels, (_VIEW_SIDE, _VIEW_SIDE), interpolation=cv2.INTER_AREA)
    aspect = pixels.shape[1] / max(pixels.shape[0], 1)
    return f"{aspect:.4f}:{base64.b64encode(view.astype(np.uint8).tobytes()).decode()}"


def same_field(first: str, second: str, *, exact: bool = False) -> bool:
    """Whether two :func:`field_signature` values show one picture (saved twice, re-encoded or
    resized): the same aspect, and views within :data:`SAME_FIELD_MAX_DIFFERENCE`, or equal
    views with ``exact`` (single cells: two cut-out cells on black can differ by 1.5 only)."""
    (aspect_a, a), (aspect_b, b) = _decoded(first), _decoded(second)
    if abs(aspect_a - aspect_b) > 0.01 * aspect_a:
        return False
    limit = 1e-6 if exact else SAME_FIELD_MAX_DIFFERENCE
    return a.shape == b.shape and float(np.abs(a - b).mean()) < limit


@lru_cache(maxsize=4096)
def _decoded(signature: str) -> tuple[float, np.ndarray]:
    """A signature's aspect and view, decoded once: a batch compares each with every other."""
    aspect, view = signature.split(":", 1)
    return float(aspect), np.frombuffer(base64.b64decode(view), np.uint8).astype(np.float32)
