"""Site adaptation: the array-level core on synthetic features with a known shift, the new model
version it writes (never over an existing one, ACTIVE untouched), the CLI and the Retrain page.

The model-level tests use the tiny random CNN and cut-out disc images: its answers are whatever
the network computes, so they check what is written, not how good it is.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import log_in
from streamlit.testing.v1 import AppTest

from leukemia_core.accounts import User
from leukemia_core.calibration import Calibration, blast_probability, fit_calibration
from leukemia_core.classify import Classifier
from leukemia_core.domain import DomainReference
from leukemia_core.errors import LeukemiaCoreError, ModelNotFoundError
from leukemia_core.imaging import png_bytes
from leukemia_core.models.folder import (
    active_model_name,
    list_models,
    load_model,
    read_config,
    set_active_model,
)
from leukemia_core.models.writing import write_config, write_domain_reference
from leukemia_core.store import CaseStore
from leukemia_core.types import Cell, Field
from train.__main__ import main as train_cli
from train.adapt import AdaptationError, adapt_from_arrays, figures
from train.adapt_model import ModelExistsError, adapt_model, next_site_name
from train.data import load_manifest
from train.evaluate.classifier import seen_groups
from train.groups import bank_group
from train.loso import adaptation_split
from train.run import recalibrate
from train.splits import SplitError, read_split_file

APP = Path(__file__).resolve().parents[1] / "app.py"
F = 32  # synthetic feature width


# ---- synthetic features ------------------------------------------------------------------
def _direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=F)
    return v / np.linalg.norm(v)


W = _direction(1)  # what the trained head looks at
U = _direction(2) - (_direction(2) @ W) * W  # a direction the head ignores
U /= np.linalg.norm(U)
KERNEL = np.stack([W, -W], axis=1).astype(np.float32)  # blast-minus-normal margin 2 * W . x
BIAS = np.zeros(2, np.float32)


def _cells(n_groups: int, per_group: int, seed: int, *, offset: float = 0.0, sign=None):
    """Features of ``n_groups`` samples; even samples are mostly blasts, odd mostly normal.

    ``offset`` moves every cell along ``-W`` (the lab's blasts score lower); ``sign`` is the
    direction blasts and normal cells differ along (default ``W``, the head's own).
    """
    rng = np.random.default_rng(seed)
    sign = W if sign is None else sign
    x, y, g = [], [], []
    for k in range(n_groups):
        blast = rng.random(per_group) < (0.6 if k % 2 == 0 else 0.1)
        x.append(rng.normal(size=(per_group, F)) + np.outer(np.where(blast, 1.5, -1.5), sign))
        y.append(blast)
        g += [f"s{seed}-{k}"] * per_group
    return np.concatenate(x) - offset * W, np.concatenate(y), np.array(g)


def _source_calibration() -> Calibration:
    x, y, _ = _cells(20, 30, seed=10)
    return fit_calibration(x @ KERNEL + BIAS, y)


def _held_out(adaptation, calibration, x, y) -> tuple[dict, dict]:
    before = figures(blast_probability(x @ KERNEL + BIAS, calibration.temperature), y,
                     calibration.threshold, calibration.uncertain_low)  # fmt: skip
    new = adaptation.calibration
    after = figures(blast_probability(x @ adaptation.kernel + adaptation.bias, new.temperature),
                    y, new.threshold, new.uncertain_low)  # fmt: skip
    return before, after


def test_calibration_only_raises_balanced_accuracy_and_lowers_ece_on_held_out_samples():
    calibration = _source_calibration()
    x, y, g = _cells(10, 15, seed=3, offset=1.2)  # the lab's blasts score low
    adaptation = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=calibration,
                                   variants=("calibration_only",))  # fmt: skip
    assert adaptation.variant == "calibration_only" and not adaptation.head_refitted
    assert set(adaptation.check) == {"folds", "cells", "groups", "before", "calibration_only",
                                     "head", "after"}  # fmt: skip
    np.testing.assert_array_equal(adaptation.kernel, KERNEL)
    np.testing.assert_array_equal(adaptation.bias, BIAS)
    assert adaptation.calibration.threshold < calibration.threshold
    check = adaptation.check
    assert check["after"]["balanced_accuracy"] > check["before"]["balanced_accuracy"] + 0.1
    assert check["after"]["confident_miss_rate"] < check["before"]["confident_miss_rate"]
    # Samples of the same lab that the adaptation never saw.
    before, after = _held_out(adaptation, calibration, *_cells(30, 30, seed=4, offset=1.2)[:2])
    assert before["sensitivity"] < 0.6 < 0.9 < after["sensitivity"]
    assert after["balanced_accuracy"] > before["balanced_accuracy"] + 0.1
    assert after["ece"] < before["ece"]
    assert after["confident_miss_rate"] < 0.05 < 0.2 < before["confident_miss_rate"]


def test_an_offset_lab_gets_its_logits_shifted_too_and_calibrated_probabilities():
    calibration = _source_calibration()
    x, y, g = _cells(10, 15, seed=3, offset=1.2)  # 150 cells: too few for the head's weights
    adaptation = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=calibration)
    assert adaptation.variant == "offset" and adaptation.check["head"] is None
    assert "from 200 cells" in adaptation.decision
    np.testing.assert_array_equal(adaptation.kernel, KERNEL)  # only the offset moved
    assert adaptation.bias[0] - adaptation.bias[1] > 0.5
    assert adaptation.check["offset"]["nll"] < adaptation.check["calibration_only"]["nll"]
    calibrated = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=calibration,
                                   variants=("calibration_only",))  # fmt: skip
    test_x, test_y, _ = _cells(30, 30, seed=4, offset=1.2)
    before, after = _held_out(adaptation, calibration, test_x, test_y)
    assert after["ece"] < _held_out(calibrated, calibration, test_x, test_y)[1]["ece"] / 2
    assert after["ece"] < before["ece"] / 2
    assert after["balanced_accuracy"] > before["balanced_accuracy"] + 0.1


def test_the_head_is_refitted_only_with_enough_cells_and_when_it_helps():
    calibration = _source_calibration()
    tilted = 0.4 * W + 0.9 * U  # the lab's blasts differ along a direction the head ignores
    x, y, g = _cells(16, 25, seed=5, offset=0.5, sign=tilted)  # 400 cells
    few = adapt_from_arrays(x[:150], y[:150], g[:150], KERNEL, BIAS, calibration=calibration)
    assert few.variant != "head" and few.check["head"] is None
    capped = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=calibration,
                               min_head_cells=1000)  # fmt: skip
    assert capped.variant != "head" and capped.check["head"] is None
    enough = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=calibration)
    assert enough.head_refitted and enough.variant == "head", enough.decision
    assert enough.check["after"] == enough.check["head"]
    assert enough.check["head"]["nll"] < enough.check["calibration_only"]["nll"] - 0.01
    assert not np.allclose(enough.kernel, KERNEL)
    test_x, test_y, _ = _cells(30, 30, seed=6, offset=0.5, sign=tilted)
    _, with_head = _held_out(enough, calibration, test_x, test_y)
    _, without = _held_out(capped, calibration, test_x, test_y)
    assert with_head["balanced_accuracy"] > without["balanced_accuracy"] + 0.05


def test_a_lab_the_model_already_fits_keeps_its_weights():
    x, y, g = _cells(16, 25, seed=7)  # no shift at all
    adaptation = adapt_from_arrays(x, y, g, KERNEL, BIAS, calibration=_source_calibration())
    assert adaptation.check["head"] is not None  # tried, and not worth it
    assert adaptation.variant == "calibration_only", adaptation.decision
    np.testing.assert_array_equal(adaptation.kernel, KERNEL)
    np.testing.assert_array_equal(adaptation.bias, BIAS)


def test_groups_never_fall_on_both_sides_of_the_check():
    x, y, g = _cells(6, 20, seed=8, offset=1.0)
    adaptation = adapt_from_arrays(x, y, g, KERNEL, BIAS)
    assert adaptation.check["folds"] == 5 and adaptation.check["cells"] <= len(y)
    assert adaptation.counts == {"cells": 120, "groups": 6,
                                 "per_class": {"blast": int(y.sum()), "normal": int((~y).sum())},
                                 "groups_per_class": adaptation.counts["groups_per_class"]}  # fmt: skip


@pytest.mark.parametrize("n_cells", [50, 200])
def test_adaptation_split_takes_cells_of_several_samples_and_tests_on_the_others(n_cells):
    _, y, g = _cells(40, 30, seed=11)
    adapt, test = adaptation_split(y, g, n_cells, seed=3)
    assert adapt.sum() == n_cells and y[adapt].sum() >= 5 and (~y[adapt]).sum() >= 5
    assert not set(g[adapt]) & set(g[test])  # no sample on both sides
    assert len(set(g[adapt])) >= 8 and test.sum() >= len(y) - 30 * len(set(g[adapt]))
    again = adaptation_split(y, g, n_cells, seed=3)
    assert (again[0] == adapt).all() and (again[1] == test).all()


def _bad(name: str):
    x, y, g = _cells(6, 20, seed=9)
    if name == "one class":
        return x, np.ones_like(y), g
    if name == "too few blasts":
        keep = ~y | (np.cumsum(y) <= 4)
        return x[keep], y[keep], g[keep]
    if name == "one sample":
        return x, y, np.full(len(y), "only")
    if name == "pure samples":
        return x, y, np.where(y, "all-blast", "all-normal")
    return x, y[:-1], g


@pytest.mark.parametrize("case, message", [
    ("one class", r"0 normal cell\(s\)"),
    ("too few blasts", r"at least 5 labelled blasts .* 4 blast\(s\)"),
    ("one sample", "at least 2 samples"),
    ("pure samples", "No grouped check is possible"),
    ("shapes", "do not fit"),
])  # fmt: skip
def test_unusable_cells_get_a_typed_error(case, message):
    with pytest.raises(AdaptationError, match=message):
        adapt_from_arrays(*_bad(case), KERNEL, BIAS)


def test_features_taken_another_way_are_refused():
    x, y, g = _cells(6, 20, seed=9)
    with pytest.raises(AdaptationError, match="differ from the model's logits"):
        adapt_from_arrays(x, y, g, KERNEL, BIAS, n_views_logits=x @ KERNEL + BIAS + 0.5)
    with pytest.raises(ValueError, match="unknown"):
        adapt_from_arrays(x, y, g, KERNEL, BIAS, variants=("everything",))


# ---- model folders ------------------------------------------------------------------------
def _disc(radius: int, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    """A cell cut out on black (the C-NMC convention), 96 px."""
    image = np.zeros((96, 96, 3), np.uint8)
    cv2.circle(image, (48 + seed % 5, 48 - seed % 3), radius, colour, -1)
    grain = np.random.default_rng(seed).integers(-4, 5, image.shape)  # each cell its own picture
    return np.where(image > 0, np.clip(image + grain, 1, 255), 0).astype(np.uint8)


def _cell_crop(label: str, i: int) -> np.ndarray:
    return _disc(34, (120, 60, 170), i) if label == "blast" else _disc(22, (190, 150, 170), i)


LABELS = ["blast", "blast", "normal", "normal", "normal"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """A manifest of 30 cut-out cells of 6 samples (2 blasts and 3 normal cells each)."""
    folder = tmp_path_factory.mktemp("lab")
    rows = []
    for s in range(6):
        for i, label in enumerate(LABELS):
            name = f"s{s}_c{i}.png"
            (folder / name).write_bytes(png_bytes(_cell_crop(label, 5 * s + i)))
            rows.append({"path": name, "label": label, "group": f"S-{s}", "source": "lab"})
    with open(folder / "manifest.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


@pytest.fixture
def models(tiny_models_dir, tmp_path, monkeypatch) -> Path:
    """The tiny model, active, with a split.csv, a binary extra file and 4 test-time views."""
    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    (root / "tiny" / "split.csv").write_text("group,side\nx:1,train\n")
    (root / "tiny" / "extra.bin").write_bytes(bytes(range(256)))
    path = root / "tiny" / "config.json"
    write_config(root / "tiny", {**json.loads(path.read_text()), "test_time_views": 4})
    set_active_model("tiny", root, user=User.shell())
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(root))
    monkeypatch.setenv("LEUKEMIA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(tmp_path / "cases.sqlite3"))
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_adaptation_writes_new_versions_and_never_overwrites(models, cells):
    records = load_manifest(cells).records
    before = _snapshot(models)
    first = adapt_model(
        "tiny", records, user=User.shell(), root=models, data_description="lab cells"
    )
    second = adapt_model("tiny", records, user=User.shell(), root=models)
    assert (first.name, second.name) == ("tiny-site1", "tiny-site2")
    assert next_site_name("tiny-site2", models) == "tiny-site3"
    # a rollback makes a kept version the base: its suggested name must be one that is allowed
    assert next_site_name("tiny.previous", models) == next_site_name("tiny.2.previous", models)
    assert next_site_name("tiny.previous", models) == "tiny-site3"
    after = _snapshot(models)
    assert {k: v for k, v in after.items() if k in before} == before  # base and ACTIVE as they were
    assert active_model_name(models) == "tiny"
    assert (first / "extra.bin").read_bytes() == (models / "tiny" / "extra.bin").read_bytes()
    # The lab's samples set the new calibration: on the seen side, so --held-out skips them
    # (a review saw an adapted model's own cells recorded as held-out figures).
    assert read_split_file(first / "split.csv") == {
        "x:1": "train",
        **{f"lab:S-{s}": "val" for s in range(6)},
    }
    assert seen_groups(first) >= {bank_group(r) for r in records}
    with pytest.raises(SplitError, match=r"adapted to a lab .* Adapt the base model again"):
        recalibrate("tiny-site1", records, root=models)  # would undo the lab's calibration
    config = json.loads((first / "config.json").read_text())
    done = config["training"]["adapted"]
    base_sha = json.loads((models / "tiny" / "config.json").read_text())["sha256"]
    assert done["base"] == "tiny" and done["base_sha256"] == base_sha
    assert done["counts"]["cells"] == 30 and done["counts"]["groups"] == 6
    assert done["counts"]["per_class"] == {"blast": 12, "normal": 18}
    assert done["variant"] in ("calibration_only", "offset") and done["data"] == "lab cells"
    assert done["head_refitted"] is False and done["check"]["head"] is None
    assert set(done["check"]) >= {"before", "after", "calibration_only", "offset", "folds"}
    assert config["test_time_views"] == 4
    assert "## Adapted to a lab" in (first / "card.md").read_text()
    loaded = load_model("tiny-site1", models)
    assert loaded.config.calibration.to_dict() == config["calibration"]
    base = load_model("tiny", models)
    np.testing.assert_array_equal(loaded.keras_model.get_layer("logits").get_weights()[0],
                                  base.keras_model.get_layer("logits").get_weights()[0])  # fmt: skip
    crops = [_cell_crop("blast", 0), _cell_crop("normal", 1), _cell_crop("blast", 7)]
    shift = Classifier(loaded).logits(crops) - Classifier(base).logits(crops)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-5)

    with pytest.raises(ModelExistsError, match="never overwrites"):
        adapt_model("tiny", records, user=User.shell(), root=models, new_name="tiny-site1")
    with pytest.raises(ModelExistsError, match="never overwrites"):
        adapt_model("tiny", records, user=User.shell(), root=models, new_name="tiny")
    with pytest.raises(ModelNotFoundError, match="valid names"):
        adapt_model("nope", records, user=User.shell(), root=models)
    with pytest.raises(AdaptationError, match="at least 5 labelled blasts"):
        adapt_model(
            "tiny", [r for r in records if r.label == "normal"], user=User.shell(), root=models
        )
    assert _snapshot(models) == after  # refused: nothing written


def test_an_adaptation_saved_meanwhile_under_the_same_name_is_never_replaced(
    models, cells, monkeypatch
):
    """Two admins adapting one base at once both took the next free name; the later save moved
    the earlier one's model aside to ``.previous``."""
    import train.adapt_model as adapting

    records = load_manifest(cells).records
    first = adapt_model("tiny", records, user=User.shell(), root=models)
    before = _snapshot(models)
    # the other save checked the name before this one wrote it (both ran at once)
    monkeypatch.setattr(adapting, "_check_new_name", lambda name, root: name)
    with pytest.raises(ModelExistsError, match="never replaces one"):
        adapt_model("tiny", records[:25], user=User.shell(), root=models, new_name=first.name)
    assert _snapshot(models) == before  # the first version stays; no staging folder is left
    assert not [p for p in models.iterdir() if p.name.startswith(".")]


def test_adaptation_uses_each_picture_once_and_none_labelled_both_ways(models, cells):
    """The same smear signed as two cases, or a file listed twice, counted twice in the
    adaptation and its check (the comparison's dataset check keeps each picture once)."""
    records = load_manifest(cells).records
    flipped = replace(records[1], label="normal" if records[1].label == "blast" else "blast")
    folder = adapt_model("tiny", [*records, records[0], flipped], user=User.shell(), root=models,
                         data_description="lab cells")  # fmt: skip
    done = json.loads((folder / "config.json").read_text())["training"]["adapted"]
    assert done["counts"]["cells"] == len(records) - 1  # the repeat once, the conflict left out
    assert done["data"].startswith("lab cells ")
    assert "1 image(s) repeated a picture" in done["data"]
    assert "labelled both blast and normal" in done["data"]


def test_the_domain_reference_comes_along(models, cells):
    width = load_model("tiny", models).keras_model.get_layer("head_pool").output.shape[-1]
    rng = np.random.default_rng(0)
    reference = DomainReference.fit(rng.normal(size=(60, width)), rng.normal(size=(60, 6)),
                                    n_components=4)  # fmt: skip
    write_domain_reference("tiny", reference, root=models, data="random, for tests")
    folder = adapt_model("tiny", load_manifest(cells).records, user=User.shell(), root=models)
    assert (folder / "domain.npz").read_bytes() == (models / "tiny" / "domain.npz").read_bytes()
    base = json.loads((models / "tiny" / "config.json").read_text())
    assert json.loads((folder / "config.json").read_text())["domain"] == base["domain"]
    assert load_model(folder.name, models).domain is not None  # declared, checksummed, loaded


def test_an_adapted_card_keeps_what_the_base_card_says_of_its_split(models, cells):
    """The base's split.csv is copied; an adapted v2's card said its split kept every smear
    run whole, which v2's did not."""
    metrics_path = models / "tiny" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    torn = "No group is on two sides, but one ALL-IDB1 smear run's blocks are (see the base)."
    metrics["card_notes"] = {"split": torn, "test": "not carried: the test is the base's"}
    metrics_path.write_text(json.dumps(metrics))
    folder = adapt_model("tiny", load_manifest(cells).records, user=User.shell(), root=models)
    card = (folder / "card.md").read_text()
    assert torn in card and "and no ALL-IDB1 smear run" not in card
    assert "not carried" not in card and "labelled cells" in card


def test_without_active_file_the_default_model_stays_the_default(models, cells):
    (models / "ACTIVE").unlink()
    assert active_model_name(models) == "tiny"
    adapt_model(
        "tiny", load_manifest(cells).records, user=User.shell(), root=models, new_name="0lab"
    )
    assert active_model_name(models) == "tiny" and "0lab" in list_models(models)


def test_adapt_and_activate_commands(models, cells, capsys):
    code = train_cli(["adapt", "--model", "tiny", "--data", str(cells),
                      "--models-dir", str(models)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["folder"] == str(models / "tiny-site1") and printed["base"] == "tiny"
    assert set(printed["before"]) >= {"balanced_accuracy", "ece", "confident_miss_rate"}
    assert "not active" in err and "python -m train activate tiny-site1" in err
    assert active_model_name(models) == "tiny"
    assert train_cli(["activate", "tiny-site1", "--models-dir", str(models)]) == 0
    assert active_model_name(models) == "tiny-site1"


def test_adapt_command_on_the_signed_cases(models, tmp_path, capsys):
    database = tmp_path / "lab.sqlite3"
    _sign_cases(CaseStore(database), 6)
    code = train_cli(["adapt", "--model", "tiny", "--reviewed-cases", str(database),
                      "--name", "tiny-lab", "--models-dir", str(models)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["folder"] == str(models / "tiny-lab")
    assert printed["counts"]["cells"] == 30 and printed["counts"]["groups"] == 6
    done = read_config("tiny-lab", models).training["adapted"]
    # the card is shown to every user: the database's file, not the server's folders
    assert done["data"] == "signed cases of the case record lab.sqlite3 (6 case(s))"
    assert str(tmp_path) not in (models / "tiny-lab" / "card.md").read_text()


def test_adapt_command_failures_write_nothing(models, cells, tmp_path, capsys):
    before = _snapshot(models)
    normal_only = tmp_path / "normal.csv"
    lines = cells.read_text().splitlines()
    normal_only.write_text("\n".join([lines[0], *(x for x in lines[1:] if ",normal," in x)]))
    shutil.copytree(cells.parent, tmp_path / "cells_copy")
    (tmp_path / "cells_copy" / "normal.csv").write_text(normal_only.read_text())
    for argv, message in [
        (["--model", "nope", "--data", str(cells)], "valid names: tiny"),
        (["--model", "tiny", "--data", str(tmp_path / "cells_copy" / "normal.csv")],
         "holds only normal cells (18)"),
        (["--model", "tiny", "--data", str(cells), "--name", "tiny"], "never overwrites"),
        (["--model", "tiny", "--reviewed-cases", str(tmp_path / "empty.sqlite3")],
         "No signed case"),
    ]:  # fmt: skip
        assert train_cli(["adapt", *argv, "--models-dir", str(models)]) == 2
        assert message in capsys.readouterr().err
    assert _snapshot(models) == before


# ---- the Retrain page -----------------------------------------------------------------------


def _sign_cases(store: CaseStore, samples: int, first: int = 0) -> None:
    for s in range(first, first + samples):
        cells = [Cell(i + 1, (10 * i, 0, 10 * i + 96, 96), (10 * i + 48.0, 48.0),
                      crop=_cell_crop(label, 5 * s + i), blast_probability=0.5, model_label=label,
                      reviewed=True)
                 for i, label in enumerate(LABELS)]  # fmt: skip
        field = Field(0, "field.png", np.zeros((480, 640, 3), np.uint8))
        case = store.create_case(f"S-{s}", [field], cells, model_name="tiny",
                                 model_checksum="sha256:0", thresholds={}, created_by="Dr. A")  # fmt: skip
        store.sign_case(case, reviewer="Dr. A")


def test_adapt_section_of_the_retrain_page(models, apptest_navigation):
    at = log_in(AppTest.from_file(str(APP), default_timeout=240), "Dr. M", ("model_admin",)).run()
    at.switch_page("pages/retrain.py").run()
    assert not at.exception, at.exception
    at.button(key="adapt_count").click().run()
    assert any("No signed case" in e.value for e in at.error), [e.value for e in at.error]
    _sign_cases(CaseStore(os.environ["LEUKEMIA_CASE_DB"]), 1)  # 2 blasts: too few to adapt on
    at.button(key="adapt_count").click().run()
    assert any("at least 5 labelled blasts" in w.value for w in at.warning)
    assert at.button(key="adapt_run").disabled  # the button would only repeat the warning
    _sign_cases(CaseStore(os.environ["LEUKEMIA_CASE_DB"]), 5, first=1)
    at.button(key="adapt_count").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    values = {m.label: m.value for m in at.metric}
    assert values == {"Cells": "30", "Blasts": "12", "Normal": "18", "Samples": "6"}
    assert at.text_input(key="adapt_name").value == "tiny-site1"
    at.button(key="adapt_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (models / "tiny-site1" / "config.json").is_file()
    from leukemia_core.models.folder import read_config
    from ui.models import adapted_check_words, plain_summary

    # the Analyze page's words for it say it is this lab's version, not the base alone; its
    # check is read from its folder, so a later session deciding on it sees it too
    said = plain_summary(read_config("tiny-site1", models))
    assert "then adapted on 30 of this lab's cells (6 samples) from tiny" in said
    check = adapted_check_words(read_config("tiny-site1", models))
    assert check.startswith("Its adaptation's check on 30 of the lab's cells (6 samples)")
    assert "balanced accuracy" in check and "→" in check
    assert at.text_input(key="adapt_name").value == "tiny-site2"  # the next one never overwrites
    assert active_model_name(models) == "tiny"
    table = at.dataframe[-1].value
    assert list(table.index) == ["before", "after"] and "balanced accuracy" in table.columns
    assert all(v == "—" or re.fullmatch(r"\d\.\d{3}", v) for v in table.to_numpy().ravel())
    said = " ".join(c.value for c in at.caption)
    assert "Chosen on that check: calibration" in said and "calibration_only" not in said
    # six samples: more than promotion's floor of five, so no few-samples warning
    assert not any("even a perfect score here is no evidence" in w.value for w in at.warning)
    activate = at.button(key="adapt_activate")
    assert activate.disabled  # until the confirmation is ticked
    at.checkbox(key="adapt_confirm").check().run()
    at.button(key="adapt_activate").click().run()
    assert not at.exception, at.exception
    assert active_model_name(models) == "tiny-site1"
    assert any("tiny-site1" in s.value for s in at.success), [s.value for s in at.success]
    # said beside the figures too, where the confirmation no longer stands
    assert any(s.value == "`tiny-site1` is the active model: new analyses use it."
               for s in at.success)  # fmt: skip
    assert not [c for c in at.checkbox if c.key == "adapt_confirm"]


def test_a_version_that_misses_more_blasts_is_called_worse():
    """A walkthrough's adaptation lowered sensitivity 1 -> 0.9 and raised confident misses
    0 -> 0.033 while balanced accuracy rose: the page offered it without a word."""
    from train.adapt import worse_than_before

    before = {"balanced_accuracy": 0.50, "sensitivity": 1.0, "ece": 0.20,
              "confident_miss_rate": 0.0}  # fmt: skip
    after = {"balanced_accuracy": 0.516, "sensitivity": 0.9, "ece": 0.15,
             "confident_miss_rate": 0.033}  # fmt: skip
    assert worse_than_before({"before": before, "after": after}) == [
        "blast sensitivity 1.000 -> 0.900", "confident misses 0.000 -> 0.033"]  # fmt: skip
    assert worse_than_before({"before": after, "after": after}) == []
    no_blasts = {**after, "sensitivity": None, "confident_miss_rate": None}
    assert worse_than_before({"before": no_blasts, "after": no_blasts}) == []
    # a change in the ninth decimal printed "ECE 0.025 -> 0.025" as worse
    noise = {
        **after,
        "ece": after["ece"] + 1e-9,
        "balanced_accuracy": after["balanced_accuracy"] - 1e-9,
    }
    assert worse_than_before({"before": after, "after": noise}) == []


def test_an_adaptation_group_the_base_tested_on_is_seen_by_the_adapted_model():
    """Groups the base had on its test side kept "test": --held-out then counted the cells the
    adaptation was fitted on as unseen."""
    from train.adapt_model import _split_with_adaptation

    base = b"group,side\nx:1,train\ndeepapl:Patient_07,test\ndeepapl:Patient_09,test\n"
    split = _split_with_adaptation(base, ["deepapl:Patient_07", "lab:S-1"]).decode()
    assert split.splitlines() == ["group,side", "x:1,train", "deepapl:Patient_07,val",
                                  "deepapl:Patient_09,test", "lab:S-1,val"]  # fmt: skip


def test_fit_into_the_active_model_is_refused_unless_asked(models, tmp_path, capsys):
    """`train fit --name <the active model>` put new weights under every analysis with no
    promotion and no line in the model-change record."""
    before = _snapshot(models)
    code = train_cli(["fit", "--data", str(tmp_path / "cells"), "--name", "tiny",
                      "--models-dir", str(models)])  # fmt: skip
    assert code == 2 and "tiny is the active model" in capsys.readouterr().err
    assert _snapshot(models) == before  # refused before any data was read


def test_cells_without_sample_ids_are_refused_for_adaptation_unless_allowed(
    models, tmp_path, capsys
):
    """Class folders without sample folders gave 30 cells in '30 samples' and a check split by
    cell; the comparison refuses such cells unless allowed."""
    loose = tmp_path / "loose"
    for label in ("blast", "normal"):
        (loose / label).mkdir(parents=True)
        for i in range(15):
            (loose / label / f"{label}{i}.png").write_bytes(png_bytes(_cell_crop(label, i)))
    before = _snapshot(models)
    argv = ["adapt", "--model", "tiny", "--data", str(loose), "--models-dir", str(models)]
    assert train_cli(argv) == 2
    assert "carry no sample or patient id" in capsys.readouterr().err
    assert _snapshot(models) == before
    assert train_cli([*argv, "--allow-ungrouped", "--name", "tiny-loose"]) == 0


def test_adapting_again_on_the_same_cells_says_the_before_figures_are_not_held_out(models, cells):
    """The second adaptation scored the first one on the cells it was calibrated on, unsaid."""
    records = load_manifest(cells).records
    first = adapt_model("tiny", records, user=User.shell(), root=models, data_description="lab")
    assert "not held-out" not in read_config(first.name, models).training["adapted"]["data"]
    again = adapt_model(first.name, records, user=User.shell(), root=models,
                        data_description="lab")  # fmt: skip
    said = read_config(again.name, models).training["adapted"]["data"]
    assert f"{len(records)} of the {len(records)} cells belong to samples the base model" in said
    assert "not held-out" in (models / again.name / "card.md").read_text()


def test_an_adaptation_checked_on_few_samples_says_its_figures_are_no_evidence(
    models, apptest_navigation
):
    """21 cells of 4 samples scored 1.000 / 1.000 / 1.000 and "Make active" was offered without
    a word; a check on fewer than five samples now says so, and the version is never made
    active (as promotion refuses below five test groups)."""
    _sign_cases(CaseStore(os.environ["LEUKEMIA_CASE_DB"]), 3)  # 6 blasts of 3 samples
    at = log_in(AppTest.from_file(str(APP), default_timeout=240), "Dr. M", ("model_admin",)).run()
    at.switch_page("pages/retrain.py").run()
    at.button(key="adapt_count").click().run()
    at.button(key="adapt_run").click().run()
    assert not at.exception, at.exception
    (warning,) = [w.value for w in at.warning if "no evidence" in w.value]
    assert warning.startswith("These figures rest on 3 samples")
    refused = [e.value for e in at.error if "cannot become the active model" in e.value]
    assert refused and "its check rests on 3 sample(s)" in refused[0], [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "adapt_activate"]
    with pytest.raises(LeukemiaCoreError, match="rests on 3 sample"):  # the core refuses too
        set_active_model("tiny-site1", user=User.shell())


def test_the_adaptation_check_folds_smear_runs_not_blocks():
    """Five ALL-IDB1 blocks of two smear runs asked for five folds of two units: the LOSO run's
    site adaptation stopped with "4 group(s) cannot fill 5 parts"."""
    from train.adapt import _folds

    groups = np.array([f"allidb1:b{b:03d}" for b in (3, 4, 10, 11, 12) for _ in range(4)])
    is_blast = np.array([i % 2 == 0 for i in range(len(groups))])
    folds = _folds(is_blast, groups, seed=0)
    assert len(set(folds)) == 2  # one per run
    assert len(set(folds[:8])) == 1 and len(set(folds[8:])) == 1
