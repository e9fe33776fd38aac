"""Tests of train.splits: properties on random groups, refusals, and the real grouped sets."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.data import LABELS, LabelledCrop, load_allidb2, load_cnmc
from train.splits import (
    SIDES,
    SplitError,
    SplitResult,
    assign_groups,
    describe,
    grouped_kfold,
    grouped_split,
    split_from_file,
)


def make_records(cells: list[tuple[int, bool]]) -> list[LabelledCrop]:
    """One record per (group id, is blast) pair, each with its own path."""
    return [
        LabelledCrop(Path(f"cell_{i}.bmp"), LABELS[0] if blast else LABELS[1], f"g{g}", "fake")
        for i, (g, blast) in enumerate(cells)
    ]


cells_strategy = st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=3, max_size=300)
groups_strategy = cells_strategy.filter(lambda cells: len({g for g, _ in cells}) >= 3)


def side_of_groups(split: SplitResult) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for side, records in split.sides().items():
        for r in records:
            where.setdefault(r.group, set()).add(side)
    return where


@settings(max_examples=150, deadline=None)
@given(cells=groups_strategy, seed=st.integers(0, 2**16), data=st.data())
def test_split_is_a_grouped_partition_and_deterministic(cells, seed, data):
    records = make_records(cells)
    split = grouped_split(records, seed=seed)
    assert sorted(r.path.name for side in split.sides().values() for r in side) == sorted(
        r.path.name for r in records
    )
    assert all(len(sides) == 1 for sides in side_of_groups(split).values())
    assert describe(split)["shared_groups"] == []
    assert all(split.sides()[side] for side in SIDES)  # >= 3 groups: no side is empty
    assert grouped_split(records, seed=seed) == split
    shuffled = data.draw(st.permutations(records))
    again = grouped_split(shuffled, seed=seed)
    assert {s: {r.path for r in rs} for s, rs in again.sides().items()} == {
        s: {r.path for r in rs} for s, rs in split.sides().items()
    }


@settings(max_examples=60, deadline=None)
@given(cells=groups_strategy, seed=st.integers(0, 2**16))
def test_each_side_gets_both_classes_when_groups_allow(cells, seed):
    records = make_records(cells)
    with_class = {label: {r.group for r in records if r.label == label} for label in LABELS}
    split = grouped_split(records, seed=seed)
    summary = describe(split)
    for label, groups in with_class.items():
        if len(groups) >= len(SIDES):
            assert all(summary[side][label] > 0 for side in SIDES), (label, summary)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.lists(st.booleans(), min_size=1, max_size=5), min_size=40, max_size=120),
    seed=st.integers(0, 2**16),
    fractions=st.sampled_from([(0.7, 0.1, 0.2), (0.6, 0.2, 0.2), (0.8, 0.0, 0.2)]),
)
def test_fractions_are_met_per_class_with_enough_groups(groups, seed, fractions):
    records = make_records([(g, blast) for g, labels in enumerate(groups) for blast in labels])
    totals = Counter(r.label for r in records)
    summary = describe(grouped_split(records, fractions, seed))
    for label in LABELS:
        if totals[label] >= 50:
            for side, target in zip(SIDES, fractions, strict=True):
                assert abs(summary[side][label] / totals[label] - target) <= 0.06, (label, side)


@settings(max_examples=60, deadline=None)
@given(
    cells=cells_strategy.filter(lambda c: len({g for g, _ in c}) >= 5),
    seed=st.integers(0, 100),
    k=st.integers(2, 5),
)
def test_kfold_tests_partition_the_input(cells, seed, k):
    records = make_records(cells)
    folds = grouped_kfold(records, k=k, seed=seed)
    assert len(folds) == k
    tested = [r.path for fold in folds for r in fold.test]
    assert sorted(tested) == sorted(r.path for r in records)
    for fold in folds:
        assert fold.test and not fold.val and len(fold.train) + len(fold.test) == len(records)
        assert not fold.groups("train") & fold.groups("test")
    assert grouped_kfold(records, k=k, seed=seed) == folds


def test_describe_counts_sides_and_flags_shared_groups():
    records = make_records([(0, True), (0, False), (1, True), (2, False), (3, False)])
    split = SplitResult(train=tuple(records[:3]), val=(records[3],), test=(records[0],))
    summary = describe(split)
    assert summary["train"] == {
        "n_cells": 3,
        "blast": 2,
        "normal": 1,
        "n_groups": 2,
        "blast_fraction": pytest.approx(2 / 3),
    }
    assert summary["val"]["n_groups"] == 1 and summary["test"]["blast"] == 1
    assert summary["shared_groups"] == ["g0"]


def test_different_seeds_can_give_different_splits():
    records = make_records([(g, g % 2 == 0) for g in range(30)])
    splits = {grouped_split(records, seed=s).test for s in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: grouped_split(r[:2]), r"1 group\(s\) cannot fill 3 parts"),
        (lambda r: grouped_split(r, (0.5, 0.5)), r"Give 3 fractions"),
        (lambda r: grouped_split(r, (0.7, 0.2, 0.2)), r"sum to 1, got \(0\.7, 0\.2, 0\.2\)"),
        (lambda r: grouped_split(r, (1.2, -0.1, -0.1)), r"non-negative"),
        (lambda r: grouped_kfold(r, k=1), r"k >= 2"),
        (lambda r: grouped_kfold(r, k=5), r"4 group\(s\) cannot fill 5 parts"),
        (lambda r: assign_groups(r, ()), r"sum to 1"),
    ],
)
def test_refusals(call, match):
    records = make_records([(0, True), (0, False), (1, True), (2, False), (3, False)])
    with pytest.raises(SplitError, match=match):
        call(records)


def test_sides_with_zero_share_stay_empty():
    records = make_records([(g, g % 3 == 0) for g in range(10)])
    split = grouped_split(records, (0.8, 0.0, 0.2))
    assert split.val == () and len(split.train) == 8 and len(split.test) == 2


@pytest.mark.data
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_allidb2_keeps_each_source_field_on_one_side(shared_data, seed):
    root = shared_data / "all_idb2"
    with (root / "source_fields.csv").open(newline="") as f:
        field_of = {row["crop"]: row["idb1_field"] for row in csv.DictReader(f)}
    table = load_allidb2(root)
    for split in [grouped_split(table, seed=seed), *grouped_kfold(table, k=5, seed=seed)]:
        sides_of_field: dict[str, set[str]] = {}
        for side, records in split.sides().items():
            for r in records:
                sides_of_field.setdefault(field_of[r.path.name], set()).add(side)
        assert len(sides_of_field) == 63
        assert all(len(sides) == 1 for sides in sides_of_field.values())
    summary = describe(grouped_split(table, seed=seed))
    for side, share in zip(SIDES, (0.7, 0.1, 0.2), strict=True):
        assert summary[side]["blast"] > 0 and summary[side]["normal"] > 0
        assert abs(summary[side]["n_cells"] / len(table) - share) < 0.05


@pytest.mark.data
def test_real_cnmc_puts_two_subjects_on_each_side(shared_data):
    summary = describe(grouped_split(load_cnmc(shared_data / "cnmc"), (0.34, 0.33, 0.33)))
    for side in SIDES:
        assert summary[side] == {
            "n_cells": 4,
            "blast": 2,
            "normal": 2,
            "n_groups": 2,
            "blast_fraction": 0.5,
        }


def test_split_from_file_reuses_another_models_sides(tmp_path):
    records = make_records([(g, g % 2 == 0) for g in range(12) for _ in range(3)])
    first = grouped_split(records, (0.6, 0.2, 0.2), seed=3)
    path = tmp_path / "split.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["group", "side"])
        for side in SIDES:
            writer.writerows((g, side) for g in sorted(first.groups(side)))
    again = split_from_file(list(reversed(records)), path)
    for side in SIDES:
        assert again.groups(side) == first.groups(side)
        assert len(getattr(again, side)) == len(getattr(first, side))


def test_split_from_file_trains_on_groups_it_does_not_know_and_refuses_bad_files(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("group,side\ng0,val\ng1,test\n")
    split = split_from_file(make_records([(0, True), (1, False), (2, True)]), path)
    assert (split.groups("train"), split.groups("val"), split.groups("test")) == (
        {"g2"}, {"g0"}, {"g1"},
    )  # fmt: skip
    path.write_text("group,side\ng0,holdout\n")
    with pytest.raises(SplitError, match="unknown sides"):
        split_from_file(make_records([(0, True)]), path)
    with pytest.raises(SplitError, match="Cannot read the split file"):
        split_from_file(make_records([(0, True)]), tmp_path / "absent.csv")


def test_consecutive_allidb1_blocks_are_one_split_unit():
    from train.groups import linked_groups

    units = linked_groups({"allidb1:b003", "allidb1:b004", "allidb1:b006", "pbc:x", "allidb1:Im7"})
    assert units == {"allidb1:b003": "allidb1:run003", "allidb1:b004": "allidb1:run003",
                     "allidb1:b006": "allidb1:run006", "pbc:x": "pbc:x",
                     "allidb1:Im7": "allidb1:Im7"}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(blocks=st.sets(st.integers(0, 30), min_size=4, max_size=25), seed=st.integers(0, 2**16))
def test_no_smear_run_of_allidb1_is_ever_on_two_sides(blocks, seed):
    """Blocks of 4 field numbers were the groups: one smear run (Im020-033) lay on the test,
    validation and training sides of the bundled model's split."""
    from train.groups import linked_groups
    from train.splits import folds_per_source, split_per_source

    records = [
        LabelledCrop(Path(f"b{b}_{i}.png"), LABELS[(b + i) % 2], f"allidb1:b{b:03d}", "allidb1")
        for b in sorted(blocks) for i in range(3)
    ] + make_records([(g, g % 2 == 0) for g in range(12)])  # fmt: skip
    unit_of = linked_groups({r.group for r in records})
    for split in [split_per_source(records, seed=seed), *folds_per_source(records, 3, seed)]:
        sides: dict[str, set[str]] = {}
        for side, members in split.sides().items():
            for r in members:
                sides.setdefault(unit_of[r.group], set()).add(side)
        assert all(len(s) == 1 for s in sides.values()), sides


def test_a_block_numbered_next_to_a_seen_block_is_not_held_out(tmp_path):
    from train.evaluate.classifier import seen_groups, seen_in_training

    (tmp_path / "split.csv").write_text(
        "group,side\nallidb1:b004,train\nallidb1:b005,test\nallidb1:b006,test\n"
        "allidb1:b007,val\nallidb1:b011,test\ndeepapl:Patient_01,test\n"
    )
    seen = seen_groups(tmp_path)
    records = [LabelledCrop(Path(f"{g}.png"), LABELS[1], g, "allidb1")
               for g in ("allidb1:b005", "allidb1:b006", "allidb1:b011", "allidb1:b013")]  # fmt: skip
    flags, _ = seen_in_training(records, seen)
    # b005-b006 lie between training and validation blocks; b011 and b013 have no seen
    # neighbour (b012 is in neither the split nor the data, so it links nothing)
    assert flags == [True, True, False, False]
    records.append(LabelledCrop(Path("x.png"), LABELS[1], "allidb1:b012", "allidb1"))
    flags, _ = seen_in_training(records, seen)  # b012 evaluated: b011-b013 one run, no seen block
    assert flags == [True, True, False, False, False]


def test_runs_part_where_an_all_field_meets_a_healthy_one_and_a_torn_split_is_refused(tmp_path):
    """On the full ALL-IDB1 download (Im001-Im108, no gaps) every block joined every other, so
    ALL-IDB went to training whole; and re-using a split written before runs were kept whole
    (`--split-from`) brought the leak back."""
    from train.groups import idb1_fields, linked_groups

    fields = idb1_fields(["Im043_0.jpg", "Im044_0.jpg", "Im047_0_cell001.png", "Im048_1.jpg"])
    units = linked_groups({"allidb1:b010", "allidb1:b011", "allidb1:b012"}, fields)
    assert units["allidb1:b010"] == units["allidb1:b011"] != units["allidb1:b012"]
    full = idb1_fields(f"Im{n:03d}_{int(n < 60)}" for n in range(1, 109))  # ALL, then healthy
    blocks = {f"allidb1:b{n // 4:03d}" for n in range(1, 109)}
    assert len(set(linked_groups(blocks, full).values())) == 2  # Im059|Im060 parts them
    records = [LabelledCrop(Path(f"Im{4 * b:03d}_1_cell001.png"), LABELS[b % 2],
                            f"allidb1:b{b:03d}", "allidb1") for b in (4, 5, 6)]  # fmt: skip
    path = tmp_path / "split.csv"
    path.write_text("group,side\nallidb1:b004,train\nallidb1:b005,test\nallidb1:b006,val\n")
    with pytest.raises(SplitError, match=r"1 smear run\(s\) on two sides \(allidb1:run004"):
        split_from_file(records, path)


def test_a_run_next_to_a_trained_run_of_the_other_diagnosis_is_held_out(tmp_path):
    """An ALL run (Im048-055) tested beside a trained healthy run (Im040-047) was counted as
    seen: the split alone joined the neighbouring blocks, and the fields' labels, which part
    them, came too late to undo it (a run-fold twin then had no ALL field to test)."""
    from train.evaluate.classifier import seen_groups, seen_in_training, split_groups

    (tmp_path / "split.csv").write_text(
        "group,side\nallidb1:b010,train\nallidb1:b011,train\nallidb1:b012,test\nallidb1:b013,test\n"
    )
    records = [LabelledCrop(Path(f"Im{n:03d}_{int(n >= 48)}_cell1.png"), LABELS[n < 48],
                            f"allidb1:b{n // 4:03d}", "allidb1")
               for n in (44, 47, 48, 50, 53)]  # fmt: skip
    flags, _ = seen_in_training(records, seen_groups(tmp_path), split_groups(tmp_path))
    assert flags == [True, True, False, False, False]
    # Without both fields where the runs meet, nothing says they are two people: joined.
    unsure = [r for r in records if "Im047" not in str(r.path)]
    flags, _ = seen_in_training(unsure, seen_groups(tmp_path), split_groups(tmp_path))
    assert flags == [True, True, True, True]


def test_held_out_fields_are_told_by_runs_with_their_labels(tmp_path):
    """The field selection of `train.evaluate smears --held-out`: a twin trained on the healthy
    run Im040-047 tests the ALL run Im048-055 (and the other way round); where the two fields
    that meet are missing, nothing parts the runs and the tested one counts as seen."""
    from train.evaluate.classifier import fields_trained_on

    images = [Path(f"Im{n:03d}_{int(n >= 48)}.jpg") for n in range(40, 56)]
    for trained, tested in (("b010 b011", "b012 b013"), ("b012 b013", "b010 b011")):
        rows = [f"allidb1:{b},train" for b in trained.split()]
        rows += [f"allidb1:{b},test" for b in tested.split()]
        (tmp_path / "split.csv").write_text("group,side\n" + "\n".join(rows) + "\n")
        seen = fields_trained_on(images, tmp_path)
        assert seen == {f"allidb1:{b}" for b in trained.split()}
    gap = [p for p in images if p.stem[2:5] not in ("047", "048")]
    assert fields_trained_on(gap, tmp_path) == {f"allidb1:b0{n}" for n in (10, 11, 12, 13)}
