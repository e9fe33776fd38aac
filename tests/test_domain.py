"""Out-of-domain check: the reference on its own, in model folders, the analysis and exports.

The colour-shift tests use real (tiny, random) networks and synthetic smears: the reference of
``conftest.ood_models_dir`` is fitted on Wright-stained smears; a strong colour cast or the pale
stain must raise the score above its limit, the Wright-stained demo smear must not.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import synthetic_cell_crops

from leukemia_core.batch import analyze_files
from leukemia_core.calibration import Calibration
from leukemia_core.case_export import case_json, cells_csv
from leukemia_core.classify import Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.domain import (
    STAIN_NAMES,
    DomainAssessment,
    DomainReference,
    DomainReferenceError,
    pool_small_groups,
    stain_statistics,
)
from leukemia_core.errors import ModelIntegrityError
from leukemia_core.imaging import prepare_field
from leukemia_core.labellers import ModelLabeller
from leukemia_core.models.config import DOMAIN_FILE
from leukemia_core.models.files_check import sha256_of
from leukemia_core.models.folder import load_model, read_config
from leukemia_core.pipeline import MODE_CELLS, analyze
from leukemia_core.report import case_report_html
from leukemia_core.review import Review
from leukemia_core.store import CaseStore
from leukemia_core.synthetic import make_demo_smear, make_smear

F = 32


def _cells(rng: np.random.Generator, n: int, shift: float = 0.0, stain_shift: float = 0.0):
    """``n`` cells of a "training distribution": features on a 4-dimensional manifold in ``F``
    dimensions (as deep features are) plus noise, and stain statistics around Wright values;
    ``shift`` moves the features along the manifold past the training cells (in standard
    deviations of its first coordinate), ``stain_shift`` moves b (yellow-blue)."""
    basis = np.random.default_rng(1).normal(size=(4, F))
    features = 3.0 + rng.normal(size=(n, 4)) @ basis + 0.05 * rng.normal(size=(n, F))
    features += shift * basis[0]
    stain = rng.normal([60, 20, -20, 12, 5, 6], [3, 2, 2, 1, 0.5, 0.5], size=(n, 6))
    stain[:, 2] += stain_shift
    return features, stain


@pytest.fixture(scope="module")
def reference() -> DomainReference:
    rng = np.random.default_rng(0)
    x, s = _cells(rng, 600)
    vx, vs = _cells(rng, 300)
    return DomainReference.fit(x, s, val_features=vx, val_stain=vs,
                               val_groups=np.repeat(np.arange(15), 20), n_components=16)  # fmt: skip


def colour_cast(image: np.ndarray, gains=(1.0, 0.8, 0.7)) -> np.ndarray:
    """The image under a strong warm colour cast (blue and green damped)."""
    return np.clip(image * np.asarray(gains), 0, 255).astype(np.uint8)


def pale_demo() -> np.ndarray:
    """The demo smear's layout under the pale stain."""
    counts = {"n_wbc": 8, "n_touching_pairs": 1, "n_rbc": 300, "n_platelets": 12}
    return make_smear(768, 1024, red_cell_diameter_px=34.0, border_wbc=True, seed=7,
                      stain="pale", **counts).image  # fmt: skip


# ---- the reference on its own ----------------------------------------------------------------
def test_scores_are_about_one_in_domain_and_fields_like_the_training_data_pass(reference):
    rng = np.random.default_rng(5)
    x, s = _cells(rng, 20 * 40)
    medians = np.median(reference.cell_scores(x, s).reshape(40, 20), axis=1)
    assert 0.8 < np.median(medians) < 1.3
    assert np.mean(medians > reference.limit) <= 0.1
    assert "validation groups" in reference.limit_source and 1.0 < reference.limit < 2.0


@pytest.mark.parametrize(("shift", "stain_shift"), [(0.0, 25.0), (4.0, 0.0)])
def test_a_shifted_stain_or_shifted_features_warn(reference, shift, stain_shift):
    rng = np.random.default_rng(6)
    x, s = _cells(rng, 30, shift=shift, stain_shift=stain_shift)
    assessment = reference.assess(reference.cell_scores(x, s))
    assert assessment.warned and assessment.score > reference.limit
    assert assessment.message == (
        f"These cells differ from the training data (domain score {assessment.score:.2f}, "
        f"limit {reference.limit:.2f}); review every cell."
    )
    parts = np.median(reference.score_parts(x, s), axis=0)
    assert parts[1 if stain_shift else 0] > 1.5 > parts[0 if stain_shift else 1]  # which moved


def test_assessment_is_the_median_and_needs_cells(reference):
    a = reference.assess([0.5, 0.9, 50.0])  # one odd cell does not warn a field
    assert (a.score, a.n_cells, a.warned) == (0.9, 3, False)
    empty = reference.assess([])
    assert empty.score is None and not empty.warned and "No cells" in empty.message
    assert DomainAssessment.from_dict(a.to_dict()) == a


def test_without_validation_groups_the_limit_comes_from_the_training_cells():
    rng = np.random.default_rng(2)
    for n, bank_size in ((200, 2000), (400, 150)):  # all cells in the bank / some left out
        x, s = _cells(rng, n)
        reference = DomainReference.fit(x, s, n_components=8, bank_size=bank_size)
        assert "single training cells" in reference.limit_source
        new = reference.cell_scores(*_cells(rng, 400))
        assert 0.8 < np.median(new) < 1.3 and np.mean(new > reference.limit) < 0.05


def test_npz_round_trip_is_small_and_exact(tmp_path):
    rng = np.random.default_rng(3)
    x, s = rng.normal(size=(300, 1280)), rng.normal(size=(300, 6))
    reference = DomainReference.fit(x, s, n_components=48)
    path = reference.save(tmp_path / DOMAIN_FILE)
    assert path.stat().st_size < 2_000_000
    loaded = DomainReference.load(path)
    assert loaded.components.shape == (48, 1280) and loaded.limit == reference.limit
    np.testing.assert_array_equal(
        loaded.cell_scores(x[:5], s[:5]), reference.cell_scores(x[:5], s[:5])
    )
    assert [p.name for p in tmp_path.iterdir()] == [DOMAIN_FILE]  # no temporary file left


def test_a_damaged_or_foreign_file_is_refused(tmp_path, reference):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an npz")
    with pytest.raises(DomainReferenceError, match=r"is not a domain reference.*train domain"):
        DomainReference.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, feature_mean=np.zeros(3))
    with pytest.raises(DomainReferenceError, match="is not a domain reference"):
        DomainReference.load(other)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda r: DomainReference.fit(np.zeros((5, 4)), np.zeros((4, 6))), "same cells"),
        (lambda r: DomainReference.fit(np.zeros((5, 4)), np.zeros((5, 3))), r"\(N, 6\)"),
        (lambda r: DomainReference.fit(np.full((5, 4), np.nan), np.zeros((5, 6))), "NaN"),
        (lambda r: DomainReference.fit(np.eye(5), np.zeros((5, 6)), val_features=np.eye(5)),
         "together"),
        (lambda r: r.cell_scores(np.zeros((2, F + 1)), np.zeros((2, 6))), rf"\(N, {F}\)"),
        (lambda r: stain_statistics([np.zeros((4, 4, 3), np.float32)]), "RGB uint8"),
    ],
)  # fmt: skip
def test_bad_inputs_say_what_arrived(reference, call, words):
    with pytest.raises(DomainReferenceError, match=words):
        call(reference)


def test_stain_statistics_read_the_cell_pixels_only():
    small = np.zeros((40, 40, 3), np.uint8)
    cv2.circle(small, (20, 20), 10, (200, 60, 150), -1)
    padded = np.zeros((120, 120, 3), np.uint8)
    padded[40:80, 40:80] = small
    stats = stain_statistics([small, padded])
    np.testing.assert_allclose(stats[0], stats[1], atol=1e-4)  # black padding is ignored
    assert len(STAIN_NAMES) == stats.shape[1] == 6
    assert stats[0, 1] > 40 and stats[0, 3] < 1e-3  # magenta: a > 0; one colour: no spread


# ---- model folders ---------------------------------------------------------------------------
@pytest.fixture
def ood_models(ood_models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(ood_models_dir, root)
    return root


def test_the_reference_is_declared_verified_and_leaves_the_weights_alone(
    ood_models, tiny_models_dir
):
    config = read_config("tiny-ood", ood_models)
    assert (
        config.domain["file"] == DOMAIN_FILE and config.domain["statistic"] == "median cell score"
    )
    assert config.sha256 == read_config("tiny", tiny_models_dir).sha256
    assert config.domain["sha256"] == sha256_of(ood_models / "tiny-ood" / DOMAIN_FILE)
    loaded = load_model("tiny-ood", ood_models)
    assert loaded.domain is not None and loaded.domain.limit == config.domain["threshold"]
    assert config.decision_settings()["domain"]["threshold"] == config.domain["threshold"]
    assert load_model("tiny", tiny_models_dir).domain is None  # folders without one still load


def test_a_changed_or_missing_reference_fails_with_the_fix(ood_models):
    path = ood_models / "tiny-ood" / DOMAIN_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        ModelIntegrityError, match=r"domain reference .* does not match.*train domain"
    ):
        load_model("tiny-ood", ood_models)
    path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing; write it again"):
        load_model("tiny-ood", ood_models)


# ---- the analysis ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ood_classifier(ood_models_dir) -> Classifier:
    return Classifier(load_model("tiny-ood", ood_models_dir))


def test_a_colour_shift_raises_the_score_above_the_limit_and_sends_every_cell_to_review(
    ood_classifier, tiny_models_dir
):
    demo = make_demo_smear().image
    normal = analyze([demo], ood_classifier)
    plain = analyze([demo], Classifier(load_model("tiny", tiny_models_dir)))
    domain = normal.fields[0].domain
    assert not domain.warned and domain.score < domain.limit
    assert [c.model_label for c in normal.cells] == [c.model_label for c in plain.cells]
    assert all(c.domain_score is not None for c in normal.cells)
    assert plain.fields[0].domain is None
    for shifted in (colour_cast(demo), pale_demo()):
        result = analyze([shifted], ood_classifier)
        domain = result.fields[0].domain
        assert domain.warned and domain.score > domain.limit
        assert len(result.cells) == len(normal.cells)
        assert {c.model_label for c in result.cells} <= {CellLabel.UNCERTAIN, CellLabel.BORDER}
        assert result.count().n_counted == 0


def test_shifting_the_crops_colour_raises_each_cells_score(ood_classifier):
    crops = [c for field in synthetic_cell_crops([300, 301]) for c in field]
    shifted = [colour_cast(c) for c in crops]
    labeller = ModelLabeller(ood_classifier)
    before = labeller.label(crops).domain_scores
    after = labeller.label(shifted).domain_scores
    assert np.all(after > before) and np.median(after) > ood_classifier.model.domain.limit


def test_the_warning_is_kept_in_the_case_record_and_the_exports(ood_classifier, tmp_path):
    fields = [prepare_field(make_demo_smear().image, "demo.png"),
              prepare_field(colour_cast(make_demo_smear().image), "cast.png")]  # fmt: skip
    session = Review(analyze(fields[1:], ood_classifier), sample_id="S-OOD")
    assert session.domain.warned and session.n_uncertain == session.tally()["uncertain"] > 0
    assert session.count().n_counted == 0
    mixed = Review(analyze(fields, ood_classifier), sample_id="S-MIX")
    assert [f.domain.warned for f in mixed.fields] == [False, True]
    assert all(c.label in ("uncertain", "border") for c in mixed.field_cells(1))

    store = CaseStore(tmp_path / "cases.sqlite3")
    case_id = store.create_case("S-OOD", session.fields, session.cells, model_name="tiny-ood",
                                model_checksum="", thresholds=session.thresholds(),
                                created_by="A. Reviewer", domain=session.domain)  # fmt: skip
    record = store.load_case(case_id)
    assert record.domain == session.domain and record.fields[0].domain == session.fields[0].domain
    rows = list(csv.DictReader(io.StringIO(cells_csv(record).decode())))
    assert [float(r["domain_score"]) for r in rows] == pytest.approx(
        [c.domain_score for c in session.cells])  # fmt: skip
    document = json.loads(case_json(record))
    assert document["domain"]["warned"] is True and document["domain"]["limit"] > 1.0
    assert document["fields"][0]["domain"]["score"] == pytest.approx(session.fields[0].domain.score)
    assert "differ from the training data" in case_report_html(record)
    reopened = type(session).from_record(record)
    assert reopened.domain == session.domain and reopened.cells[0].domain_score is not None


def test_the_command_line_writes_and_says_the_warning(
    ood_classifier, ood_models_dir, tmp_path, capsys, monkeypatch
):
    from leukemia_core.__main__ import main

    demo = make_demo_smear().image
    for name, image in (("demo.png", demo), ("cast.png", colour_cast(demo))):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    failures, summary = analyze_files([tmp_path / "cast.png"], tmp_path / "one", ood_classifier)
    assert (
        failures == 0 and summary["domain"]["warned"] and summary["warned_images"] == ["cast.png"]
    )
    rows = list(csv.DictReader((tmp_path / "one" / "cells.csv").open()))
    assert rows and all(float(r["domain_score"]) > 0 for r in rows)
    assert {r["label"] for r in rows} <= {"uncertain", "border"}
    image_json = json.loads((tmp_path / "one" / "cast.json").read_text())
    assert image_json["domain"]["warned"] is True
    # the set's warning is in each image's own file (one that passed alone read "resemble")
    assert image_json["set_domain"]["warned"] is True
    assert "every cell of every image was sent to review" in image_json["set_domain"]["note"]

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(ood_models_dir))
    code = main(["analyze", str(tmp_path / "demo.png"), "--out", str(tmp_path / "two"),
                 "--model", "tiny-ood"])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["domain"]["warned"] is False and summary["warned_images"] == []
    said = capsys.readouterr().out
    assert "resemble the training data" in said and "WARNING" not in said  # part of the result
    assert "set_domain" not in json.loads((tmp_path / "two" / "demo.json").read_text())
    code = main(["analyze", str(tmp_path / "cast.png"), "--out", str(tmp_path / "three"),
                 "--model", "tiny-ood"])  # fmt: skip
    said = capsys.readouterr().out
    assert said.startswith("WARNING: These cells differ") or "\nWARNING: These cells differ" in said
    assert "Every cell of every image was sent to review" in said


# ---- training side ---------------------------------------------------------------------------
def test_loso_domain_check_tells_a_shifted_source_on_cached_arrays():
    from train.loso import domain_check

    rng = np.random.default_rng(4)
    parts = [_cells(rng, 240, shift=shift, stain_shift=stain)
             for shift, stain in [(0, 0), (0.3, 2), (3.0, 25)]]  # fmt: skip
    groups = np.array([f"g{i // 20}" for i in range(240)])
    train = (np.concatenate([parts[0][0][:160], parts[1][0][:160]]),
             np.concatenate([parts[0][1][:160], parts[1][1][:160]]))  # fmt: skip
    in_domain = (np.concatenate([parts[0][0][160:], parts[1][0][160:]]),
                 np.concatenate([parts[0][1][160:], parts[1][1][160:]]),
                 np.concatenate([np.char.add("a", groups[160:]), np.char.add("b", groups[160:])]))  # fmt: skip
    shifted = domain_check(train, in_domain, (*parts[2], groups))
    assert shifted["cell_auroc"] > 0.95 and shifted["left_out_samples_warned"] == 1.0
    assert shifted["in_domain_samples_warned"] <= 0.5
    same = domain_check(train, in_domain, (parts[0][0][:80], parts[0][1][:80], groups[:80]))
    assert same["cell_auroc"] < 0.75  # cells like the training ones are not told apart

    # Every blast called normal and every normal cell called blast, with confidence: the
    # warned source's errors all reach a reviewer, the unwarned source's do not.
    band = Calibration(threshold=0.5, uncertain_low=0.2, uncertain_high=0.8)
    is_blast = np.arange(240) % 2 == 0
    wrong = (np.where(is_blast, 0.01, 0.99), is_blast, band)
    shifted = domain_check(train, in_domain, (*parts[2], groups), wrong)
    assert shifted["missed_blasts_unreviewed"]["no_check"] == 1.0
    assert shifted["missed_blasts_unreviewed"]["sample_check"] == 0.0
    assert shifted["false_blasts_unreviewed"]["sample_check"] == 0.0
    same = domain_check(train, in_domain, (parts[0][0][:80], parts[0][1][:80], groups[:80]),
                        (wrong[0][:80], is_blast[:80], band))  # fmt: skip
    assert same["missed_blasts_unreviewed"]["sample_check"] == 1.0
    assert 0.9 <= same["missed_blasts_unreviewed"]["cell_limit_99"] <= 1.0
    assert 0.0 <= same["in_domain_cells_over_cell_limit"]["99"] <= 0.1

    # A small lab's set can leave one in-domain validation group: no limit can be set and
    # tested, so the check says so (it used to raise IndexError and fail the whole model).
    one_group = (in_domain[0][:40], in_domain[1][:40], np.full(40, "only"))
    skipped = domain_check(train, one_group, (*parts[2], groups), wrong)
    assert "1 in-domain validation group(s)" in skipped["skipped"]
    from train.loso import extras_markdown

    table = extras_markdown({"lab": {"domain": skipped, "adaptation": {"skipped": "few"}}})
    assert "| lab | not measured: 1 in-domain validation group(s)" in table


def test_the_domain_command_fits_on_the_model_split_and_writes_the_folder(
    ood_models, tmp_path, capsys
):
    from train.__main__ import main

    crops = synthetic_cell_crops(range(400, 412))
    rows, split = ["path,label,group,source"], ["group,side"]
    for g, field in enumerate(crops):
        side = "train" if g < 8 else "val"
        split.append(f"syn:f{g},{side}")
        for i, crop in enumerate(field):
            name = f"f{g}_{i}.png"
            cv2.imwrite(str(tmp_path / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append(f"{name},{'blast' if i % 2 else 'normal'},f{g},syn")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    folder = ood_models / "tiny-ood"
    (folder / "split.csv").write_text("\n".join(split) + "\n")
    weights = sha256_of(folder / "model.keras")
    code = main(["domain", "tiny-ood", "--data", str(tmp_path / "manifest.csv"), "--components",
                 "6", "--models-dir", str(ood_models), "--describe", "synthetic"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    val_groups = [f"syn:f{g}" for g in range(8, 12) for _ in crops[g]]  # small: pooled by 8
    assert printed["val_groups"] == len(set(pool_small_groups(val_groups))) == 3
    assert printed["train_cells"] == sum(map(len, crops[:8]))
    config = read_config("tiny-ood", ood_models)
    assert config.sha256 == weights == sha256_of(folder / "model.keras")
    assert config.domain["threshold"] == pytest.approx(printed["limit"], abs=1e-4)
    assert config.domain["n_components"] == 6 and config.domain["data"] == "synthetic"
    assert load_model("tiny-ood", ood_models).domain.n_train == printed["train_cells"]
    (folder / "split.csv").write_text("group,side\nother:x,train\nother:y,val\n")
    assert main(["domain", "tiny-ood", "--data", str(tmp_path / "manifest.csv"),
                 "--models-dir", str(ood_models)]) == 2  # fmt: skip
    assert "fit the domain on the data the model was split on" in capsys.readouterr().err


def test_single_cell_images_are_judged_as_one_sample(ood_classifier, tiny_models_dir):
    plain = Classifier(load_model("tiny", tiny_models_dir))
    crops = [c for field in synthetic_cell_crops([310, 311]) for c in field]
    for images, warned in ((crops, False), ([colour_cast(c) for c in crops], True)):
        prepared = [prepare_field(image, f"cell {i}.png") for i, image in enumerate(images)]
        session = Review(analyze(prepared, ood_classifier, mode=MODE_CELLS), sample_id="S-C")
        assert session.domain.warned is warned and session.domain.n_cells == len(crops)
        assert all(f.domain is None for f in session.fields)  # one cell: no field verdict
        assert all(c.domain_score is not None for c in session.cells)
        unchecked = Review(analyze(prepared, plain, mode=MODE_CELLS), sample_id="S-C")
        expected = (
            ["uncertain"] * len(crops) if warned else [c.model_label for c in unchecked.cells]
        )
        assert [c.model_label for c in session.cells] == expected


def test_a_cut_off_reference_file_is_a_typed_error(tmp_path):
    """A truncated domain.npz raised zipfile's BadZipFile, which the app shows as a traceback."""
    path = tmp_path / "domain.npz"
    np.savez(path, format=np.array(1), feature_bank=np.zeros((500, 8), np.float32))
    path.write_bytes(path.read_bytes()[:900])
    with pytest.raises(DomainReferenceError, match="is not a domain reference"):
        DomainReference.load(path)
