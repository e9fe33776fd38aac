"""The comparison's tables as text: CSV of the flat rows, Markdown with 95% intervals."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from train.compare_settings import SIZE_BASELINE
from train.evaluate.metrics import INTERVAL_CLASSES

SOURCE_COLUMNS = ("sensitivity", "specificity", "auroc", "ece", "confident_miss_rate")


def table_csv(rows: Sequence[dict]) -> str:
    """The comparison table as CSV (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def comparison_markdown(rows: Sequence[dict]) -> str:
    """The table as Markdown: figures with 95% intervals, params, time, speed, McNemar p."""
    keys = ("balanced_accuracy", "weighted_f1", "sensitivity", "specificity", "auroc", "ece")
    lines = ["| model | init | n | " + " | ".join(keys) + " | params | train s | cells/s | "
             "McNemar p vs best |", "|---" * (len(keys) + 7) + "|"]  # fmt: skip
    for row in rows:
        if row["status"] != "done":
            note = row["note"].split(". ")[0]  # the first sentence; the CSV holds all of it
            lines.append(f"| {row['model']} | {row['status']}: {note} |"
                         + " |" * (len(keys) + 5))  # fmt: skip
            continue
        cells = [row_interval_text(row, k) for k in keys]
        p = row.get("mcnemar_vs_best_p")
        lines.append(
            f"| {row['model']}{' (best model)' * bool(row.get('best'))} | {row['init']} | "
            f"{row['n_cells']} | " + " | ".join(cells) + f" | {_count(row.get('params'))} | "
            f"{row['training_seconds']:.0f} | {_num(row.get('cells_per_second'), 1)} | "
            f"{'-' if p is None else f'{p:.3g}'} |"
        )
    return "\n".join(lines)


def per_source_markdown(per_source: dict[str, dict[str, dict]]) -> str:
    """Per model and source unit (left out, under LOSO): figures with 95% group intervals.

    Args:
        per_source: Model -> source -> :func:`train.evaluate.metrics.binary_metrics` result.

    Sources with one class report what they can (a normal-only source: specificity);
    ``sens@spec0.90`` is the ROC's best sensitivity at specificity >= 0.90.
    """
    lines = ["| model | source | cells (blasts) | groups | " + " | ".join(SOURCE_COLUMNS)
             + " | sens@spec0.90 |", "|---" * (len(SOURCE_COLUMNS) + 5) + "|"]  # fmt: skip
    for model, sources in per_source.items():
        for source, m in sources.items():
            blasts = m["confusion"]["blast_called_blast"] + m["confusion"]["blast_called_normal"]
            cells = [interval_text(m, k) for k in SOURCE_COLUMNS]
            lines.append(f"| {model} | {source} | {m['n']} ({blasts}) | "
                         f"{m.get('n_groups', '-')} | " + " | ".join(cells)
                         + f" | {_num(m.get('sensitivity_at_specificity_90'))} |")  # fmt: skip
    return "\n".join(lines)


def interval_text(metrics: dict, key: str, dash: str = "-") -> str:
    """``value (low-high)`` of a figure of a metrics dict with ``intervals``, or the value;
    "interval n/a" when its ``n_groups`` is below 2 (as :func:`row_interval_text` says)."""
    if text := _one_group_text(metrics.get(key), metrics.get("n_groups")):
        return text
    value, groups = metrics.get(key), metrics.get("class_groups") or {}
    thin = [f"{groups[c]} {c} group" for c in INTERVAL_CLASSES.get(key, ()) if groups.get(c, 2) < 2]
    if thin and value is not None:
        return f"{_num(value)} (interval n/a: {', '.join(thin)})"
    return _figure(value, (metrics.get("intervals") or {}).get(key), dash)


def row_interval_text(row: dict, key: str, dash: str = "-", groups: int | None = None) -> str:
    """``value (low-high)`` of a figure of a flat table row (``<key>_low``, ``<key>_high``);
    with one test group a bootstrap over groups has no spread to give: "interval n/a"."""
    if text := _one_group_text(row.get(key), groups):
        return text
    low = row.get(f"{key}_low")
    return _figure(row.get(key), None if low is None else (low, row.get(f"{key}_high")), dash)


def _one_group_text(value: float | None, groups: int | None) -> str | None:
    """With fewer than 2 test groups a bootstrap over groups has no spread to give."""
    if groups is None or groups >= 2 or value is None:
        return None
    return f"{_num(value)} (interval n/a: {groups} test group)"


def _figure(value, interval, dash: str) -> str:
    text = _num(value)
    return f"{text} ({_num(interval[0])}{dash}{_num(interval[1])})" if interval else text


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _count(value) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f} M" if value >= 1e5 else str(value)


MIN_TEST_GROUPS = 5
"""With fewer test groups (subjects, field blocks) a comparison cannot tell models apart."""


def test_groups(results: dict, model: str) -> int | None:
    """How many groups the model's test cells came from (None when the run does not say)."""
    return ((results.get("models") or {}).get(model) or {}).get("metrics", {}).get("n_groups")


def promotion_refusals(results: dict, model: str) -> list[str]:
    """Why ``model`` of a finished comparison must not become the lab's active model (empty
    when it may): its test cells lacked a class, so how it calls that class was never measured;
    it calls (nearly) every test cell one class, so every analysis would read about 0% or 100%
    blasts whatever the smear; it ranks cells no better than chance; it does no better than the
    cell's area alone; or its figures rest on fewer than :data:`MIN_TEST_GROUPS` test groups,
    which cannot show that it works (a review promoted one of AUROC 0.22 tested on one subject
    through a warning, and every new analysis of the lab used it)."""
    row = {row["model"]: row for row in results["table"]}[model]
    sensitivity, specificity = row.get("sensitivity"), row.get("specificity")
    if missing := unmeasured_classes(results, model):
        return [f"its test cells hold no {' or '.join(missing)} cell, so how it calls them was "
                "never measured: label cells of that class from more subjects"]  # fmt: skip
    refusals = []
    if min(sensitivity, specificity) < 0.05:
        called = "blast" if sensitivity > specificity else "normal"
        refusals.append(f"it calls (nearly) every test cell {called} (sensitivity "
                        f"{sensitivity:.2f}, specificity {specificity:.2f})")  # fmt: skip
    auroc = row.get("auroc")
    if auroc is not None and auroc <= 0.5:
        refusals.append(f"it ranks test cells no better than chance (AUROC {auroc:.2f})")
    if beaten_by := size_baseline_not_beaten(results, model):
        ours, theirs = beaten_by
        refusals.append(f"it does not beat the size-only baseline (balanced accuracy {ours:.3f} "
                        f"against {theirs:.3f}): it may have learned no more than cell size")  # fmt: skip
    groups = test_groups(results, model)
    if groups is not None and groups < MIN_TEST_GROUPS:
        refusals.append(
            f"its figures rest on {groups} test group(s) (subjects or field blocks), too few to "
            f"show that it works: label cells of more subjects (at least {MIN_TEST_GROUPS} on "
            "the test side)"
        )
    return refusals


def unmeasured_classes(results: dict, model: str) -> list[str]:
    """The classes (``blast``, ``normal``) whose calls ``model``'s test never measured: its
    test cells held none. No typed reason overrides that refusal; the others it may."""
    row = {row["model"]: row for row in results["table"]}[model]
    return [side for side, key in (("blast", "sensitivity"), ("normal", "specificity"))
            if row.get(key) is None]  # fmt: skip


def size_baseline_not_beaten(results: dict, model: str) -> tuple[float, float] | None:
    """``(its balanced accuracy, the size-only baseline's)`` when ``model`` does no better than
    the cell's area alone, else None (also when either figure is missing)."""
    rows = {row["model"]: row for row in results["table"]}
    ours = (rows.get(model) or {}).get("balanced_accuracy")
    theirs = (rows.get(SIZE_BASELINE) or {}).get("balanced_accuracy")
    return (ours, theirs) if ours is not None and theirs is not None and ours <= theirs else None


def promotion_concerns(results: dict, model: str, *, has_domain_reference: bool) -> list[str]:
    """What a model administrator should weigh before promoting a model that
    :func:`promotion_refusals` lets through (empty when nothing stands out)."""
    concerns = []
    # Fewer test groups in all, and the size-only baseline, are refusals (above); many
    # one-cell groups of a normal-only source can still hide a source of few groups.
    per_source = ((results.get("models") or {}).get(model) or {}).get("per_source") or {}
    few = sorted(f"{source} ({m['n_groups']})" for source, m in per_source.items()
                 if m.get("sensitivity") is not None and m.get("n_groups") is not None
                 and m["n_groups"] < MIN_TEST_GROUPS)  # fmt: skip
    if few:
        concerns.append(
            f"its blast figures on {', '.join(few)} rest on fewer than {MIN_TEST_GROUPS} "
            "test groups: add labelled cells from more subjects of that source"
        )
    if not has_domain_reference:
        concerns.append(
            "it has no out-of-domain reference, so the Analyze page cannot warn about cells "
            "unlike its training cells (`python -m train domain NAME --data ...` adds one)"
        )
    return concerns
