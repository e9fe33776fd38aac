"""The printable case report: one self-contained HTML page.

The page carries inline CSS with a print stylesheet and images as data URIs, so it can be saved,
mailed or printed as it is. Every string that came from a user or a file is escaped. Like the
machine-readable exports (:mod:`leukemia_core.case_export`), it says what the model labelled and
what the reviewer decided.
"""

from __future__ import annotations

import re
from collections import Counter

from leukemia_core.calibration import calls_in_words
from leukemia_core.case_record import REVIEW_ACTIONS, CaseRecord
from leukemia_core.counting import (
    INVESTIGATE_PERCENT,
    MANUAL_DIFFERENTIAL_CELLS,
    WHO_ACUTE_LEUKEMIA_PERCENT,
    CellLabel,
    interval_text,
    percent_text,
    provisional_text,
    review_changes_text,
)
from leukemia_core.pressed import field_notes_now
from leukemia_core.report_cells import cells_section
from leukemia_core.report_cells import html_text as _e
from leukemia_core.report_signoff import (
    altered_box,
    minute_words,
    page_css,
    sign_off_section,
    signed_and_current,
    status_words,
)
from leukemia_core.report_style import REPORT_CSS
from leukemia_core.store_rows import minute_text
from leukemia_core.types import (
    AUDIT_LABEL_WORDS,
    LABEL_WORDS,
    MODE_CELLS,
    NO_REVIEW_LABELS,
    BlastCount,
)

RESEARCH_USE_STATEMENT = (
    "Research use only — not for diagnosis. The counts in this report are decision support for "
    "trained laboratory staff and must be confirmed by a hematologist."
)


def _result_words(record: CaseRecord) -> str:
    count = record.counts()
    if count.percent is None:
        waiting = " yet" if record.n_unreviewed else ""
        result = f"no result: no cell counted{waiting} ({len(record.cells)} found)"
        result += "; the comment says why" if record.is_signed and record.comment else ""
    else:
        result = (f"{percent_text(count)} blasts (95% CI {interval_text(count)}): {count.n_blasts} of "
                  f"{count.n_counted} cells counted")  # fmt: skip
        if count.n_counted < MANUAL_DIFFERENTIAL_CELLS and not record.single_cells:
            # said at the top, beside the figure: "0.0%" of 2 cells under SIGNED read as clean
            result += (f" (too few for a reliable percentage: a manual differential counts "
                       f"{MANUAL_DIFFERENTIAL_CELLS}-200; see the reading below)")  # fmt: skip
    provisional = provisional_text(record.cells)
    return _e(result + (f"; {provisional}" if provisional else ""))


def _table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], numeric: set[int], css: str = ""
) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    table = f'<table class="{css}">' if css else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _reading(count: BlastCount) -> str:
    """The sample's reading in full, as a paragraph the width of the page (in the table's last
    column it was a narrow strip of a dozen lines on A4)."""
    hint = f'<br><span class="hint">{_e(count.hint)}</span>' if count.hint else ""
    return f'<p class="reading"><b>Reading:</b> {_e(count.interpretation)}{hint}</p>'


def _level(count: BlastCount, single_cells: bool) -> str:
    """A count's reading in a few words, for the table (the sample's full reading, under it,
    is the one to act on)."""
    if count.percent is None:
        return "no cells counted"
    if single_cells:  # hand-picked cells are no differential: the reading gives no threshold
        return "no threshold (single cells)"
    if count.percent >= WHO_ACUTE_LEUKEMIA_PERCENT:
        return f"at or above {WHO_ACUTE_LEUKEMIA_PERCENT:.0f}%"
    if count.percent >= INVESTIGATE_PERCENT:
        return f"{INVESTIGATE_PERCENT:.0f}% to {WHO_ACUTE_LEUKEMIA_PERCENT:.0f}%"
    found = "no blasts" if count.n_blasts == 0 else f"below {INVESTIGATE_PERCENT:.0f}%"
    if count.ci_high_percent is not None and count.ci_high_percent >= INVESTIGATE_PERCENT:
        # as the reading says: "no blasts" in 4 cells read as a negative screen in a walk
        return f"{found}, too few cells to rule out {INVESTIGATE_PERCENT:.0f}%"
    return found


def _count_row(
    scope: str, count: BlastCount, n_uncertain: int, single_cells: bool
) -> tuple[str, ...]:
    return (
        _e(scope),
        str(count.n_blasts),
        str(count.n_counted),
        str(n_uncertain),
        str(count.n_excluded - n_uncertain),  # as the Counts page: uncertain apart
        percent_text(count),
        interval_text(count),
        _e(_level(count, single_cells)),
    )


def _counts_section(record: CaseRecord) -> str:
    names = {f.index: f.name for f in record.fields}
    sample = record.counts()
    uncertain = Counter(c.field_index for c in record.cells if c.label == CellLabel.UNCERTAIN)
    single = record.single_cells
    rows = [_count_row("Whole sample", sample, sum(uncertain.values()), single)]
    if not single:  # one image per cell: a row each would repeat the cells section
        rows += [
            _count_row(f"Field {f.index + 1}: {names[f.index]}", count, uncertain[f.index], False)
            for f, count in zip(record.fields, record.field_counts(), strict=True)
        ]
    header = (
        "Scope",
        "Blasts",
        "Cells counted",
        "Uncertain",
        "Left out",
        "Blast %",
        "95% CI (Wilson)",
        "Level",
    )
    provisional = provisional_text(record.cells)
    note = f'<p class="unsigned">{_e(provisional)}</p>' if provisional else ""
    table = _table(header, rows, {1, 2, 3, 4, 5, 6}, css="counts")
    labels = "current labels, provisional" if provisional else "reviewed labels"
    return f"<h2>Blast count ({labels})</h2>" + note + table + _reading(sample)


def _model_vs_reviewer(record: CaseRecord) -> str:
    model, reviewer = (
        Counter(c.model_label for c in record.cells),
        Counter(c.label for c in record.cells),
    )
    rows = [
        (_e(LABEL_WORDS[label]), str(model[label.value]), str(reviewer[label.value]))
        for label in CellLabel
        if label != CellLabel.REPLACED
    ]
    model_count, reviewed = record.model_counts(), record.counts()
    rows.append(("Blast %", percent_text(model_count), percent_text(reviewed)))
    rows.append(("95% CI", interval_text(model_count), interval_text(reviewed)))
    made = (" The model's column shows the cells a reviewer's split or merge made as "
            "uncertain." if any(c.origin for c in record.cells) else "")  # fmt: skip
    # "Reviewer" over labels nobody has looked at yet read as confirmed
    now = "Now" if record.n_unreviewed else "Reviewer"
    return (
        "<h2>Model versus reviewer</h2>"
        f"<p>{_e(review_changes_text(record.cells))}{made}</p>"
        + _table(("Label", "Model", now), rows, {1, 2}, css="keep")
    )


def _research_use_box(*css: str) -> str:
    return f'<p class="{" ".join(("ruo", *css))}">{_e(RESEARCH_USE_STATEMENT)}</p>'


def _label_words(label: str | None) -> str:
    """A label as the pages name it ("Not a white cell", not ``not_wbc``)."""
    return AUDIT_LABEL_WORDS.get(label, label or "")


_NOTE_CHARACTERS = 300  # a longer note (a pasted comment) is cut: the comment is printed above


def _cell_ids_text(ids: list[int]) -> str:
    """``1–4, 7, 9–10``: a run of cells accepted in one click, in one cell of the table."""
    runs: list[list[int]] = []
    for cell_id in ids:
        if runs and cell_id == runs[-1][-1] + 1:
            runs[-1].append(cell_id)
        else:
            runs.append([cell_id])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def _audit_rows(record: CaseRecord) -> list[tuple[str, ...]]:
    """One row per audit entry, but consecutive entries that differ only in their cell (a
    page of cells accepted in one click) share one: a 300-cell case printed 16 pages of
    "accepted as labelled"."""
    groups: list[tuple[tuple, list[int]]] = []
    for a in record.audit:
        same = (minute_text(a.at), a.reviewer, a.action, a.field_index, a.from_label,
                a.to_label, a.note)  # fmt: skip
        if groups and a.cell_id is not None and groups[-1][0] == same and groups[-1][1]:
            groups[-1][1].append(a.cell_id)
        else:
            groups.append((same, [] if a.cell_id is None else [a.cell_id]))
    rows = []
    for (at, who, action, field_index, from_label, to_label, note), ids in groups:
        if len(note) > _NOTE_CHARACTERS:
            note = note[: _NOTE_CHARACTERS - 1] + f"… ({len(note):,} characters in the record)"
        rows.append((_e(at), _e(who or "—"), _e(action),  # the time column says UTC
                     "" if field_index is None else str(field_index + 1),
                     _e(_cell_ids_text(ids)), _e(_label_words(from_label)),
                     _e(_label_words(to_label)), _e(note)))  # fmt: skip
    return rows


def _audit_section(record: CaseRecord) -> str:
    header = ("Time (UTC)", "Who", "Action", "Field", "Cell", "From", "To", "Note")
    table = _table(header, _audit_rows(record), set(), css="audit")
    return "<h2>Audit trail</h2>" + table


def _domain_section(record: CaseRecord) -> str:
    """The out-of-domain check of the sample and its fields, in plain words."""
    if record.domain is None:
        return ("<h2>Out-of-domain check</h2><p>No domain check was made (the model has no "
                "domain reference, or the case predates the check).</p>")  # fmt: skip
    css = ' class="domain"' if record.domain.warned else ""
    warned = [f for f in record.fields if f.domain is not None and f.domain.warned]
    fields = "".join(
        f"<li>Field {f.index + 1} ({_e(f.name)}): {_e(f.domain.message)}</li>" for f in warned
    )
    listed = f"<p>Warned fields (every cell sent to review):</p><ul>{fields}</ul>" if fields else ""
    return (f"<h2>Out-of-domain check</h2><p{css}>{_e(record.domain.message)}</p>{listed}"
            "<p>Score: median over the cells of their distance to the training cells (pooled "
            "features and stain), about 1 for cells like the training data.</p>")  # fmt: skip


def _quality_section(record: CaseRecord) -> str:
    """Fields that failed a quality check (focus, stain, magnification, ...), in plain words."""
    items = "".join(f"<li>Field {f.index + 1} ({_e(f.name)}): {_e(w.message)}</li>"
                    for f in record.fields for w in f.quality)  # fmt: skip
    if not items:
        return ""
    return ('<h2>Field quality</h2><p class="domain">These fields failed a quality check; every '
            f"cell of them was sent to review:</p><ul>{items}</ul>")  # fmt: skip


def _notes_section(record: CaseRecord) -> str:
    """How each field was read (downscaled, damaged, a possible clump, ...), as the Analyze
    page said it."""
    items = "".join(f"<li>Field {f.index + 1} ({_e(f.name)}): {_e(note)}</li>" for f in record.fields
                    for note in field_notes_now(f.notes, record.field_cells(f.index)))  # fmt: skip
    return f"<h2>Field notes</h2><ul>{items}</ul>" if items else ""


def _reviewers(record: CaseRecord) -> list[str]:
    """Who reviewed cells: in this version, then in the versions it was reopened from."""
    here = sorted({a.reviewer for a in record.audit if a.action in REVIEW_ACTIONS and a.reviewer})
    return here + [f"{name} (version {version})" for version, name in record.earlier_reviewers]


def _reviewed_words(record: CaseRecord) -> str:
    """Who reviewed, and how much is left: a name alone reads as a review of every cell."""
    names = ", ".join(_reviewers(record)) or "—"
    waiting = record.n_unreviewed
    if not waiting:
        return _e(names)
    cells = sum(c.label not in NO_REVIEW_LABELS for c in record.cells)
    return _e(f"{names} ({waiting} of {cells} cells not reviewed yet)")


def _decision_words(thresholds: dict) -> str:
    """The stored decision settings in words (no raw JSON in a report)."""
    model = thresholds.get("model_calibration") or {}
    if not model:
        return "no model: every cell was labelled by the reviewer"
    calls = calls_in_words(
        *(model.get(k) for k in ("threshold", "uncertain_low", "uncertain_high"))
    )
    parts = [calls] if calls else []
    views = model.get("test_time_views")
    if views and views > 1:
        parts.append(f"each cell classified in {views} orientations, averaged")
    domain = model.get("domain") or {}
    if "threshold" in domain:
        parts.append(f"a field or sample whose cells differ from the training data (median "
                     f"domain score above {domain['threshold']:.2f}) sent to review")  # fmt: skip
    levels = thresholds.get("blast_percent_thresholds")
    if levels and thresholds.get("mode") != MODE_CELLS:
        parts.append("counts read against the " + " and ".join(f"{v:g}%" for v in levels)
                     + " blast levels")  # fmt: skip
    return "; ".join(parts) + "."


def download_stem(record: CaseRecord) -> str:
    """The start of the report's, CSV's and JSON's file names: sample, version, state and the
    case id's start (``S-12_v2_signed_1a2b3c4d``), so that a draft saved earlier is never
    taken for the signed copy and two ids that differ only in punctuation do not collide.
    Letters of any script stay; what a file system or a download dialog refuses goes."""
    state = "altered" if record.altered else "signed" if record.is_signed else "draft"
    sample = re.sub(r"[^\w.-]+", "_", record.sample_id).strip("_.-") or "case"
    return f"{sample}_v{record.version}_{state}_{record.case_id[:8]}"


def case_report_html(record: CaseRecord, *, flagged_limit: int = 48) -> str:
    """A self-contained printable HTML report of one case version.

    Args:
        record: The case, from :meth:`leukemia_core.store.CaseStore.load_case`.
        flagged_limit: Most flagged cells shown as images (0 shows none); the report says how
            many were left out.

    Returns:
        The HTML page as text (UTF-8 declared); print it from a browser for a PDF.

    Raises:
        ValueError: ``flagged_limit`` is negative or not a whole number.
    """
    if isinstance(flagged_limit, bool) or not isinstance(flagged_limit, int) or flagged_limit < 0:
        raise ValueError(
            f"flagged_limit must be a whole number of 0 or more, got {flagged_limit!r}."
        )
    parent = f" (reopened from {_e(record.parent_id)})" if record.parent_id else ""
    status_css = "signed" if signed_and_current(record) else "unsigned"
    meta = [
        ("Status", f'<span class="{status_css}">{_e(status_words(record))}</span>'),
        ("Result", _result_words(record)),
        ("Sample id", _e(record.sample_id)),
        ("Patient id", _e(record.patient_id) if record.patient_id else "—"),
        ("Case", f"version {record.version}{parent}; status {_e(record.status)}"),
        ("Created", f"{minute_words(record.created_at)} by {_e(record.created_by or '—')}"),
        ("Reviewed by", _reviewed_words(record)),
        ("Model", _e(record.model_words)),
        ("How cells were labelled", _e(_decision_words(record.thresholds))),
        ("Comment", _e(record.comment).replace("\n", "<br>") if record.comment else "—"),
        ("Details", f"case id <code>{_e(record.case_id)}</code>; model weights "
                    f"<code>{_e(record.model_checksum or '—')}</code>"),
    ]  # fmt: skip
    body = "".join(
        [
            f"<h1>Blast screening report — sample {_e(record.sample_id)}</h1>",
            _research_use_box(),
            altered_box(record),
            _table(("Item", "Value"), meta, set(), css="meta"),
            _domain_section(record),
            _quality_section(record),
            _notes_section(record),
            _counts_section(record),
            _model_vs_reviewer(record),
            cells_section(record, flagged_limit),
            _audit_section(record),
            sign_off_section(record),
            _research_use_box("closing"),  # kept with the sign-off on the printed page
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Case report {_e(record.sample_id)} v{record.version}</title>"
        f"<style>{REPORT_CSS}{page_css(record)}</style></head><body>{body}</body></html>\n"
    )
