"""Pictures saved in another colour space than sRGB are brought to sRGB, as a screen shows them.

Phones save Display P3 and some cameras Adobe RGB, and say so in an embedded ICC profile. Read as
sRGB, their stain colours come out paler than the slide (and than every training cell, all of
which are untagged sRGB): the stain checks and the classifier would judge colours nobody sees.
A profile that maps colours onto themselves (sRGB itself, by whatever name) changes nothing.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

# 5 levels per channel: enough to tell a profile that moves colours from sRGB under another name
_PROBE = np.stack(np.meshgrid(*[np.linspace(0, 255, 5)] * 3), -1).reshape(1, -1, 3).astype(np.uint8)
# Largest change (of 255) on the probe that still counts as sRGB: a camera's sRGB profile with a
# plain gamma 2.2 curve moves it by 2 (rounding too); Display P3 by 71.
_SAME = 4
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(rgb: np.ndarray, icc_profile: bytes | None) -> tuple[np.ndarray, str | None]:
    """``rgb`` ((H, W, 3) uint8) converted from its embedded profile to sRGB, and a note saying
    so (None when nothing was converted: no profile, or one that is sRGB in effect)."""
    if not icc_profile:
        return rgb, None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if source.profile.xcolor_space.strip() != "RGB":  # a CMYK or grey file's: already
            return rgb, None  # converted to RGB by Pillow, the profile no longer applies
        name = _describe(source)
        transform = ImageCms.buildTransform(
            source, _SRGB, "RGB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
        probe = np.asarray(ImageCms.applyTransform(Image.fromarray(_PROBE), transform))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        return rgb, (
            f"its embedded colour profile could not be read ({error}), so its colours were "
            "taken as sRGB; if they look wrong, export it again as sRGB"
        )
    if int(np.abs(probe.astype(np.int16) - _PROBE).max()) <= _SAME:
        return rgb, None
    converted = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), transform))
    return converted, f"colours converted from its colour profile ({name}) to sRGB"


def _describe(profile: ImageCms.ImageCmsProfile) -> str:
    words = " ".join(ImageCms.getProfileDescription(profile).split())
    return (words[:60] + "…" if len(words) > 60 else words) or "unnamed"
