"""The images a command line run reads: each folder given stands for the image files in it."""

from __future__ import annotations

import sys
from pathlib import Path

from leukemia_core.errors import SettingError
from leukemia_core.io import FILE_SUFFIXES, FORMATS_TEXT

OTHER_PICTURE_SUFFIXES = (".jp2", ".j2k", ".jpx", ".heic", ".heif", ".avif", ".jxl", ".dng",
                          ".cr2", ".nef", ".arw", ".svs", ".ndpi", ".czi", ".mrxs", ".scn",
                          ".vsi", ".psd")  # fmt: skip
"""Microscope, camera and scanner formats a folder may hold that are not read: said, not
silently left out."""
_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".7z", ".rar")


def images_in(paths: list[Path]) -> list[Path]:
    """The paths with each folder replaced by the image files directly in it (by name); what a
    folder holds that is not read (other formats, subfolders, archives) is said on stderr.

    Raises:
        SettingError: A folder holds no image file.
    """
    out = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        try:  # hidden files: e.g. the ._NAME.jpg a Mac leaves on a USB stick
            entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            # not is_dir(): a broken link (a share not mounted) reaches the reader and is named
            found = [p for p in entries if p.suffix.lower() in FILE_SUFFIXES and not p.is_dir()]
        except OSError as error:
            raise SettingError(f"The folder {path} cannot be read ({error.strerror}).") from error
        if other := [p.name for p in entries if p.suffix.lower() in OTHER_PICTURE_SUFFIXES]:
            print(f"note: {path}: left out {len(other)} picture(s) in a format this app does "
                  f"not read ({FORMATS_TEXT} are read): {', '.join(other[:8])}"
                  + (" ..." if len(other) > 8 else "") + "; save them as PNG or TIFF to "
                  "include them.", file=sys.stderr)  # fmt: skip
        below = [p.name for p in entries if p.is_dir() or p.suffix.lower() in _ARCHIVES]
        if below:  # a patient/slide/*.jpg layout gave a count over fewer fields, unsaid
            print(f"note: {path}: left out {len(below)} subfolder(s) or archive(s) "
                  f"({', '.join(below[:8])}{' ...' if len(below) > 8 else ''}): only the images "
                  "directly in a folder are read; give each folder of images (and unpack "
                  "archives) to include them.", file=sys.stderr)  # fmt: skip
        if not found:
            raise SettingError(
                f"The folder {path} holds no image file ({FORMATS_TEXT}) directly in it; give "
                "a folder of images, or the images themselves (e.g. folder/*.jpg)."
            )
        out += found
    return out
