"""Bad inputs found by probing the app and the command line (issue 16, hardening items 1-8).

Each test feeds one kind of bad input and checks the clear message (a typed error or an
``error:`` line with exit code 2) and, for batches, that the rest of the batch is analysed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukemia_core.__main__ import main as cli
from leukemia_core.errors import LeukemiaCoreError, NoCellError
from leukemia_core.imaging import PreparedImage
from leukemia_core.pipeline import MODE_CELLS, analyze
from leukemia_core.single_cell import single_cell_crop

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CELL = SAMPLES / "cells" / "UID_3_1_1_all.png"


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _cell_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(CELL)), cv2.COLOR_BGR2RGB)


@pytest.fixture
def tiny_env(tiny_models_dir, monkeypatch) -> Path:
    """The tiny test model as the models folder of the command line."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    return tiny_models_dir


# ---- 1. black or near-black single-cell images ----------------------------------------------
def _specks() -> np.ndarray:
    image = np.zeros((200, 200, 3), np.uint8)
    image[::7, ::7] = 200  # isolated bright pixels, far over 1% of the image
    image[100, 100] = 255
    return image


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (np.zeros((120, 120, 3), np.uint8), r"black or nearly black .* brightest 0\)"),
        (np.full((120, 120, 3), 9, np.uint8), r"black or nearly black .* brightest 9\)"),
        (np.random.default_rng(0).integers(0, 30, (120, 120, 3)).astype(np.uint8),
         "black or nearly black"),
        (_specks(), r"black but for specks \(the largest covers 1 pixels"),
    ],
)  # fmt: skip
def test_a_black_single_cell_image_is_a_typed_error(image, words):
    with pytest.raises(NoCellError, match=words):
        single_cell_crop(image)
    assert issubclass(NoCellError, LeukemiaCoreError)


def test_a_black_image_fails_alone_and_the_rest_of_the_batch_is_analysed():
    images = [PreparedImage(np.zeros((120, 120, 3), np.uint8), "black.png", (120, 120)),
              PreparedImage(_cell_rgb(), "cell.png", (257, 257))]  # fmt: skip
    analysis = analyze(images, None, mode=MODE_CELLS)
    assert [f.name for f in analysis.fields] == ["cell.png"] and len(analysis.cells) == 1
    (failure,) = analysis.failures
    assert failure.name == "black.png" and "black or nearly black" in failure.message


def test_the_command_line_skips_a_black_single_cell_image(tiny_env, tmp_path, capsys):
    black = _write(tmp_path / "in" / "black.png", np.zeros((120, 120, 3), np.uint8))
    cell = _write(tmp_path / "in" / "cell.png", _cell_rgb())
    code = cli(["analyze", str(black), str(cell), "--single-cells", "--model", "tiny",
                "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert "skipped black.png: this image is black or nearly black" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_analysed"] == 1
    assert [f["image"] for f in summary["images_failed"]] == ["black.png"]
