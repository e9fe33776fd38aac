"""Model folders: save, list, load with checksum verification, active model, classification."""

import json
import os
import shutil
import time

import numpy as np
import pytest

from leukemia_core.accounts import User
from leukemia_core.classify import Classifier, label_probability
from leukemia_core.counting import CellLabel
from leukemia_core.cropping import crop_cells
from leukemia_core.errors import ModelIntegrityError, ModelNotFoundError
from leukemia_core.imaging import png_bytes
from leukemia_core.models import preprocess
from leukemia_core.models.config import CONFIG_CHECKSUM, ModelConfig, config_checksum
from leukemia_core.models.folder import (
    active_model_name,
    list_models,
    load_model,
    read_config,
    set_active_model,
)
from leukemia_core.models.inputs import model_inputs
from leukemia_core.models.writing import write_config
from leukemia_core.pipeline import MODE_CELLS, analyze
from leukemia_core.segmentation import segment_wbc
from leukemia_core.synthetic import make_demo_smear
from train.fit import app_crop, load_crops
from train.records import LabelledCrop


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


@pytest.mark.parametrize(("change", "words"), [
    ({"input_size": 64}, r"its input is \(32, 32, 3\) where config.json says 64x64 RGB"),
    ({"architecture": "vgg16"}, "the network is simple_cnn where config.json says vgg16"),
    ({"gradcam_layer": "block9_relu"}, r"lacks the layer\(s\) \['block9_relu'\]"),
    ({"class_names": 5}, r"class_names is 5; expected a list of names"),
])  # fmt: skip
def test_weights_that_do_not_fit_their_config_are_refused_by_name(models, change, words):
    """A folder whose files were mixed up fails on load, in words, not at its first cell."""
    path = models / "tiny" / "config.json"
    values = {k: v for k, v in json.loads(path.read_text()).items() if k != CONFIG_CHECKSUM}
    values |= change
    path.write_text(json.dumps({**values, CONFIG_CHECKSUM: config_checksum(values)}))  # sealed
    with pytest.raises(ModelIntegrityError, match=words):
        load_model("tiny", models)


def test_unknown_name_lists_the_valid_ones(models):
    with pytest.raises(ModelNotFoundError, match=r"no model named .nope.*valid names: tiny"):
        load_model("nope", models)
    with pytest.raises(ModelNotFoundError, match=r"none \(train one"):
        load_model("x", models / "empty")
    # no name, no model at all (a mistyped LEUKEMIA_MODELS_DIR): it named a model "''"
    with pytest.raises(ModelNotFoundError, match=r"holds no model folder; .*LEUKEMIA_MODELS_DIR"):
        load_model(None, models / "empty")


def test_active_model_pointer(models):
    shutil.copytree(models / "tiny", models / "another")
    assert list_models(models) == ["another", "tiny"]
    set_active_model("tiny", models, user=User.shell())
    assert active_model_name(models) == "tiny" and list_models(models)[0] == "tiny"
    assert load_model(root=models).name == "tiny"
    with pytest.raises(ModelNotFoundError):
        set_active_model("missing", models, user=User.shell())


def test_a_damaged_model_is_not_made_active(models):
    """`train activate` took a folder with cut weights or an edited config: every analysis
    then failed."""
    shutil.copytree(models / "tiny", models / "damaged")
    shutil.copytree(models / "tiny", models / "edited")
    set_active_model("tiny", models, user=User.shell())
    weights = models / "damaged" / "model.keras"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = models / "edited" / "config.json"
    config.write_text(config.read_text().replace('"input_size": 32', '"input_size": 33'))
    for name, words in (("damaged", "do not match the checksum"), ("edited", "config_sha256")):
        with pytest.raises(ModelIntegrityError, match=words):
            set_active_model(name, models, user=User.shell())
        assert active_model_name(models) == "tiny"


def test_an_activation_that_cannot_be_recorded_changes_nothing(models, monkeypatch):
    """ACTIVE was written before the record; a busy case database left the new model active
    with no line in the model-change record, and the command said it had failed."""
    from leukemia_core.accounts import Accounts
    from leukemia_core.store_rows import CaseStoreError

    shutil.copytree(models / "tiny", models / "other")
    set_active_model("tiny", models, user=User.shell())
    n_changes = len(Accounts().model_changes())

    def busy(*args, **kwargs):
        raise CaseStoreError("The case database could not be written: try again in a moment")

    monkeypatch.setattr(Accounts, "record_model_change", busy)
    with pytest.raises(CaseStoreError, match="try again"):
        set_active_model("other", models, user=User.shell())
    assert active_model_name(models) == "tiny"
    (models / "ACTIVE").unlink()  # no pointer before: none after
    with pytest.raises(CaseStoreError):
        set_active_model("other", models, user=User.shell())
    assert not (models / "ACTIVE").exists()
    monkeypatch.undo()
    assert len(Accounts().model_changes()) == n_changes


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
    assert label_probability(float("nan"), model).label == CellLabel.UNCERTAIN  # was normal


def test_analyze_field_counts_what_it_labels(models):
    smear = make_demo_smear()
    classifier = Classifier(load_model("tiny", models))
    analysis = analyze([smear.image], classifier, names=["demo"])
    assert len(analysis.cells) == len(crop_cells(smear.image, segment_wbc(smear.image))) == 9
    labels = [c.model_label for c in analysis.cells]
    assert labels.count(CellLabel.BORDER) == 1  # the demo smear has one cell cut by the edge
    count = analysis.count(0)
    assert count.n_blasts == labels.count(CellLabel.BLAST)
    assert count.n_counted == labels.count(CellLabel.BLAST) + labels.count(CellLabel.NORMAL)
    twice = analyze([smear.image, smear.image], classifier, names=["demo", "again"])
    assert twice.count().n_counted == 2 * count.n_counted


def test_analyze_single_cells_gives_one_cell_each(models):
    smear = make_demo_smear()
    cells = crop_cells(smear.image, segment_wbc(smear.image))
    images = [c.crop for c in cells[:3]]  # cut-outs on black, as C-NMC cells are
    results = analyze(images, Classifier(load_model("tiny", models)), mode=MODE_CELLS)
    assert [len(results.field_cells(f.index)) for f in results.fields] == [1, 1, 1]
    counts = [results.count(f.index) for f in results.fields]
    assert all(c.n_counted + c.n_excluded == 1 for c in counts)


def test_training_and_evaluation_see_the_crop_the_app_classifies(models, tmp_path):
    """A cell with its neighbours (as ALL-IDB2 and PBC crops come) gets the app's probability."""
    smear = make_demo_smear()
    height, width = smear.image.shape[:2]
    centres = [(round(x), round(y)) for x, y in (c.centroid for c in crop_cells(
        smear.image, segment_wbc(smear.image)))]  # fmt: skip
    cx, cy = next((x, y) for x, y in centres if 60 <= x < width - 60 and 60 <= y < height - 60)
    window = np.ascontiguousarray(smear.image[cy - 60 : cy + 60, cx - 60 : cx + 60])
    path = tmp_path / "cell.png"
    path.write_bytes(png_bytes(window))
    classifier = Classifier(load_model("tiny", models))
    in_app = analyze([window], classifier, mode=MODE_CELLS).cells[0].blast_probability
    record = LabelledCrop(path=path, label="blast", group="g", source="synthetic")
    evaluated = classifier.probabilities([app_crop(record)])[0]
    assert evaluated == pytest.approx(in_app, abs=1e-6)
    # Training's ready crops, preprocessed, are the classifier's input too (one input path).
    ready = load_crops([record], classifier.model.config.input_spec)
    trained_on = classifier.model.keras_model.predict_on_batch(
        preprocess(ready, classifier.model.config.preprocessing))  # fmt: skip
    direct = classifier.model.keras_model.predict_on_batch(
        model_inputs([app_crop(record)], classifier.model.config.input_spec))  # fmt: skip
    assert np.allclose(trained_on, direct, atol=1e-6)


def test_test_time_views_make_the_answer_independent_of_orientation(models):
    smear = make_demo_smear()
    crops = [c.crop for c in crop_cells(smear.image, segment_wbc(smear.image))[:3]]
    turned, mirrored = [np.rot90(c) for c in crops], [c[:, ::-1] for c in crops]
    plain = Classifier(load_model("tiny", models))
    # A random CNN is not symmetric: without views, turning a cell changes its answer.
    assert not np.allclose(plain.probabilities(crops), plain.probabilities(mirrored), atol=1e-4)
    path = models / "tiny" / "config.json"
    values = json.loads(path.read_text())
    write_config(models / "tiny", {**values, "test_time_views": 8})
    averaged = Classifier(load_model("tiny", models))
    assert averaged.model.config.test_time_views == 8
    p = averaged.probabilities(crops)
    np.testing.assert_allclose(p, averaged.probabilities(turned), atol=1e-5)
    np.testing.assert_allclose(p, averaged.probabilities(mirrored), atol=1e-5)
    # The average is that of the plain model's logits over the eight views.
    views = [crops, turned, [np.rot90(c, 2) for c in crops], [np.rot90(c, 3) for c in crops],
             mirrored] + [[np.rot90(c[:, ::-1], k) for c in crops] for k in (1, 2, 3)]  # fmt: skip
    mean_logits = np.mean([plain.logits(v) for v in views], axis=0)
    np.testing.assert_allclose(averaged.logits(crops), mean_logits, rtol=1e-4, atol=1e-5)
    path.write_text(json.dumps({**values, "test_time_views": 3}))
    with pytest.raises(ModelIntegrityError, match="test_time_views is 3"):
        load_model("tiny", models)


def test_config_json_records_checksum_and_calibration(models):
    values = json.loads((models / "tiny" / "config.json").read_text())
    assert values["sha256"] == load_model("tiny", models).checksum
    assert values["calibration"]["uncertain_low"] == 0.45


def test_a_model_is_described_in_words_with_its_dates():
    values = {"architecture": "efficientnet_lite0", "input_size": 224, "preprocessing": "lite",
              "class_names": ["blast", "normal"], "sha256": "a" * 64,
              "training": {"created": "2026-12-04T21:39:15+00:00",
                           "recalibrated": {"date": "2026-12-05T08:00:00+00:00"}}}  # fmt: skip
    config = ModelConfig.from_dict("lite0_blast_v2", values)
    assert config.description == (
        "lite0_blast_v2: EfficientNet-Lite0 network, trained 2026-12-04, recalibrated 2026-12-05"
    )
    bare = ModelConfig.from_dict("mine", {**values, "architecture": "resnet50", "training": {}})
    assert bare.description == "mine: ResNet-50 network"


def test_a_saved_model_folder_is_as_readable_as_the_models_folder(models):
    """A walkthrough found promoted folders at 0700 and config.json at 0600 (mkdtemp, mkstemp):
    a service running as another account could not load them. They follow the models folder."""
    from leukemia_core.models.writing import save_model_folder

    models.chmod(0o755)
    loaded = load_model("tiny", models)
    config = json.loads((models / "tiny" / "config.json").read_text())
    for key in ("sha256", "weights_file", "format_version"):
        config.pop(key)
    folder = save_model_folder(loaded.keras_model, "shared", config, metrics={}, card="# s\n",
                               root=models)  # fmt: skip
    set_active_model("shared", models, user=User.shell())
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o644  # written atomically
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "card.md", "model.keras"):  # written plainly: as the umask says
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (models / "ACTIVE").stat().st_mode & 0o777 == 0o644
    models.chmod(0o700)  # a private models folder keeps new files private
    set_active_model("tiny", models, user=User.shell())
    assert (models / "ACTIVE").stat().st_mode & 0o777 == 0o644  # a replaced file keeps its mode
    (models / "ACTIVE").unlink()
    set_active_model("tiny", models, user=User.shell())
    assert (models / "ACTIVE").stat().st_mode & 0o777 == 0o600


def test_a_file_written_into_a_shared_drop_folder_follows_the_umask(tmp_path):
    """A review found results written 0666 into a 0777 (or /tmp-like 1777) folder: any local
    account could change counts a rerun reuses. The umask applies, as it does to ``open``."""
    from leukemia_core.outputs import write_text_atomic

    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    previous = os.umask(0o022)
    try:
        written = write_text_atomic(drop / "summary.json", "{}\n")
        plain = drop / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644


def test_promotions_of_a_run_leave_out_versions_adapted_from_them(models, tmp_path):
    """A walkthrough read "efficientnet_lite0 of this job was promoted as ...-site1": an adapted
    version keeps its base's training record, but Adapt made it, not the promotion."""
    from leukemia_core.models.folder import PROMOTED_FROM
    from train.promote import promotions_of

    run = tmp_path / "runs" / "job-1"
    run.mkdir(parents=True)
    values = json.loads((models / "tiny" / "config.json").read_text())
    values["training"] = {**values["training"], PROMOTED_FROM: str(run.resolve())}
    write_config(models / "tiny", values)
    shutil.copytree(models / "tiny", models / "tiny-site1")
    write_config(models / "tiny-site1",
                 {**values, "training": {**values["training"], "adapted": {"base": "tiny"}}})  # fmt: skip
    assert promotions_of(run, models) == [("tiny", "simple_cnn")]


def test_saving_a_name_three_times_keeps_every_earlier_version(models):
    """A third promotion under one name deleted the first version, which signed cases may name."""
    from leukemia_core.models.folder import replaced_model_name
    from leukemia_core.models.writing import save_model_folder

    loaded = load_model("tiny", models)
    config = json.loads((models / "tiny" / "config.json").read_text())
    for key in ("sha256", "weights_file", "format_version", "config_sha256"):
        config.pop(key, None)
    for version in (1, 2, 3):
        save_model_folder(loaded.keras_model, "lab", {**config, "training": {**config["training"], "note": f"v{version}"}},
                          root=models)  # fmt: skip
    kept = {p.name: json.loads((p / "config.json").read_text())["training"]["note"]
            for p in models.iterdir() if p.name.startswith("lab")}  # fmt: skip
    assert kept == {"lab": "v3", "lab.previous": "v2", "lab.1.previous": "v1"}
    assert "lab.1.previous" not in list_models(models) and "lab" in list_models(models)
    assert [
        replaced_model_name(n) for n in ("lab.previous", "lab.1.previous", "lab", "x.prev")
    ] == ["lab", "lab", None, None]


def test_rolling_back_to_a_kept_version_makes_that_version_the_active_model(models):
    """ACTIVE naming lab.previous was ignored: the app and every command without --model used
    the first folder by name, while `train activate` said the rollback was done."""
    from leukemia_core.models.writing import save_model_folder

    loaded = load_model("tiny", models)
    config = json.loads((models / "tiny" / "config.json").read_text())
    for key in ("sha256", "weights_file", "format_version", "config_sha256"):
        config.pop(key, None)
    for version in (1, 2):
        save_model_folder(loaded.keras_model, "lab", {**config, "training": {**config["training"], "note": f"v{version}"}},
                          root=models)  # fmt: skip
    set_active_model("lab.previous", models, user=User.shell())
    assert active_model_name(models) == "lab.previous"
    assert (
        json.loads((models / "lab.previous" / "config.json").read_text())["training"]["note"]
        == "v1"
    )
    assert read_config(None, models).name == "lab.previous"
    assert list_models(models)[0] == "lab.previous" and "lab" in list_models(models)
    assert load_model(None, models).config.name == "lab.previous"


def test_a_model_saved_again_while_it_loads_is_never_mixed_from_two_versions(models, monkeypatch):
    """The weights were hashed, then read again by path: a save in between gave one version's
    config (checksum, threshold) with the other version's network."""
    from leukemia_core.models import folder
    from leukemia_core.models.writing import save_model_folder

    loaded = load_model("tiny", models)
    config = json.loads((models / "tiny" / "config.json").read_text())
    for key in ("sha256", "weights_file", "format_version", "config_sha256"):
        config.pop(key, None)
    network = loaded.keras_model
    save_model_folder(network, "lab", config, root=models)
    changed = [w + 0.5 for w in network.get_weights()]
    original_load_domain = folder._load_domain

    def save_during_the_load(*args):
        if changed:  # once: the Retrain page saves "lab" while the app reads it
            network.set_weights(changed)
            changed.clear()
            save_model_folder(network, "lab", {**config, "calibration": {
                **config["calibration"], "threshold": 0.52}}, root=models)  # fmt: skip
        return original_load_domain(*args)

    monkeypatch.setattr(folder, "_load_domain", save_during_the_load)
    raced = load_model("lab", models)
    assert raced.config.sha256 == read_config("lab", models).sha256
    assert raced.config.calibration.threshold == 0.52
    for got, want in zip(raced.keras_model.get_weights(), network.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_domain_reference_the_config_refuses_leaves_the_model_as_it_was(models):
    """The .npz was replaced before its limit was checked: a refused limit left the folder's
    checksum broken, so the model (the active one, say) no longer loaded."""
    import dataclasses

    import numpy as np

    from leukemia_core.domain import DomainReference
    from leukemia_core.errors import ModelIntegrityError
    from leukemia_core.models.writing import write_domain_reference

    width = load_model("tiny", models).keras_model.get_layer("head_pool").output.shape[-1]
    rng = np.random.default_rng(0)
    reference = DomainReference.fit(rng.normal(size=(60, width)), rng.normal(size=(60, 6)),
                                    n_components=4)  # fmt: skip
    write_domain_reference("tiny", reference, root=models, data="random, for tests")
    before = {p.name: p.read_bytes() for p in (models / "tiny").iterdir()}
    broken = dataclasses.replace(reference, limit=float("nan"))
    with pytest.raises(ModelIntegrityError, match="not writing the domain reference"):
        write_domain_reference("tiny", broken, root=models)
    assert {p.name: p.read_bytes() for p in (models / "tiny").iterdir()} == before
    assert load_model("tiny", models).domain is not None


def test_a_model_read_while_a_save_swaps_its_folder_in_is_found(models):
    """Saving under an existing name swaps folders by two renames; a read between them (the
    app opening the active model while a promotion lands) failed with "no model named"."""
    import threading

    staging = models / ".tiny.k2j4x"
    (models / "tiny").rename(staging)  # between the renames: the name is missing

    def land():
        time.sleep(0.3)
        staging.rename(models / "tiny")

    threading.Thread(target=land).start()
    assert read_config("tiny", models).name == "tiny"  # waited for the swap, not refused
    with pytest.raises(ModelNotFoundError):
        read_config("nope", models)  # no save under way: refused at once
