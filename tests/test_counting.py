"""Tests of leukemia_core.counting: Wilson interval, blast count wording, hints, labels."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from leukemia_core.counting import (
    INVESTIGATE_PERCENT,
    WHO_ACUTE_LEUKEMIA_PERCENT,
    CellLabel,
    cells_needed,
    count_blasts,
    interval_text,
    percent_figure,
    percent_text,
    provisional_text,
    summarize_labels,
    wilson_interval,
)
from leukemia_core.types import Cell

Z95 = 1.959963984540054


def reference_wilson(proportion: float, n: float) -> tuple[float, float]:
    """Textbook Wilson score interval, written independently of the module."""
    centre = (proportion + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = (
        Z95 / (1 + Z95**2 / n) * math.sqrt(proportion * (1 - proportion) / n + Z95**2 / (4 * n**2))
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def straddles(low_percent: float, high_percent: float) -> bool:
    return any(low_percent < t <= high_percent for t in (5.0, 20.0))


# --- wilson_interval -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (5, 100, (0.0215, 0.1118)),
        (20, 100, (0.1334, 0.2888)),
        (50, 100, (0.4038, 0.5962)),
        (1, 10, (0.0179, 0.4042)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
    ],
)
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_edges_are_exact():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 1) == (0.0, pytest.approx(Z95**2 / (1 + Z95**2)))


@pytest.mark.parametrize("n", [1, 7, 30, 100, 457])
def test_wilson_is_symmetric(n):
    for k in range(n + 1):
        low, high = wilson_interval(k, n)
        mirrored_low, mirrored_high = wilson_interval(n - k, n)
        assert low == pytest.approx(1 - mirrored_high, abs=1e-12)
        assert high == pytest.approx(1 - mirrored_low, abs=1e-12)


def test_wilson_contains_the_proportion_and_is_monotone_in_k():
    n = 60
    bounds = [wilson_interval(k, n) for k in range(n + 1)]
    for k, (low, high) in enumerate(bounds):
        assert 0.0 <= low <= k / n <= high <= 1.0
    lows, highs = zip(*bounds, strict=True)
    assert all(a < b for a, b in itertools.pairwise(lows))
    assert all(a < b for a, b in itertools.pairwise(highs))


def test_wilson_narrows_with_more_cells_and_higher_confidence_widens():
    widths = [high - low for low, high in (wilson_interval(n // 10, n) for n in (10, 100, 1000))]
    assert widths[0] > widths[1] > widths[2]
    low90, high90 = wilson_interval(5, 100, confidence=0.90)
    low99, high99 = wilson_interval(5, 100, confidence=0.99)
    assert low99 < low90 and high99 > high90


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0), "n is 0: no cells were counted"),
        ((3, 2), r"k \(3\) cannot be larger than n \(2\)"),
        ((-1, 10), "k must be 0 or more, got -1"),
        ((1, -5), "n must be 0 or more, got -5"),
        ((1.5, 10), "k must be a whole number of cells, got 1.5"),
        ((1, "10"), "n must be a whole number of cells"),
        ((True, 10), "k must be a whole number of cells, got the boolean"),
        ((1, 10, 1.0), "confidence must be strictly between 0 and 1"),
        ((1, 10, 0.0), "confidence must be strictly between 0 and 1"),
        ((1, 10, 95), r"got 95\."),
    ],
)
def test_wilson_errors(args, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(*args)


# --- count_blasts: wording -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_blasts", "present", "absent"),
    [
        (0, ["0.0% blasts", "0 of 100", "no blasts found", "below the 5% level"], ["WHO", "Refer"]),
        (
            4,
            [
                "4.0% blasts",
                "under 5%, but too few cells to rule out the 5% level",
                "interval reaches 9.8%",
                "Review the cells marked",
            ],
            ["WHO", "Refer", "below"],
        ),
        (5, ["5.0% blasts", "at or above the 5% level", "call for investigation"], ["Refer"]),
        (12, ["12.0%", "call for investigation", "Below the 20% WHO threshold"], ["Refer"]),
        (20, ["20.0%", "at or above the 20% blast threshold the WHO", "flow cytometry"], ["Below"]),
        (
            35,
            ["35.0%", "WHO uses for acute leukemia", "not a diagnosis", "bone-marrow"],
            ["Below", "Refer"],
        ),
    ],
)
def test_interpretation_wording(n_blasts, present, absent):
    result = count_blasts(n_blasts, 100)
    assert result.percent == pytest.approx(n_blasts)
    for phrase in present:
        assert phrase in result.interpretation
    for phrase in absent:
        assert phrase not in result.interpretation


@pytest.mark.parametrize(
    ("n_blasts", "n_counted", "said"),
    [
        (0, 3, "no blasts found, but too few cells to rule out the 5% level"),
        (0, 60, "no blasts found, but too few cells to rule out the 5% level"),
        (0, 80, "no blasts found; below the 5% level"),  # Wilson upper bound 4.6%
        (2, 400, "below the 5% level that calls for investigation. Blasts are not normally"),
    ],
)
def test_below_the_investigation_level_is_said_only_when_the_interval_is_below_it(
    n_blasts, n_counted, said
):
    result = count_blasts(n_blasts, n_counted)
    assert said in result.interpretation
    assert (result.ci_high_percent >= 5.0) == ("too few cells" in result.interpretation)


def test_thresholds_are_the_documented_levels():
    assert (INVESTIGATE_PERCENT, WHO_ACUTE_LEUKEMIA_PERCENT) == (5.0, 20.0)


def test_result_fields_are_percentages_of_the_wilson_interval():
    result = count_blasts(12, 150, n_excluded=7)
    low, high = wilson_interval(12, 150)
    assert (result.n_blasts, result.n_counted, result.n_excluded) == (12, 150, 7)
    assert result.percent == pytest.approx(8.0)
    assert result.ci_low_percent == pytest.approx(100 * low)
    assert result.ci_high_percent == pytest.approx(100 * high)


def test_nothing_counted():
    result = count_blasts(0, 0, n_excluded=4)
    assert result.percent is None
    assert result.ci_low_percent is None and result.ci_high_percent is None
    assert "No white cells were counted" in result.interpretation
    assert "add more fields" in result.interpretation
    assert result.n_excluded == 4
    assert result.hint is None


def test_nothing_counted_yet_because_every_cell_awaits_review():
    """All cells uncertain (e.g. an out-of-domain sample) is not a bad image: say what to do."""
    result = count_blasts(0, 0, n_excluded=1, n_uncertain=6)
    assert result.percent is None and result.n_excluded == 7
    assert result.interpretation.startswith("No cell is counted yet: 6 uncertain cells await")
    assert "stained blood smear" not in result.interpretation and result.hint is None
    one = count_blasts(0, 0, n_uncertain=1).interpretation
    assert "1 uncertain cell awaits review" in one


# --- count_blasts: hints ---------------------------------------------------------------------


@pytest.mark.parametrize("n_counted", [100, 150, 200, 400])
def test_hint_present_exactly_when_interval_straddles_a_threshold(n_counted):
    seen = set()
    for n_blasts in range(0, n_counted + 1, max(1, n_counted // 80)):
        result = count_blasts(n_blasts, n_counted)
        straddling = straddles(result.ci_low_percent, result.ci_high_percent)
        seen.add(straddling)
        assert (result.hint is not None) == straddling, (n_blasts, n_counted, result)
        if straddling:
            assert result.hint.startswith("Count more cells")
    assert seen == {True, False}


def test_small_count_always_hints():
    result = count_blasts(0, 99)
    assert result.hint is not None
    assert result.hint.startswith("Count more cells: at least 1 more. Only 99 white cells were")
    assert "Only" not in (count_blasts(0, 100).hint or "")


@pytest.mark.parametrize(
    ("n_blasts", "n_counted", "threshold"),
    [
        (0, 30, 5.0),
        (4, 100, 5.0),
        (3, 40, 5.0),
        (1, 10, 5.0),
        (1, 10, 20.0),
        (9, 60, 20.0),
        (25, 100, 20.0),
        (2, 7, 20.0),
    ],
)
def test_cells_needed_is_the_smallest_count_that_clears(n_blasts, n_counted, threshold):
    needed = cells_needed(n_blasts, n_counted, threshold)
    proportion = n_blasts / n_counted
    assert needed > n_counted
    low, high = (100 * b for b in reference_wilson(proportion, needed))
    assert not low < threshold <= high
    low, high = (100 * b for b in reference_wilson(proportion, needed - 1))
    assert low < threshold <= high
    hint = count_blasts(n_blasts, n_counted).hint
    # below 100 cells counted the count of a differential comes first, and a threshold's own
    # number only when it asks for more (a walk read three numbers: 69, 12 and 96 more)
    said = n_counted >= 100 or needed > 100
    assert (f"about {needed - n_counted} more cells ({needed} in total)" in hint) == said
    assert (f"settle the {threshold:.0f}% threshold" in hint) == said


def test_cells_needed_matches_integer_recount():
    # 0 of 30: the upper bound falls below 5% at 73 cells, as recomputed with integer counts.
    assert cells_needed(0, 30, 5.0) == 73
    assert wilson_interval(0, 73)[1] < 0.05 <= wilson_interval(0, 72)[1]


def test_cells_needed_when_already_clear_or_on_the_threshold():
    assert cells_needed(12, 100, 5.0) == 100
    assert cells_needed(5, 100, 5.0) is None
    hint = count_blasts(5, 100).hint
    assert "sits on the 5% threshold" in hint and "hematologist" in hint


# --- labels ----------------------------------------------------------------------------------


def test_exclusions_leave_the_denominator():
    labels = ["blast"] * 3 + ["normal"] * 97 + ["border"] * 4 + ["not_wbc"] * 2 + ["excluded"]
    result = summarize_labels(labels)
    assert (result.n_blasts, result.n_counted, result.n_excluded) == (3, 100, 7)
    assert result.percent == pytest.approx(3.0)
    assert result == count_blasts(3, 100, n_excluded=7)


def test_uncertain_cells_await_review_and_are_not_counted():
    labels = ["blast"] * 4 + ["normal"] * 96 + ["uncertain"] * 3
    result = summarize_labels(labels)
    assert (result.n_blasts, result.n_counted, result.n_excluded) == (4, 100, 3)
    assert "3 uncertain cells await review" in result.hint
    assert re.search(r"between 3\.9% and 6\.8%, across the 5% threshold", result.hint)
    single = summarize_labels(["normal"] * 150 + ["uncertain"])
    assert "1 uncertain cell awaits review and is left out" in single.hint


def test_the_reading_says_before_review_while_cells_wait_for_a_person():
    labels = ["blast"] * 20 + ["normal"] * 1
    reviewed = summarize_labels(labels)
    waiting = summarize_labels(labels, n_unreviewed=24)
    assert waiting.interpretation == f"With 24 cells still to review: {reviewed.interpretation}"
    assert "the WHO uses for acute leukemia" in waiting.interpretation  # the numbers stay
    assert (waiting.percent, waiting.hint) == (reviewed.percent, reviewed.hint)
    one = summarize_labels(labels, n_unreviewed=1).interpretation
    assert one.startswith("With 1 cell still to review: ")


def test_hand_picked_single_cells_get_no_threshold_and_no_call_for_more_fields():
    labels = ["blast"] * 3 + ["normal", "uncertain"]
    result = summarize_labels(labels, single_cells=True)
    assert result.percent == pytest.approx(75.0)  # the numbers are the same as for fields
    assert result.interpretation.startswith("3 of 4 single-cell images counted are blasts (75.0%)")
    assert "not a blood differential" in result.interpretation
    for words in ("WHO", "threshold the", "investigation", "more fields", "more cells"):
        assert words not in result.interpretation + result.hint
    assert result.hint.startswith("1 uncertain cell awaits review")
    assert summarize_labels(labels[:4], single_cells=True).hint is None
    fields = summarize_labels(labels)
    assert "the WHO uses" in fields.interpretation and "more fields" in fields.hint


def test_labels_accept_enum_members_and_loose_case():
    result = summarize_labels([CellLabel.BLAST, " Normal ", "NOT_WBC", CellLabel.NORMAL])
    assert (result.n_blasts, result.n_counted, result.n_excluded) == (1, 3, 1)
    assert summarize_labels([]).percent is None
    assert str(CellLabel.BLAST) == "blast"


def test_only_uncertain_cells():
    result = summarize_labels(["uncertain", "uncertain"])
    assert result.percent is None
    assert "2 uncertain cells await review" in result.interpretation and result.hint is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: summarize_labels(["blast", "lymphocyte"]), "Unknown cell label 'lymphocyte'"),
        (lambda: summarize_labels(["blast", None]), "expected one of: blast, normal, uncertain"),
        (lambda: summarize_labels("blast"), "must be a list of labels"),
        (lambda: count_blasts(5, 3), r"n_blasts \(5\) cannot be larger than n_counted \(3\)"),
        (lambda: count_blasts(-1, 3), "n_blasts must be 0 or more"),
        (lambda: count_blasts(1, 3, n_excluded=-2), "n_excluded must be 0 or more"),
        (lambda: count_blasts(1, 3, n_uncertain=0.5), "n_uncertain must be a whole number"),
        (lambda: cells_needed(1, 0, 5.0), "n is 0"),
    ],
)
def test_count_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(("waiting", "cells", "words"), [
    (1, 34, "Provisional: 1 of 34 cells has not been reviewed yet"),
    (2, 34, "Provisional: 2 of 34 cells have not been reviewed yet"),
    (1, 1, "Provisional: 1 cell has not been reviewed yet"),
])  # fmt: skip
def test_the_provisional_line_reads_as_english(waiting, cells, words):
    def case(n_waiting):
        return [Cell(i, (0, 0, 1, 1), (0.0, 0.0), model_label="normal", reviewed=i >= n_waiting)
                for i in range(cells)]  # fmt: skip

    assert provisional_text(case(waiting)).startswith(words)  # a walk read "1 of 34 cell has"
    assert provisional_text(case(0)) is None


def test_the_provisional_line_leaves_border_cells_out_of_both_numbers():
    """A report said "3 of 12 cells" here and "3 of 8 cells not reviewed yet" two lines on:
    the 4 border cells need no review and are in neither number."""
    cells = [Cell(i, (0, 0, 1, 1), (0.0, 0.0), model_label="border") for i in range(4)]
    cells += [Cell(4 + i, (0, 0, 1, 1), (0.0, 0.0), model_label="normal", reviewed=i >= 3)
              for i in range(8)]  # fmt: skip
    assert provisional_text(cells).startswith("Provisional: 3 of 8 cells have not been reviewed")


@pytest.mark.parametrize(("n_blasts", "n_counted", "shown", "side"), [
    (10, 201, "4.98", "under 5%"),  # 4.975%: "5.0%" printed beside "under 5%" before
    (80, 401, "19.95", "Below the 20% WHO threshold"),  # 19.950%: "20.0%" beside "5% to 20%"
    (10, 200, "5.0", "at or above the 5% level"),
    (1, 3, "33.3", "at or above the 20% blast threshold"),
])  # fmt: skip
def test_a_printed_percentage_never_lands_on_the_other_side_of_a_threshold(
    n_blasts, n_counted, shown, side
):
    count = count_blasts(n_blasts, n_counted)
    assert percent_figure(count.percent) == shown
    assert count.interpretation.startswith(f"{shown}% blasts ({n_blasts} of {n_counted} ")
    assert side in count.interpretation
    for bound in (count.ci_low_percent, count.ci_high_percent):
        figure = float(percent_figure(bound))
        assert all((figure >= t) == (bound >= t) for t in (5.0, 20.0))
    assert percent_figure(29.99, (30.0,)) == "29.99"  # a lab's own limit (second signer)
    assert percent_figure(29.999, (30.0,)) == "29.999"
    assert percent_figure(4.99996) == "4.99996"  # an interval bound: never "5.0000"


def test_the_app_and_the_report_print_a_count_one_way():
    """The report printed "2.1% – 9.8%" where the pages printed "2.1–9.8%"."""
    count = count_blasts(10, 201)  # 4.975%: the figures keep their side of 5%
    assert percent_text(count) == "4.98%"
    low, high = (percent_figure(p) for p in (count.ci_low_percent, count.ci_high_percent))
    assert interval_text(count) == f"{low}–{high}%"
    assert percent_text(count_blasts(0, 0)) == interval_text(count_blasts(0, 0)) == "—"
