"""The crop bank: every source through the app's own pipeline, grouped so nothing leaks."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.cellbank import build_bank
from train.data import load_allidb2, load_manifest
from train.groups import bank_group, idb1_group
from train.records import LabelledCrop


def test_idb1_groups_are_blocks_of_consecutive_fields():
    assert idb1_group("Im012_1") == idb1_group("Im015_1") == "allidb1:b003"
    assert idb1_group("Im016_1") == "allidb1:b004"
    assert idb1_group("odd") == "allidb1:odd"


def test_allidb2_crops_share_the_group_of_their_field(tmp_path):
    record = LabelledCrop(tmp_path / "Im035_1.tif", "blast", "Im012_1.jpg", "allidb2")
    assert bank_group(record) == idb1_group("Im012_1")
    other = LabelledCrop(tmp_path / "a.jpg", "normal", "neutrophil/a.jpg", "pbc")
    assert bank_group(other) == "pbc:neutrophil/a.jpg"
    # Records read back from the bank's manifest keep their namespaced group.
    again = LabelledCrop(tmp_path / "b.png", "blast", "allidb1:b003", "allidb2")
    assert bank_group(again) == "allidb1:b003"


def test_unknown_source_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown source kind.*known"):
        build_bank({"nope": tmp_path}, tmp_path / "out")


@pytest.mark.data
def test_bank_from_real_sets(shared_data, tmp_path):
    out = tmp_path / "bank"
    manifest = build_bank(
        {"cnmc": shared_data / "cnmc", "allidb2": shared_data / "all_idb2"}, out, size=96
    )
    table = load_manifest(manifest)  # the bank is a valid manifest for `python -m train fit`
    by_source = {s: [r for r in table if r.source == s] for s in ("cnmc", "allidb2")}
    assert len(by_source["cnmc"]) == 12
    # Nearly every ALL-IDB2 centre cell is found; labels follow the file names.
    idb2 = load_allidb2(shared_data / "all_idb2")
    assert len(by_source["allidb2"]) >= 0.95 * len(idb2)
    assert all((r.label == "blast") == r.path.stem.endswith("_1") for r in by_source["allidb2"])
    assert all(r.group.startswith("allidb1:b") for r in by_source["allidb2"])
    crop = np.asarray(Image.open(by_source["allidb2"][0].path))
    assert crop.shape == (96, 96, 3) and crop[0, 0].max() == 0  # cell on black
    with open(manifest, newline="") as stream:
        assert next(csv.reader(stream)) == [
            "path",
            "label",
            "group",
            "source",
            "subset",
            "cell_type",
        ]


def test_held_out_matching_catches_a_renamed_copy_of_a_training_set_by_group_name():
    from train.evaluate.classifier import seen_in_training

    seen = {"deepapl:Patient_00", "pbc:pbc/lymphocyte/LY_1.jpg"}
    records = [
        LabelledCrop(Path("a.jpg"), "blast", "Patient_00", "dapl"),  # deepapl, renamed
        LabelledCrop(Path("b.jpg"), "blast", "Patient_07", "dapl"),  # a patient never seen
        LabelledCrop(Path("c.jpg"), "normal", "Patient_00", "pbc"),  # a known set: exact only
        LabelledCrop(Path("d.jpg"), "blast", "Patient_00", "deepapl"),
    ]
    flags, notes = seen_in_training(records, seen)
    assert flags == [True, False, False, True]
    (note,) = notes
    assert "'dapl' is not a dataset the model was split on" in note and "Patient_00" in note


def test_allidb2_crops_without_their_field_csv_are_not_taken_for_idb1_fields(tmp_path):
    """Crop Im035_1 of field Im012_1 became 'allidb1:b008' (fields 32-35), a training block."""
    record = LabelledCrop(tmp_path / "Im035_1.tif", "blast", "Im035_1.tif", "allidb2")
    assert bank_group(record) == "allidb2:Im035_1"


def _cell_picture(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((96, 96, 3), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    rgb[(yy - 48) ** 2 + (xx - 48) ** 2 < 30**2] = colour
    Image.fromarray(rgb).save(path)


def test_two_patients_files_of_one_name_keep_their_own_crops_and_labels(tmp_path):
    """A blast patient's c1.jpg and a normal patient's c1.jpg wrote one crop, listed twice."""
    source = tmp_path / "deepapl"
    _cell_picture(source / "blast" / "P1" / "c1.png", (120, 60, 160))
    _cell_picture(source / "lymphocyte" / "P2" / "c1.png", (90, 40, 140))
    manifest = build_bank({"deepapl": source}, tmp_path / "bank", size=64)
    rows = list(csv.DictReader(manifest.open()))
    assert len({r["path"] for r in rows}) == 2
    assert {(r["label"], r["group"]) for r in rows} == {("blast", "deepapl:P1"),
                                                        ("normal", "deepapl:P2")}  # fmt: skip
    crops = [np.asarray(Image.open(tmp_path / "bank" / r["path"])) for r in rows]
    assert not np.array_equal(*crops)


def test_a_missing_source_folder_is_named_before_any_crop_is_written(tmp_path):
    _cell_picture(tmp_path / "pbc" / "neutrophil" / "a.png", (150, 90, 170))
    with pytest.raises(FileNotFoundError, match=r"--deepapl .*nope"):
        build_bank({"pbc": tmp_path / "pbc", "deepapl": tmp_path / "nope"}, tmp_path / "bank")
    assert not (tmp_path / "bank").exists()


def test_allidb2_crops_of_one_cell_are_counted_once(tmp_path):
    """ALL-IDB2 repeats cells of field Im093 as new crops (Im222 as Im256, 8 px apart): they
    were counted twice in held-out figures, one false blast among them."""
    import cv2
    import numpy as np

    from train.data import load_allidb2

    (tmp_path / "images").mkdir()
    rows = [("Im001_0", "F1.jpg", 100, 100), ("Im002_0", "F1.jpg", 108, 96),  # one cell twice
            ("Im003_0", "F1.jpg", 400, 100),  # another cell of the field
            ("Im004_1", "F2.jpg", 50, 50), ("Im005_0", "F2.jpg", 60, 52),  # one cell, two labels
            ("Im006_0", "F3.jpg", 108, 96)]  # same place, another field  # fmt: skip
    for stem, *_ in rows:
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.tif"), np.full((8, 8, 3), 200, np.uint8))
    (tmp_path / "source_fields.csv").write_text(
        "crop,idb1_field,x,y,match_score\n"
        + "".join(f"{stem}.tif,{field},{x},{y},0.99\n" for stem, field, x, y in rows)
    )
    table = load_allidb2(tmp_path)
    assert [r.path.stem for r in table.records] == ["Im001_0", "Im003_0", "Im006_0"]
    assert any("Im002_0.tif (= Im001_0.tif)" in n for n in table.notes)
    assert any("both blast and normal" in n and "Im004_1.tif" in n for n in table.notes)
