"""leukemia_core.batch: image by image into parts, so a rerun skips what is done (issue 14)."""

from __future__ import annotations

import json

import cv2
import pytest

from leukemia_core import batch
from leukemia_core.batch import PARTS_DIR, analyze_files
from leukemia_core.classify import Classifier
from leukemia_core.models.folder import load_model
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
    for part in (out / PARTS_DIR).glob("field*.json"):  # other weights: everything again
        data = json.loads(part.read_text())
        part.write_text(json.dumps({**data, "model_sha256": "0" * 64}))
    analysed.clear()
    analyze_files(images, out, classifier)
    assert sorted(analysed) == ["field1.png", "field2.png", "notes.png"]
    assert (out / "cells.csv").read_text() == first
