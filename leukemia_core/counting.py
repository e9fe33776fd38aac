"""Blast percentage, its Wilson interval, and a plain-language reading against thresholds.

The reading is decision support for laboratory staff: it says where the count stands against
the 5% and 20% blast levels and when the count is too small to say so with confidence. The
interval itself is computed in :mod:`leukemia_core.wilson`.

Example:
    >>> result = count_blasts(n_blasts=1, n_counted=200)
    >>> round(result.percent, 1)
    0.5
    >>> result.hint is None
    True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from leukemia_core.types import NO_REVIEW_LABELS, BlastCount, Cell, CellLabel
from leukemia_core.wilson import as_count, cells_needed, straddles, wilson_interval

INVESTIGATE_PERCENT = 5.0
"""Blasts in peripheral blood at or above this level call for investigation / hematology review."""

WHO_ACUTE_LEUKEMIA_PERCENT = 20.0
"""WHO blast threshold for acute leukemia (marrow or blood); needs a hematologist's confirmation."""

THRESHOLDS_PERCENT = (INVESTIGATE_PERCENT, WHO_ACUTE_LEUKEMIA_PERCENT)


def percent_figure(percent: float, limits: Iterable[float] = ()) -> str:
    """``percent`` to one decimal, or to as many more as keep it on its side of the 5% and 20%
    levels and of any of a lab's own ``limits``: 10 of 201 cells (4.975%) reads "4.98", never
    "5.0" beside "under 5%"."""
    if not math.isfinite(percent):
        return repr(float(percent))
    thresholds = (*THRESHOLDS_PERCENT, *limits)
    for decimals in range(1, 10):
        text = f"{percent:.{decimals}f}"
        if all((float(text) >= t) == (percent >= t) for t in thresholds):
            return text
    return repr(float(percent))


def blast_percent_figure(percent: float, limits: Iterable[float] = ()) -> str:
    """A sample's or field's blast percentage as :func:`percent_figure` prints it, kept below
    the next whole percent too (a lab's levels are whole numbers, and may be set after a case
    was signed): 24 of 241 (9.959%) reads "9.96", never "10.0" beside a one-signer sign-off at
    a 10% second-signer level.

    >>> blast_percent_figure(100 * 24 / 241), blast_percent_figure(12.5)
    ('9.96', '12.5')
    """
    whole = (math.ceil(percent),) if math.isfinite(percent) else ()
    return percent_figure(percent, (*limits, *whole))


def percent_text(count: BlastCount) -> str:
    """The blast percentage as the app and the report print it ("—" when nothing was counted)."""
    return "—" if count.percent is None else f"{blast_percent_figure(count.percent)}%"


def interval_text(count: BlastCount) -> str:
    """The 95% interval as the app and the report print it ("4.1–9.8%"; "—" when none)."""
    if count.ci_low_percent is None or count.ci_high_percent is None:
        return "—"
    return f"{percent_figure(count.ci_low_percent)}–{percent_figure(count.ci_high_percent)}%"


def needs_second_signer(percent: float | None, limit: float | None) -> bool:
    """Whether a lab's second-signer level (``limit``, percent; None: one signer) asks for a
    second signature at this blast ``percent`` (None: nothing counted, no blast level)."""
    return limit is not None and percent is not None and percent >= limit


MANUAL_DIFFERENTIAL_CELLS = 100
"""A manual differential counts 100-200 white cells; fewer than this gets a hint."""


def _reading(percent: float, n_blasts: int, n_counted: int, high_percent: float) -> str:
    cells = "white cell" if n_counted == 1 else "white cells"
    count = f"{blast_percent_figure(percent)}% blasts ({n_blasts} of {n_counted} {cells} counted)"
    if percent >= WHO_ACUTE_LEUKEMIA_PERCENT:
        return (
            f"{count}: at or above the {WHO_ACUTE_LEUKEMIA_PERCENT:.0f}% blast threshold the WHO "
            "uses for acute leukemia (blood or bone-marrow counts). A screening count, not a "
            "diagnosis: confirm by morphology of the smear and flow cytometry."
        )
    if percent >= INVESTIGATE_PERCENT:
        return (
            f"{count}: at or above the {INVESTIGATE_PERCENT:.0f}% level at which blasts in "
            "peripheral blood call for investigation (smear review, flow cytometry). Below the "
            f"{WHO_ACUTE_LEUKEMIA_PERCENT:.0f}% WHO threshold for acute leukemia."
        )
    found = "no blasts found" if n_blasts == 0 else f"under {INVESTIGATE_PERCENT:.0f}%"
    if high_percent >= INVESTIGATE_PERCENT:  # "below" would reassure more than the count can
        return (
            f"{count}: {found}, but too few cells to rule out the {INVESTIGATE_PERCENT:.0f}% "
            f"level that calls for investigation (the 95% interval reaches {percent_figure(high_percent)}%)."
            + (" Review the cells marked as blasts." if n_blasts else "")
        )
    if n_blasts == 0:
        return (
            f"{count}: no blasts found; below the {INVESTIGATE_PERCENT:.0f}% level that calls "
            "for investigation."
        )
    return (
        f"{count}: below the {INVESTIGATE_PERCENT:.0f}% level that calls for investigation. "
        "Blasts are not normally seen in blood, so review the cells marked as blasts."
    )


def _more_cells_text(n_blasts: int, n_counted: int, threshold: float) -> str:
    needed = cells_needed(n_blasts, n_counted, threshold)
    if needed is None:
        return (
            f"the estimate sits on the {threshold:.0f}% threshold, so more cells will not settle "
            "it on their own; ask a hematologist to review"
        )
    return (
        f"at the current proportion about {needed - n_counted} more cells ({needed} in total) "
        f"would settle the {threshold:.0f}% threshold"
    )


def _review_text(n_blasts: int, n_counted: int, n_uncertain: int) -> str:
    if n_uncertain == 1:
        text = "1 uncertain cell awaits review and is left out of the count until labelled."
    else:
        text = (
            f"{n_uncertain} uncertain cells await review and are left out of the count "
            "until labelled."
        )
    total = n_counted + n_uncertain
    lowest = 100.0 * n_blasts / total
    highest = 100.0 * (n_blasts + n_uncertain) / total
    crossed = [t for t in THRESHOLDS_PERCENT if lowest < t <= highest]
    if crossed:
        names = " and ".join(f"{t:.0f}%" for t in crossed)
        text += (
            f" Depending on them the result lies between {percent_figure(lowest)}% and "
            f"{percent_figure(highest)}%, "
            f"across the {names} threshold{'s' if len(crossed) > 1 else ''}."
        )
    return text


def _hint(
    n_blasts: int, n_counted: int, low_percent: float, high_percent: float, n_uncertain: int
) -> str | None:
    parts = []
    # One number to act on first (a walk read three: 69, 12 and 96 more); a threshold's own
    # arithmetic only where it asks for more than the 100 cells a differential counts.
    few = n_counted < MANUAL_DIFFERENTIAL_CELLS
    if few:
        parts.append(
            f"Count more cells: at least {MANUAL_DIFFERENTIAL_CELLS - n_counted} more. Only "
            f"{n_counted} white {'cell was' if n_counted == 1 else 'cells were'} counted, and a "
            "manual differential counts 100-200: analyse more fields of the smear (the Analyze "
            "page of the app adds them to a saved case; a signed case is reopened first)."
        )
    straddled = [t for t in THRESHOLDS_PERCENT if straddles(low_percent, high_percent, t)]
    if straddled:
        names = " and ".join(f"{t:.0f}%" for t in straddled)
        details = "; ".join(
            _more_cells_text(n_blasts, n_counted, t) for t in straddled
            if not few or (cells_needed(n_blasts, n_counted, t) or 0) > MANUAL_DIFFERENTIAL_CELLS
        )  # fmt: skip
        interval = (f"the 95% interval ({percent_figure(low_percent)}% to "
                    f"{percent_figure(high_percent)}%) spans the {names} "
                    f"threshold{'s' if len(straddled) > 1 else ''}")  # fmt: skip
        interval += f"; {details}." if details else "."
        parts.append(interval[0].upper() + interval[1:] if few else f"Count more cells: {interval}")
    if n_uncertain:
        parts.append(_review_text(n_blasts, n_counted, n_uncertain))
    return " ".join(parts) or None


def count_blasts(
    n_blasts: int,
    n_counted: int,
    n_excluded: int = 0,
    *,
    n_uncertain: int = 0,
    n_unreviewed: int = 0,
    single_cells: bool = False,
) -> BlastCount:
    """Blast percentage with its 95% Wilson interval and a plain-language reading.

    The reading uses the point estimate against :data:`INVESTIGATE_PERCENT` and
    :data:`WHO_ACUTE_LEUKEMIA_PERCENT`; the hint asks for more cells when the interval spans a
    threshold (with an estimate of how many) or fewer than 100 cells were counted, and reports
    uncertain cells awaiting review.

    Args:
        n_blasts: Cells counted as blasts.
        n_counted: White cells counted (blasts + normal), the denominator.
        n_excluded: Cells left out of the denominator (border, not a white cell, excluded).
        n_uncertain: Cells awaiting review; they are added to ``n_excluded`` of the result and
            named in the hint, never counted silently.
        n_unreviewed: Cells no person has reviewed yet: the reading starts "With N cells still
            to review", so the model's threshold reading never reads as a reviewed result.
        single_cells: The cells are single-cell images picked by hand, not every cell of
            smear fields: their percentage is not a differential, so the reading gives no
            threshold and the hint asks for no more cells.

    Returns:
        A :class:`BlastCount`; ``percent`` and the interval are None when nothing was counted.

    Raises:
        ValueError: A count is negative or not a whole number, or ``n_blasts > n_counted``.
    """
    n_blasts = as_count(n_blasts, "n_blasts")
    n_counted = as_count(n_counted, "n_counted")
    n_excluded = as_count(n_excluded, "n_excluded")
    n_uncertain = as_count(n_uncertain, "n_uncertain")
    if n_blasts > n_counted:
        raise ValueError(
            f"n_blasts ({n_blasts}) cannot be larger than n_counted ({n_counted}): the counted "
            "cells include the blasts."
        )
    left_out = n_excluded + n_uncertain
    if n_counted == 0:
        if n_uncertain:  # cells were found: the count waits for the reviewer, not the image
            cells = (
                "1 uncertain cell awaits"
                if n_uncertain == 1
                else f"{n_uncertain} uncertain cells await"
            )
            reading = (
                f"No cell is counted yet: {cells} review (uncertain cells are left out of the "
                "count until labelled). Label them in review (the app's Review page) to get a blast "
                "percentage."
            )
        else:
            reading = (
                "No white cells were counted, so no blast percentage can be given. Check that "
                "the image is a stained blood smear with white cells in focus, add more "
                "fields, or review the cells that were left out."
            )
        return BlastCount(
            n_blasts=0,
            n_counted=0,
            n_excluded=left_out,
            percent=None,
            ci_low_percent=None,
            ci_high_percent=None,
            interpretation=reading,
            hint=None,
        )
    low, high = wilson_interval(n_blasts, n_counted)
    percent = 100.0 * n_blasts / n_counted
    if single_cells:  # hand-picked cells: no threshold, and more of them would not help
        reading = _crops_reading(percent, n_blasts, n_counted)
        hint = _review_text(n_blasts, n_counted, n_uncertain) if n_uncertain else None
    else:
        reading = _reading(percent, n_blasts, n_counted, 100.0 * high)
        hint = _hint(n_blasts, n_counted, 100.0 * low, 100.0 * high, n_uncertain)
    return BlastCount(
        n_blasts=n_blasts,
        n_counted=n_counted,
        n_excluded=left_out,
        percent=percent,
        ci_low_percent=100.0 * low,
        ci_high_percent=100.0 * high,
        interpretation=_before_review(n_unreviewed) + reading,
        hint=hint,
    )


def _before_review(n_unreviewed: int) -> str:
    if n_unreviewed <= 0:
        return ""
    # "Before review of 9 cells" read to a lab as 9 cells reviewed: say they are waiting.
    return f"With {n_unreviewed} cell{'s' * (n_unreviewed != 1)} still to review: "


def _crops_reading(percent: float, n_blasts: int, n_counted: int) -> str:
    return (
        f"{n_blasts} of {n_counted} single-cell images counted are blasts ({percent:.1f}%). "
        "Cells picked one by one are not a blood differential, so no blast threshold applies; "
        "analyse whole smear fields for a blast percentage."
    )


def summarize_labels(
    labels: Iterable[str], *, n_unreviewed: int = 0, single_cells: bool = False
) -> BlastCount:
    """Counts a list of cell labels (see :class:`CellLabel`) into a :class:`BlastCount`.

    ``blast`` and ``normal`` are counted; ``excluded``, ``not_wbc`` and ``border`` leave the
    denominator; ``uncertain`` cells also leave it but are named in the hint as awaiting review,
    the way a lab keeps doubtful cells aside until a second reader decides.

    Args:
        labels: One label per detected object; strings are matched case-insensitively.
        n_unreviewed, single_cells: Passed to :func:`count_blasts`.

    Raises:
        ValueError: A label is not in the vocabulary, or a single string was passed.

    Example:
        >>> summarize_labels(["blast", "normal", "normal", "border", "uncertain"]).n_excluded
        2
    """
    if isinstance(labels, str):
        raise ValueError(
            f"labels must be a list of labels, one per cell, got the single string {labels!r}; "
            f"wrap it in a list: [{labels!r}]."
        )
    tally: Counter[CellLabel] = Counter()
    for label in labels:
        try:
            tally[CellLabel(str(label).strip().lower())] += 1
        except ValueError:
            valid = ", ".join(member.value for member in CellLabel)
            raise ValueError(f"Unknown cell label {label!r}; expected one of: {valid}.") from None
    return count_blasts(
        n_blasts=tally[CellLabel.BLAST],
        n_counted=tally[CellLabel.BLAST] + tally[CellLabel.NORMAL],
        n_excluded=tally[CellLabel.EXCLUDED] + tally[CellLabel.NOT_WBC] + tally[CellLabel.BORDER],
        n_uncertain=tally[CellLabel.UNCERTAIN],
        n_unreviewed=n_unreviewed,
        single_cells=single_cells,
    )


def count_cells(
    cells: Iterable[Cell], *, single_cells: bool = False, model: bool = False
) -> BlastCount:
    """The count of these cells by their current labels, its reading saying "With N cells still
    to review" while any waits for a person; ``model=True``: by the model's calls, as made.

    The one home of that rule for the review workflow and the case record.
    """
    cells = tuple(cells)
    if model:
        return summarize_labels([c.model_label for c in cells], single_cells=single_cells)
    return summarize_labels([c.label for c in cells], single_cells=single_cells,
                            n_unreviewed=sum(c.awaits_review for c in cells))  # fmt: skip


def review_changes_text(cells: Iterable[Cell]) -> str:
    """What the reviewer changed, in words, for the Counts page and the report: the model's
    calls changed, apart from the cells it left uncertain (labelling one is no correction) and
    those a reviewer's split or merge made."""
    cells = tuple(cells)
    called = [c for c in cells if not c.origin
              and c.model_label not in (CellLabel.UNCERTAIN, CellLabel.BORDER)]  # fmt: skip
    left = [c for c in cells if not c.origin and c.model_label == CellLabel.UNCERTAIN]
    made = sum(bool(c.origin) for c in cells)
    parts = [f"{sum(c.label != c.model_label for c in called)} of the {len(called)} cells the "
             "model called were changed by the reviewer"]  # fmt: skip
    if left:
        parts.append(f"{sum(c.label != CellLabel.UNCERTAIN for c in left)} of the {len(left)} it "
                     "left uncertain were labelled")  # fmt: skip
    if made:
        parts.append(f"{made} {'was' if made == 1 else 'were'} made by the reviewer's splits or "
                     "merges")  # fmt: skip
    return "; ".join(parts) + "."


def provisional_text(cells: Iterable[Cell]) -> str | None:
    """ "Provisional: N of M cells ..." while cells wait for a reviewer; None once every cell is
    reviewed. Cells cut by the image border are never counted and need no review, so they are
    in neither number.
    """
    cells = tuple(cells)
    reviewable = [c for c in cells if c.label not in NO_REVIEW_LABELS]
    n_unreviewed = sum(c.awaits_review for c in reviewable)
    if n_unreviewed <= 0:
        return None
    # "1 of 34 cells has", "2 of 34 cells have", "1 cell has" (of one)
    n_cells = len(reviewable)
    cells_text = f"{n_unreviewed} of {n_cells} cells" if n_cells > 1 else f"{n_unreviewed} cell"
    verb = "has" if n_unreviewed == 1 else "have"
    border = sum(c.label == CellLabel.BORDER for c in cells)  # beside "20 found", say where
    aside = (f" ({border} more, cut by the image border, are never counted and need no "
             "review)" if border else "")  # fmt: skip
    return (
        f"Provisional: {cells_text} {verb} not been reviewed yet, so these counts and their "
        f"reading may change{aside}."
    )
