"""Typed errors of the core library.

Every message says what arrived and what the user can do about it, so the app can show
``str(error)`` as it is.
"""

from __future__ import annotations


class LeukemiaCoreError(Exception):
    """Base class of every error the core library raises on purpose."""


class InvalidImageError(LeukemiaCoreError, ValueError):
    """An input could not be used as an image."""


class EmptyFileError(InvalidImageError):
    """The file has no bytes."""


class UnreadableFileError(InvalidImageError):
    """The file exists but cannot be read (no permission, a failing disk or share)."""


class NotAnImageError(InvalidImageError):
    """The bytes are not an image format we know (e.g. a PDF or a text file)."""


class TruncatedImageError(InvalidImageError):
    """The image file ends before its pixel data does (an interrupted upload or copy)."""


class UnsupportedFormatError(InvalidImageError):
    """The file is an image, but of a format or mode we do not read."""


class ImageTooSmallError(InvalidImageError):
    """The image is smaller than the minimum side length."""


class ImageTooLargeError(InvalidImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class SettingError(LeukemiaCoreError, ValueError):
    """A setting (crop size, ...) is outside the range the library supports."""


class OutputFolderError(LeukemiaCoreError):
    """An output folder cannot be used: not a folder, under a file, or not writable."""


class SegmentationError(LeukemiaCoreError):
    """Segmentation could not run on the given input."""


class NoCellError(SegmentationError):
    """A single-cell image shows no cell at all (black or nearly black)."""


class ModelNotFoundError(LeukemiaCoreError, KeyError):
    """A model or architecture name is not in the registry."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class ModelExistsError(LeukemiaCoreError, FileExistsError):
    """A model folder of the asked name exists already, and this save never replaces one."""


class ImageNetWeightsUnavailableError(LeukemiaCoreError):
    """Pretrained ImageNet weights are neither cached nor downloadable (e.g. no network)."""


class WeightsFileError(LeukemiaCoreError):
    """A weights file is missing, unreadable, or does not fit the architecture."""


class UnknownPreprocessingError(LeukemiaCoreError, ValueError):
    """A preprocessing scheme name is not one we implement."""


class ModelIntegrityError(LeukemiaCoreError):
    """A model folder is incomplete, or its weights do not match the checksum in its config."""


class ModelActivationRefused(LeukemiaCoreError):
    """A model may not become the active one (an adapted version its own check calls worse)."""


class ReviewError(LeukemiaCoreError, ValueError):
    """A review action cannot be done as asked (not saved yet, unknown cell, machine label)."""


class PossibleClumpError(ReviewError):
    """A counted label for an outline that may hold several pressed cells, not confirmed as one
    cell: it would count them once. Split it, or give the label again with ``as_one_cell``."""
