"""Read a smear image from a path, bytes or an upload into RGB uint8, checking it at the boundary.

Refusals are typed :mod:`leukemia_core.errors` whose messages name the file, what arrived and the
fix. Samples deeper than 8 bits: values <= 255 are kept; else ``0 .. 2**b - 1`` maps to ``0 .. 255``
for the smallest ``b`` in (10, 12, 14, 16) holding the maximum: true 16-bit data uses the full
0..65535 range, and 10/12/14-bit camera data stored in 16 bits does not come out nearly black.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from leukemia_core import errors
from leukemia_core.colour import is_grey
from leukemia_core.colour_profile import to_srgb
from leukemia_core.file_bytes import DEFAULT_MAX_BYTES, read_bytes
from leukemia_core.jpeg_check import DAMAGED, jpeg_damage_notes
from leukemia_core.types import LoadedImage

DEFAULT_MAX_PIXELS = 60_000_000
#: Pillow format names accepted (MPO, the multi-picture JPEG of phone cameras, counts as JPEG).
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "WEBP")
FORMATS_TEXT = "JPEG, PNG, BMP, TIFF, GIF or WebP"
"""The picture formats read, in words (upload boxes and messages say the same)."""
FILE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".gif",
                 ".webp")  # of those  # fmt: skip
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", *_TIFF_MAGIC)
_ZIP_MAGIC = b"PK\x03\x04"
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
_DEEP_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PLAIN_MODES = ("RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr")
# what Pillow's decoders raise on damaged data (a TIFF whose second page has no size: TypeError)
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, TypeError, KeyError,
                  struct.error)  # fmt: skip
GREY_NOTE = (
    "greyscale image: the stain's colours that tell white cells from red cells are missing, so "
    "cells may be missed and results are unreliable; photograph or export the smear in colour"
)
# EXIF orientation -> transpose, as in PIL.ImageOps.exif_transpose; applied after conversion so
# that 16-bit data read by tifffile or OpenCV is turned upright the same way.
_T = Image.Transpose
_UPRIGHT = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE}
_UPRIGHT.update({6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90})
# Pillow's bomb guard and truncation switch are process globals; we swap them under this lock.
_PILLOW_GLOBALS = threading.Lock()

# pixels, format, original mode, (width, height), frames, EXIF orientation, ICC profile
_Decoded = tuple[np.ndarray, str, str, tuple[int, int], int, int, bytes | None]


class MultiFrameImageWarning(UserWarning):
    """The file holds several frames or pages; only the first was read."""


def read_image(
    source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 64,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LoadedImage:
    """Read the first frame of an image file as ``(H, W, 3)`` RGB uint8, upright per EXIF.

    Args:
        source: A path, the file's bytes, or a binary file-like object (e.g. Streamlit's
            ``UploadedFile``; ``getvalue()`` is used when present, else ``read()``).
        max_pixels: Largest ``width * height`` accepted, checked on the header before decoding.
        min_side: Smallest accepted width and height, in pixels.
        name: Name used in messages and in the result; defaults to the file's name.
        max_bytes: Largest file read; a path that is not a regular file (a folder, a device
            such as ``/dev/zero``, a pipe) is refused before it is opened.

    Returns:
        The pixels and what was read. Transparent pixels are composited on black: "nothing
        here", as a cut-out cell's background is by convention (C-NMC) and as the dark surround
        an eyepiece leaves around a field, which the segmentation paints as glass
        (:mod:`leukemia_core.illumination`). On white, a cut-out read as a field of glass with no
        cell in its middle.

    Raises:
        errors.InvalidImageError: a subclass (empty, not an image, not a regular file,
            truncated, unsupported, too small, too large) with a message for the user.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    data, name = read_bytes(source, name=name, max_bytes=max_bytes)
    if not data:
        raise errors.EmptyFileError(
            f"'{name}' is empty (0 bytes): the upload or copy did not finish. Copy or upload it "
            "again."
        )
    with _PILLOW_GLOBALS:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        # Our own limit is checked on the header with the caller's max_pixels and wording, so
        # Pillow's warning/error is off; truncated data must raise instead of being grey-filled.
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            arr, fmt, mode, size, n_frames, orientation, icc = _decode(
                data, name, max_pixels, min_side
            )
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved
    rgb, notes = _to_rgb(arr, name)
    rgb, converted = to_srgb(rgb, icc)
    notes += [converted] if converted else []
    if is_grey(rgb):
        notes.append(GREY_NOTE)
    if fmt == "JPEG":
        notes[:0] = jpeg_damage_notes(data, rgb)
    if orientation in _UPRIGHT:
        rgb = np.asarray(Image.fromarray(rgb).transpose(_UPRIGHT[orientation]))
        notes.append(f"turned upright from EXIF orientation {orientation}")
    if n_frames > 1:
        notes.insert(0, f"took the first of {n_frames} {'pages' if fmt == 'TIFF' else 'frames'}")
        warnings.warn(f"'{name}': {notes[0]}", MultiFrameImageWarning, stacklevel=2)
    rgb = np.require(rgb, np.uint8, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])  # copy only if needed
    return LoadedImage(rgb, name, fmt, mode, size, n_frames, notes=tuple(notes))


def _what_it_holds(data: bytes) -> str:
    """What a file that is no picture seems to hold, in words (not its raw bytes)."""
    try:
        head = data[:256].decode("utf-8")
    except UnicodeDecodeError:
        return "its first bytes match no picture format"
    if all(c.isprintable() or c in "\r\n\t" for c in head):
        return "it holds text, not a picture"
    return "its first bytes match no picture format"


def _decode(data: bytes, name: str, max_pixels: int, min_side: int) -> _Decoded:
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(_TIFF_MAGIC):  # e.g. float RGB: Pillow has no mode for it, tifffile has
            return _read_tiff(data, name, max_pixels, min_side)
        if data.startswith(_IMAGE_MAGIC):  # a known signature, but the header is cut or broken
            raise _damaged(name, data, exc) from exc
        hint = ""
        if b"%PDF-" in data[:8]:
            hint = " A PDF? Export the page as PNG or JPEG."
        elif data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            hint = (" It is a HEIC/HEIF photo (as phones save them): export it as JPEG, or set "
                    "the phone's camera to its most compatible format.")  # fmt: skip
        elif data.startswith(_ZIP_MAGIC):  # also the container of docx, xlsx and odt files
            hint = (" A zip archive or an office document? Unpack or open it and use the "
                    "pictures inside as image files.")  # fmt: skip
        raise errors.NotAnImageError(
            f"'{name}' is not an image file ({_what_it_holds(data)}).{hint} "
            f"Use a picture of the smear saved as {FORMATS_TEXT}."
        ) from exc
    except _DECODE_ERRORS as exc:
        raise _damaged(name, data, exc) from exc
    with im:
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        if fmt not in SUPPORTED_FORMATS:
            raise errors.UnsupportedFormatError(
                f"'{name}' is a {im.format} image ({im.width}x{im.height}), a format this app "
                f"does not read. Save or export it as {FORMATS_TEXT}."
            )
        _check_size(im.size, name, max_pixels, min_side, fmt)
        if fmt == "TIFF" and _is_deep_colour(im, data):  # Pillow would keep only the high byte
            return _read_tiff(data, name, max_pixels, min_side)
        try:
            # An MPO's extra pictures are previews or depth maps of the same photo, not pages.
            n_frames = 1 if im.format == "MPO" else getattr(im, "n_frames", 1)
            orientation = im.getexif().get(0x0112, 1)  # OpenCV below does not apply it
            icc = im.info.get("icc_profile")
            if _is_deep_colour(im, data):  # the same for PNG, where OpenCV reads all 16 bits
                import cv2

                arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                if arr is None:
                    raise OSError("OpenCV could not decode the 16-bit pixel data")
                arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV gives BGR(A)
                return arr, fmt, f"{im.mode};16", im.size, n_frames, orientation, icc
            im.load()
            # Asked again once loaded: Pillow turns a TIFF upright as it loads it and drops the
            # tag, which turned it a second time here.
            orientation = im.getexif().get(0x0112, 1) if fmt == "TIFF" else orientation
        except _DECODE_ERRORS as exc:
            raise _damaged(name, data, exc) from exc
        if im.mode in _DEEP_GRAY_MODES:
            arr = np.asarray(im)
        elif im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
            arr = np.asarray(im.convert("RGBA"))  # put on black by _to_rgb, which says so
        elif im.mode in _PLAIN_MODES:
            arr = np.asarray(im.convert("RGB"))
        else:
            raise errors.UnsupportedFormatError(
                f"'{name}' has pixel mode {im.mode}, which this app does not read: save it as RGB."
            )
        return arr, fmt, im.mode, im.size, n_frames, orientation, icc


def _check_size(
    size: tuple[int, int], name: str, max_pixels: int, min_side: int, fmt: str | None = None
) -> None:
    width, height = size
    if width * height > max_pixels:
        # a JPEG is read reduced up to a point: one past it is told so, not to save as JPEG
        jpeg = ("a JPEG this large is past what is read reduced" if fmt == "JPEG"
                else "or as a JPEG, which is read reduced")  # fmt: skip
        raise errors.ImageTooLargeError(
            f"'{name}' is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} this app reads: save it smaller (for example halved on each side; "
            f"{jpeg}), or split a stitched scan into fields."
        )
    if min(width, height) < min_side:
        raise errors.ImageTooSmallError(
            f"'{name}' is {width}x{height} pixels; both sides must be at least {min_side} "
            "pixels. Use the full-resolution image rather than a thumbnail or a thin crop."
        )


def _is_deep_colour(im: Image.Image, data: bytes) -> bool:
    if im.format == "TIFF" and im.mode not in _DEEP_GRAY_MODES:
        bits = im.tag_v2.get(258, 8)
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    # PNG header: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA)
    return im.format == "PNG" and data[24] == 16 and data[25] in (2, 6)


def _read_tiff(data: bytes, name: str, max_pixels: int, min_side: int) -> _Decoded:
    """Read page 0 with tifffile (a scikit-image dependency), checking its size before decoding."""
    import tifffile  # imported here: only TIFFs that Pillow cannot convert faithfully need it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            size = (int(page.imagewidth), int(page.imagelength))
            _check_size(size, name, max_pixels, min_side)
            arr = page.asarray()
            orientation = int(page.tags[274].value if 274 in page.tags else 1)
            photometric = getattr(page.photometric, "name", str(page.photometric))
            mode = f"{photometric};{page.bitspersample}"
            n_pages = len(tif.pages)
            icc = page.tags[34675].value if 34675 in page.tags else None  # InterColorProfile
            if page.planarconfig == 2 and arr.ndim == 3:  # separate planes come as (C, H, W)
                arr = np.moveaxis(arr, 0, -1)
            if photometric == "SEPARATED" and arr.ndim == 3 and arr.shape[-1] == 4:
                # Ink separations (CMYK), not RGBA: to 8 bits by depth, then Pillow's CMYK ->
                # RGB, the conversion 8-bit CMYK files get.
                shift = max(int(page.bitspersample) - 8, 0)
                arr = np.asarray(Image.fromarray((arr >> shift).astype(np.uint8), "CMYK")
                                 .convert("RGB"))  # fmt: skip
    except errors.InvalidImageError:
        raise
    except Exception as exc:  # a damaged TIFF's tags can break tifffile in any way
        raise _damaged(name, data, exc) from exc
    return arr, "TIFF", mode, size, n_pages, orientation, icc


def _on_black(im: Image.Image) -> np.ndarray:
    black = Image.new("RGBA", im.size, "black")
    return np.asarray(Image.alpha_composite(black, im.convert("RGBA")).convert("RGB"))


def _to_rgb(arr: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """Map samples to uint8 by bit depth (see the module docstring), then to 3 channels."""
    notes, dtype = [], arr.dtype
    if dtype.kind not in "biuf":
        raise errors.UnsupportedFormatError(f"'{name}' stores {dtype} samples; save it as RGB.")
    top = 255 if dtype in (np.uint8, bool) else arr.max(initial=0)
    if dtype.kind == "f" and (missing := int(arr.size - np.count_nonzero(np.isfinite(arr)))):
        notes.append(f"{DAMAGED}: {missing:,} of its {arr.size:,} samples are not numbers (NaN) "
                     "or infinite and were set to 0")  # fmt: skip
    if dtype.kind == "f" or top > 65535:  # floats, or 32-bit integers: no bit depth to go by
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255 else 255.0 / top)
        arr = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"{dtype} samples multiplied by {scale:.4g}")
    elif top > 255:  # a lookup table keeps memory at the output size
        bits = next(b for b in (10, 12, 14, 16) if top < 2**b)
        lut = np.round(np.arange(2**bits) * (255.0 / (2**bits - 1))).astype(np.uint8)
        arr = lut[np.clip(arr, 0, None)]
        if bits < 16:
            notes.append(f"samples fit in {bits} bits: 0..{2**bits - 1} mapped to 0..255")
    if arr.dtype == bool:  # 1-bit TIFF pages that only tifffile read
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    channels = {2: 1, 3: arr.shape[-1]}.get(arr.ndim)
    if channels == 1:
        return np.repeat(arr.reshape(arr.shape[:2])[..., None], 3, axis=2), notes
    if channels in (2, 4) and not arr[..., -1].any():
        # transparent everywhere: no picture is meant to be, so the channel is no transparency
        # (an export that wrote zeros there); on black it was a black field
        notes.append("its transparency channel is empty (fully transparent everywhere), so it "
                     "was ignored")  # fmt: skip
        rgb = arr[..., :-1]
        return (np.repeat(rgb, 3, axis=2) if channels == 2 else np.ascontiguousarray(rgb)), notes
    if channels in (2, 4):
        if (see_through := float(np.mean(arr[..., -1] < 255))) > 0:  # else it reads as the slide
            notes.append(f"{see_through:.0%} of the image is transparent or see-through: put on "
                         "black; save it without transparency (JPEG, or PNG without alpha) to "
                         "analyse what the camera saw")  # fmt: skip
        return _on_black(Image.fromarray(arr)), notes
    if channels != 3:
        raise errors.UnsupportedFormatError(f"'{name}' has pixel shape {arr.shape}; save as RGB.")
    return arr, notes


def _damaged(name: str, data: bytes, exc: BaseException) -> errors.TruncatedImageError:
    return errors.TruncatedImageError(
        f"'{name}' ends before its pixel data does or is damaged ({len(data):,} bytes; decoder "
        f"said: {exc}). It was probably cut off or corrupted in an upload or copy: copy or "
        "export it again."
    )
