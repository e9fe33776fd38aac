"""Out-of-domain check: do these cells look like the cells the model was trained on?

A :class:`DomainReference` describes the training cells by two things the app already has for
every cell: the classifier's pooled backbone features (its ``head_pool`` layer) and the stain
of the cell's pixels (:func:`stain_statistics`: mean and spread of CIELAB L, a, b). A cell's
score has three parts, each divided by its median on the training cells so that it is about 1
in domain:

- the Mahalanobis distance of the features in their leading principal components (variances
  shrunk towards their mean, so a rare direction cannot dominate),
- the distance of the features from that subspace (what the components do not explain),
- the distance of the stain statistics from the training cells' (robustly z-scored).

The cell score is the mean of the three parts. A field (or a sample) is judged by the
**median cell score** of its cells, so a few odd cells do not warn; it is warned above a limit
fitted on in-domain validation fields (by default the 99th percentile of their medians), so a
field like the training data is rarely warned.

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from leukemia_core.errors import LeukemiaCoreError

STAIN_NAMES = ("L_mean", "a_mean", "b_mean", "L_std", "a_std", "b_std")
STATISTIC = "median cell score"
DEFAULT_COMPONENTS = 48
DEFAULT_SHRINKAGE = 0.1
DEFAULT_PERCENTILE = 99.0
BACKGROUND_MAX = 10  # a crop pixel whose channels are all <= this is the black background
_PARTS = ("mahalanobis", "residual", "stain")
_FORMAT = 1


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
        feature_mean: ``(F,)`` mean pooled feature of the training cells.
        components: ``(K, F)`` leading principal axes of the features.
        variances: ``(K,)`` shrunk variances along them.
        stain_center: ``(6,)`` median stain statistics.
        stain_scale: ``(6,)`` robust spread (1.4826 x MAD) of the stain statistics.
        part_medians: ``(3,)`` median of each score part on the training cells.
        limit: Median cell scores above this are warned.
        n_train: Training cells fitted on.
        limit_source: How the limit was chosen (for the model card).
    """

    feature_mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    stain_center: np.ndarray
    stain_scale: np.ndarray
    part_medians: np.ndarray
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
        shrinkage: float = DEFAULT_SHRINKAGE,
        percentile: float = DEFAULT_PERCENTILE,
    ) -> DomainReference:
        """Fit on training cells; fit the limit on validation groups when given.

        Args:
            features: ``(N, F)`` pooled features of training cells.
            stain_stats: ``(N, 6)`` :func:`stain_statistics` of the same cells.
            val_features: ``(M, F)`` features of in-domain validation cells.
            val_stain: ``(M, 6)`` their stain statistics.
            val_groups: ``M`` group ids (fields or subjects); the limit is the ``percentile`` of
                the groups' median cell scores. Without validation cells it is the
                ``percentile`` of the training cells' own scores (single cells vary more than
                medians, so this is the stricter choice).
            n_components: Principal components kept (at most ``min(N - 1, F)``).
            shrinkage: Share (0-1) of each variance replaced by their mean.
            percentile: Which percentile sets the limit.

        Raises:
            DomainReferenceError: Shapes disagree, too few cells, or validation parts missing.
        """
        x = _matrix(features, "features")
        stain = _matrix(stain_stats, "stain_stats", 6)
        if len(stain) != len(x) or len(x) < 3:
            raise DomainReferenceError(
                f"features have {len(x)} rows and stain_stats {len(stain)}; fit needs the same "
                "cells in both, at least 3."
            )
        if not 0.0 <= shrinkage <= 1.0 or not 0.0 < percentile <= 100.0:
            raise DomainReferenceError(
                f"shrinkage {shrinkage} must be in 0-1 and percentile {percentile} in (0, 100]."
            )
        mean = x.mean(axis=0)
        k = max(1, min(int(n_components), len(x) - 1, x.shape[1]))
        _, singular, axes = np.linalg.svd(x - mean, full_matrices=False)
        variances = singular[:k] ** 2 / (len(x) - 1)
        variances = (1 - shrinkage) * variances + shrinkage * variances.mean() + 1e-12
        center = np.median(stain, axis=0)
        scale = 1.4826 * np.median(np.abs(stain - center), axis=0)
        scale = np.where(scale > 1e-6, scale, stain.std(axis=0) + 1e-6)
        raw = cls(mean.astype(np.float32), axes[:k].astype(np.float32),
                  variances.astype(np.float32), center.astype(np.float32),
                  scale.astype(np.float32), np.ones(3, np.float32), np.inf, len(x))  # fmt: skip
        medians = np.median(raw.score_parts(x, stain), axis=0)
        reference = replace(raw, part_medians=np.maximum(medians, 1e-6).astype(np.float32))
        given = [v is not None for v in (val_features, val_stain, val_groups)]
        if any(given) and not all(given):
            raise DomainReferenceError(
                "Pass val_features, val_stain and val_groups together (or none of them)."
            )
        if all(given):
            scores = reference.cell_scores(val_features, val_stain)
            groups = np.asarray(list(val_groups))
            if len(groups) != len(scores):
                raise DomainReferenceError(
                    f"val_groups has {len(groups)} entries for {len(scores)} validation cells."
                )
            medians = [float(np.median(scores[groups == g])) for g in np.unique(groups)]
            limit = _percentile_limit(np.asarray(medians), percentile)
            source = (f"{percentile:g}th percentile of the median cell score of "
                      f"{len(medians)} validation groups")  # fmt: skip
        else:
            limit = float(np.percentile(reference.cell_scores(x, stain), percentile))
            source = f"{percentile:g}th percentile of the training cells' scores"
        return replace(reference, limit=limit, limit_source=source)

    def score_parts(self, features: np.ndarray, stain_stats: np.ndarray) -> np.ndarray:
        """``(N, 3)``: Mahalanobis, residual and stain distance, each divided by its training
        median (so about 1 in domain).

        Raises:
            DomainReferenceError: Wrong shapes (e.g. features of another model).
        """
        x = _matrix(features, "features", self.n_features)
        stain = _matrix(stain_stats, "stain_stats", 6)
        if len(x) != len(stain):
            raise DomainReferenceError(
                f"features have {len(x)} rows and stain_stats {len(stain)}; pass the same cells."
            )
        centred = x - self.feature_mean
        projected = centred @ self.components.T.astype(np.float64)
        mahalanobis = np.sqrt((projected**2 / self.variances).mean(axis=1))
        residual = np.linalg.norm(centred - projected @ self.components, axis=1)
        residual /= np.sqrt(x.shape[1])
        z = (stain - self.stain_center) / self.stain_scale
        stain_distance = np.sqrt((z**2).mean(axis=1))
        parts = np.stack([mahalanobis, residual, stain_distance], axis=1)
        return parts / self.part_medians

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
        """The reference as ``.npz`` bytes (float32; about 250 kB for 48 x 1280)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, format=np.int32(_FORMAT), feature_mean=self.feature_mean,
            components=self.components, variances=self.variances,
            stain_center=self.stain_center, stain_scale=self.stain_scale,
            part_medians=self.part_medians, limit=np.float64(self.limit),
            n_train=np.int64(self.n_train), limit_source=np.str_(self.limit_source),
        )  # fmt: skip
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_bytes` to ``path`` atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_bytes(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DomainReference:
        """Read a reference written by :meth:`save`.

        Raises:
            DomainReferenceError: Not such a file, or inconsistent arrays.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                values = {k: data[k] for k in data.files}
            reference = cls(
                *(values[k].astype(np.float32) for k in ("feature_mean", "components",
                  "variances", "stain_center", "stain_scale", "part_medians")),
                float(values["limit"]), int(values["n_train"]), str(values["limit_source"]),
            )  # fmt: skip
        except (OSError, KeyError, ValueError) as error:
            raise DomainReferenceError(
                f"{path} is not a domain reference ({error}); write it again with "
                "`python -m train domain NAME --data BANK`."
            ) from error
        k, f = reference.components.shape
        shapes = (reference.feature_mean.shape, reference.variances.shape,
                  reference.stain_center.shape, reference.stain_scale.shape,
                  reference.part_medians.shape)  # fmt: skip
        if shapes != ((f,), (k,), (6,), (6,), (3,)):
            raise DomainReferenceError(
                f"{path} holds arrays of inconsistent shapes {shapes} for {k} components of "
                f"{f} features; write it again with `python -m train domain NAME --data BANK`."
            )
        return reference


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
