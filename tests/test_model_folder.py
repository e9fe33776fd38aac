"""Model folders: save, list, load with checksum verification, active model, classification."""

import json
import shutil

import numpy as np
import pytest

from leukemia_core.classify import Classifier, label_probability
from leukemia_core.counting import CellLabel
from leukemia_core.cropping import crop_cells
from leukemia_core.errors import ModelIntegrityError, ModelNotFoundError
from leukemia_core.models.folder import (
    active_model_name,
    list_models,
    load_model,
    read_config,
    set_active_model,
)
from leukemia_core.pipeline import analyze_field, analyze_single_cells, sample_count
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_demo_smear


@pytest.fixture
def models(tiny_models_dir, tmp_path):
    """A writable copy of the tiny models folder."""
    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    return root


def test_load_verifies_and_describes(models):
    loaded = load_model("tiny", models)
    assert loaded.config.input_size == 32 and loaded.config.class_names == ("blast", "normal")
    assert len(loaded.checksum) == 64 and loaded.keras_model.output_shape == (None, 2)


def test_tampered_weights_fail_with_a_clear_error(models):
    weights = models / "tiny" / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"do not match the checksum.*git checkout"):
        load_model("tiny", models)


def test_missing_weights_and_broken_config(models):
    (models / "tiny" / "model.keras").unlink()
    with pytest.raises(ModelIntegrityError, match="no weights file"):
        load_model("tiny", models)
    (models / "tiny" / "config.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="not a valid model config"):
        read_config("tiny", models)


def test_unknown_name_lists_the_valid_ones(models):
    with pytest.raises(ModelNotFoundError, match=r"no model named .nope.*valid names: tiny"):
        load_model("nope", models)
    with pytest.raises(ModelNotFoundError, match=r"none \(train one"):
        load_model("x", models / "empty")


def test_active_model_pointer(models):
    shutil.copytree(models / "tiny", models / "another")
    assert list_models(models) == ["another", "tiny"]
    set_active_model("tiny", models)
    assert active_model_name(models) == "tiny" and list_models(models)[0] == "tiny"
    assert load_model(root=models).name == "tiny"
    with pytest.raises(ModelNotFoundError):
        set_active_model("missing", models)


def test_classifier_is_deterministic_and_resizes(models):
    classifier = Classifier(load_model("tiny", models))
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (s, s, 3), dtype=np.uint8) for s in (32, 300, 17)]
    first, again = classifier.probabilities(crops), classifier.probabilities(crops)
    assert first.shape == (3,) and np.all((first > 0) & (first < 1))
    np.testing.assert_allclose(first, again, rtol=1e-6)
    # Batching must not change the answer.
    single = np.concatenate([classifier.probabilities([c]) for c in crops])
    np.testing.assert_allclose(first, single, rtol=1e-5, atol=1e-6)


def test_labels_follow_threshold_and_band(models):
    model = load_model("tiny", models)  # band [0.45, 0.55), threshold 0.5
    assert label_probability(0.9, model).label == CellLabel.BLAST
    assert label_probability(0.5, model).label == CellLabel.UNCERTAIN
    assert label_probability(0.2, model).label == CellLabel.NORMAL


def test_analyze_field_counts_what_it_labels(models):
    smear = make_demo_smear()
    analysis = analyze_field(smear.image, Classifier(load_model("tiny", models)), name="demo")
    assert len(analysis.cells) == len(crop_cells(smear.image, segment_wbc(smear.image))) == 9
    labels = [c.model_label for c in analysis.cells]
    assert labels.count(CellLabel.BORDER) == 1  # the demo smear has one cell cut by the edge
    assert analysis.count.n_blasts == labels.count(CellLabel.BLAST)
    assert analysis.count.n_counted == labels.count(CellLabel.BLAST) + labels.count(CellLabel.NORMAL)
    assert sample_count([analysis, analysis]).n_counted == 2 * analysis.count.n_counted


def test_analyze_single_cells_gives_one_cell_each(models):
    smear = make_demo_smear()
    cells = crop_cells(smear.image, segment_wbc(smear.image))
    images = [c.crop for c in cells[:3]]  # cut-outs on black, as C-NMC cells are
    results = analyze_single_cells(images, Classifier(load_model("tiny", models)))
    assert [len(r.cells) for r in results] == [1, 1, 1]
    assert all(r.count.n_counted + r.count.n_excluded == 1 for r in results)


def test_config_json_records_checksum_and_calibration(models):
    values = json.loads((models / "tiny" / "config.json").read_text())
    assert values["sha256"] == load_model("tiny", models).checksum
    assert values["calibration"]["uncertain_low"] == 0.45
