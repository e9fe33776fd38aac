"""Fit a model folder's out-of-domain reference, and measure the check leaving one source out.

``python -m train domain NAME --data BANK_MANIFEST`` reads the cells of the folder's
``split.csv`` train and validation groups, runs them through the app's own
:class:`~leukemia_core.classify.Classifier` (same crops, views and features as in the app),
fits a :class:`~leukemia_core.domain.DomainReference` on the training cells with its limit on the
validation groups, and writes ``domain.npz`` into the folder (weights untouched).

:func:`train.loso.domain_check` measures the check leaving one source out (run by
``python -m train compare --protocol leave-one-source-out``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from leukemia_core.classify import Classifier
from leukemia_core.domain import (
    DEFAULT_COMPONENTS,
    DEFAULT_PERCENTILE,
    DomainReference,
    DomainReferenceError,
    pool_small_groups,
    stain_statistics,
)
from leukemia_core.models.folder import load_model
from leukemia_core.models.writing import write_domain_reference
from train.evaluate.classifier import SPLIT_FILE
from train.fit import app_crop
from train.groups import bank_group
from train.records import LabelledCrop
from train.splits import SplitError, read_split_file, split_by_sides

Progress = Callable[[dict], None]
CHUNK = 64  # crops held in memory at once (300 x 300 x 3 bytes each)


@dataclass(frozen=True)
class DomainFit:
    """What :func:`fit_domain` wrote.

    Attributes:
        path: The ``domain.npz`` written.
        reference: The fitted reference (its limit is the config's threshold).
        n_train: Training cells it was fitted on.
        n_val: Validation cells the limit was fitted on.
        n_val_groups: Validation groups.
        val_warned_groups: Validation groups above the limit (about 1% by construction).
    """

    path: Path
    reference: DomainReference
    n_train: int
    n_val: int
    n_val_groups: int
    val_warned_groups: int


def cell_inputs(
    records: Sequence[LabelledCrop], classifier: Classifier, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features ``(N, F)`` and stain statistics ``(N, 6)`` of each record's cell.

    The crop is the app's single-cell crop; the classifier makes its own input from it, as in
    the app, and the stain statistics are taken from the crop itself.
    """
    features, stains = [], []
    for start in range(0, len(records), CHUNK):
        crops = [app_crop(r) for r in records[start : start + CHUNK]]  # the app's cut
        features.append(classifier.outputs(crops).features)
        stains.append(stain_statistics(crops))
        if progress:
            done = min(start + CHUNK, len(records))
            progress({"stage": "cells", "done": done, "total": len(records)})
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros((0, 6), np.float32)
    return np.concatenate(features), np.concatenate(stains)


def _subsample(records: list[LabelledCrop], limit: int | None, seed: int) -> list[LabelledCrop]:
    if limit is None or len(records) <= limit:
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), limit, replace=False))
    return [records[i] for i in keep]


def fit_domain(
    name: str,
    records: Sequence[LabelledCrop],
    *,
    root: Path | None = None,
    max_train_cells: int | None = 4000,
    n_components: int = DEFAULT_COMPONENTS,
    percentile: float = DEFAULT_PERCENTILE,
    seed: int = 0,
    data_description: str = "",
    progress: Progress | None = None,
) -> DomainFit:
    """Fit and write the domain reference of model folder ``name`` from its own split.

    Args:
        name: Model folder.
        records: The cells the model was split on (e.g. its crop bank); they go to the sides
            ``split.csv`` gives their groups; groups it does not name are left out.
        root: Parent of model folders.
        max_train_cells: Fit on at most this many training cells (a seeded random subset);
            None uses all.
        n_components: Principal components of the features.
        percentile: Of the validation groups' median scores, sets the limit.
        seed: For the subset.
        data_description: Plain words about ``records``, for the config.
        progress: Event callback (``stage``, ``done``, ``total``).

    Raises:
        SplitError: No ``split.csv``, or no cell of ``records`` on its train or val side.
    """
    loaded = load_model(name, root)
    split_path = loaded.path / SPLIT_FILE
    if not split_path.is_file():
        raise SplitError(f"{loaded.path} has no {SPLIT_FILE}, so its training cells are unknown; "
                         "retrain it with python -m train fit.")  # fmt: skip
    side_of = read_split_file(split_path)
    split = split_by_sides([replace(r, group=bank_group(r)) for r in records], side_of)
    train = [r for r in split.train if r.group in side_of]  # unnamed groups are not the model's
    if not train or not split.val:
        raise SplitError(
            f"Of these cells, {len(train)} belong to the train groups and {len(split.val)} to the "
            f"val groups of {split_path}; fit the domain on the data the model was split on (e.g. "
            "its crop bank)."
        )
    train = _subsample(train, max_train_cells, seed)
    classifier = Classifier(loaded)

    def stage(name: str) -> Progress | None:
        return (lambda event: progress({**event, "stage": name})) if progress else None

    x_train, s_train = cell_inputs(train, classifier, stage("train cells"))
    x_val, s_val = cell_inputs(split.val, classifier, stage("validation cells"))
    groups = [r.group for r in split.val]
    reference = DomainReference.fit(
        x_train, s_train, val_features=x_val, val_stain=s_val, val_groups=groups,
        n_components=n_components, percentile=percentile,
    )  # fmt: skip
    path = write_domain_reference(loaded.name, reference, root=root, data=data_description)
    medians = group_medians(reference.cell_scores(x_val, s_val), pool_small_groups(groups))
    return DomainFit(path, reference, len(train), len(split.val), len(medians),
                     int(sum(m > reference.limit for m in medians.values())))  # fmt: skip


def group_medians(scores: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Median cell score per group (the statistic a field or sample is judged by)."""
    groups = np.asarray(list(groups))
    return {str(g): float(np.median(scores[groups == g])) for g in np.unique(groups)}


def staged_domain_reference(
    name: str, features: dict, rows: dict, root: Path, data_description: str = ""
) -> Path | None:
    """Fit and write the domain reference of a comparison's staged model folder ``name`` from
    the per-cell arrays the comparison already holds (view-averaged pooled features, stain
    statistics, groups; ``rows``: the fold's ``train``/``val`` row indices), as
    :func:`fit_domain` does from images. None when too few cells give no reference: the
    promotion then warns that the model has none."""
    x, stain, groups = features["averaged"], features["stain"], features["groups"]
    train, val = rows["train"], rows["val"]
    try:
        reference = DomainReference.fit(x[train], stain[train], val_features=x[val],
                                        val_stain=stain[val], val_groups=groups[val])  # fmt: skip
    except DomainReferenceError:
        return None
    return write_domain_reference(name, reference, root=root, data=data_description)
