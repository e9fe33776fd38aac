"""Leave-one-dataset-out choice of the platelet-clump rule (train.evaluate.lodo)."""

from __future__ import annotations

from train.evaluate.lodo import CLUMP_CANDIDATES, RECALL_TOLERANCE, choose_clump_rule

OFF, MILD, STRONG = (0.0, 0.8), (0.6, 0.9), (1.0, 0.9)


def test_the_rule_with_the_best_precision_wins_when_it_costs_no_recall():
    figures = {
        "bccd": {OFF: {"wbc_precision": 0.95, "wbc_recall": 0.99}, MILD: {"wbc_precision": 0.96,
                 "wbc_recall": 0.99}, STRONG: {"wbc_precision": 0.97, "wbc_recall": 0.99}},
        "all_idb2": {rule: {"cell_dice": 0.95} for rule in (OFF, MILD, STRONG)},
    }  # fmt: skip
    assert choose_clump_rule(figures) == STRONG


def test_a_rule_that_loses_white_cells_anywhere_is_not_chosen():
    lost = 0.95 - 2 * RECALL_TOLERANCE
    figures = {
        "bccd": {OFF: {"wbc_precision": 0.95}, MILD: {"wbc_precision": 0.96},
                 STRONG: {"wbc_precision": 0.99}},
        "all_idb1": {OFF: {"blast_detection_recall": 0.95}, MILD: {"blast_detection_recall": 0.95},
                     STRONG: {"blast_detection_recall": lost}},
    }  # fmt: skip
    assert choose_clump_rule(figures) == MILD


def test_ties_go_to_the_milder_rule():
    figures = {
        "bccd": {rule: {"wbc_precision": 0.97, "wbc_recall": 0.99} for rule in (OFF, MILD, STRONG)}
    }
    assert choose_clump_rule(figures) == OFF


def test_the_candidates_start_with_the_rule_off_and_never_pass_one_red_cell():
    assert CLUMP_CANDIDATES[0][0] == 0.0
    assert max(area for area, _ in CLUMP_CANDIDATES) <= 1.0
