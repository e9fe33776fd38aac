"""``python -m train compare --protocol leave-one-source-out`` on a small real mix of sources,
and ``train.evaluate cells --format folders`` on the deepapl layout."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from train import jobs
from train.__main__ import main as train_cli
from train.compare_settings import MODELS_SUBDIR, RESULTS_FILE
from train.data import load_allidb2, load_class_folders

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def mixed(shared_data, tmp_path_factory) -> Path:
    """ALL-IDB2 crops (both classes), deepapl cells of 12 patients (both), PBC normal cells."""
    idb2 = sorted(load_allidb2(shared_data / "all_idb2").records, key=lambda r: r.path.name)[::4]
    deepapl = load_class_folders(shared_data / "deepapl").records
    patients = sorted({r.group for r in deepapl})[:12]
    apl = [r for r in deepapl if r.group in patients][::2]
    pbc = load_class_folders(shared_data / "pbc", label_map={"platelet": None}).records[::40]
    manifest = tmp_path_factory.mktemp("loso") / "manifest.csv"
    with manifest.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "group", "source"])
        writer.writerows([str(r.path), r.label, r.group, r.source] for r in [*idb2, *apl, *pbc])
    return manifest


def test_loso_tests_each_source_with_a_model_that_never_saw_it(mixed, tmp_path, capsys):
    out = tmp_path / "run"
    code = train_cli(["compare", "--data", str(mixed), "--architectures", "efficientnet_lite0",
                      "--input-size", "32", "--epochs", "3", "--feature-views", "2",
                      "--batch-size", "32", "--protocol", "leave-one-source-out",
                      "--balance", "source_class", "--augmentations", "hflip", "stain", "blur",
                      "--out", str(out)])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # The dataset check's shortcut note is said, and kept for the page's promotion panel.
    assert "note: One class only in pbc" in captured.err
    assert any("One class only in pbc" in n for n in jobs.read_status(out)["data_notes"])
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["protocol"] == "leave_one_source_out"
    assert results["folds"] == ["allidb2", "deepapl", "pbc"]
    assert results["n_tested"] == results["n_cells"]  # every cell tested once, by one fold
    model = results["models"]["efficientnet_lite0"]
    per_source = model["per_source"]
    assert set(per_source) == {"allidb2", "deepapl", "pbc"}
    for source in ("allidb2", "deepapl"):  # both classes: sensitivity, AUROC, misses, intervals
        m = per_source[source]
        assert m["sensitivity"] is not None and m["auroc"] is not None
        assert m["confident_miss_rate"] is not None and m["intervals"]["sensitivity"]
        assert m["interval_unit"] == "group"
    assert per_source["pbc"]["sensitivity"] is None  # normal-only: specificity alone
    assert per_source["pbc"]["specificity"] is not None
    # Out-of-domain score and adaptation measured for every left-out source.
    extras = model["loso_extras"]
    assert set(extras) == {"allidb2", "deepapl", "pbc"}
    for values in extras.values():
        assert 0.0 <= values["domain"]["cell_auroc"] <= 1.0
    # Confident misses no reviewer sees: with no domain check, the per-source figure itself;
    # the sample check can only send more of them to review.
    for source in ("allidb2", "deepapl"):
        missed = extras[source]["domain"]["missed_blasts_unreviewed"]
        assert missed["no_check"] == pytest.approx(per_source[source]["confident_miss_rate"])
        assert missed["cell_limit_99"] <= missed["sample_check"] <= missed["no_check"]
    assert extras["pbc"]["domain"]["missed_blasts_unreviewed"]["no_check"] is None
    assert "one class" in extras["pbc"]["adaptation"]["skipped"]
    assert set(extras["deepapl"]["adaptation"]) == {"50", "200"}
    # A LOSO model lacks a source: none is staged for promotion.
    assert not (out / MODELS_SUBDIR).exists() or not any((out / MODELS_SUBDIR).iterdir())
    assert "| efficientnet_lite0 | deepapl |" in printed and "domain AUROC" in printed
    assert "blasts missed unreviewed" in printed


def test_evaluate_cells_reads_the_deepapl_folder_layout(shared_data, tiny_models_dir, tmp_path,
                                                       capsys):  # fmt: skip
    """``<class>/<patient>/image`` folders, a damaged file among them: reported, not fatal."""
    from train.evaluate.__main__ import main as evaluate_cli

    source = shared_data / "deepapl"
    patients = ("Patient_36", "Patient_40", "Patient_52")  # 36 and 52 hold a damaged file
    for kind in ("blast", "lymphocyte", "neutrophil", "monocyte"):
        for patient in patients:
            if (source / kind / patient).is_dir():
                shutil.copytree(source / kind / patient, tmp_path / "deepapl" / kind / patient)
    code = evaluate_cli(["cells", "--data", str(tmp_path / "deepapl"), "--format", "folders",
                         "--model", "tiny", "--models-dir", str(tiny_models_dir)])  # fmt: skip
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n_groups"] == 3 and figures["interval_unit"] == "group"
    assert figures["n"] >= 40 and figures["confident_miss_rate"] is not None
    assert len(figures["unreadable_files"]) >= 1
    assert "BL_7744281.jpg" in " ".join(figures["unreadable_files"])
