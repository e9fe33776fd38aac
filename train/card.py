"""The model card (``card.md``) of a model folder, rendered from its config and metrics."""

from __future__ import annotations

import json
from pathlib import Path

from leukemia_core.outputs import write_text_atomic
from train.adapt import VARIANT_WORDS
from train.compare_tables import interval_text

RESEARCH_USE = (
    "**Research use only.** This model supports, and never replaces, a qualified person "
    "reviewing every cell. It is not a medical device and must not be used for diagnosis."
)
LICENSES = {
    "allidb1": "ALL-IDB1 (Labati, Piuri, Scotti, ICIP 2011; research use, no redistribution)",
    "allidb2": "ALL-IDB2 (same source; masks by Loddo & Putzu, MIT)",
    "cnmc": "C-NMC 2019 (SBILab, IIIT-Delhi / AIIMS; CC BY 3.0)",
    "pbc": "PBC normal cells (Acevedo et al., Data in Brief 30, 2020; CC BY 4.0)",
    "bccd": "BCCD (Shenggan/BCCD_Dataset; MIT)",
    "zheng": "Zheng et al., Micron 107, 2018 (GPL-3.0 repository; Jiangxi Tecom)",
    "deepapl": "deepapl CellaVision cells (Sidhom et al., npj Precision Oncology 5, 38, 2021; "
    "Johns Hopkins, no open licence: research use only, never redistributed)",
}


HELD_OUT_SUFFIX = "_held_out"  # metrics.json keys of held-out single-cell figures


def held_out_sections(metrics: dict) -> list[str]:
    """Keys of ``metrics`` measured on held-out data with the model's current calibration."""
    return [k for k in metrics if k in ("smears", "normals") or k.endswith(HELD_OUT_SUFFIX)]


def record_figures(folder: Path, sections: dict) -> None:
    """Store held-out figures in a model folder's ``metrics.json`` and re-render its card.

    Args:
        folder: The model folder.
        sections: ``metrics.json`` key -> figures (see :func:`held_out_sections`).
    """
    config = json.loads((folder / "config.json").read_text())
    path = folder / "metrics.json"
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it from the model's "
                         "source, or delete it to start a new one.") from error  # fmt: skip
    metrics = {**stored, **sections}
    card = model_card(folder.name, config, metrics)  # rendered before anything is written
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(folder / "card.md", card)


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell_table(rows: dict[str, dict]) -> list[str]:
    keys = ("accuracy", "balanced_accuracy", "weighted_f1", "sensitivity", "specificity", "auroc")
    lines = ["| set | n | " + " | ".join(keys) + " | ECE | confident misses |",
             "|---" * (len(keys) + 4) + "|"]  # fmt: skip
    for name, m in rows.items():
        cells = [interval_text(m, k) for k in keys]
        lines.append(f"| {name} | {m.get('n')} | " + " | ".join(cells)
                     + f" | {_fmt(m.get('ece'))} | {interval_text(m, 'confident_miss_rate')} |")  # fmt: skip
    return lines


def _views_words(views: int) -> str:
    if views == 1:
        return "Each cell is classified once, as cropped."
    what = "4 quarter turns" if views == 4 else "4 quarter turns and their mirror images"
    return (
        f"Test-time views: the logits are averaged over the cell's {what} ({views} forward "
        "passes) before calibration (a cell has no up or down)."
    )


def _recalibrated(training: dict) -> str:
    done = training.get("recalibrated")
    if not done:
        return ""
    data = f" on {done['data']}" if done.get("data") else ""
    return (
        f" Re-fitted {done.get('date', '')[:10]} with `python -m train calibrate`{data} "
        f"({done['coverage']['val']['cells']} validation cells; weights unchanged)."
    )


ADAPTED_NOTE = " Re-fitted on a lab's own cells (see Adapted to a lab)."


def _adapted(training: dict) -> list[str]:
    """The section of a version made by ``python -m train adapt`` (none for other models)."""
    done = training.get("adapted")
    if not done:
        return []
    counts, check = done["counts"], done["check"]
    data = f" ({done['data']})" if done.get("data") else ""
    what = VARIANT_WORDS.get(done.get("variant"), done.get("variant"))
    keys = ("balanced_accuracy", "sensitivity", "specificity", "ece", "confident_miss_rate")
    rows = [f"| {side} | {check[key]['n']} | " + " | ".join(_fmt(check[key][k]) for k in keys)
            + " |" for side, key in (("before (base model)", "before"), ("after", "after"))]  # fmt: skip
    return [
        "## Adapted to a lab",
        f"Adapted {done.get('date', '')[:10]} from `{done['base']}` (weights sha256 "
        f"{done['base_sha256'][:12]}...) with `python -m train adapt` on {counts['cells']} "
        f"labelled cells ({counts['per_class']['blast']} blasts, "
        f"{counts['per_class']['normal']} normal) of {counts['groups']} samples{data}; "
        f"{what}. Grouped internal check on these cells (each scored by a fit without its "
        f"sample; {check['folds']} folds):",
        "",
        "| | n | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
        *rows,
        "",
        "Confident miss: a blast below the review band (counted normal without review). This "
        "version has no held-out test figures of its own: measure it on samples of this lab "
        "that were not used here before relying on it.",
        "",
    ]


def model_card(name: str, config: dict, metrics: dict) -> str:
    """Markdown card: intended use, data and licenses, training, evaluation, limits."""
    training = config.get("training", {})
    fit = training.get("fit", {})
    calibration = config.get("calibration", {})
    sources = sorted((training.get("data_summary") or {}).get("per_source", {}))
    # Hand-written words kept across re-renders, where a model's own history differs from what
    # the code now does (v2's split tore a smear run, so its ALL-IDB figures were withdrawn).
    notes = metrics.get("card_notes") or {}
    lines = [
        f"# Model card: `{name}`",
        "",
        RESEARCH_USE,
        "",
        "## Intended use",
        "Pre-classifies white blood cells found in stained peripheral-blood smear images as "
        "leukemic blast (ALL) or normal, so that a reviewer can confirm or correct every cell "
        "and the blast percentage can be counted. Cells the model is unsure about are sent to "
        "review (the uncertain band below) instead of being counted.",
        "",
        "## Model",
        f"- Architecture: `{config.get('architecture')}` at {config.get('input_size')} px, "
        f"preprocessing `{config.get('preprocessing')}`; initial weights: "
        f"`{fit.get('weights')}`.",
        f"- Training: {training.get('mode') or _training_words(fit)}",
        f"- Calibration (fitted on the validation split): temperature "
        f"{_fmt(calibration.get('temperature'))}, decision threshold "
        f"{_fmt(calibration.get('threshold'), 2)}, uncertain band "
        f"[{_fmt(calibration.get('uncertain_low'), 2)}, "
        f"{_fmt(calibration.get('uncertain_high'), 2)}).{_recalibrated(training)}"
        f"{ADAPTED_NOTE if training.get('adapted') else ''}",
        f"- {_views_words(config.get('test_time_views', 1))}",
        f"- Grad-CAM layer: `{config.get('gradcam_layer')}`.",
        "",
        "## Data",
        training.get("data") or "See config.json.",
        "",
        *[f"- {LICENSES.get(s, s)}" for s in sources],
        "",
        f"Split: {training.get('split', 'n/a')}. "
        + notes.get(
            "split",
            "No group (subject, smear field block or file) is on two sides, and "
            "no ALL-IDB1 smear run (a split re-used with --split-from that tore one is "
            "refused).",
        ),
        "",
        *_adapted(training),
        "## Evaluation on the held-out test groups",
        " ".join(
            ("Figures with 95% bootstrap intervals over groups.", notes.get("test", ""))
        ).strip(),
        "",
        *_cell_table(
            {"all test cells": metrics.get("test", {}), **metrics.get("test_per_source", {})}
        ),
        "",
        f"Share of test cells in the uncertain band: {_fmt(metrics.get('test_uncertain_fraction'))}.",
    ]
    held_out_cells = [k for k in metrics if k.endswith(HELD_OUT_SUFFIX)]
    if held_out_cells:
        lines += ["", "## Held-out single cells", "",
                  *([notes["held_out_cells"], ""] if "held_out_cells" in notes else []),
                  *_cell_table({k[: -len(HELD_OUT_SUFFIX)]: metrics[k] for k in held_out_cells})]  # fmt: skip
        lines += [f"- {k[: -len(HELD_OUT_SUFFIX)]}: {note}"  # e.g. intervals from few patients
                  for k in held_out_cells for note in metrics[k].get("notes", [])]  # fmt: skip
    for title, key in (("Whole fields (ALL-IDB1, held-out fields)", "smears"),
                       ("Normal cells (false blasts)", "normals"),
                       ("Comparison", "comparison")):  # fmt: skip
        if metrics.get(key) or key in notes:
            lines += ["", f"## {title}", "", notes.get(key) or _block(metrics[key])]
    for title, text in (metrics.get("card_sections") or {}).items():  # hand-written, kept
        lines += ["", f"## {title}", "", text]
    limits = _limits(sources, notes.get("limits"))
    lines += ["", "## Known limits", *[f"- {x}" for x in limits], "", RESEARCH_USE, ""]
    return "\n".join(lines)


def _training_words(fit: dict) -> str:
    if fit.get("cached_features"):
        phase = (f"frozen backbone, head trained on cached features of {fit.get('feature_views')} "
                 "augmented views per cell")  # fmt: skip
    elif fit.get("weights") is None:
        phase = "all layers from random initialisation"
    else:
        phase = "frozen backbone, then the head"
    tune = fit.get("fine_tune_epochs")
    tune_words = (
        f", then {tune} fine-tuning epochs of the top {fit.get('fine_tune_layers')} layers"
        if tune
        else ""
    )
    return (f"{phase}{tune_words}; Adamax lr {fit.get('learning_rate')}, batch "
            f"{fit.get('batch_size')}, up to {fit.get('epochs')} epochs with early stopping "
            f"(patience {fit.get('patience')}); balancing: {fit.get('balance')}; augmentation: "
            f"{'on' if fit.get('augment') else 'off'}; seed {fit.get('seed')}.")  # fmt: skip


def _block(value) -> str:
    if isinstance(value, str):
        return value
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            continue
        if key == "notes":  # what the command said of its figures, each on its own line
            lines += [f"- note: {note}" for note in item]
            continue
        if isinstance(item, list) and len(item) == 2 and all(isinstance(v, float) for v in item):
            item = f"{_fmt(item[0])}-{_fmt(item[1])}"  # a 95% interval
        lines.append(f"- {key}: {_fmt(item) if isinstance(item, float) else item}")
    return "\n".join(lines)


BLAST_SOURCE_WORDS = {
    "allidb": "ALL-IDB (lymphoblasts; one lab, two cameras)",
    "cnmc": "a handful of C-NMC cells (lymphoblasts)",
    "deepapl": "deepapl (myeloid blasts of AML/APL patients; another lab's CellaVision)",
}
NORMAL_ONLY_SOURCES = ("pbc", "bccd", "zheng")  # public sets of normal blood only


def _limits(sources: list[str], allidb_words: str | None = None) -> list[str]:
    """What the card warns about, from the sources the model was trained on (a lab's own set
    gets no words about public datasets it never saw); ``allidb_words`` replace the ALL-IDB1
    grouping item."""
    named = {"allidb" if s in ("allidb1", "allidb2") else s for s in sources}
    blast_sources = [BLAST_SOURCE_WORDS.get(s, f"{s} (this lab's own labels)")
                     for s in sorted(named) if s not in NORMAL_ONLY_SOURCES]  # fmt: skip
    limits = [
        f"Blasts in the training data come from {', '.join(blast_sources) or 'no source'}; "
        "blasts from other labs, stains or scanners may be scored lower. Check per-source "
        "figures (and the leave-one-source-out table, where there is one) on your own data "
        "before relying on it.",
        f"Normal cells come from {'one source' if len(named) == 1 else 'several sources'}; "
        "hematogones, reactive lymphocytes and other blast mimics are barely represented, so "
        "expect false blasts among them.",
        "Trained on cells cut out by this app's segmentation; cells the segmentation fuses or "
        "splits are classified as the piece it found.",
    ]
    if "allidb1" in sources:
        limits.append(allidb_words or (
            "ALL-IDB1 fields carry no patient ids; the split keeps each smear run (blocks of "
            "consecutive field numbers, parted where an ALL field meets a healthy one) on one "
            "side, a proxy: two runs may still come from one patient."))  # fmt: skip
    return limits
