"""leukemia_core.batch: image by image into parts, so a rerun skips what is done (issue 14)."""

from __future__ import annotations

import csv
import json
import os

import cv2
import numpy as np
import pytest

from leukemia_core import batch
from leukemia_core.__main__ import main as cli
from leukemia_core.batch import PARTS_DIR, analyze_files
from leukemia_core.classify import CellPrediction, Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.domain import DomainAssessment
from leukemia_core.labellers import CropCalls
from leukemia_core.models.folder import load_model
from leukemia_core.pipeline import MODE_CELLS, analyze
from leukemia_core.synthetic import make_smear


@pytest.fixture(scope="module")
def classifier(tiny_models_dir):
    return Classifier(load_model("tiny", tiny_models_dir))


@pytest.fixture
def images(tmp_path):
    paths = []
    for seed in (1, 2):
        smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=seed)
        paths.append(tmp_path / f"field{seed}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR))
    paths.append(tmp_path / "notes.png")
    paths[-1].write_text("not an image")
    return paths


def test_a_rerun_reads_finished_images_back_and_tries_failed_ones_again(
    classifier, images, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    failed, summary = analyze_files(images, out, classifier)
    assert failed == 1 and summary["images_analysed"] == 2
    first = (out / "cells.csv").read_text()
    assert len(first.splitlines()) > 1
    assert sorted(p.name for p in (out / PARTS_DIR).iterdir()) == [
        "field1.json", "field2.json", "notes.json"]  # fmt: skip
    analysed = []
    real = batch.analyze_image
    monkeypatch.setattr(batch, "analyze_image",
                        lambda path, *a, **k: analysed.append(path.name) or real(path, *a, **k))  # fmt: skip
    failed, again = analyze_files(images, out, classifier)
    assert analysed == ["notes.png"]  # only the failed image is tried again
    assert (out / "cells.csv").read_text() == first and again == summary
    part = out / PARTS_DIR / "field1.json"  # other weights or decision settings: done again
    part.write_text(json.dumps({**json.loads(part.read_text()), "model_fingerprint": "0" * 64}))
    os.utime(images[1], ns=(1, 1))  # a file that changed since: done again
    analysed.clear()
    analyze_files(images, out, classifier)
    assert sorted(analysed) == ["field1.png", "field2.png", "notes.png"]
    assert (out / "cells.csv").read_text() == first


class StubLabeller:
    """Labels every crop blast (p 0.9) with the domain scores it is given, one per call."""

    name, checksum, runtime = "stub", "5" * 64, "none"

    def __init__(self, scores):
        self.scores = list(scores)

    def decision_settings(self) -> dict:
        return {"threshold": 0.5}

    def label(self, crops, progress=None) -> CropCalls:
        scores = [self.scores.pop(0) for _ in crops]
        return CropCalls([CellPrediction(0.9, CellLabel.BLAST) for _ in crops], np.array(scores))

    def assess(self, scores):
        present = [s for s in scores if s is not None]
        return DomainAssessment(float(np.median(present)), 1.0, len(present)) if present else None


@pytest.mark.parametrize(("scores", "labels"), [((2.0, 0.5, 0.5), ["blast"] * 3),
                                                 ((2.0, 2.0, 0.5), ["uncertain"] * 3)])  # fmt: skip
def test_single_cells_are_checked_for_domain_as_one_set_like_the_app(tmp_path, scores, labels):
    """One out-of-domain cell among in-domain ones is not sent to review on its own (a median
    of one cell is too noisy); a set whose median is out of domain sends every cell."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"cell{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(_single_cell(i), cv2.COLOR_RGB2BGR))
    failed, summary = analyze_files(paths, tmp_path / "out", StubLabeller(scores),
                                    single_cells=True)  # fmt: skip
    with open(tmp_path / "out" / "cells.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert failed == 0 and [r["label"] for r in rows] == labels
    assert summary["domain"]["warned"] == (labels[0] == "uncertain")
    app = analyze([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths],
                  StubLabeller(scores), mode=MODE_CELLS)  # fmt: skip
    assert [c.label.value for c in app.cells] == labels  # the app's one call over the sample


def _single_cell(seed: int) -> np.ndarray:
    """A purple nucleus in pink cytoplasm on a pale background, 160 px (one cell per image)."""
    image = np.full((160, 160, 3), (235, 225, 230), np.uint8)
    cv2.circle(image, (80 + seed, 80), 52, (215, 160, 190), -1)
    cv2.circle(image, (80 + seed, 78), 34, (110, 60, 150), -1)
    return image


@pytest.mark.parametrize("option", [["--num-workers", "2"], ["--address", "head:6379"],
                                    ["--gpus-per-worker", "1"]])  # fmt: skip
def test_ray_options_without_the_ray_engine_are_refused(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as stop:
        cli(["analyze", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *option])
    assert stop.value.code == 2 and "need --engine ray" in capsys.readouterr().err


def test_a_negative_gpu_count_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["analyze", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--engine", "ray",
             "--gpus-per-worker", "-1"])  # fmt: skip
    assert "number of GPUs from 0 to 64, got '-1'" in capsys.readouterr().err
