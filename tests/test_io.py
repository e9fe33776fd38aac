"""Tests of leukemia_core.io.read_image: every refusal and every accepted kind of file.

Inputs are built in memory with Pillow / tifffile / OpenCV so each case has a known answer.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from leukemia_core import errors
from leukemia_core.io import DEFAULT_MAX_PIXELS, GREY_NOTE, MultiFrameImageWarning, read_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
BLACK = (0, 0, 0)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def quadrants(width: int = 100, height: int = 80) -> np.ndarray:
    """RGB image with red / green / blue / white quadrants (TL, TR, BL, BR)."""
    arr = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    arr[:h, :w], arr[:h, w:], arr[h:, :w], arr[h:, w:] = RED, GREEN, BLUE, WHITE
    return arr


def png_with_header_size(width: int, height: int) -> bytes:
    """A small real PNG whose header claims ``width x height``: decoding it fails as truncated."""
    data = bytearray(encode(Image.new("1", (64, 64)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # Pillow checks chunk CRCs
    return bytes(data)


def tiff_bytes(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **params)
    return buf.getvalue()


# ---------------------------------------------------------------------------- refusals

_JPEG = encode(Image.fromarray(quadrants(300, 200)), "JPEG", quality=95)
_PNG = encode(
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)), "PNG"
)
_TIFF = encode(Image.fromarray(quadrants(300, 200)), "TIFF")


def _zip_of(data: bytes, name: str = "field1.jpg") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


REFUSALS = [
    pytest.param(b"", {}, errors.EmptyFileError, r"empty \(0 bytes\)", id="empty"),
    pytest.param(
        b"Patient 12\nblasts: 30%\n" * 20, {}, errors.NotAnImageError, "not an image", id="text"
    ),
    pytest.param(
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 5,
        {},
        errors.NotAnImageError,
        "PDF",
        id="pdf",
    ),
    pytest.param(
        _zip_of(_JPEG), {}, errors.NotAnImageError, "zip archive.*Unpack or open it", id="zip"
    ),
    pytest.param(
        _zip_of(_JPEG, "word/media/image1.jpg"),
        {},
        errors.NotAnImageError,
        "office document",
        id="docx",
    ),
    pytest.param(
        np.random.default_rng(1).bytes(4096),
        {},
        errors.NotAnImageError,
        "not an image",
        id="random-bytes",
    ),
    pytest.param(
        _JPEG[: len(_JPEG) // 2],
        {},
        errors.TruncatedImageError,
        "ends before its pixel data",
        id="truncated-jpeg",
    ),
    pytest.param(
        _PNG[: len(_PNG) // 2],
        {},
        errors.TruncatedImageError,
        "ends before its pixel data",
        id="truncated-png",
    ),
    pytest.param(
        _TIFF[: len(_TIFF) // 2],
        {},
        errors.TruncatedImageError,
        "ends before its pixel data",
        id="truncated-tiff",
    ),
    pytest.param(_PNG[:20], {}, errors.TruncatedImageError, "cut off", id="png-header-only"),
    pytest.param(
        encode(Image.new("RGB", (64, 64)), "ICO"),
        {},
        errors.UnsupportedFormatError,
        "ICO image.*JPEG, PNG, BMP, TIFF",
        id="ico",
    ),
    pytest.param(
        encode(Image.new("RGB", (100, 100)), "PPM"),
        {},
        errors.UnsupportedFormatError,
        "PPM image",
        id="ppm",
    ),
    pytest.param(
        encode(Image.new("RGB", (63, 200)), "PNG"),
        {},
        errors.ImageTooSmallError,
        "63x200 pixels.*at least 64",
        id="too-small-63x200",
    ),
    pytest.param(
        encode(Image.new("RGB", (1, 500)), "PNG"),
        {},
        errors.ImageTooSmallError,
        "1x500 pixels",
        id="strip-1x500",
    ),
    pytest.param(
        encode(Image.new("RGB", (100, 100)), "PNG"),
        {"min_side": 128},
        errors.ImageTooSmallError,
        "at least 128",
        id="custom-min-side",
    ),
    pytest.param(
        encode(Image.fromarray(quadrants()), "PNG"),
        {"max_pixels": 1000},
        errors.ImageTooLargeError,
        r"100x80 = 8,000 pixels.*limit of 1,000.*save it smaller",
        id="small-max-pixels",
    ),
    pytest.param(
        png_with_header_size(10_000, 10_000),
        {},
        errors.ImageTooLargeError,
        r"100,000,000 pixels.*limit of 60,000,000.*save it smaller.*as a JPEG",
        id="header-10000x10000",
    ),
    pytest.param(
        tiff_bytes(np.zeros((80, 100, 3), np.complex64), photometric="rgb"),
        {},
        errors.UnsupportedFormatError,
        "complex64",
        id="complex-tiff",
    ),
]


@pytest.mark.parametrize(("data", "kwargs", "error", "match"), REFUSALS)
def test_refusals_are_typed_and_name_the_file(data, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        read_image(data, name="case-7.img", **kwargs)
    assert "'case-7.img'" in str(info.value)
    assert isinstance(info.value, errors.InvalidImageError)


def test_large_header_is_refused_before_decoding(monkeypatch):
    # A real, mostly-zero 1-bit PNG of 64 megapixels: tiny on disk, 192 MB as RGB.
    data = encode(Image.new("1", (8000, 8000)), "PNG")
    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im) or original(im))
    with pytest.raises(errors.ImageTooLargeError, match="64,000,000 pixels"):
        read_image(data)
    assert loads == []


def test_pillow_bomb_guard_never_surfaces_and_globals_are_restored():
    before = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        # 400 MP is over twice Pillow's own limit, where Pillow raises DecompressionBombError.
        with pytest.raises(errors.ImageTooLargeError, match="400,000,000 pixels"):
            read_image(png_with_header_size(20_000, 20_000))
        # Above Pillow's limit but within ours: our limit decides; the pixel data is missing.
        with pytest.raises(errors.TruncatedImageError):
            read_image(png_with_header_size(9_500, 9_500), max_pixels=100_000_000)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert DEFAULT_MAX_PIXELS == 60_000_000


def test_truncation_is_detected_even_if_pillow_was_told_to_tolerate_it(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(errors.TruncatedImageError):
        read_image(_JPEG[: len(_JPEG) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (12345, TypeError),
        (np.zeros((80, 100, 3), np.uint8), TypeError),
        ("/nonexistent/x.png", FileNotFoundError),
    ],
    ids=["int", "array", "missing-path"],
)
def test_wrong_sources(source, error):
    with pytest.raises(error):
        read_image(source)


def test_text_mode_file_is_a_type_error(tmp_path):
    path = tmp_path / "smear.png"
    path.write_bytes(encode(Image.fromarray(quadrants()), "PNG"))
    with open(path, encoding="latin-1") as handle, pytest.raises(TypeError):
        read_image(handle)


# ---------------------------------------------------------------------------- accepted files


def _alpha_image(mode: str) -> Image.Image:
    """Left half transparent, right half opaque (red, or gray 50 for LA)."""
    colour = (50, 255) if mode == "LA" else (*RED, 255)
    arr = np.zeros((80, 100, len(colour)), np.uint8)
    arr[:, 50:] = colour
    return Image.fromarray(arr, mode)


def _palette_image() -> Image.Image:
    im = Image.new("P", (100, 80), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(1, (50, 0, 100, 80))
    return im


GRADIENT16 = np.tile(np.linspace(0, 65535, 100).astype(np.uint16), (80, 1))
RGB16 = np.stack([GRADIENT16, GRADIENT16[:, ::-1], np.full_like(GRADIENT16, 32768)], axis=2)
RGB16_AS_8 = np.round(RGB16 / 257).astype(np.uint8)


def _left_right(left, right):
    """Check: left and right halves have these colours (exactly)."""

    def check(rgb):
        assert (rgb[:, :50] == left).all() and (rgb[:, 50:] == right).all()

    return check


def _close_to(expected: np.ndarray, tol: int):
    def check(rgb):
        assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= tol

    return check


def _gray(expected: np.ndarray):
    return _close_to(np.repeat(expected[..., None], 3, axis=2), 0)


def _quadrant_centres(tol: int):
    def check(rgb):
        for (y, x), colour in zip(
            [(20, 25), (20, 75), (60, 25), (60, 75)], [RED, GREEN, BLUE, WHITE], strict=True
        ):
            assert np.abs(rgb[y, x].astype(int) - colour).max() <= tol, (y, x, rgb[y, x])

    return check


Q = quadrants()
ACCEPTED = [
    # id, bytes factory, format, original mode, check on rgb
    (
        "jpeg",
        lambda: encode(Image.fromarray(Q), "JPEG", quality=95),
        "JPEG",
        "RGB",
        _quadrant_centres(8),
    ),
    ("png", lambda: encode(Image.fromarray(Q), "PNG"), "PNG", "RGB", _close_to(Q, 0)),
    ("bmp", lambda: encode(Image.fromarray(Q), "BMP"), "BMP", "RGB", _close_to(Q, 0)),
    ("tiff-8bit", lambda: encode(Image.fromarray(Q), "TIFF"), "TIFF", "RGB", _close_to(Q, 0)),
    (
        "tiff-lzw",
        lambda: encode(Image.fromarray(Q), "TIFF", compression="tiff_lzw"),
        "TIFF",
        "RGB",
        _close_to(Q, 0),
    ),
    (
        "webp-lossless",
        lambda: encode(Image.fromarray(Q), "WEBP", lossless=True),
        "WEBP",
        "RGB",
        _close_to(Q, 0),
    ),
    ("gif", lambda: encode(Image.fromarray(Q), "GIF"), "GIF", "P", _close_to(Q, 0)),
    ("gray-L", lambda: encode(Image.fromarray(Q[..., 1]), "PNG"), "PNG", "L", _gray(Q[..., 1])),
    (
        "1-bit",
        lambda: encode(Image.fromarray(Q[..., 0] > 0), "PNG"),
        "PNG",
        "1",
        _gray(np.where(Q[..., 0] > 0, 255, 0).astype(np.uint8)),
    ),
    ("LA", lambda: encode(_alpha_image("LA"), "PNG"), "PNG", "LA", _left_right(BLACK, (50,) * 3)),
    ("RGBA", lambda: encode(_alpha_image("RGBA"), "PNG"), "PNG", "RGBA", _left_right(BLACK, RED)),
    (
        "palette-transparency",
        lambda: encode(_palette_image(), "PNG", transparency=0),
        "PNG",
        "P",
        _left_right(BLACK, (10, 200, 30)),
    ),
    (
        "cmyk-jpeg",
        lambda: encode(Image.new("CMYK", (100, 80), (0, 255, 255, 0)), "JPEG"),
        "JPEG",
        "CMYK",
        _close_to(np.full((80, 100, 3), RED, np.uint8), 6),
    ),
    (
        "tiff-I;16",
        lambda: encode(Image.fromarray(GRADIENT16), "TIFF"),
        "TIFF",
        "I;16",
        _gray(np.round(GRADIENT16 / 257).astype(np.uint8)),
    ),
    (
        "png-I;16",
        lambda: encode(Image.fromarray(GRADIENT16), "PNG"),
        "PNG",
        "I;16",
        _gray(np.round(GRADIENT16 / 257).astype(np.uint8)),
    ),
    (
        "tiff-I;16B",
        lambda: encode(
            Image.frombytes("I;16B", (100, 80), GRADIENT16.astype(">u2").tobytes()), "TIFF"
        ),
        "TIFF",
        "I;16B",
        _gray(np.round(GRADIENT16 / 257).astype(np.uint8)),
    ),
    (
        "tiff-12bit-in-16",
        lambda: encode(Image.fromarray(GRADIENT16 >> 4), "TIFF"),
        "TIFF",
        "I;16",
        _gray(np.round((GRADIENT16 >> 4) / 4095 * 255).astype(np.uint8)),
    ),
    (
        "tiff-8bit-values-in-16",
        lambda: encode(Image.fromarray(GRADIENT16 // 300), "TIFF"),
        "TIFF",
        "I;16",
        _gray((GRADIENT16 // 300).astype(np.uint8)),
    ),
    (
        "tiff-I-int32",
        lambda: encode(Image.fromarray(GRADIENT16.astype(np.int32)), "TIFF"),
        "TIFF",
        "I",
        _gray(np.round(GRADIENT16 / 257).astype(np.uint8)),
    ),
    (
        "tiff-F-0..1",
        lambda: encode(Image.fromarray((GRADIENT16 / 65535).astype(np.float32)), "TIFF"),
        "TIFF",
        "F",
        _close_to(np.repeat(RGB16_AS_8[..., :1], 3, axis=2), 1),
    ),
    (
        "tiff-rgb16",
        lambda: tiff_bytes(RGB16, photometric="rgb"),
        "TIFF",
        "RGB;16",
        _close_to(RGB16_AS_8, 0),
    ),
    (
        "tiff-rgb16-planar",
        lambda: tiff_bytes(np.moveaxis(RGB16, 2, 0), photometric="rgb", planarconfig="separate"),
        "TIFF",
        "RGB;16",
        _close_to(RGB16_AS_8, 0),
    ),
    (  # ink separations, not RGBA: Pillow reads 8-bit CMYK, tifffile the 16-bit ones
        "tiff-cmyk16",
        lambda: tiff_bytes(
            np.full((80, 100, 4), (0, 65535, 65535, 0), np.uint16), photometric="separated"
        ),
        "TIFF",
        "SEPARATED;16",
        _close_to(np.full((80, 100, 3), RED, np.uint8), 0),
    ),
    (
        "tiff-rgb-float32-only-tifffile",
        lambda: tiff_bytes((RGB16 / 65535).astype(np.float32), photometric="rgb"),
        "TIFF",
        "RGB;32",
        _close_to(RGB16_AS_8, 1),
    ),
    (
        "png-rgb16",
        lambda: cv2.imencode(".png", RGB16[..., ::-1])[1].tobytes(),
        "PNG",
        "RGB;16",
        _close_to(RGB16_AS_8, 0),
    ),
]


@pytest.mark.parametrize(
    ("make", "fmt", "mode", "check"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted_files_become_rgb_uint8(make, fmt, mode, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # single-frame files must not warn
        loaded = read_image(make(), name="field.img")
    assert loaded.rgb.shape == (80, 100, 3)
    assert (
        loaded.rgb.dtype == np.uint8
        and loaded.rgb.flags.c_contiguous
        and loaded.rgb.flags.writeable
    )
    assert (loaded.format, loaded.original_mode) == (fmt, mode)
    assert loaded.original_size == (100, 80) and loaded.n_frames == 1
    assert loaded.name == "field.img"
    check(loaded.rgb)


def test_dark_12bit_data_is_noted_not_black():
    loaded = read_image(encode(Image.fromarray(GRADIENT16 >> 4), "TIFF"))
    assert loaded.rgb.max() == 255
    assert loaded.notes == ("samples fit in 12 bits: 0..4095 mapped to 0..255", GREY_NOTE)


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [(1, (0, 0)), (3, (-1, -1)), (6, (0, -1)), (8, (-1, 0))],
    ids=["upright", "rotate-180", "rotate-90-cw", "rotate-90-ccw"],
)
def test_exif_orientation_is_applied(orientation, corner):
    arr = np.full((80, 100, 3), 128, np.uint8)
    arr[:20, :20] = RED  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = read_image(encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes()))
    expected_shape = (100, 80, 3) if orientation in (6, 8) else (80, 100, 3)
    assert loaded.rgb.shape == expected_shape
    assert loaded.original_size == (100, 80)
    y, x = (5 if c == 0 else c - 5 for c in corner)
    assert np.abs(loaded.rgb[y, x].astype(int) - RED).max() <= 10


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (100, 80), colour) for colour in (RED, GREEN, BLUE)]


@pytest.mark.parametrize(
    ("fmt", "unit"),
    [("TIFF", "pages"), ("GIF", "frames"), ("PNG", "frames")],
    ids=["multipage-tiff", "animated-gif", "apng"],
)
def test_multi_frame_files_give_the_first_frame_and_warn(fmt, unit):
    first, *rest = _frames()
    data = encode(first, fmt, save_all=True, append_images=rest)
    with pytest.warns(MultiFrameImageWarning, match=f"first of 3 {unit}"):
        loaded = read_image(data, name="stack.img")
    assert loaded.n_frames == 3
    assert loaded.notes[0] == f"took the first of 3 {unit}"
    assert (loaded.rgb == RED).all()


def test_phone_mpo_is_read_as_one_jpeg_without_warning():
    first, second, _ = _frames()
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_image(data)
    assert (loaded.format, loaded.n_frames, loaded.notes) == ("JPEG", 1, ())
    assert np.abs(loaded.rgb.astype(int) - RED).max() <= 10


def test_rgba16_tiff_is_composited_on_black():
    rgba = np.zeros((80, 100, 4), np.uint16)
    rgba[:, 50:] = (65535, 0, 0, 65535)  # left half fully transparent, right half opaque red
    data = tiff_bytes(rgba, photometric="rgb", extrasamples=["unassalpha"])
    _left_right(BLACK, RED)(read_image(data).rgb)


def test_a_transparent_image_says_it_was_put_on_black():
    """A half-transparent PNG was read as a dark slide: vignetting and "no red cells", with
    nothing about the transparency."""
    loaded = read_image(encode(_alpha_image("RGBA"), "PNG"), name="see-through.png")
    assert any(n.startswith("50% of the image is transparent") for n in loaded.notes)
    opaque = np.zeros((80, 100, 4), np.uint8)
    opaque[..., :] = (200, 120, 160, 255)
    assert read_image(encode(Image.fromarray(opaque, "RGBA"), "PNG")).notes == ()


def test_five_channel_float_tiff_is_refused():  # Pillow cannot open it; tifffile can
    data = tiff_bytes(np.zeros((80, 100, 5), np.float32), photometric="rgb", extrasamples=[0, 0])
    with pytest.raises(errors.UnsupportedFormatError, match=r"shape \(80, 100, 5\)"):
        read_image(data, name="five.tif")


class FakeUpload:
    """What Streamlit's UploadedFile offers: getvalue(), read() and name."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data, self.name = data, name

    def getvalue(self) -> bytes:
        return self._data

    def read(self) -> bytes:  # a consumed upload: read() gives nothing, getvalue() everything
        return b""


@pytest.mark.parametrize(
    "kind",
    ["path", "str-path", "bytes", "bytearray", "memoryview", "bytesio", "open-file", "upload"],
)
def test_sources(kind, tmp_path):
    data = encode(Image.fromarray(Q), "PNG")
    path = tmp_path / "smear 01.png"
    path.write_bytes(data)
    expected_name = (
        "<bytes>" if kind in ("bytes", "bytearray", "memoryview", "bytesio") else "smear 01.png"
    )
    with open(path, "rb") as handle:
        source = {
            "path": path,
            "str-path": str(path),
            "bytes": data,
            "bytearray": bytearray(data),
            "memoryview": memoryview(data),
            "bytesio": io.BytesIO(data),
            "open-file": handle,
            "upload": FakeUpload(data, "smear 01.png"),
        }[kind]
        loaded = read_image(source)
    assert loaded.name == expected_name
    assert (loaded.rgb == Q).all()


def test_name_argument_wins():
    assert read_image(encode(Image.fromarray(Q), "PNG"), name="x.png").name == "x.png"


# ---------------------------------------------------------------------------- real data


@pytest.mark.data
@pytest.mark.parametrize(
    ("pattern", "fmt"),
    [
        ("all_idb2/images/*.tif", "TIFF"),
        ("bccd/images/*.jpg", "JPEG"),
        ("cnmc/training_data/*/*/*.bmp", "BMP"),
        ("all_idb1/images/*.jpg", "JPEG"),
    ],
)
def test_real_files(shared_data, pattern, fmt):
    files = sorted(shared_data.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} under {shared_data}")
    loaded = read_image(files[0])
    with Image.open(files[0]) as im:  # these sets are 8-bit RGB: Pillow's own reading is the truth
        expected = np.asarray(im.convert("RGB"))
    assert loaded.format == fmt and loaded.name == files[0].name
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape[2] == 3
    assert (loaded.rgb == expected).all() and loaded.rgb.std() > 10


def test_a_jpeg_cut_off_and_closed_with_an_end_marker_is_noted_as_damaged():
    """It passes the structure check; libjpeg fills the missing rows with flat grey."""
    from leukemia_core.synthetic import make_demo_smear

    buffer = io.BytesIO()
    Image.fromarray(make_demo_smear().image).save(buffer, "JPEG", quality=90)
    whole = buffer.getvalue()
    cut = whole[: len(whole) // 2] + b"\xff\xd9"
    (note,) = read_image(cut, name="cut.jpg").notes
    assert note.startswith("damaged image: results unreliable: the lower")
    assert "flat grey" in note and "cut off" in note
    assert read_image(whole, name="whole.jpg").notes == ()
    padded = make_demo_smear().image.copy()
    padded[-80:] = 128  # grey padding of a PNG export is no decoder's fill: left alone
    assert read_image(_png(padded), name="padded.png").notes == ()


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def test_a_tiff_with_an_unknown_photometric_value_is_read_not_a_crash():
    """A damaged tag (a fuzzing helper flipped bytes) made tifffile hand back a bare number where
    the reader expected a named value: an AttributeError stopped a whole batch."""
    data = bytearray(tiff_bytes(np.full((80, 100, 3), 30000, np.uint16), photometric="rgb"))
    first_ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[first_ifd : first_ifd + 2])[0]):
        entry = first_ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] == 262:  # PhotometricInterpretation
            data[entry + 8 : entry + 10] = struct.pack("<H", 99)  # no such value
    loaded = read_image(bytes(data), name="odd.tif")
    assert loaded.rgb.shape == (80, 100, 3) and loaded.original_mode == "99;16"


def test_a_jpeg_too_large_even_to_read_reduced_is_not_told_to_be_saved_as_a_jpeg():
    """A JPEG over about 179 megapixels was told to "save it ... as a JPEG, which is read
    reduced"."""
    from leukemia_core import errors
    from leukemia_core.io import _check_size

    with pytest.raises(errors.ImageTooLargeError) as jpeg:
        _check_size((20_000, 10_000), "scan.jpg", 60_000_000, 64, "JPEG")
    assert "as a JPEG" not in str(jpeg.value) and "past what is read reduced" in str(jpeg.value)
    with pytest.raises(errors.ImageTooLargeError, match="or as a JPEG, which is read reduced"):
        _check_size((20_000, 10_000), "scan.tif", 60_000_000, 64, "TIFF")


@pytest.mark.parametrize(("error", "said"), [
    (PermissionError(13, "Permission denied"), "this account may not read it (permission denied)"),
    (OSError(5, "Input/output error"), "reading it failed (Input/output error): the disk"),
])  # fmt: skip
def test_a_file_that_cannot_be_read_says_why_and_what_to_do(tmp_path, monkeypatch, error, said):
    """A file of mode 000 failed a batch image with a bare "[Errno 13] Permission denied"."""
    from pathlib import Path

    from leukemia_core.errors import UnreadableFileError

    path = tmp_path / "field.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")

    def refuse(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(UnreadableFileError, match=r"field\.png' cannot be read: ") as raised:
        read_image(path)
    assert said in str(raised.value)
