"""Out-of-domain check: do these cells look like the cells the model was trained on?

A :class:`DomainReference` describes the training cells by two things the app already has for
every cell: the classifier's pooled backbone features (its ``head_pool`` layer) and the stain
of the cell's pixels (:func:`stain_statistics`: mean and spread of CIELAB L, a, b). It keeps a
random subset of the training cells (a "bank") in two small spaces, and a cell's score has two
parts, each the mean distance to its ``k`` nearest bank cells:

- features: L2-normalised, projected on their 64 leading principal components;
- stain: the 6 statistics, robustly z-scored (median and 1.4826 x MAD of the training cells).

Each part is divided by its median on in-domain cells the bank does not hold (the validation
cells when given), so it is about 1 in domain; the cell score is the mean of the two parts.
Nearest neighbours, unlike one Gaussian, follow training data that are several separate
sources (stains, cameras): on the crop bank, leaving one source out, they told its cells from
the other sources' test cells with AUROC 0.86-0.99 where a Mahalanobis distance gave 0.58-0.87.

A field (or a sample) is judged by the **median cell score** of its cells, so a few odd cells
do not warn; it is warned above a limit fitted on in-domain validation fields (by default the
99th percentile of their medians), so a field like the training data is rarely warned.

Example:
    >>> rng = np.random.default_rng(0)
    >>> reference = DomainReference.fit(rng.normal(size=(400, 16)), rng.normal(size=(400, 6)),
    ...                                 n_components=8)
    >>> reference.assess(reference.cell_scores(rng.normal(size=(30, 16)),
    ...                                        rng.normal(size=(30, 6)))).warned
    False
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.outputs import write_bytes_atomic

STAIN_NAMES = ("L_mean", "a_mean", "b_mean", "L_std", "a_std", "b_std")
STATISTIC = "median cell score"
DEFAULT_COMPONENTS = 64
DEFAULT_NEIGHBOURS = 10
DEFAULT_BANK_SIZE = 2000
DEFAULT_PERCENTILE = 99.0
MIN_GROUP_CELLS = 8  # smaller validation groups are pooled into pseudo-fields of this size
BACKGROUND_MAX = 10  # a crop pixel whose channels are all <= this is the black background
PARTS = ("features", "stain")
_FORMAT = 2
_ARRAYS = ("feature_mean", "components", "feature_bank", "stain_center", "stain_scale",
           "stain_bank", "part_medians")  # fmt: skip


class DomainReferenceError(LeukemiaCoreError, ValueError):
    """A domain reference cannot be fitted, read or applied as asked."""


@dataclass(frozen=True)
class DomainAssessment:
    """How far the cells of one field (or a whole sample) are from the training data.

    Attributes:
        score: Median cell score (about 1 in domain); None when no cell was scored.
        limit: Scores above it are warned.
        n_cells: Cells scored.
    """

    score: float | None
    limit: float
    n_cells: int

    @property
    def warned(self) -> bool:
        return self.score is not None and self.score > self.limit

    @property
    def message(self) -> str:
        """Plain words for the user: a warning when warned, else what was checked."""
        if self.score is None:
            return "No cells were scored, so no domain check was made."
        if self.warned:
            return (f"These cells differ from the training data (domain score {self.score:.2f}, "
                    f"limit {self.limit:.2f}); review every cell.")  # fmt: skip
        return (f"These cells resemble the training data (domain score {self.score:.2f}, "
                f"limit {self.limit:.2f}).")  # fmt: skip

    def to_dict(self) -> dict:
        """JSON values: score, limit, warned, n_cells, statistic, message."""
        return {"score": self.score, "limit": self.limit, "warned": self.warned,
                "n_cells": self.n_cells, "statistic": STATISTIC, "message": self.message}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict) -> DomainAssessment:
        score = values.get("score")
        return cls(None if score is None else float(score), float(values["limit"]),
                   int(values.get("n_cells", 0)))  # fmt: skip


def stain_statistics(crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Mean and standard deviation of CIELAB L, a, b over each crop's cell pixels, ``(N, 6)``.

    Cell pixels are those not black (any channel above :data:`BACKGROUND_MAX`), as the crops of
    :func:`leukemia_core.cropping.crop_cells` show the cell on black; every second pixel of every
    second row is read (1 ms per 300-px crop). L is 0-100, a and b about -128..127
    (:data:`STAIN_NAMES` gives the column order). A crop with no cell pixel uses all.

    Raises:
        DomainReferenceError: A crop is not RGB uint8 ``(H, W, 3)``.
    """
    out = np.zeros((len(crops), 6), np.float32)
    for i, crop in enumerate(crops):
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise DomainReferenceError(
                f"crop {i} is {crop.dtype} of shape {crop.shape}; stain statistics need RGB "
                "uint8 (H, W, 3) crops of cells on black, as cropping.crop_cells makes."
            )
        flat = np.ascontiguousarray(crop[::2, ::2]).reshape(-1, 3)  # every 4th pixel: 4x faster
        cell = flat.max(axis=1) > BACKGROUND_MAX
        rgb = flat[cell] if cell.any() else flat
        pixels = cv2.cvtColor(rgb[:, None, :], cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        pixels[:, 0] *= 100 / 255  # OpenCV's 8-bit CIELAB: L * 255 / 100, a + 128, b + 128
        pixels[:, 1:] -= 128
        out[i, :3], out[i, 3:] = pixels.mean(axis=0), pixels.std(axis=0)
    return out


def _matrix(values: object, name: str, width: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or (width is not None and array.shape[1] != width):
        expected = f"(N, {width})" if width is not None else "(N, F)"
        raise DomainReferenceError(
            f"{name} has shape {array.shape}; expected {expected} (one row per cell)."
        )
    if not np.isfinite(array).all():
        raise DomainReferenceError(f"{name} holds NaN or infinite values; recompute them.")
    return array


@dataclass(frozen=True, eq=False)
class DomainReference:
    """The training cells' features and stain, summarised; see the module docstring.

    Attributes:
        feature_mean: ``(F,)`` mean of the L2-normalised training features.
        components: ``(D, F)`` their leading principal axes.
        feature_bank: ``(B, D)`` projected features of the bank cells.
        stain_center: ``(6,)`` median stain statistics of the training cells.
        stain_scale: ``(6,)`` their robust spread (1.4826 x MAD).
        stain_bank: ``(B, 6)`` z-scored stain statistics of the bank cells.
        part_medians: ``(2,)`` median of each part's distance on in-domain cells.
        neighbours: ``k``, nearest bank cells averaged per part.
        limit: Median cell scores above this are warned.
        n_train: Training cells fitted on.
        limit_source: How the limit was chosen (for the model card).
    """

    feature_mean: np.ndarray
    components: np.ndarray
    feature_bank: np.ndarray
    stain_center: np.ndarray
    stain_scale: np.ndarray
    stain_bank: np.ndarray
    part_medians: np.ndarray
    neighbours: int
    limit: float
    n_train: int
    limit_source: str = ""

    @property
    def n_features(self) -> int:
        return int(self.feature_mean.shape[0])

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        stain_stats: np.ndarray,
        *,
        val_features: np.ndarray | None = None,
        val_stain: np.ndarray | None = None,
        val_groups: Sequence[str] | None = None,
        n_components: int = DEFAULT_COMPONENTS,
        neighbours: int = DEFAULT_NEIGHBOURS,
        bank_size: int = DEFAULT_BANK_SIZE,
        percentile: float = DEFAULT_PERCENTILE,
        min_group_cells: int = MIN_GROUP_CELLS,
        seed: int = 0,
    ) -> DomainReference:
        """Fit on training cells; fit the limit on validation groups when given.

        Args:
            features: ``(N, F)`` pooled features of training cells.
            stain_stats: ``(N, 6)`` :func:`stain_statistics` of the same cells.
            val_features: ``(M, F)`` features of in-domain validation cells.
            val_stain: ``(M, 6)`` their stain statistics.
            val_groups: ``M`` group ids (fields or subjects); the limit is the ``percentile`` of
                the groups' median cell scores (see :func:`pool_small_groups`). Without validation cells the part medians come
                from the training cells outside the bank and the limit is the ``percentile`` of
                their cell scores (single cells vary more than medians: the stricter choice).
            n_components: Principal components of the features (at most ``min(N - 1, F)``).
            neighbours: ``k`` nearest bank cells per part.
            bank_size: Training cells kept (a seeded random subset when there are more).
            percentile: Which percentile sets the limit.
            min_group_cells: Validation groups with fewer cells are pooled, in the order given,
                into pseudo-fields of this many cells: a field is judged by the median of its
                cells, and a one-cell group's "median" varies far more.
            seed: Of the bank's subset.

        Raises:
            DomainReferenceError: Shapes disagree, too few cells, or validation parts missing.
        """
        x = _unit(_matrix(features, "features"))
        stain = _matrix(stain_stats, "stain_stats", 6)
        if len(stain) != len(x) or len(x) < 3:
            raise DomainReferenceError(
                f"features have {len(x)} rows and stain_stats {len(stain)}; fit needs the same "
                "cells in both, at least 3."
            )
        if not 0.0 < percentile <= 100.0 or neighbours < 1 or bank_size < 2:
            raise DomainReferenceError(
                f"percentile {percentile} must be in (0, 100], neighbours {neighbours} and "
                f"bank_size {bank_size} at least 1 and 2."
            )
        given = [v is not None for v in (val_features, val_stain, val_groups)]
        if any(given) and not all(given):
            raise DomainReferenceError(
                "Pass val_features, val_stain and val_groups together (or none of them)."
            )
        mean = x.mean(axis=0)
        k = max(1, min(int(n_components), len(x) - 1, x.shape[1]))
        axes = np.linalg.svd(x - mean, full_matrices=False)[2][:k]
        center = np.median(stain, axis=0)
        scale = 1.4826 * np.median(np.abs(stain - center), axis=0)
        scale = np.where(scale > 1e-6, scale, stain.std(axis=0) + 1e-6)
        order = np.random.default_rng(seed).permutation(len(x))
        bank, rest = order[:bank_size], order[bank_size:]
        raw = cls(
            mean.astype(np.float32), axes.astype(np.float32),
            ((x[bank] - mean) @ axes.T).astype(np.float32), center.astype(np.float32),
            scale.astype(np.float32), ((stain[bank] - center) / scale).astype(np.float32),
            np.ones(2, np.float32), int(min(neighbours, len(bank) - 1)), np.inf, len(x),
        )  # fmt: skip
        if all(given):
            parts = raw.score_parts(val_features, val_stain)
        elif len(rest) >= 20:
            parts = raw.score_parts(np.asarray(features)[rest], stain[rest])
        else:  # every training cell is in the bank: leave each one out of its own neighbours
            parts = raw._parts(x - mean, stain, skip_self=True)
        medians = np.maximum(np.median(parts, axis=0), 1e-6).astype(np.float32)
        reference = replace(raw, part_medians=medians)
        scores = (parts / medians).mean(axis=1)
        if all(given):
            if len(val_groups) != len(scores):
                raise DomainReferenceError(
                    f"val_groups has {len(val_groups)} entries for {len(scores)} validation cells."
                )
            groups = pool_small_groups(val_groups, min_group_cells)
            medians = [float(np.median(scores[groups == g])) for g in np.unique(groups)]
            limit = _percentile_limit(np.asarray(medians), percentile)
            source = (f"{percentile:g}th percentile of the median cell score of "
                      f"{len(medians)} validation groups")  # fmt: skip
        else:
            limit = float(np.percentile(scores, percentile))
            source = f"{percentile:g}th percentile of single training cells' scores"
        return replace(reference, limit=limit, limit_source=source)

    def score_parts(self, features: np.ndarray, stain_stats: np.ndarray) -> np.ndarray:
        """``(N, 2)``: feature and stain distance to the nearest bank cells, each divided by its
        in-domain median (so about 1 in domain); :data:`PARTS` names the columns.

        Raises:
            DomainReferenceError: Wrong shapes (e.g. features of another model).
        """
        x = _unit(_matrix(features, "features", self.n_features))
        stain = _matrix(stain_stats, "stain_stats", 6)
        if len(x) != len(stain):
            raise DomainReferenceError(
                f"features have {len(x)} rows and stain_stats {len(stain)}; pass the same cells."
            )
        return self._parts(x - self.feature_mean, stain) / self.part_medians

    def _parts(self, centred: np.ndarray, stain: np.ndarray, skip_self: bool = False) -> np.ndarray:
        projected = centred @ self.components.T.astype(np.float64)
        z = (stain - self.stain_center) / self.stain_scale
        return np.stack([_knn_distance(self.feature_bank, projected, self.neighbours, skip_self),
                         _knn_distance(self.stain_bank, z, self.neighbours, skip_self)], axis=1)  # fmt: skip

    def cell_scores(self, features: np.ndarray, stain_stats: np.ndarray) -> np.ndarray:
        """``(N,)`` domain score per cell: the mean of :meth:`score_parts` (about 1 in domain)."""
        return self.score_parts(features, stain_stats).mean(axis=1)

    def assess(self, cell_scores: np.ndarray | Sequence[float]) -> DomainAssessment:
        """The median of ``cell_scores`` against the limit (one field, or a whole sample)."""
        scores = np.asarray(cell_scores, dtype=np.float64).ravel()
        scores = scores[np.isfinite(scores)]
        score = float(np.median(scores)) if len(scores) else None
        return DomainAssessment(score, float(self.limit), len(scores))

    # ---- file ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The reference as ``.npz`` bytes (float32; about 1 MB for 2000 cells x 64 + 64 x 1280)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, format=np.int32(_FORMAT), **{k: getattr(self, k) for k in _ARRAYS},
            neighbours=np.int64(self.neighbours), limit=np.float64(self.limit),
            n_train=np.int64(self.n_train), limit_source=np.str_(self.limit_source),
        )  # fmt: skip
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_bytes` to ``path`` atomically (temporary file, then rename)."""
        return write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> DomainReference:
        """Read a reference written by :meth:`save`.

        Raises:
            DomainReferenceError: Not such a file, another format, or inconsistent arrays.
        """
        fix = "write it again with `python -m train domain NAME --data BANK`"
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                values = {k: data[k] for k in data.files}
            if int(values["format"]) != _FORMAT:
                raise ValueError(f"format {int(values['format'])}, this app reads {_FORMAT}")
            reference = cls(
                *(values[k].astype(np.float32) for k in _ARRAYS), int(values["neighbours"]),
                float(values["limit"]), int(values["n_train"]), str(values["limit_source"]),
            )  # fmt: skip
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise DomainReferenceError(
                f"{path} is not a domain reference ({error}); {fix}."
            ) from error
        d, f = reference.components.shape
        b = reference.feature_bank.shape[0]
        shapes = tuple(getattr(reference, k).shape for k in _ARRAYS)
        if shapes != ((f,), (d, f), (b, d), (6,), (6,), (b, 6), (2,)):
            raise DomainReferenceError(
                f"{path} holds arrays of inconsistent shapes {shapes} for {d} components of "
                f"{f} features and {b} bank cells; {fix}."
            )
        return reference


def pool_small_groups(groups: Sequence[str], min_cells: int = MIN_GROUP_CELLS) -> np.ndarray:
    """Group ids where groups of fewer than ``min_cells`` cells are pooled, in the order given,
    into pseudo-groups of ``min_cells`` (e.g. single-cell sets whose every cell is a group).

    Example:
        >>> pool_small_groups(["a", "a", "b", "c", "d"], 2).tolist()
        ['a', 'a', 'pooled 1', 'pooled 1', 'pooled 2']
    """
    groups = np.asarray([str(g) for g in groups], dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    small = np.flatnonzero(np.isin(groups, names[counts < min_cells]))
    out = groups.copy()
    for start in range(0, len(small), max(1, min_cells)):
        out[small[start : start + min_cells]] = f"pooled {start // max(1, min_cells) + 1}"
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (pooled features differ in scale between images)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _knn_distance(
    bank: np.ndarray, points: np.ndarray, k: int, skip_self: bool = False
) -> np.ndarray:
    """Mean Euclidean distance of each point to its ``k`` nearest bank rows (in chunks)."""
    bank = bank.astype(np.float64)
    squared = (bank**2).sum(axis=1)
    out = np.zeros(len(points))
    for start in range(0, len(points), 1024):
        chunk = points[start : start + 1024]
        d2 = (chunk**2).sum(axis=1)[:, None] - 2 * chunk @ bank.T + squared[None]
        nearest = np.sort(np.partition(d2, k, axis=1)[:, : k + 1], axis=1)
        nearest = nearest[:, 1 : k + 1] if skip_self else nearest[:, :k]
        out[start : start + 1024] = np.sqrt(np.maximum(nearest, 0)).mean(axis=1)
    return out


def _percentile_limit(medians: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of group medians: the larger of the empirical one and the normal
    estimate ``mean + z * sd``. With a few dozen groups the empirical percentile is about their
    maximum and too low (15 groups warned 1 in 8 new in-domain fields in the tests); the normal
    estimate does not shrink with the number of groups, the empirical one covers heavy tails."""
    empirical = float(np.percentile(medians, percentile))
    if len(medians) < 3 or percentile >= 100:
        return empirical
    z = NormalDist().inv_cdf(percentile / 100)
    return max(empirical, float(medians.mean() + z * medians.std(ddof=1)))
