"""Test-time views and re-calibration of a model folder, on the tiny model (no data needed)."""

import csv
import json
import shutil

import numpy as np
import pytest

from leukemia_core.classify import Classifier
from leukemia_core.cropping import crop_cells
from leukemia_core.errors import ModelIntegrityError
from leukemia_core.imaging import png_bytes
from leukemia_core.models.folder import load_model
from leukemia_core.models.writing import write_config
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_smear
from train.__main__ import main as train_cli
from train.data import load_manifest
from train.evaluate.__main__ import main as evaluate_cli
from train.fit import FitConfig, predict_logits
from train.run import recalibrate
from train.splits import SplitError

SIDES = ("train", "val", "test")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """24 real crops of synthetic smears in a manifest: one group each, 8 per side."""
    folder = tmp_path_factory.mktemp("cells")
    crops = []
    for seed in range(6):
        smear = make_smear(400, 500, red_cell_diameter_px=30.0, n_wbc=5, seed=seed)
        crops += [c.crop for c in crop_cells(smear.image, segment_wbc(smear.image))
                  if not c.touches_border]  # fmt: skip
    assert len(crops) >= 24
    rows = []
    for i, crop in enumerate(crops[:24]):
        (folder / f"cell{i}.png").write_bytes(png_bytes(crop))
        rows.append({"path": f"cell{i}.png", "label": ("blast", "normal")[i % 2],
                     "group": f"synthetic:g{i}", "source": "synthetic"})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


@pytest.fixture
def models(tiny_models_dir, tmp_path, cells):
    """The tiny model with a split.csv over the cells and a stale held-out figure."""
    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    with open(root / "tiny" / "split.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["group", "side"])
        writer.writerows([f"synthetic:g{i}", SIDES[i // 8]] for i in range(24))
    metrics = {"smears": {"blast_f1": 0.5}, "card_sections": {"Notes": "kept"}}
    (root / "tiny" / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_four_views_are_the_quarter_turns(models):
    crops = [np.asarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3)), np.uint8)
             for i in range(3)]  # fmt: skip
    path = models / "tiny" / "config.json"
    write_config(models / "tiny", {**json.loads(path.read_text()), "test_time_views": 4})
    classifier = Classifier(load_model("tiny", models))
    p = classifier.probabilities(crops)
    np.testing.assert_allclose(p, classifier.probabilities([np.rot90(c, 3) for c in crops]),
                               atol=1e-5)  # fmt: skip
    # Mirror images are not among the 4 views, so a random CNN answers differently.
    assert not np.allclose(p, classifier.probabilities([c[:, ::-1] for c in crops]), atol=1e-4)


@pytest.mark.parametrize("bad", [4.7, "8", True, 3])
def test_test_time_views_must_be_1_4_or_8(models, bad):
    path = models / "tiny" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "test_time_views": bad}))
    with pytest.raises(ModelIntegrityError, match="test_time_views is"):
        load_model("tiny", models)
    with pytest.raises(ValueError, match="test_time_views is"):
        FitConfig(architecture="simple_cnn", weights=None, test_time_views=bad)


def test_training_calibrates_with_the_views_the_app_classifies_with(models):
    loaded = load_model("tiny", models)
    crops = np.asarray(np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)), np.uint8)
    config = FitConfig(architecture="simple_cnn", input_size=32, weights=None, test_time_views=8)
    path = models / "tiny" / "config.json"
    write_config(models / "tiny", {**json.loads(path.read_text()), "test_time_views": 8})
    in_app = Classifier(load_model("tiny", models)).logits(list(crops))
    np.testing.assert_allclose(predict_logits(loaded.keras_model, crops, config), in_app,
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_recalibrate_refits_on_the_validation_groups_and_keeps_the_weights(models, cells):
    before = json.loads((models / "tiny" / "config.json").read_text())
    records = load_manifest(cells).records
    result = recalibrate("tiny", records, test_time_views=8, root=models)
    after = json.loads((models / "tiny" / "config.json").read_text())
    assert after["sha256"] == before["sha256"] and after["test_time_views"] == 8
    done = after["training"]["recalibrated"]
    assert done["previous"] == {"calibration": before["calibration"], "test_time_views": 1}
    assert done["coverage"]["val"] == {"groups": 8, "groups_in_split": 8, "cells": 8}
    assert result.metrics["validation"]["n"] == result.metrics["test"]["n"] == 8
    # The stale field figures go; hand-written card sections stay.
    metrics = json.loads((models / "tiny" / "metrics.json").read_text())
    assert "smears" not in metrics and done["dropped_metrics"] == ["smears"]
    assert metrics["card_sections"] == {"Notes": "kept"}
    card = (models / "tiny" / "card.md").read_text()
    assert "mirror images (8 forward passes)" in card and "## Notes" in card
    reloaded = load_model("tiny", models)
    assert reloaded.config.test_time_views == 8
    assert reloaded.config.calibration.to_dict() == after["calibration"]


def test_recalibrate_says_what_is_missing(models, cells):
    records = load_manifest(cells).records
    with pytest.raises(SplitError, match="None of these cells belong to the test groups"):
        recalibrate("tiny", records[:16], root=models)
    partial = recalibrate("tiny", records[:20], root=models)
    assert partial.config["training"]["recalibrated"]["coverage"]["test"] == {
        "groups": 4, "groups_in_split": 8, "cells": 4}  # fmt: skip
    (models / "tiny" / "split.csv").unlink()
    before = (models / "tiny" / "config.json").read_text()
    with pytest.raises(SplitError, match=r"has no split\.csv"):
        recalibrate("tiny", records, root=models)
    assert (models / "tiny" / "config.json").read_text() == before


def test_calibrate_and_record_commands(models, cells, capsys):
    code = train_cli(["calibrate", "tiny", "--data", str(cells), "--test-time-views", "4",
                      "--models-dir", str(models)])  # fmt: skip
    assert code == 0
    assert "removed from metrics.json (smears)" in capsys.readouterr().err
    code = evaluate_cli(["cells", "--data", str(cells), "--model", "tiny",
                         "--models-dir", str(models), "--record"])  # fmt: skip
    assert code == 2 and "add --held-out" in capsys.readouterr().err
    code = evaluate_cli(["cells", "--data", str(cells), "--model", "tiny",
                         "--models-dir", str(models), "--held-out", "--record"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((models / "tiny" / "metrics.json").read_text())
    assert printed["n"] == metrics["synthetic_held_out"]["n"] == 8  # the test side only
    card = (models / "tiny" / "card.md").read_text()
    assert "## Held-out single cells" in card
    # what the command said of the figures is kept with them (4 blast patients: few groups)
    assert metrics["synthetic_held_out"]["notes"] == printed["notes"] != []
    assert f"- synthetic: {printed['notes'][0]}" in card
    code = train_cli(["calibrate", "nope", "--data", str(cells), "--models-dir", str(models)])
    assert code == 2 and "valid names: tiny" in capsys.readouterr().err


def test_record_starts_a_missing_metrics_file_and_refuses_a_broken_one(models, cells, capsys):
    command = ["cells", "--data", str(cells), "--model", "tiny", "--models-dir", str(models),
               "--held-out", "--record"]  # fmt: skip
    (models / "tiny" / "metrics.json").write_text("{not json")
    assert evaluate_cli(command) == 2
    assert "metrics.json is not valid JSON" in capsys.readouterr().err
    assert (models / "tiny" / "metrics.json").read_text() == "{not json"  # nothing half-written
    (models / "tiny" / "metrics.json").unlink()
    assert evaluate_cli(command) == 0
    metrics = json.loads((models / "tiny" / "metrics.json").read_text())
    assert list(metrics) == ["synthetic_held_out"]


def test_held_out_is_refused_where_the_held_out_groups_cannot_be_told(models, cells, capsys):
    """--held-out on a model without split.csv measured every cell and recorded them as
    held-out; on class folders without patient folders each image was its own 'group'."""
    loose = cells.parent / "loose"
    for label in ("blast", "normal"):
        (loose / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            shutil.copy(cells.parent / f"cell{i * 2 + (label == 'normal')}.png",
                        loose / label / f"{label}{i}.png")  # fmt: skip
    loose_command = ["cells", "--data", str(loose), "--format", "folders", "--model", "tiny",
                     "--models-dir", str(models)]  # fmt: skip
    assert evaluate_cli([*loose_command, "--held-out"]) == 2
    assert "needs each cell's patient or field" in capsys.readouterr().err
    assert evaluate_cli(loose_command) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["interval_unit"] == "cell" and printed["notes"]  # the loader's note kept
    (models / "tiny" / "split.csv").unlink()
    command = ["cells", "--data", str(cells), "--model", "tiny", "--models-dir", str(models)]
    assert evaluate_cli([*command, "--held-out", "--record"]) == 2
    assert "needs the model's split.csv" in capsys.readouterr().err
    assert "synthetic_held_out" not in (models / "tiny" / "metrics.json").read_text()


def test_all_unreadable_cells_stop_with_what_to_do_not_nan(models, tmp_path, capsys):
    folder = tmp_path / "bad"
    for label in ("blast", "normal"):
        (folder / label / "P1").mkdir(parents=True)
        (folder / label / "P1" / "c1.png").write_bytes(b"not a picture")
        (folder / label / "P1" / "black.png").write_bytes(
            png_bytes(np.zeros((80, 80, 3), np.uint8))
        )
    code = evaluate_cli(["cells", "--data", str(folder), "--format", "folders", "--model", "tiny",
                         "--models-dir", str(models)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "None of the 4 image(s) could be read as a cell" in err
    assert "NaN" not in err and "Traceback" not in err


def test_smears_leave_out_an_all_field_without_expert_marks_and_say_so(models, tmp_path, capsys):
    """A field with no .xyc counted every blast found in it as a false one, silently."""
    from leukemia_core.synthetic import make_demo_smear

    images = tmp_path / "idb1" / "images"
    images.mkdir(parents=True)
    (tmp_path / "idb1" / "xyc").mkdir()
    for name in ("Im001_1.png", "Im002_0.png"):
        (images / name).write_bytes(png_bytes(make_demo_smear().image))
    code = evaluate_cli(["smears", "--all-idb1", str(tmp_path / "idb1"), "--model", "tiny",
                         "--models-dir", str(models)])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["n_fields"] == 1 and printed["n_all_fields"] == 0
    assert any("without expert marks" in n and "Im001_1.png" in n for n in printed["notes"])
    code = evaluate_cli(["smears", "--all-idb1", str(tmp_path / "nope"), "--model", "tiny",
                         "--models-dir", str(models)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "nope" in err


def test_a_class_folder_named_neither_way_is_labelled_with_class_label(models, cells, capsys):
    """The message told users to pass --class-label, which train.evaluate did not take."""
    data = cells.parent / "lab"
    for folder, start in (("Pre", 0), ("normal", 1)):
        (data / folder / "P1").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            shutil.copy(
                cells.parent / f"cell{start + 2 * i}.png", data / folder / "P1" / f"{i}.png"
            )
    command = ["cells", "--data", str(data), "--format", "folders", "--model", "tiny",
               "--models-dir", str(models)]  # fmt: skip
    assert evaluate_cli(command) == 2
    assert "--class-label 'Pre=<blast|normal|none>'" in capsys.readouterr().err
    assert evaluate_cli([*command, "--class-label", "Pre=blast"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 4 and printed["per_class"]["blast"]["support"] == 2
