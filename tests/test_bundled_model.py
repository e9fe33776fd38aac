"""The bundled (active) model against the acceptance floors, on the groups it never saw.

Every figure here is recomputed from the real datasets (``data`` tests, run by CI): held-out
deepapl patients (groups on the test side of the model's ``split.csv``) and held-out PBC
normal cells; ALL-IDB fields and crops only where no field of their smear run was trained on. The same commands print these figures (see the
README). Floors the model does not reach yet are strict xfails with the measured value, so the
day one is met the test says so.
"""

import json
import shutil

import numpy as np
import pytest

from leukemia_core.classify import Classifier
from leukemia_core.models.folder import active_model_name, load_model, models_dir
from leukemia_core.models.onnx_runtime import PROBE_TOLERANCE
from train.data import load_allidb2, load_class_folders, load_cnmc
from train.evaluate.classifier import evaluate_cells, evaluate_normals, evaluate_smears, seen_groups
from train.fit import app_crop
from train.records import CellTable

pytestmark = [pytest.mark.data, pytest.mark.slow]
NOT_YET = "lite0_blast_v2 (frozen Lite0, sensitivity-first threshold 0.13) measured {}"


@pytest.fixture(scope="module")
def bundled():
    name = active_model_name()
    if name is None:
        pytest.fail(f"no model folder in {models_dir()}: the repository must bundle one")
    classifier = Classifier(load_model(name), runtime="auto")  # the figures of what the app runs
    return classifier, seen_groups(classifier.model.path)


def test_app_runtime_gives_the_keras_probabilities_on_real_cells(bundled, shared_data):
    """ONNX Runtime (the app's on a CPU) and Keras agree on another lab's real cells."""
    classifier, _ = bundled
    assert classifier.runtime == "onnx", classifier.forward.note
    records = load_class_folders(shared_data / "deepapl").records[::40]
    crops = [app_crop(record) for record in records]
    assert len(crops) >= 40
    keras_p = Classifier(classifier.model, runtime="keras").probabilities(crops)
    assert np.abs(classifier.probabilities(crops) - keras_p).max() <= PROBE_TOLERANCE


def test_bundled_folder_is_complete_small_and_checked():
    folder = models_dir() / active_model_name()
    assert (folder / "model.keras").stat().st_size <= 45 * 1024 * 1024
    for name in ("config.json", "metrics.json", "card.md", "split.csv", "domain.npz"):
        assert (folder / name).is_file()
    card = (folder / "card.md").read_text()
    assert "Research use only" in card and "efficientnet_b3" in card  # the B3 comparison
    assert "Leave-one-source-out figures" in card and "deepapl" in card
    assert load_model(active_model_name()).domain is not None  # the out-of-domain check
    assert load_model("lite0_blast_v1").config.name == "lite0_blast_v1"  # still selectable


def test_every_bundled_card_is_what_its_folder_renders():
    """A card edited by hand (v2's withdrawn ALL-IDB figures) lost its words, and claimed no
    smear run on two sides, the next time `--record` re-rendered it: its notes now live in
    metrics.json (``card_notes``, ``card_sections``)."""
    from train.card import model_card

    for name in ("lite0_blast_v1", "lite0_blast_v2"):
        folder = models_dir() / name
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        card = (folder / "card.md").read_text()
        assert card == model_card(name, config, metrics)
        # Both splits tore smear runs: no card may claim otherwise, or show the figures as held out.
        assert "smear run" in card and "and no ALL-IDB1 smear run" not in card
        assert "smears" not in metrics and "allidb2_held_out" not in metrics
    assert "run-fold twins" in (models_dir() / "lite0_blast_v2" / "card.md").read_text()


NO_ALLIDB_HELD_OUT = (
    "lite0_blast_v2 holds no ALL-IDB smear run out: its split cut the fields in blocks of 4 "
    "numbers, and three of ALL-IDB1's four smear runs landed on two or three sides, so its "
    "ALL-IDB held-out figures were withdrawn (2026-12-07); its recipe on runs it never saw "
    "misses these floors (run-fold twins, README: blast F1 0.78-0.84, field AUROC 0.94-0.96, "
    "ALL-IDB2 balanced accuracy 0.74-0.86)"
)


def test_no_allidb_field_or_crop_next_to_a_training_field_counts_as_held_out(bundled,
                                                                           shared_data):  # fmt: skip
    """v2's 'held-out' ALL-IDB fields and crops were blocks of smear runs it was trained and
    calibrated on (Im020-033 on all three sides): none is held out now, and the code says so
    rather than report them."""
    classifier, seen = bundled
    with pytest.raises(ValueError, match="belongs to a group the model was trained on"):
        evaluate_smears(shared_data / "all_idb1", classifier, seen=seen)
    with pytest.raises(ValueError, match="belongs to a group the model was trained on"):
        evaluate_cells(load_allidb2(shared_data / "all_idb2"), classifier, seen=seen, n_boot=0)


@pytest.mark.xfail(strict=True, raises=ValueError, reason=NO_ALLIDB_HELD_OUT)
def test_held_out_fields_target(bundled, shared_data):
    classifier, seen = bundled
    figures = evaluate_smears(shared_data / "all_idb1", classifier, seen=seen)
    assert figures["blast_recall"] >= 0.95 and figures["confident_miss_rate"] <= 0.01
    assert figures["blast_f1"] >= 0.92
    assert figures["field_auroc"] >= 0.99


@pytest.mark.xfail(strict=True, raises=ValueError, reason=NO_ALLIDB_HELD_OUT)
def test_held_out_allidb2_target(bundled, shared_data):
    classifier, seen = bundled
    figures = evaluate_cells(load_allidb2(shared_data / "all_idb2"), classifier, seen=seen,
                             n_boot=0)  # fmt: skip
    assert figures["sensitivity"] >= 0.95 and figures["confident_miss_rate"] <= 0.01
    assert figures["balanced_accuracy"] >= 0.95


@pytest.fixture(scope="module")
def deepapl_figures(bundled, shared_data):
    classifier, seen = bundled
    table = load_class_folders(shared_data / "deepapl")
    return evaluate_cells(table, classifier, seen=seen, n_boot=0)


def test_held_out_deepapl_patients(deepapl_figures):
    """Another lab's CellaVision blasts (myeloid): found, and none missed with confidence."""
    assert deepapl_figures["n"] >= 200 and deepapl_figures["n_skipped_seen_in_training"] > 1000
    assert deepapl_figures["sensitivity"] >= 0.90
    assert deepapl_figures["confident_miss_rate"] <= 0.01
    assert deepapl_figures["ece"] <= 0.05


@pytest.mark.xfail(strict=True, reason=NOT_YET.format("specificity 0.783"))
def test_held_out_deepapl_target(deepapl_figures):
    assert deepapl_figures["specificity"] >= 0.95


@pytest.fixture(scope="module")
def pbc_figures(bundled, shared_data):
    classifier, seen = bundled
    table = load_class_folders(shared_data / "pbc", label_map={"platelet": None})
    return evaluate_normals(table, classifier, seen=seen)


def test_held_out_pbc_normals(pbc_figures):
    assert pbc_figures["n"] >= 100 and pbc_figures["false_blast_rate"] <= 0.02


def test_held_out_calibration(bundled, shared_data):
    """ECE on held-out single cells of the sources that give both classes and PBC."""
    classifier, seen = bundled
    table = CellTable.concat(
        load_cnmc(shared_data / "cnmc"),
        load_class_folders(shared_data / "pbc", label_map={"platelet": None}),
        load_class_folders(shared_data / "deepapl"),
    )
    figures = evaluate_cells(table, classifier, seen=seen, n_boot=0)
    assert figures["n"] >= 500
    assert figures["ece"] <= 0.05
    recorded = json.loads((models_dir() / active_model_name() / "metrics.json").read_text())
    assert recorded["test"]["ece"] <= 0.05  # the figure in the card, on the whole test split


RECORDED = {"deepapl_held_out": ("deepapl_figures", ["sensitivity", "specificity", "auroc"]),
            "normals": ("pbc_figures", ["false_blast_rate"])}  # fmt: skip


@pytest.mark.parametrize("key", RECORDED)
def test_recorded_held_out_figures_are_what_the_code_computes(key, request):
    """The figures in metrics.json (and so the card and the README) hold for today's code: a
    change of the crop path (segmentation, cropping, model input) that moves them fails here.
    The crops come from the segmentation, so a segmentation change needs the model retrained
    or at least re-measured (``train.evaluate ... --held-out --record``)."""
    fixture, names = RECORDED[key]
    figures = request.getfixturevalue(fixture)
    recorded = json.loads((models_dir() / active_model_name() / "metrics.json").read_text())[key]
    drift = {n: (recorded[n], round(figures[n], 3)) for n in names
             if abs(recorded[n] - figures[n]) > _allowed_drift(n, recorded)}  # fmt: skip
    assert not drift, f"recorded vs now: {drift}"


# Counts behind figures over few cells. The same code and pinned packages call one more
# held-out ALL-IDB1 cell a blast on some machines than on others (36 against the 35 recorded:
# precision 0.556 against 0.571, on 2026-12-05), so those figures may move by one cell.
_CELLS_BEHIND = {"blast_precision": "n_predicted_blasts", "blast_recall": "n_expert_blasts"}


def _allowed_drift(name: str, recorded: dict) -> float:
    """0.015, or one cell of the figure's denominator where that is more."""
    cells = recorded.get(_CELLS_BEHIND.get(name, ""), 0)
    return max(0.015, 1.0 / cells + 1e-9) if cells else 0.015


def test_one_cell_of_drift_is_allowed_only_for_figures_over_few_cells():
    recorded = {"n_predicted_blasts": 35, "n_expert_blasts": 20}
    assert _allowed_drift("blast_precision", recorded) > 0.5714 - 20 / 36
    assert _allowed_drift("blast_precision", recorded) < 0.5714 - 20 / 37  # two cells fail
    assert _allowed_drift("specificity", recorded) == 0.015


def test_a_renamed_copy_of_training_patients_is_not_counted_as_held_out(shared_data, tmp_path,
                                                                         capsys):  # fmt: skip
    """A lab's copy of deepapl under another folder name: its patients were trained on."""
    from train.evaluate.__main__ import main

    trained = {g.partition(":")[2] for g in seen_groups(models_dir() / "lite0_blast_v2")
               if g.startswith("deepapl:")}  # fmt: skip
    patient = sorted(trained)[0]
    for cell_type in ("blast", "lymphocyte"):
        source = shared_data / "deepapl" / cell_type / patient
        target = tmp_path / "dapl" / cell_type / patient
        target.mkdir(parents=True)
        for image in sorted(source.iterdir())[:2]:
            (target / image.name).write_bytes(image.read_bytes())
    command = ["cells", "--data", str(tmp_path / "dapl"), "--format", "folders",
               "--model", "lite0_blast_v2"]  # fmt: skip
    assert main([*command, "--held-out"]) == 2
    said = capsys.readouterr().err
    assert "nothing to test" in said and "'dapl' is not a dataset the model was split on" in said
    assert main(command) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("4 of 4 cells come from groups the model was trained" in n for n in notes)
    assert any("intervals come from 1 group(s) only" in n for n in notes)  # one patient
    assert main(["normals", *command[1:]]) == 0  # measures the 2 lymphocytes, not the blasts
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("2 of 2 cells come from groups the model was trained" in n for n in notes)
    assert any("2 blast cell(s) left out" in n for n in notes)
    assert main(["normals", *command[1:], "--held-out"]) == 2
    assert "all were blasts or seen in training" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "dapl" / "lymphocyte")  # blasts alone: sensitivity only
    assert main(command) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n"] == 2 and figures["specificity"] is None and figures["auroc"] is None
    assert any("Only blast cells: sensitivity and the confident-miss rate" in n
               for n in figures["notes"])  # fmt: skip
