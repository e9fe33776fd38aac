"""Pictures tagged with a colour profile other than sRGB (a phone's Display P3) are read in sRGB,
as a screen shows them; sRGB-tagged and untagged pictures keep their pixels."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from leukemia_core.imaging import read_for_analysis
from leukemia_core.io import read_image

# Display P3's colorants adapted to D50, as in Apple's profile; its tone curve taken as gamma 2.2
P3_COLORANTS = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
D50 = (0.9642, 1.0, 0.8249)


def _matrix_profile(colorants, name: str = "Display P3 (test)") -> bytes:
    """A minimal ICC v2 display profile: three colorants, one gamma curve per channel."""

    def xyz(values):
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    text = name.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 12 + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(D50)), (b"cprt", b"text\0\0\0\0none\0")]
    tags += [(sig, xyz(c)) for sig, c in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants, strict=True)]
    tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"\0" * 4, 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + xyz(D50)[8:]
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def _field() -> np.ndarray:
    """Stain-like colours: pink red cells, purple nuclei, near-white glass."""
    rgb = np.full((96, 128, 3), (236, 232, 236), np.uint8)
    rgb[10:40, 10:40] = (205, 140, 150)
    rgb[50:80, 60:100] = (120, 70, 160)
    return rgb


def _saved(rgb: np.ndarray, fmt: str, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    options = {"icc_profile": icc} if icc else {}
    Image.fromarray(rgb).save(out, fmt, **({"quality": 98} if fmt == "JPEG" else {}), **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_a_display_p3_picture_is_read_in_srgb_with_more_saturated_stain(fmt):
    plain = read_image(_saved(_field(), fmt, None))
    tagged = read_image(_saved(_field(), fmt, _matrix_profile(P3_COLORANTS)))
    assert any("colours converted from its colour profile (Display P3 (test)) to sRGB" in n
               for n in tagged.notes)  # fmt: skip
    pink, purple = plain.rgb[25, 25].astype(int), plain.rgb[65, 80].astype(int)
    pink_p3, purple_p3 = tagged.rgb[25, 25].astype(int), tagged.rgb[65, 80].astype(int)
    # P3's gamut is wider: the same numbers mean more saturated colours once in sRGB
    assert pink_p3[0] - pink_p3[1] > pink[0] - pink[1] + 5
    assert purple_p3[2] - purple_p3[1] > purple[2] - purple[1] + 5
    assert np.abs(tagged.rgb[2, 2].astype(int) - plain.rgb[2, 2]).max() <= 6  # glass stays glass


# sRGB's colorants adapted to D50, as cameras embed them (here with a plain gamma 2.2 curve)
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


@pytest.mark.parametrize("profile", ["littlecms", "camera"])
def test_an_srgb_tagged_picture_keeps_its_pixels_and_gets_no_note(profile):
    srgb = (ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
            if profile == "littlecms" else _matrix_profile(SRGB_COLORANTS, "sRGB IEC61966-2.1"))  # fmt: skip
    plain = read_image(_saved(_field(), "PNG", None))
    tagged = read_image(_saved(_field(), "PNG", srgb))
    np.testing.assert_array_equal(tagged.rgb, plain.rgb)
    assert not any("colour" in n for n in tagged.notes)


def test_a_broken_profile_is_named_and_the_colours_are_kept():
    tagged = read_image(_saved(_field(), "PNG", b"not an icc profile" * 8), name="phone.png")
    np.testing.assert_array_equal(tagged.rgb, _field())
    assert any("colour profile could not be read" in n and "taken as sRGB" in n
               for n in tagged.notes)  # fmt: skip


def test_a_huge_jpeg_read_reduced_is_converted_too(monkeypatch):
    monkeypatch.setattr("leukemia_core.imaging.DEFAULT_MAX_PIXELS", 1_000_000)
    big = np.ascontiguousarray(np.tile(_field(), (12, 12, 1)))  # 1536 x 1152: read at 1/2
    plain = read_for_analysis(_saved(big, "JPEG", None), name="phone.jpg")
    tagged = read_for_analysis(_saved(big, "JPEG", _matrix_profile(P3_COLORANTS)), name="phone.jpg")
    assert any("decoded at 1/2" in n for n in tagged.notes)
    assert any("colours converted" in n for n in tagged.notes)
    pink, pink_p3 = plain.rgb[12, 12].astype(int), tagged.rgb[12, 12].astype(int)
    assert pink_p3[0] - pink_p3[1] > pink[0] - pink[1] + 5
