"""Cells cut out once, kept on disk for the next job.

Every comparison cuts each labelled image out as the app does (segmentation, cell on black),
which takes about 0.1 s a cell on 2 cores: 3 minutes for deepapl's 1,982 cells, again at every
job. The app crop depends only on the image file and on the cutting code, so it is kept as a
lossless PNG keyed by the file (its path, size, modification time and edge bytes) under a
folder named by the code (:mod:`leukemia_core.fingerprints`): any change to either starts a
new entry or folder, and other code's folders are removed, so a stale crop is never read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from leukemia_core.fingerprints import code_fingerprint, file_fingerprint
from train.fit import app_crop, load_crops
from train.records import LabelledCrop

CACHE_FOLDER = ".crop_cache"  # beside the run folders; the dot keeps it out of the job list


class CropCache:
    """App crops on disk under ``root``; only the current code's folder is kept."""

    def __init__(self, root: Path):
        self.folder = Path(root) / code_fingerprint()
        if Path(root).is_dir():  # crops of other code can never be read again
            for old in Path(root).iterdir():
                if old.is_dir() and old != self.folder:
                    shutil.rmtree(old, ignore_errors=True)
        self.hits = self.misses = 0

    def holds(self, record: LabelledCrop) -> bool:
        """Whether ``record``'s crop is on disk (then cutting the set out takes seconds)."""
        stored = self._stored(record)
        return stored is not None and stored.is_file()

    def _stored(self, record: LabelledCrop) -> Path | None:
        path = Path(record.path).resolve()
        fingerprint = file_fingerprint(path)
        if not fingerprint:
            return None
        key = hashlib.sha256(f"{path}|{fingerprint}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.png"

    def crop(self, record: LabelledCrop) -> np.ndarray:
        """``record``'s image as the app crops it, from disk when this code cut it before."""
        stored = self._stored(record)
        if stored is None:  # the reader says what is wrong with the file
            return app_crop(record)
        if stored.is_file():
            bgr = cv2.imread(str(stored), cv2.IMREAD_COLOR)
            if bgr is not None:  # an unreadable entry is cut again and overwritten
                self.hits += 1
                return np.ascontiguousarray(bgr[:, :, ::-1])
        crop = app_crop(record)
        self.misses += 1
        self._store(stored, crop)
        return crop

    @staticmethod
    def _store(stored: Path, crop: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(crop[:, :, ::-1]))
        if not ok:
            return
        temporary = None
        try:  # written beside and renamed, so a reader never sees half a file
            stored.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=stored.parent, suffix=".part")
            temporary = Path(name)
            with os.fdopen(handle, "wb") as out:
                out.write(encoded.tobytes())
            os.replace(temporary, stored)
        except OSError:  # a full or read-only disk costs speed, not the job
            if temporary is not None:
                temporary.unlink(missing_ok=True)


class ReadyCrops:
    """A job's cells as each input path makes them, cut out once per input path."""

    def __init__(self, records, cache: CropCache | None = None):
        self.records = records
        self.cut = cache.crop if cache is not None else app_crop
        # Cut out by an earlier job (its first cell tells): loading then takes seconds, which
        # the progress bar's shares follow.
        self.warm = bool(cache is not None and records and cache.holds(records[0]))
        self._by_spec: dict = {}

    def __iter__(self):
        return iter(self._by_spec)

    def get(self, spec, progress=None) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 crops of every record through input path ``spec``."""
        if spec not in self._by_spec:
            self._by_spec[spec] = load_crops(self.records, spec, progress, cut=self.cut)
        return self._by_spec[spec]
