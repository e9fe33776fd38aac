"""What a leave-one-source-out fold says beyond classification.

For every left-out source, on the fold's cached features:

- **Out-of-domain score**: a :class:`~leukemia_core.domain.DomainReference` fitted on the
  training sources; how well its scores tell the left-out source's cells (and samples) from
  in-domain cells the reference never saw (the fold's validation side), and how many of the
  left-out source's samples it warns.
- **Site adaptation**: 50 (or 200) cells of the left-out source, a few from each of several
  of its groups (:func:`adaptation_split`), adapt the fold's model
  (:func:`train.adapt.adapt_from_arrays`); the source's *other* groups are classified before
  and after.

``python -m train compare --protocol leave-one-source-out`` runs both for cached-feature models.
"""

from __future__ import annotations

import numpy as np

from leukemia_core.calibration import Calibration, blast_probability
from leukemia_core.domain import DomainReference, pool_small_groups
from train.adapt import (
    FIGURES,
    MIN_CELLS_PER_CLASS,
    AdaptationError,
    adapt_from_arrays,
    figures,
)
from train.domain import group_medians
from train.evaluate.metrics import auroc

ADAPTATION_SIZES = (50, 200)
ADAPTATION_DRAWS = 3  # random draws of adaptation groups per size; figures are their mean


def adaptation_split(
    is_blast: np.ndarray, groups: np.ndarray, n_cells: int, seed: int = 0, spread: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of one source to adapt on, and the groups to test the adaptation on (for LOSO).

    Groups are taken in a seeded random order, at most ``ceil(n_cells / spread)`` random cells
    of each (so a lab's cells come from several samples, as signed cases would), until
    ``n_cells`` are chosen with :data:`train.adapt.MIN_CELLS_PER_CLASS` of each class; the test side is
    every group none of whose cells was taken, so no group is on both sides.

    Returns:
        ``(adapt, test)`` boolean masks over the cells.
    """
    y, groups = np.asarray(is_blast, bool), np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    per_group = -(-n_cells // spread)
    adapt, used = np.zeros(len(y), bool), []
    for group in rng.permutation(sorted(set(groups))):
        members = rng.permutation(np.flatnonzero(groups == group))
        adapt[members[: min(per_group, n_cells - adapt.sum())]] = True
        used.append(group)
        fewest = min(y[adapt].sum(), (~y[adapt]).sum())
        if adapt.sum() >= n_cells and fewest >= MIN_CELLS_PER_CLASS:
            break
    return adapt, ~np.isin(groups, used)


def _sample_medians(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Median score per sample; one-cell groups (PBC files) are pooled into pseudo-fields."""
    return np.array(list(group_medians(scores, pool_small_groups(groups)).values()))


def domain_check(
    train: tuple[np.ndarray, np.ndarray],
    in_domain: tuple[np.ndarray, np.ndarray, np.ndarray],
    left_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    calls: tuple[np.ndarray, np.ndarray, Calibration] | None = None,
) -> dict:
    """AUROC of the domain score for left-out vs in-domain cells and samples.

    Args:
        train: ``(features, stain statistics)`` of the training cells.
        in_domain: ``(features, stain, groups)`` of in-domain cells not fitted on; half of
            their groups set the warning limit, the other half are scored.
        left_out: ``(features, stain, groups)`` of the left-out source.
        calls: ``(p, is_blast, calibration)`` of the left-out cells: adds how many confident
            errors (a blast below the review band, a normal cell above it) no reviewer would
            see, with no domain check, with the sample check, and with a per-cell limit too.
    """
    x_in, stain_in, groups_in = in_domain
    names = np.unique(groups_in)
    if len(names) < 2:  # one half sets the limit, the other is scored: a small lab's set
        return {"skipped": f"{len(names)} in-domain validation group(s); the check needs 2 or "
                           "more (one to set the warning limit, one to score)"}  # fmt: skip
    rng = np.random.default_rng(0)
    limit_groups = set(rng.permutation(names)[: len(names) // 2])
    for_limit = np.isin(groups_in, list(limit_groups))
    reference = DomainReference.fit(
        *train, val_features=x_in[for_limit], val_stain=stain_in[for_limit],
        val_groups=groups_in[for_limit])  # fmt: skip
    s_in = reference.cell_scores(x_in[~for_limit], stain_in[~for_limit])
    s_out = reference.cell_scores(left_out[0], left_out[1])
    m_in = _sample_medians(s_in, groups_in[~for_limit])
    pooled_out = pool_small_groups(left_out[2])
    medians_out = group_medians(s_out, pooled_out)  # per sample of the left-out source
    m_out = np.array(list(medians_out.values()))
    is_out = np.r_[np.zeros(len(s_in), bool), np.ones(len(s_out), bool)]
    group_out = np.r_[np.zeros(len(m_in), bool), np.ones(len(m_out), bool)]
    unseen = {}
    if calls is not None:
        warned = np.array([medians_out[g] > reference.limit for g in pooled_out], bool)
        unseen = _unreviewed_errors(calls, warned, s_out, s_in, stain_in, x_in, for_limit,
                                    reference)  # fmt: skip
    return unseen | {
        "cell_auroc": auroc(is_out, np.r_[s_in, s_out]),
        "sample_auroc": auroc(group_out, np.r_[m_in, m_out]),
        "left_out_samples_warned": float((m_out > reference.limit).mean()),
        "in_domain_samples_warned": float((m_in > reference.limit).mean()),
        "limit": reference.limit,
        "n_cells": [len(s_in), len(s_out)],
        "n_samples": [len(m_in), len(m_out)],
    }


CELL_PERCENTILES = (99.0, 97.5, 95.0)  # per-cell limits measured, of in-domain cell scores


def _unreviewed_errors(calls, warned, s_out, s_in, stain_in, x_in, for_limit, reference) -> dict:
    """Confident errors no reviewer would see: blasts below the review band (over the blasts)
    and normal cells above it (over the normal cells), with no domain check, with the sample
    check the app makes, and with a per-cell limit added at each of :data:`CELL_PERCENTILES`
    (with the share of in-domain cells that limit would send to review)."""
    p, is_blast, calibration = calls
    p, y = np.asarray(p, np.float64), np.asarray(is_blast, bool)
    limit_cells = reference.cell_scores(x_in[for_limit], stain_in[for_limit])
    cell_limits = {f"{q:g}": float(np.percentile(limit_cells, q)) for q in CELL_PERCENTILES}
    rules = {"no_check": np.ones_like(y), "sample_check": ~warned}
    rules |= {f"cell_limit_{q}": ~warned & (s_out <= v) for q, v in cell_limits.items()}
    out = {"in_domain_cells_over_cell_limit": {q: float((s_in > v).mean())
                                               for q, v in cell_limits.items()}}  # fmt: skip
    for key, cells, confident in (("missed_blasts_unreviewed", y, p < calibration.uncertain_low),
                                  ("false_blasts_unreviewed", ~y,
                                   p >= calibration.uncertain_high)):  # fmt: skip
        out[key] = {name: float((confident & seen)[cells].mean()) if cells.any() else None
                    for name, seen in rules.items()}  # fmt: skip
    return out


def adaptation_check(
    features: np.ndarray,
    is_blast: np.ndarray,
    groups: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    calibration: Calibration,
    *,
    sizes: tuple[int, ...] = ADAPTATION_SIZES,
    draws: int = ADAPTATION_DRAWS,
    seed: int = 0,
) -> dict:
    """Figures on the source's other groups before and after adapting on ``size`` of its cells.

    Args:
        features: ``(N, F)`` view-averaged features of the left-out source's cells.
        is_blast: Their labels.
        groups: Their samples; adaptation and test groups never overlap.
        head: The fold model's ``(kernel, bias)``.
        calibration: The fold model's calibration.
    """
    kernel, bias = head
    y = np.asarray(is_blast, bool)
    if y.all() or not y.any():
        return {"skipped": "one class only: adaptation needs blasts and normal cells"}
    result = {}
    for size in sizes:
        runs, failures = [], []
        for draw in range(draws):
            # As signed cases would: a few cells of each of several samples, never a sample on
            # both sides.
            fit_rows, test_rows = adaptation_split(y, groups, size, seed=seed + 1000 * size + draw)
            if not test_rows.any() or not y[test_rows].any() or y[test_rows].all():
                failures.append("the rest holds one class only")
                continue
            try:
                adapted = adapt_from_arrays(features[fit_rows], y[fit_rows], groups[fit_rows],
                                            kernel, bias, calibration=calibration,
                                            seed=seed + draw)  # fmt: skip
            except AdaptationError as error:
                failures.append(str(error))
                continue
            rest = features[test_rows]
            before = blast_probability(rest @ kernel + bias, calibration.temperature)
            after = blast_probability(rest @ adapted.kernel + adapted.bias,
                                      adapted.calibration.temperature)  # fmt: skip
            runs.append({"cells": int(fit_rows.sum()), "test_cells": int(test_rows.sum()),
                         "variant": adapted.variant,
                         "before": figures(before, y[test_rows], calibration.threshold, calibration.uncertain_low),
                         "after": figures(after, y[test_rows], adapted.calibration.threshold,
                                          adapted.calibration.uncertain_low)})  # fmt: skip
        result[str(size)] = _mean_of(runs) | {"draws": len(runs), "failures": failures}
    return result


def _mean_of(runs: list[dict]) -> dict:
    if not runs:
        return {}

    def mean(side: str, key: str):
        values = [r[side][key] for r in runs if r[side][key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "cells": float(np.mean([r["cells"] for r in runs])),
        "test_cells": float(np.mean([r["test_cells"] for r in runs])),
        "variants": [r["variant"] for r in runs],
        **{side: {k: mean(side, k) for k in FIGURES} for side in ("before", "after")},
    }


def extras_markdown(extras: dict) -> str:
    """The domain-score and adaptation figures per left-out source, as Markdown tables."""
    lines = ["| left out | domain AUROC, cells | domain AUROC, samples | its samples warned | "
             "in-domain samples warned | blasts missed unreviewed: no check -> sample check | "
             "normal called blast unreviewed: no check -> sample check |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for source, values in extras.items():
        d = values.get("domain") or {}
        if "skipped" in d:
            lines.append(f"| {source} | not measured: {d['skipped']} | | | | | |")
            continue
        missed, false = (d.get(k) or {} for k in ("missed_blasts_unreviewed",
                                                   "false_blasts_unreviewed"))  # fmt: skip
        lines.append(f"| {source} | {_n(d.get('cell_auroc'))} | {_n(d.get('sample_auroc'))} | "
                     f"{_n(d.get('left_out_samples_warned'))} | "
                     f"{_n(d.get('in_domain_samples_warned'))} | "
                     f"{_n(missed.get('no_check'))} -> {_n(missed.get('sample_check'))} | "
                     f"{_n(false.get('no_check'))} -> {_n(false.get('sample_check'))} |")  # fmt: skip
    lines += ["", "| left out | adaptation cells | balanced accuracy before -> after | ECE before "
              "-> after | confident misses before -> after | variants |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for source, values in extras.items():
        adaptation = values.get("adaptation") or {}
        if "skipped" in adaptation:
            lines.append(f"| {source} | - | not measured: {adaptation['skipped']} | | | |")
            continue
        for size, a in adaptation.items():
            if "before" not in a:
                lines.append(f"| {source} | {size} | not measured: "
                             f"{'; '.join(dict.fromkeys(a.get('failures', []))) or 'no draw'} | | | |")  # fmt: skip
                continue
            b, f = a["before"], a["after"]
            lines.append(
                f"| {source} | {size} ({a['draws']} draws, {a['test_cells']:.0f} test cells) | "
                f"{_n(b['balanced_accuracy'])} -> {_n(f['balanced_accuracy'])} | "
                f"{_n(b['ece'])} -> {_n(f['ece'])} | {_n(b['confident_miss_rate'])} -> "
                f"{_n(f['confident_miss_rate'])} | {', '.join(sorted(set(a['variants'])))} |"
            )
    return "\n".join(lines)


def _n(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
