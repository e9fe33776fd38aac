"""The run-fold twins that measure a recipe on ALL-IDB smear runs it never saw."""

from __future__ import annotations

from pathlib import Path

from train.data import BLAST, NORMAL
from train.experiments.allidb_run_folds import pooled, recipe_arguments, run_folds
from train.records import LabelledCrop
from train.splits import units_of

ALL_BLOCKS = (3, 4, 7, 8)  # fields Im012-019 and Im028-035: two ALL runs; 20-027, 036-043 healthy


def _records() -> list[LabelledCrop]:
    records = []
    for field in range(12, 44):
        block, ill = field // 4, field // 4 in ALL_BLOCKS
        labels = (BLAST, NORMAL) if ill else (NORMAL,)
        records += [LabelledCrop(Path(f"Im{field:03d}_{int(ill)}_cell{i}.png"), label,
                                 f"allidb1:b{block:03d}", "allidb1")
                    for i, label in enumerate(labels)]  # fmt: skip
    records += [LabelledCrop(Path(f"p{i}.jpg"), (BLAST, NORMAL)[i % 2], f"deepapl:P{i}", "deepapl")
                for i in range(6)]  # fmt: skip
    return records


def test_each_run_is_tested_once_whole_with_both_classes_and_other_sources_keep_their_sides():
    records = _records()
    base = {f"deepapl:P{i}": ("train", "val", "test")[i % 3] for i in range(6)}
    base |= {"allidb1:b003": "train", "allidb1:b004": "test"}  # a torn run, as v2's split was
    twins = run_folds(records, base)
    unit_of = units_of(records)
    assert len(set(unit_of[g] for g in unit_of if g.startswith("allidb1"))) == 4
    tested = [g for sides in twins for g, s in sides.items() if s == "test" and "allidb" in g]
    assert sorted(tested) == sorted({r.group for r in records if r.source == "allidb1"})
    for sides in twins:
        assert {g: s for g, s in sides.items() if g.startswith("deepapl")} == {
            g: s for g, s in base.items() if g.startswith("deepapl")
        }
        for unit in {unit_of[g] for g in sides if g.startswith("allidb1")}:
            assert len({sides[g] for g in sides if unit_of.get(g) == unit}) == 1  # never torn
        held = [r for r in records if sides.get(r.group) == "test" and r.source == "allidb1"]
        assert {r.label for r in held} == {BLAST, NORMAL}
        assert "val" not in {s for g, s in sides.items() if g.startswith("allidb1")}


def test_the_other_pairing_tests_each_all_run_with_the_other_healthy_run():
    records = _records()
    unit_of = units_of(records)

    def pairs(shift):
        return sorted(tuple(sorted({unit_of[g] for g, s in sides.items() if s == "test"}))
                      for sides in run_folds(records, {}, shift=shift))  # fmt: skip

    assert pairs(0) != pairs(1)
    assert {u for pair in pairs(1) for u in pair} == {u for pair in pairs(0) for u in pair}


def test_twins_repeat_the_models_recipe_and_pool_counts_not_scores():
    fit = {"architecture": "efficientnet_lite0", "input_size": 224, "epochs": 60, "patience": 8,
           "batch_size": 40, "learning_rate": 0.001, "balance": "oversample", "seed": 0,
           "stain_normalisation": "none", "threshold_rule": "sensitivity_first",
           "test_time_views": 4, "cached_features": True, "feature_views": 4, "augment": True,
           "augmentations": ["hflip", "colour"]}  # fmt: skip
    args = recipe_arguments({**fit, "weights": "imagenet", "fine_tune_epochs": 0})
    assert args[args.index("--feature-views") + 1] == "4"
    assert args[args.index("--weights") + 1] == "imagenet"
    assert args[args.index("--augmentations") + 1 :] == ["hflip", "colour"]
    one = {"blast_recall": 0.5, "n_expert_blasts": 10, "n_predicted_blasts": 10, "n_fields": 3}
    other = {"blast_recall": 1.0, "n_expert_blasts": 30, "n_predicted_blasts": 40, "n_fields": 4}
    both = pooled([one, other])
    assert both["blast_recall"] == 35 / 40 and both["blast_precision"] == 35 / 50
    assert both["n_fields"] == 7 and abs(both["blast_f1"] - 70 / 90) < 1e-12
