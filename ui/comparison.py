"""Widgets and plotly figures of the Retrain page: job progress, comparison table and charts."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from train.compare_settings import SIZE_BASELINE, TABLE_METRICS
from train.compare_tables import interval_text, row_interval_text

FIRST_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auroc")
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "weighted_f1": "Weighted F1",
    "sensitivity": "Sensitivity (blast)",
    "specificity": "Specificity (normal)",
    "auroc": "AUROC",
    "ece": "ECE",
    "confident_miss_rate": "Confident misses (blasts below review)",
    "sensitivity_at_specificity_90": "Sensitivity at specificity 0.90",
}
# The settings' values in words, for the Retrain page's boxes (the values stay in the command).
# Short enough for a 170 px box at 800 px; each box's help says more.
BALANCING_WORDS = {"oversample": "Oversample", "source_class": "Even per source",
                   "class_weight": "Class weights", "none": "None"}  # fmt: skip
MISSING_WEIGHTS_WORDS = {"skip": "Skip it", "random": "Train from random weights"}
STAIN_WORDS = {"none": "None", "grey": "Grey", "cell_lab": "Colours to a reference"}
THRESHOLD_WORDS = {"sensitivity_first": "Blasts first",
                   "balanced_accuracy": "Balanced accuracy"}  # fmt: skip
STAGE_NAMES = {
    "loading": "reading and cropping cells",
    "features": "computing backbone features",
    "head": "training the head",
    "head_epoch": "training the head",
    "frozen": "training (frozen backbone)",
    "frozen_epoch": "training (frozen backbone)",
    "full": "training all layers",
    "full_epoch": "training all layers",
    "fine_tune": "fine-tuning",
    "fine_tune_epoch": "fine-tuning",
    "model": "starting the model",
    "model_done": "model finished",
}


# Under the plot, not beside it: at 800 px a legend on the right squeezed the plot.
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0}


def model_fraction(overall: float, model_index: int | None, n_models: int | None) -> float:
    """Share of the current model done, from the job's overall share (models weigh the same;
    the bar of a job's only model stayed empty while it trained)."""
    n, index = max(n_models or 1, 1), max(model_index or 1, 1)
    return min(max(overall * n - (index - 1), 0.0), 1.0)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating …"
    minutes, secs = divmod(int(seconds), 60)
    return f"about {minutes} min {secs:02d} s left" if minutes else f"about {secs} s left"


def table_frame(rows: Sequence[dict], groups: dict[str, int | None] | None = None) -> pd.DataFrame:
    """The comparison table for display: each figure with its 95% interval (``groups``: each
    model's number of test groups, which decides whether an interval can be given)."""
    shown, groups = [], groups or {}
    for row in rows:
        item = {
            "Model": row["model"] + (" ★" if row.get("best") else ""),
            "Initial weights": (row.get("init") or "—").split(",")[0],
        }  # the CSV has it all
        if row["status"] != "done":
            item["Note"] = f"{row['status']}: {row['note'].split('. ')[0]}"
            shown.append(item)
            continue
        item["Cells"] = f"{row['n_cells']:,}"
        n_groups = groups.get(row["model"])
        item |= {METRIC_NAMES[k]: row_interval_text(row, k, dash="–", groups=n_groups)
                 for k in TABLE_METRICS}  # fmt: skip
        params, speed = row.get("params"), row.get("cells_per_second")
        item["Parameters"] = None if params is None else f"{params:,}"
        item["Training s"] = f"{row['training_seconds']:.1f}"
        item["Cells/s"] = f"{speed:.1f}" if speed else None
        p = row.get("mcnemar_vs_best_p")
        item["McNemar p vs best"] = "—" if p is None else f"{p:.3g}"
        item["Note"] = "size only: a model must beat this" if row["model"] == SIZE_BASELINE else ""
        shown.append(item)
    # Figures first and the note last, whichever row comes first (a skipped model's row has
    # only a note): at 800 px the note pushed every figure out of sight.
    # The figures a lab compares first come first: at 1440 px the table ended at AUROC, at
    # 800 px at accuracy, with sensitivity out of sight.
    first = [METRIC_NAMES[k] for k in FIRST_METRICS]
    rest = [METRIC_NAMES[k] for k in TABLE_METRICS if k not in FIRST_METRICS]
    columns = ["Model", *first, "Cells", *rest, "Initial weights", "Parameters", "Training s",
               "Cells/s", "McNemar p vs best", "Note"]  # fmt: skip
    # Text throughout, "—" where a row has no figure: a column mixing numbers and dashes
    # cannot become an Arrow table, and Streamlit logged a traceback at every rerun.
    frame = pd.DataFrame(shown).reindex(columns=columns).astype(object)
    return frame.where(frame.notna(), "—").astype(str)


def roc_figure(models: dict) -> go.Figure:
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                       line={"dash": "dot", "color": "#999"})  # fmt: skip
    for name, values in models.items():
        auc = values["metrics"].get("auroc")
        label = f"{name} (AUROC {auc:.3f})" if auc is not None else name
        figure.add_scatter(x=values["roc"]["fpr"], y=values["roc"]["tpr"], mode="lines", name=label)
    figure.update_layout(title="ROC on the test cells (never trained on)",
                         xaxis_title="1 − specificity", yaxis_title="Sensitivity (blast)",
                         height=460, legend=LEGEND_BELOW)  # fmt: skip
    return figure


def reliability_figure(models: dict) -> go.Figure:
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                       line={"dash": "dot", "color": "#999"})  # fmt: skip
    for name, values in models.items():
        bins = values["reliability"]
        figure.add_scatter(x=[b["mean_p"] for b in bins], y=[b["blast_share"] for b in bins],
                           mode="lines+markers", name=name,
                           text=[f"{b['n']} cells" for b in bins])  # fmt: skip
    figure.update_layout(title="Reliability (calibrated blast probability)",
                         xaxis_title="Mean predicted blast probability",
                         yaxis_title="Observed blast share", height=460,
                         legend=LEGEND_BELOW)  # fmt: skip
    return figure


def confusion_figure(name: str, confusion: dict) -> go.Figure:
    z = [[confusion["blast_called_blast"], confusion["blast_called_normal"]],
         [confusion["normal_called_blast"], confusion["normal_called_normal"]]]  # fmt: skip
    figure = go.Figure(go.Heatmap(z=z, x=["called blast", "called normal"],
                                  y=["blast", "normal"], colorscale="Purples", showscale=False,
                                  text=z, texttemplate="%{text}"))  # fmt: skip
    figure.update_layout(title=name, height=260, margin={"t": 40, "b": 10},
                         yaxis={"autorange": "reversed"})  # fmt: skip
    return figure


def curves_figure(curves: dict[str, list[dict]], metric: str = "loss") -> go.Figure:
    """Training (solid) and validation (dashed) ``metric`` per epoch, one colour per model/fold."""
    figure = go.Figure()
    for name, rows in curves.items():
        runs: dict[tuple, list[dict]] = {}
        for row in rows:
            runs.setdefault((row.get("fold"), row.get("phase")), []).append(row)
        for (fold, phase), points in runs.items():
            label = f"{name} fold {fold} {phase or ''}".strip()
            for key, dash in ((metric, "solid"), (f"val_{metric}", "dash")):
                if any(key in p for p in points):
                    figure.add_scatter(
                        x=[p.get("epoch") for p in points if key in p],
                        y=[p[key] for p in points if key in p], mode="lines+markers",
                        name=f"{label} {'validation' if key.startswith('val') else 'training'}",
                        line={"dash": dash},
                    )  # fmt: skip
    figure.update_layout(title=f"{metric.capitalize()} per epoch", xaxis_title="Epoch",
                         yaxis_title=metric, height=420, legend=LEGEND_BELOW)  # fmt: skip
    figure.update_xaxes(tickformat="d")  # whole epochs: a short run had ticks at 0.5
    return figure


def per_source_frame(models: dict) -> pd.DataFrame:
    """Every model's figures on each source (under LOSO: the source it never saw), with 95%
    intervals by group where the run computed them."""
    rows = []
    for name, values in models.items():
        for source, m in values["per_source"].items():
            row = {"Model": name, "Source": source, "Cells": m["n"],
                   "Groups": m.get("n_groups")}  # fmt: skip
            for key in ("balanced_accuracy", "sensitivity", "specificity", "auroc",
                        "confident_miss_rate", "sensitivity_at_specificity_90"):  # fmt: skip
                row[METRIC_NAMES.get(key, key)] = interval_text(m, key, dash="–")
            rows.append(row)
    return pd.DataFrame(rows)
