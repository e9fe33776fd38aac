"""Bring any smear image to a size the analysis can use, and draw the small views a reviewer sees.

A field larger than :data:`ANALYSIS_MAX_PIXELS` is not refused: it is decoded (JPEGs at a
reduced size straight from the file, so a 100-megapixel photograph never lands in memory at full
size) and downscaled, at most to the model's scale (the size at which every white cell still
covers the classifier's input), and the result carries a note saying so. Everything else here
is pixel bookkeeping for the review screens: outlines of cell masks, neighbourhood views with the
outline drawn, and PNG encoding for the case record.

Example:
    >>> import numpy as np
    >>> prepared = prepare_field(np.full((300, 400, 3), 200, np.uint8), "blank.png")
    >>> prepared.scale, prepared.rgb.shape
    (1.0, (300, 400, 3))
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from leukemia_core import errors
from leukemia_core.colour import is_grey
from leukemia_core.colour_profile import to_srgb
from leukemia_core.io import (
    DEFAULT_MAX_PIXELS,
    GREY_NOTE,
    read_bytes,
    read_image,
)
from leukemia_core.jpeg_check import jpeg_damage_notes
from leukemia_core.scale import estimate_red_cell_diameter

ANALYSIS_MAX_PIXELS = 16_000_000
"""Fields with more pixels are downscaled before analysis (a 2592x1944 camera frame has 5 MP)."""

JPEG_REDUCED_MAX_PIXELS = 170_000_000
"""Largest JPEG decoded at a reduced size (other formats stop at ``io.DEFAULT_MAX_PIXELS``)."""

WBC_PER_RED_CELL = 1.2
"""The smallest white cells (small lymphocytes) are about this many red-cell diameters across."""

VIEW_SIZE = 192
OUTLINE_RGB = (20, 220, 60)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for analysis.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 pixels to analyse (possibly downscaled).
        name: File name.
        original_size: ``(width, height)`` of the image as stored in the file (after EXIF
            rotation, before any reduction).
        scale: Analysed pixels per original pixel (1.0: full resolution).
        notes: Human-readable notes (downscaling, EXIF rotation, several pages, ...).
    """

    rgb: np.ndarray
    name: str
    original_size: tuple[int, int]
    scale: float = 1.0
    notes: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def read_for_analysis(
    data: bytes | str | os.PathLike,
    name: str | None = None,
    *,
    input_size: int | None = None,
    max_pixels: int = ANALYSIS_MAX_PIXELS,
) -> PreparedImage:
    """Read an uploaded file (or a path) and fit it for analysis (see :func:`prepare_field`).

    The app and ``python -m leukemia_core analyze`` both read images here, so a file gives the
    same pixels in both.

    Args:
        data: The file's bytes, or its path.
        name: File name, used in messages (default: the path's name).
        input_size: Side of the classifier's input, which sets the model's scale; None when no
            model is used (then only ``max_pixels`` applies).
        max_pixels: Pixel budget of the analysis.

    Raises:
        errors.InvalidImageError: A subclass naming what is wrong with the file (empty, not an
            image, truncated, too large even for reduced decoding, ...).
        FileNotFoundError: ``data`` is a path that does not exist.
    """
    data, name = read_bytes(data, name=name)
    size, fmt = _peek(data)
    if size is not None and size[0] * size[1] > DEFAULT_MAX_PIXELS and fmt == "JPEG":
        rgb, original, notes = _read_reduced_jpeg(data, name, size)
    else:
        loaded = read_image(data, name=name)
        rgb, original, notes = loaded.rgb, (loaded.width, loaded.height), list(loaded.notes)
    prepared = prepare_field(rgb, name, input_size=input_size, max_pixels=max_pixels,
                             original_size=original)  # fmt: skip
    scale = prepared.scale * rgb.shape[1] / original[0]
    return PreparedImage(prepared.rgb, name, original, scale, (*notes, *prepared.notes))


def prepare_field(
    rgb: np.ndarray,
    name: str,
    *,
    input_size: int | None = None,
    max_pixels: int = ANALYSIS_MAX_PIXELS,
    original_size: tuple[int, int] | None = None,
) -> PreparedImage:
    """Downscale a field over ``max_pixels``: to the model's scale where that is enough.

    ``original_size`` (width, height) is the file's, when ``rgb`` was decoded reduced: the
    note then speaks of the file and of the downscaling in all.

    The model's scale is where a red cell spans ``0.9 * input_size / WBC_PER_RED_CELL`` pixels:
    there even the smallest white cell still fills the classifier's input, so nothing the model
    can see is lost. When that is not small enough the field goes down to ``max_pixels`` and the
    note says that fine detail was lost.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 4096:
        raise errors.SettingError(
            f"max_pixels must be a whole number of at least 4096 (64x64), got {max_pixels!r}."
        )
    height, width = rgb.shape[:2]
    pixels = width * height
    if pixels <= max_pixels:
        return PreparedImage(rgb, name, (width, height))
    budget = math.sqrt(max_pixels / pixels)
    diameter = estimate_red_cell_diameter(rgb) if input_size else None
    model_scale = 1.0
    if diameter:
        model_scale = min(1.0, 0.9 * input_size / WBC_PER_RED_CELL / diameter)
    scale = min(budget, model_scale)
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if model_scale <= budget:
        why = (
            f"the model's scale: red cells about {diameter * scale:.0f} px across, so every white "
            f"cell still covers the model's {input_size}-px input"
        )
    else:
        why = (
            f"fit the analysis limit of {max_pixels / 1e6:.0f} megapixels; fine detail may be "
            "lost, so a field photographed at lower magnification or cut into parts works better"
        )
    file_width, file_height = original_size or (width, height)
    in_all = " in all" if original_size and original_size[0] != width else ""
    note = (
        f"'{name}' is {file_width}×{file_height} px ({file_width * file_height / 1e6:.0f} "
        f"megapixels), so it was downscaled {file_width / size[0]:.1f}×{in_all} to "
        f"{size[0]}×{size[1]} px to {why}. Cell positions refer to the downscaled image."
    )
    return PreparedImage(small, name, (width, height), size[0] / width, (note,))


def _peek(data: bytes) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) and format from the header, or (None, None) when Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size, ("JPEG" if im.format == "MPO" else im.format)
    except Exception:
        return None, None


def _read_reduced_jpeg(
    data: bytes, name: str, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int], list[str]]:
    """Decode a very large JPEG at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling)."""
    width, height = size
    if width * height > JPEG_REDUCED_MAX_PIXELS:
        raise errors.ImageTooLargeError(
            f"'{name}' is {width}x{height} = {width * height:,} pixels, more than this app "
            f"decodes ({JPEG_REDUCED_MAX_PIXELS:,}); export the field at a lower resolution or "
            "cut it into parts."
        )
    factor = next(f for f in (2, 4, 8) if width * height / f**2 <= DEFAULT_MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (width // factor, height // factor))
                as_stored = im.convert("RGB")
                icc = im.info.get("icc_profile")
                # a cut-off file's grey rows are at the bottom of the picture as stored
                damage = jpeg_damage_notes(data, np.asarray(as_stored))
                rgb = np.asarray(ImageOps.exif_transpose(as_stored))  # convert keeps the tag
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise errors.TruncatedImageError(
            f"'{name}' could not be decoded ({len(data):,} bytes; decoder said: {error}). The "
            "file is probably cut off or damaged: copy or export it again."
        ) from error
    turned = (rgb.shape[1] >= rgb.shape[0]) != (width >= height)  # EXIF rotated it by 90°
    original = (height, width) if turned else (width, height)
    note = (f"'{name}' was decoded at 1/{factor} of its {width}×{height} px to save memory; "
            "cell positions refer to the reduced image.")  # fmt: skip
    rgb, converted = to_srgb(rgb, icc)  # as read_image does for smaller files
    notes = [*damage, *([GREY_NOTE] if is_grey(rgb) else []), *([converted] if converted else [])]
    return np.ascontiguousarray(rgb), original, [*notes, note]


def png_bytes(rgb: np.ndarray, compression: int = 3) -> bytes:
    """``(H, W, 3)`` RGB uint8 as PNG bytes (lossless; fast at compression 1-3)."""
    ok, encoded = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression]
    )
    if not ok:  # pragma: no cover (OpenCV fails only on invalid arrays, checked by callers)
        raise errors.InvalidImageError(f"could not encode an image of shape {rgb.shape} as PNG")
    return encoded.tobytes()


def rgb_from_png(data: bytes) -> np.ndarray:
    """PNG (or any OpenCV-readable) bytes as ``(H, W, 3)`` RGB uint8."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise errors.NotAnImageError(
            f"stored image data ({len(data):,} bytes) could not be decoded; the case record may "
            "be damaged."
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def mask_outline(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Outer outline of the largest region of ``mask`` as ``(K, 2)`` float32 ``(x, y)`` points.

    Args:
        mask: Bool mask (e.g. a cell mask cropped to its box).
        offset: ``(x, y)`` added to every point (the box's top-left corner in the field).

    Returns:
        The closed polygon (first point not repeated), simplified to about one pixel; an empty
        ``(0, 2)`` array when the mask is empty.
    """
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return np.zeros((0, 2), np.float32)
    largest = max(contours, key=cv2.contourArea)
    simple = cv2.approxPolyDP(largest, 1.0, True).reshape(-1, 2).astype(np.float32)
    return simple + np.asarray(offset, np.float32)


def cell_view(
    image: np.ndarray,
    bbox: tuple[int, int, int, int],
    outline: np.ndarray,
    *,
    size: int = VIEW_SIZE,
    context: float = 1.5,
    colour: tuple[int, int, int] = OUTLINE_RGB,
) -> np.ndarray:
    """A square view of a cell and its neighbours with the cell's outline drawn.

    Args:
        image: The field.
        bbox: ``(x0, y0, x1, y1)`` of the cell.
        outline: ``(K, 2)`` outline in field coordinates (see :func:`mask_outline`); empty draws
            nothing.
        size: Side of the view in pixels.
        context: The view spans this many box widths.
        colour: RGB of the outline (e.g. the colour of the cell's label).
    """
    x0, y0, x1, y1 = bbox
    side = max(8, round(max(x1 - x0, y1 - y0) * context))
    left, top = (x0 + x1) // 2 - side // 2, (y0 + y1) // 2 - side // 2
    height, width = image.shape[:2]
    canvas = np.full((side, side, 3), 255, np.uint8)
    sy0, sx0, sy1, sx1 = max(0, top), max(0, left), min(height, top + side), min(width, left + side)
    canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    factor = size / side
    view = cv2.resize(
        canvas, (size, size), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    )
    if len(outline):
        points = np.round((outline - (left, top)) * factor).astype(np.int32)
        cv2.polylines(view, [points.reshape(-1, 1, 2)], True, colour, 2, cv2.LINE_AA)
    return view


def side_by_side(images: list[np.ndarray], size: int = VIEW_SIZE, gap: int = 4) -> np.ndarray:
    """Square RGB images resized to ``size`` and joined left to right on white."""
    out = np.full((size, len(images) * (size + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (size, size):
            shrink = image.shape[0] > size
            image = cv2.resize(
                image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        out[:, i * (size + gap) : i * (size + gap) + size] = image
    return out


def display_copy(rgb: np.ndarray, max_side: int = 1600) -> tuple[np.ndarray, float]:
    """A copy no larger than ``max_side`` for display, and its scale (display px per field px)."""
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


__all__ = [
    "ANALYSIS_MAX_PIXELS",
    "PreparedImage",
    "cell_view",
    "display_copy",
    "mask_outline",
    "png_bytes",
    "prepare_field",
    "read_for_analysis",
    "rgb_from_png",
    "side_by_side",
]
