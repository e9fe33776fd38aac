"""What a comparison produced: pooled out-of-fold predictions per model, their figures with
group-bootstrap intervals (overall and per source), and the files of a run folder."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukemia_core.calibration import BLAST_INDEX, reliability_bins
from leukemia_core.outputs import write_text_atomic
from train.compare_settings import (
    PREDICTIONS_FILE,
    RESULTS_FILE,
    SIZE_BASELINE,
    TABLE_FILE,
    TABLE_METRICS,
    CompareSettings,
)
from train.compare_tables import table_csv
from train.evaluate.metrics import binary_metrics, mcnemar, roc_points
from train.fit import labels_of
from train.groups import bank_group, interval_units
from train.records import LabelledCrop
from train.splits import loso_units


@dataclass
class ModelOutcome:
    """One row of the comparison: pooled out-of-fold predictions and what it took."""

    name: str
    init: str
    status: str = "done"  # done, skipped or failed
    reason: str = ""
    p: np.ndarray | None = None  # calibrated blast probability per cell (out of fold)
    thresholds: np.ndarray | None = None  # decision threshold of the fold that tested the cell
    review_low: np.ndarray | None = None  # lower end of that fold's review band
    review_high: np.ndarray | None = None  # and its upper end
    loso: dict = field(default_factory=dict)  # left-out source -> domain and adaptation checks
    params: int | None = None
    training_seconds: float = 0.0
    cells_per_second: float | None = None
    history: list[dict] = field(default_factory=list)
    folder: str | None = None


@dataclass
class Comparison:
    """Everything a comparison produced; :meth:`write` stores it in a run folder."""

    settings: CompareSettings
    records: tuple[LabelledCrop, ...]
    fold_of: np.ndarray  # fold that tested each cell (-1: never tested)
    outcomes: list[ModelOutcome]
    data_description: str = ""
    seconds: float = 0.0
    fold_names: tuple[str, ...] = ()  # per fold: its number, or the source it leaves out
    _metrics: dict = field(default_factory=dict, repr=False)  # bootstraps are slow: once each

    def tested(self) -> np.ndarray:
        return self.fold_of >= 0

    def is_blast(self) -> np.ndarray:
        return labels_of(self.records) == BLAST_INDEX

    def units(self) -> list[str]:
        """Each cell's unit for intervals and group counts (a smear run counts once)."""
        if "_units" not in self._metrics:
            self._metrics["_units"] = interval_units(self.records)
        return self._metrics["_units"]

    def metrics(self, outcome: ModelOutcome, fold: int | None = None) -> dict:
        """Pooled test metrics of one model with 95% group-bootstrap intervals; with ``fold``,
        of that fold's test cells only (folds count from 1; the figures of the model it trained)."""
        key = outcome.name if fold is None else f"{outcome.name}/fold{fold}"
        if key not in self._metrics:
            t = self.tested() if fold is None else self.fold_of == fold
            groups = [u for u, keep in zip(self.units(), t, strict=True) if keep]
            self._metrics[key] = binary_metrics(
                self.is_blast()[t], outcome.p[t], outcome.thresholds[t], groups=groups,
                seed=self.settings.seed, review_low=outcome.review_low[t])  # fmt: skip
        return self._metrics[key]

    def uncertain_fraction(self, outcome: ModelOutcome) -> float | None:
        """Share of the tested cells whose probability fell in their fold's review band (the
        cells a lab would review one by one); None when the bands were not kept."""
        t = self.tested()
        if outcome.review_high is None or not t.any():
            return None
        p, low, high = outcome.p[t], outcome.review_low[t], outcome.review_high[t]
        return float(((p >= low) & (p < high)).mean())

    def source_units(self) -> np.ndarray:
        """Per cell, the unit figures are reported by: the left-out unit under LOSO (ALL-IDB1
        and ALL-IDB2 together, as they share fields), else the source."""
        if self.settings.protocol == "leave_one_source_out":
            unit_of = loso_units(self.records)
            return np.array([unit_of[r.source] for r in self.records])
        return np.array([r.source for r in self.records])

    def per_source(self, outcome: ModelOutcome, fold: int | None = None) -> dict:
        """Figures per source unit with 95% intervals by group (patient, field block); with
        ``fold``, of that fold's test cells only."""
        key = f"{outcome.name}/per_source" + ("" if fold is None else f"/fold{fold}")
        if key not in self._metrics:
            t = self.tested() if fold is None else self.fold_of == fold
            units = self.source_units()
            groups = np.array(self.units())
            self._metrics[key] = {
                s: binary_metrics(self.is_blast()[m], outcome.p[m], outcome.thresholds[m],
                                  groups=groups[m], seed=self.settings.seed,
                                  review_low=outcome.review_low[m])
                for s in sorted(set(units[t])) if (m := t & (units == s)).any()
            }  # fmt: skip
        return self._metrics[key]

    def correct(self, outcome: ModelOutcome) -> np.ndarray:
        t = self.tested()
        return (outcome.p[t] >= outcome.thresholds[t]) == self.is_blast()[t]

    def best(self) -> ModelOutcome | None:
        """The finished model (size baseline excluded) with the highest balanced accuracy."""
        done = [o for o in self.outcomes if o.status == "done" and o.name != SIZE_BASELINE]
        if not done:
            return None
        return max(done, key=lambda o: self.metrics(o)["balanced_accuracy"] or 0.0)

    def untrained_reason(self) -> str | None:
        """Why no requested model gave figures (each model's reason), or None when one did."""
        tried = [o for o in self.outcomes if o.name != SIZE_BASELINE]
        if any(o.status == "done" for o in tried):
            return None
        reasons = "; ".join(f"{o.name}: {o.reason or o.status}" for o in tried)
        return f"No model was trained ({reasons or 'none was asked for'})."

    def table(self) -> list[dict]:
        """One flat row per model: figures with interval bounds, size, time, speed, McNemar."""
        best = self.best()
        rows = []
        for outcome in self.outcomes:
            row = {"model": outcome.name, "init": outcome.init, "status": outcome.status,
                   "note": outcome.reason}  # fmt: skip
            if outcome.status == "done":
                m = self.metrics(outcome)
                row["n_cells"], row["n_groups"] = m["n"], m.get("n_groups")
                for key in TABLE_METRICS:
                    low, high = (m.get("intervals") or {}).get(key) or (None, None)
                    row |= {key: m[key], f"{key}_low": low, f"{key}_high": high}
                row |= {"params": outcome.params, "training_seconds": outcome.training_seconds,
                        "cells_per_second": outcome.cells_per_second}  # fmt: skip
                if best is not None and outcome is not best:
                    test = mcnemar(self.correct(best), self.correct(outcome))
                    row |= {
                        "mcnemar_vs_best_p": test["p_value"],
                        "best_only_right": test["a_only"],
                        "this_only_right": test["b_only"],
                    }
                row["best"] = outcome is best
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        """The whole result as JSON-ready values (the run folder's ``results.json``)."""
        t, y = self.tested(), self.is_blast()
        best = self.best()
        models = {}
        for o in self.outcomes:
            if o.status != "done":
                continue
            m = self.metrics(o)
            models[o.name] = {
                "metrics": m,
                "per_source": self.per_source(o),
                "roc": roc_points(y[t], o.p[t]),
                "reliability": reliability_bins(o.p[t], y[t]),
                "confusion": m["confusion"],
                "history": o.history,
                "folder": o.folder,
                "loso_extras": o.loso,
            }
        sources = sorted({r.source for r in self.records})
        return {
            "settings": self.settings.to_dict(),
            "data": self.data_description,
            "n_cells": len(self.records),
            "n_tested": int(t.sum()),
            "per_source_tested": {
                s: int(sum(k and r.source == s for r, k in zip(self.records, t, strict=True)))
                for s in sources
            },
            "protocol": self.settings.protocol,
            "folds": list(self.fold_names),
            "split": self.split_words(),
            "best": best.name if best else None,
            "seconds": self.seconds,
            "table": self.table(),
            "models": models,
        }

    def split_words(self) -> str:
        if self.settings.protocol == "leave_one_source_out":
            sources = ", ".join(self.fold_names) or "none"  # ALL-IDB1 and 2 share fields: one
            return (f"leave one source out: each source ({sources}) tested by a model trained "
                    "on the others, validated on 20% of the others' groups")  # fmt: skip
        return "grouped within each source " + (
            "(70/10/20 of groups)" if self.settings.folds == 1
            else f"({self.settings.folds} folds: test one part, validate on the next)")  # fmt: skip

    def predictions_csv(self) -> str:
        """Per cell: path, group, source, label, fold, then each model's probability."""
        done = [o for o in self.outcomes if o.status == "done"]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "group", "source", "label", "fold", *(f"p_{o.name}" for o in done),
                         *(f"threshold_{o.name}" for o in done)])  # fmt: skip
        for i, r in enumerate(self.records):
            if self.fold_of[i] < 0:
                continue
            writer.writerow([r.path, bank_group(r), r.source, r.label, int(self.fold_of[i]),
                             *(f"{o.p[i]:.5f}" for o in done),
                             *(f"{o.thresholds[i]:.4f}" for o in done)])  # fmt: skip
        return buffer.getvalue()

    def write(self, run_dir: Path) -> dict:
        """Write ``results.json``, ``comparison.csv`` and ``predictions.csv``, each atomically.

        Returns:
            The results written (:meth:`to_dict`).
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        results = self.to_dict()
        write_text_atomic(run_dir / PREDICTIONS_FILE, self.predictions_csv())
        write_text_atomic(run_dir / TABLE_FILE, table_csv(results["table"]))
        write_text_atomic(run_dir / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
        return results
