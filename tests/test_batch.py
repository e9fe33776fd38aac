"""leukemia_core.batch: image by image into parts, so a rerun skips what is done (issue 14)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukemia_core import batch
from leukemia_core.__main__ import PARTLY_FAILED
from leukemia_core.__main__ import main as cli
from leukemia_core.batch import PARTS_DIR, analyze_files
from leukemia_core.classify import CellPrediction, Classifier
from leukemia_core.counting import CellLabel
from leukemia_core.domain import DomainAssessment
from leukemia_core.imaging import read_for_analysis
from leukemia_core.labellers import CropCalls, ReviewerLabeller
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

    name, checksum, runtime, input_size = "stub", "5" * 64, "none", 64
    description = "stub: a test labeller"

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
    if labels[0] == "blast":  # hand-picked cells: the set's reading is the app's, no threshold
        reading = summary["count"]["interpretation"]
        assert reading == app.count().interpretation
        assert reading.startswith("With 3 cells still to review: 3 of 3 single-cell images counted")
        assert "WHO" not in reading and summary["count"]["hint"] is None


def _single_cell(seed: int) -> np.ndarray:
    """A purple nucleus in pink cytoplasm cut out on black, 160 px (one cell per image, as C-NMC
    gives them; a cell that is not found would be classified whole and sent to review)."""
    image = np.zeros((160, 160, 3), np.uint8)
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


# ---- what a lab gets wrong at the command line (a probe of bad inputs, 2026-12-06) ------------
def _run(args, capsys) -> tuple[int, str]:
    """Exit code and what was printed (the result on stdout, progress and notes on stderr)."""
    code = cli(["analyze", *map(str, args)])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def test_the_printed_result_is_on_stdout_says_it_is_before_review_and_asks_for_more_cells(
    tmp_path, capsys
):
    """The bundled model on a bundled normal field (one white cell): what a lab reads first."""
    field = Path(__file__).parents[1] / "samples" / "fields" / "BloodImage_00000.jpg"
    assert cli(["analyze", str(field), "--out", str(tmp_path / "out")]) == 0
    result = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    count = summary["count"]
    assert count["n_counted"] > 0 and count["hint"]  # a few cells: the hint asks for more
    assert count["interpretation"].startswith(f"With {summary['cells_found']} cell")
    assert count["interpretation"] in result and count["hint"] in result
    assert result.startswith("1 image analysed with") and "Research use only." in result
    assert " counted (95% interval 0" in result  # the interval is printed, not only in the JSON
    assert "Only 1 white cell was counted" in result and "1 white cells" not in result


def test_the_same_file_twice_is_analysed_once_and_its_cells_are_not_counted_twice(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    twin = tmp_path / "elsewhere" / "copy-of-field1.png"
    twin.parent.mkdir()
    twin.write_bytes(images[0].read_bytes())  # the same bytes under another name and folder
    code, err = _run([images[0], images[1], images[0], twin, "--out", tmp_path / "out"], capsys)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 0 and summary["images_analysed"] == 2  # a repeat is no failure
    assert summary["images_failed"] == []
    first = str(images[0])
    assert summary["images_repeated"] == [{"image": first, "same_as": first},
                                          {"image": str(twin), "same_as": first}]  # fmt: skip
    assert err.count("repeat left out") == 2 and "its outputs are named" not in err
    with open(tmp_path / "out" / "cells.csv", newline="") as stream:
        named = {row["image"] for row in csv.DictReader(stream)}
    assert named == {"field1.png", "field2.png"}
    assert "1 file(s) given more than once were analysed once (2 repeat(s) left out)." in err
    assert "skipped" not in err


def test_one_picture_in_two_files_of_other_bytes_is_counted_once_as_the_app_counts_it(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    """Two exports of one capture (PNG at two compression levels): the bytes differ, the pixels
    do not; the app left the second out, the command line counted every cell twice."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    export = tmp_path / "export" / "field1-export.png"
    export.parent.mkdir()
    cv2.imwrite(str(export), cv2.imread(str(images[0])), [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert export.read_bytes() != images[0].read_bytes()
    code, err = _run([images[0], export, images[1], "--out", tmp_path / "out"], capsys)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    alone = analyze([read_for_analysis(p, p.name) for p in images[:2]], None)
    assert code == 0 and summary["images_analysed"] == 2 and summary["images_failed"] == []
    assert summary["images_repeated"] == [{"image": str(export), "same_as": str(images[0])}]
    assert summary["cells_found"] == len(alone.cells)  # each picture's cells once
    assert "is the same field as" in err and "saved again, at another quality or size?" in err
    assert not (tmp_path / "out" / "field1-export.json").exists()


def test_a_batch_without_a_model_lists_its_cells_for_review(images, tmp_path):
    """The no-model labeller is a Labeller like any: its cells have no probability to round."""
    failures, summary = analyze_files(images[:1], tmp_path / "out", ReviewerLabeller())
    with open(tmp_path / "out" / "cells.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert failures == 0 and rows and summary["count"]["n_counted"] == 0
    assert {r["blast_probability"] for r in rows} == {""}
    assert {r["label"] for r in rows} <= {"uncertain", "border"}


def test_a_rerun_leaves_no_image_file_that_its_summary_does_not_list(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    out = tmp_path / "out"
    assert _run([images[0], images[1], "--out", out], capsys)[0] == 0
    assert (out / "field2.json").is_file()
    images[1].write_text("the file was overwritten by notes")  # now a bad file
    code, err = _run([images[0], images[1], "--out", out], capsys)
    assert code == PARTLY_FAILED and "1 image(s) skipped" in err  # a script can tell
    assert "1 of 2 image(s) were analysed by an earlier run" in err  # field1: reused
    assert not (out / "field2.json").exists()  # the first run's analysis of the old file is gone
    assert (out / "field1.json").is_file()
    assert _run([images[0], "--out", out], capsys)[0] == 0  # an input left out of the rerun
    assert sorted(p.name for p in out.glob("*.json")) == ["field1.json", "summary.json"]


def test_a_run_resumed_after_an_upgrade_analyses_its_images_again(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    """Parts of an older release may have other cells (the segmentation changed): a review
    found a resumed run reusing them, with nothing said."""
    import leukemia_core.batch as batch

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    out = tmp_path / "out"
    assert _run([images[0], "--out", out], capsys)[0] == 0
    _, err = _run([images[0], "--out", out], capsys)
    assert "1 of 1 image(s) were analysed by an earlier run" in err  # same code: reused
    monkeypatch.setattr(batch, "code_fingerprint", lambda: "another release")
    _, err = _run([images[0], "--out", out], capsys)
    assert "analysed by an earlier run" not in err  # analysed again


def test_a_labs_own_json_beside_its_images_is_never_overwritten(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    """--out set to the image folder: a review saw field1.json, the scanner's notes, replaced."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    sidecar = tmp_path / "field1.json"
    sidecar.write_text('{"scanner": "DM96"}')
    for _ in range(2):  # and a rerun neither overwrites nor removes it
        code, err = _run([images[0], images[1], "--out", tmp_path], capsys)
        assert code == 0 and sidecar.read_text() == '{"scanner": "DM96"}'
    assert "its outputs are named field1-2" in err
    assert json.loads((tmp_path / "field1-2.json").read_text())["image"] == "field1-2.png"
    assert (tmp_path / "field2.json").is_file()


def test_a_folder_is_analysed_as_the_images_in_it(tiny_models_dir, images, tmp_path,
                                                  monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    folder = tmp_path / "fields"
    folder.mkdir()
    for image in images[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "notes.txt").write_text("not an image: left alone")
    (folder / "._field1.png").write_bytes(b"\x00\x05\x16\x07")  # a Mac's resource fork
    (folder / "sub.png").mkdir()
    (folder / "slides.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    code, err = _run([folder, "--out", tmp_path / "out"], capsys)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 0 and summary["images_analysed"] == 2 and summary["images_failed"] == []
    assert "left out 2 subfolder(s) or archive(s) (slides.zip, sub.png)" in err
    assert summary["count_by_folder"] == {}  # one folder: one sample
    # images of two folders: counted as one sample, and each folder's own count beside it
    other = tmp_path / "other"
    other.mkdir()
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=9)
    cv2.imwrite(str(other / "field9.png"), cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR))
    code, printed = _run([folder, other / "field9.png", "--out", tmp_path / "two"], capsys)
    by_folder = json.loads((tmp_path / "two" / "summary.json").read_text())["count_by_folder"]
    assert code == 0 and set(by_folder) == {str(folder), str(other)}
    assert (
        "WARNING: these images come from 2 folders and are counted above as one sample" in printed
    )
    # a .jfif is read, a broken link (a share not mounted) and a format not read are named: a
    # folder's files were left out unsaid and the run ended 0
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, n_rbc=80, seed=3)
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR))
    (folder / "field3.jfif").write_bytes(jpeg.tobytes())
    (folder / "gone.jpg").symlink_to(tmp_path / "unmounted" / "gone.jpg")
    (folder / "scan.jp2").write_bytes(b"\x00\x00\x00\x0cjP  ")
    code, err = _run([folder, "--out", tmp_path / "out3"], capsys)
    summary = json.loads((tmp_path / "out3" / "summary.json").read_text())
    assert code == PARTLY_FAILED and summary["images_analysed"] == 3
    assert [Path(f["image"]).name for f in summary["images_failed"]] == ["gone.jpg"]
    assert "left out 1 picture(s) in a format this app does not read" in err and "scan.jp2" in err
    (folder / "gone.jpg").unlink()
    (folder / "field3.jfif").unlink()
    (folder / "scan.jp2").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run([empty, "--out", tmp_path / "out2"], capsys)
    assert code == 2 and "holds no image file" in err
    # segment takes folders too (it said "'fields' is a folder, not an image file")
    assert cli(["segment", str(folder), "--out", str(tmp_path / "crops")]) == 0
    with open(tmp_path / "crops" / "cells.csv", newline="") as stream:
        assert {row["image"] for row in csv.DictReader(stream)} == {"field1.png", "field2.png"}


def test_no_readable_image_says_so_and_claims_nothing_about_the_model(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    code, err = _run([images[2], tmp_path / "missing.png", "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert "No image could be analysed. 2 image(s) skipped" in err
    assert "missing.png' does not exist: check the path" in err
    assert "domain reference" not in err and "stained blood smear" not in err


def test_a_field_without_cells_is_not_blamed_on_a_missing_domain_reference(
    tiny_models_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 232, np.uint8))
    code, err = _run([blank, "--out", tmp_path / "out"], capsys)
    assert code == 0 and "No cells were found, so no out-of-domain check was made." in err
    assert "has no domain reference" not in err
    # the table is no bare header: the image has its row, with the research-use line
    (row,) = csv.DictReader((tmp_path / "out" / "cells.csv").open(encoding="utf-8"))
    assert row["image"] == "blank.png" and row["cell_id"] == "" and row["label"] == ""
    assert row["file"] == str(blank) and row["research_use"].startswith("research use only")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["cells_found"] == 0


@pytest.mark.parametrize(
    ("error", "advice"),
    [(OSError(28, "No space left on device"), "Free some space or choose another --out folder"),
     (OSError(30, "Read-only file system"), "Make the folder writable or choose another --out"),
     # a file outside --out (a full temporary folder): that place is named, not --out
     (OSError(28, "No space left on device", "/tmp/elsewhere/x"),
      "No space left on device at /tmp/elsewhere/x. Free some space there")],
)  # fmt: skip
def test_a_write_that_fails_mid_run_is_a_clear_message_not_a_traceback(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys, error, advice
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))

    def failing_write(*args, **kwargs):
        raise error

    monkeypatch.setattr(batch, "write_text_atomic", failing_write)
    code, err = _run([images[0], "--out", tmp_path / "out"], capsys)
    assert code == 2 and "Traceback" not in err
    assert ("could not write the results to" in err) == (error.filename is None)
    assert error.strerror in err and advice in err and "run the same command again" in err


def test_a_multi_page_tiff_is_noted_once_without_python_warnings(
    tiny_models_dir, tmp_path, monkeypatch, capsys
):
    from PIL import Image

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    smear = make_smear(480, 640, n_wbc=2, n_touching_pairs=0, n_rbc=80, seed=3).image
    pages = tmp_path / "pages.tif"
    Image.fromarray(smear).save(pages, save_all=True, append_images=[Image.fromarray(smear[::-1])])
    code, err = _run([pages, "--out", tmp_path / "out"], capsys)
    assert code == 0 and err.count("took the first of 2 pages") == 1
    assert "MultiFrameImageWarning" not in err and "warnings.warn" not in err


def test_a_huge_field_is_read_as_the_app_reads_it(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """The command line used to refuse (or analyse at full size) what the app downscales."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    smear = make_smear(480, 640, n_wbc=2, n_touching_pairs=0, n_rbc=80, seed=4).image
    huge = tmp_path / "huge.jpg"
    cv2.imwrite(str(huge), cv2.resize(smear, (9600, 7200)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    code, err = _run([huge, "--out", tmp_path / "out"], capsys)
    summary = json.loads((tmp_path / "out" / "huge.json").read_text())
    app_read = read_for_analysis(huge.read_bytes(), "huge.jpg", input_size=32)  # the tiny model's
    n_read = len(app_read.notes)  # the reader's notes first, then the analysis's
    assert code == 0 and summary["notes"][:n_read] == list(app_read.notes)
    assert any("downscaled" in note for note in summary["notes"]), summary["notes"]
    assert "decoded at 1/2 of its 9600×7200 px" in err and "over the limit" not in err
    # The boxes are in the analysed pixels; the JSON says how to map them back to the file's.
    assert summary["original_size"] == [9600, 7200]
    assert summary["analysed_size"] == list(app_read.rgb.shape[1::-1])
    assert summary["scale"] == pytest.approx(app_read.rgb.shape[1] / 9600, abs=1e-6)


def test_a_single_cell_image_without_a_cell_goes_to_review_not_into_the_count(classifier, tmp_path):
    no_cell = tmp_path / "glass.png"
    cv2.imwrite(str(no_cell), np.full((160, 160, 3), 225, np.uint8))  # glass, no cell
    cut_out = tmp_path / "cell.png"
    cv2.imwrite(str(cut_out), cv2.cvtColor(_single_cell(0), cv2.COLOR_RGB2BGR))
    failed, _ = analyze_files([no_cell, cut_out], tmp_path / "out", classifier,
                                    single_cells=True)  # fmt: skip
    with open(tmp_path / "out" / "cells.csv", newline="") as stream:
        labels = {row["image"]: row["label"] for row in csv.DictReader(stream)}
    assert failed == 0 and labels["glass.png"] == "uncertain"
    assert labels["cell.png"] in ("blast", "normal", "uncertain")  # the model's call, kept
    notes = json.loads((tmp_path / "out" / "glass.json").read_text())["notes"]
    assert any("sent to review" in n for n in notes)
    assert not any("single-cell mode" in n for n in notes)  # field-mode advice is not given here


def test_an_unknown_model_is_refused_before_the_output_folder_is_made(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    code, err = _run([images[0], "--out", tmp_path / "out", "--model", "nosuch"], capsys)
    assert code == 2 and "nosuch" in err and "tiny" in err  # names the models there are
    assert not (tmp_path / "out").exists()


def test_ray_workers_that_loaded_different_models_stop_the_run():
    """Each Ray worker loads the model from its own node: one holding another version labelled
    its share of the images by other rules, under the first worker's name in summary.json."""
    from types import SimpleNamespace

    from leukemia_core.batch_ray import RayUnavailableError, _start

    def worker(name, checksum, threshold):
        described = {"name": name, "checksum": checksum, "settings": {"threshold": threshold},
                     "runtime": "onnx", "input_size": 224, "description": name}  # fmt: skip
        return SimpleNamespace(describe=SimpleNamespace(remote=lambda: described))

    ray = SimpleNamespace(wait=lambda refs, num_returns, timeout: (refs, []),
                          get=lambda refs: refs, cluster_resources=dict,
                          exceptions=SimpleNamespace(RayActorError=RuntimeError))  # fmt: skip
    same = _start(ray, [worker("v2", "ab" * 32, 0.13), worker("v2", "ab" * 32, 0.13)], 0.0)
    assert same["name"] == "v2" and same["runtime"] == "onnx"
    with pytest.raises(RayUnavailableError, match=r"different models: v1 \(weights cdcd.*v2"):
        _start(ray, [worker("v2", "ab" * 32, 0.13), worker("v1", "cd" * 32, 0.42)], 0.0)


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(tiny_models_dir, images, tmp_path,
                                                    monkeypatch, capsys):  # fmt: skip
    """Ctrl-C printed a 40-line traceback and exit status -2."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "analyze_files", interrupted)
    code, err = _run([images[0], "--out", tmp_path / "out"], capsys)
    assert code == 130 and "interrupted" in err and "run the same command again" in err
    assert "Traceback" not in err


def test_a_labs_own_summary_or_table_in_the_output_folder_is_never_replaced(
    tiny_models_dir, images, tmp_path, monkeypatch, capsys
):
    """With --out the lab's folder, its summary.json and its own cells.csv (a manual count)
    were overwritten without a word (its sidecar JSONs were kept)."""
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    for name, text in (("summary.json", '{"slide": "S-1", "counted_by": "tech"}'),
                       ("cells.csv", "cell,type\n1,blast\n")):  # fmt: skip
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text(text)
        code, err = _run([images[0], "--out", folder], capsys)
        assert code == 2 and f"holds {name} that this command did not write" in err
        assert (folder / name).read_text() == text
    ours = tmp_path / "ours"  # a rerun into its own results goes on as before
    for _ in range(2):
        assert _run([images[0], "--out", ours], capsys)[0] == 0


def test_a_run_resumed_with_another_runtime_redoes_its_images(classifier):
    """A resumed run reused the Keras rows under --runtime onnx, and summary.json named ONNX."""
    from leukemia_core.labellers import labeller_for

    keras_labeller = labeller_for(classifier)
    onnx_labeller = labeller_for(classifier)
    onnx_labeller.runtime = "onnx"
    assert batch.model_fingerprint(keras_labeller) != batch.model_fingerprint(onnx_labeller)


def test_a_kill_stops_a_run_as_ctrl_c_does(tiny_models_dir, images, tmp_path, monkeypatch,
                                           capsys):  # fmt: skip
    """SIGTERM (kill, a scheduler's time limit) ended the run silently with status -15."""
    import os
    import signal
    import time

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the run")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(batch, "analyze_files", killed)
    code, err = _run([images[0], "--out", tmp_path / "out"], capsys)
    assert code == 130 and "interrupted: the images finished so far are kept" in err
    assert signal.getsignal(signal.SIGTERM) == before  # the caller's handler is back


def test_a_resumed_run_repeats_the_warnings_of_the_images_it_reuses(
    classifier, images, tmp_path, capsys
):
    """After Ctrl-C, the rerun printed nothing of the reused images' notes and warnings."""
    out = tmp_path / "out"
    analyze_files(images[:2], out, classifier)
    part = out / PARTS_DIR / "field1.json"
    said = "field1.png: quality: Out of focus (a warning of the first run)"
    part.write_text(json.dumps({**json.loads(part.read_text()), "messages": [said]}))
    capsys.readouterr()
    analyze_files(images[:2], out, classifier)
    err = capsys.readouterr().err
    assert "2 of 2 image(s) were analysed by an earlier run" in err and said in err
