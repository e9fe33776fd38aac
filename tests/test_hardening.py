"""Bad inputs found by probing the app and the command line (issue 16, hardening items 1-8).

Each test feeds one kind of bad input and checks the clear message (a typed error or an
``error:`` line with exit code 2) and, for batches, that the rest of the batch is analysed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from conftest import EveryCellABlast
from PIL import Image

from leukemia_core.__main__ import main as cli
from leukemia_core.cropping import crop_cells
from leukemia_core.domain import DomainReference
from leukemia_core.errors import (
    ImageTooLargeError,
    LeukemiaCoreError,
    ModelIntegrityError,
    ModelNotFoundError,
    NoCellError,
    NotAnImageError,
    SettingError,
    WeightsFileError,
)
from leukemia_core.imaging import PreparedImage, read_for_analysis
from leukemia_core.io import read_image
from leukemia_core.jpeg_check import jpeg_damage
from leukemia_core.models.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    config_checksum,
    list_models,
    load_model,
    read_config,
)
from leukemia_core.models.writing import write_config, write_domain_reference
from leukemia_core.outputs import output_stems, spreadsheet_text
from leukemia_core.pipeline import MODE_CELLS, analyze
from leukemia_core.review import Review
from leukemia_core.roles import User
from leukemia_core.segmentation import segment_wbc
from leukemia_core.single_cell import single_cell_crop
from leukemia_core.synthetic import make_demo_smear
from leukemia_core.types import CellLabel
from train.__main__ import main as train_cli
from train.archives import UnsafeArchiveError, extract_zip

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
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
    assert code == 3  # results written for the cell; the black image skipped
    assert "skipped black.png: this image is black or nearly black" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_analysed"] == 1
    assert [f["image"] for f in summary["images_failed"]] == ["black.png"]


def test_the_analyze_page_reports_a_black_single_cell_image_and_analyses_the_rest(
    tiny_env, tmp_path, monkeypatch, apptest_navigation
):
    from conftest import log_in
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(tmp_path / "cases.sqlite3"))
    at = log_in(AppTest.from_file(str(REPO / "app.py"), default_timeout=120)).run()
    at.radio(key="mode").set_value("cells").run()
    black = cv2.imencode(".png", np.zeros((120, 120, 3), np.uint8))[1].tobytes()
    files = [("black.png", black, "image/png"), ("cell.png", CELL.read_bytes(), "image/png")]
    (uploader,) = at.file_uploader  # a new key after the change of mode: it starts empty
    uploader.set_value(files).run()
    at.button(key="analyze").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("black.png" in e and "black or nearly black" in e for e in errors), errors
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images analysed"] == "1" and metrics["White cells found"] == "1"


# ---- 2. command-line arguments: --out, --crop-size, special files, unsafe models -------------
def _folder_with_weights(tiny_models_dir: Path, root: Path, name: str, weights: bytes) -> Path:
    """A copy of the tiny model whose weights file is ``weights`` (its checksum updated)."""
    shutil.copytree(tiny_models_dir / "tiny", root / name)
    (root / name / WEIGHTS_FILE).write_bytes(weights)
    values = json.loads((root / name / CONFIG_FILE).read_text())
    write_config(root / name, {**values, "sha256": hashlib.sha256(weights).hexdigest()})
    return root / name


def _lambda_model_bytes(tmp_path: Path) -> bytes:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.save(tmp_path / "lambda.keras")
    return (tmp_path / "lambda.keras").read_bytes()


@pytest.fixture
def field_png(tmp_path) -> Path:
    return _write(tmp_path / "in" / "field.png", make_demo_smear().image)


@pytest.mark.parametrize("command", ["segment", "analyze"])
@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("", "argument --out: is empty; name the output folder"),
        ("   ", "argument --out: is empty"),
        ("{tmp}/taken.txt", r"error: the output folder .*taken\.txt is a file"),
        ("{tmp}/taken.txt/sub/dir", r"error: the output folder .* lies under the file .*taken\.txt"),
    ],
)  # fmt: skip
def test_a_bad_out_folder_is_an_error_line_and_exit_code_2(
    tiny_env, field_png, tmp_path, capsys, monkeypatch, command, out, words
):
    (tmp_path / "taken.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path / "in")
    code = None
    try:
        code = cli([command, str(field_png), "--out", out.format(tmp=tmp_path)])
    except SystemExit as exit_:  # argparse refuses the argument itself
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(words, err), err
    assert "Traceback" not in err
    assert (tmp_path / "taken.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["field.png"]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_an_unwritable_out_folder_is_an_error_line(field_png, capsys):
    code = cli(["segment", str(field_png), "--out", "/sys/kernel"])
    err = capsys.readouterr().err
    assert code == 2 and "error: cannot write into the output folder /sys/kernel" in err


@pytest.mark.parametrize("size", ["0", "-5", "100000", "31", "1025", "12.5", "big"])
def test_crop_size_is_bounded(field_png, tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exit_:
        cli(["segment", str(field_png), "--out", str(tmp_path / "out"), "--crop-size", size])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"argument --crop-size: crop size is {size!r}" in err or (
        f"argument --crop-size: crop size is {size}" in err
    ), err
    assert "from 32 to 1024" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", [32, 1024])
def test_crop_size_limits_are_accepted(size):
    smear = make_demo_smear()
    cells = crop_cells(smear.image, segment_wbc(smear.image), size=size)
    assert cells and cells[0].crop.shape == (size, size, 3)
    assert single_cell_crop(_cell_rgb(), size=size).crop.shape == (size, size, 3)
    for bad in (0, 31, 1025, 100_000, True, 64.0):
        with pytest.raises(SettingError, match="use a whole number of pixels from 32 to 1024"):
            crop_cells(smear.image, segment_wbc(smear.image), size=bad)
        with pytest.raises(SettingError, match="crop size is"):
            single_cell_crop(_cell_rgb(), size=bad)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "{tmp}/in", "{tmp}/fifo"])
def test_special_files_are_refused_without_reading_them(field_png, tmp_path, capsys, special):
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer forever
    special = special.format(tmp=tmp_path)
    if not Path(special).exists():
        pytest.skip(f"{special} is absent")
    with pytest.raises(
        NotAnImageError, match=r"is a (folder|device, pipe or socket), not an image"
    ):
        read_image(special)
    code = cli(["segment", special, str(field_png), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    if Path(special).is_dir():  # segment takes a folder as the images in it, as analyze does
        assert code == 0 and "2 images segmented, 0 skipped" in err
        return
    # some skipped: exit 3, as analyze (a script can tell); a review found segment saying 0
    assert code == 3 and f"skipped {special}:" in err and "not an image file" in err
    assert "1 images segmented, 1 skipped" in err


def test_files_over_the_byte_limit_are_refused(tmp_path, field_png):
    size = field_png.stat().st_size
    with pytest.raises(ImageTooLargeError, match=f"is {size:,} bytes, over the limit of 1,000"):
        read_image(field_png, max_bytes=1000)
    with (
        field_png.open("rb") as stream,
        pytest.raises(ImageTooLargeError, match="over 1,000 bytes, over the limit of 1,000"),
    ):
        read_image(stream, max_bytes=1000)
    assert read_image(field_png, max_bytes=size).rgb.shape == make_demo_smear().image.shape


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ("lambda", r"cannot be loaded safely .*Requested the deserialization of a `Lambda` layer"),
        (b"not a zip file at all" * 20, r"is not a Keras \.keras file \(not a zip archive\)"),
        ("empty zip", "cannot be loaded safely .*There is no item named 'config.json'"),
    ],
)
def test_an_unsafe_or_broken_weights_file_is_a_typed_error_and_an_error_line(
    tiny_models_dir, tmp_path, field_png, capsys, monkeypatch, weights, words
):
    if weights == "lambda":
        weights = _lambda_model_bytes(tmp_path)
    elif weights == "empty zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("other.txt", "x")
        weights = buffer.getvalue()
    root = tmp_path / "models"
    _folder_with_weights(tiny_models_dir, root, "bad", weights)
    with pytest.raises(WeightsFileError, match=f"model 'bad' {words}"):
        load_model("bad", root)
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(root))
    code = cli(["analyze", str(field_png), "--model", "bad", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "error: the weights file model.keras of model 'bad'" in err
    assert "Traceback" not in err and str(root) not in err


# ---- 3. inputs with the same file name in different folders -----------------------------------
@pytest.fixture
def same_names(tmp_path) -> list[Path]:
    """Two different fields both named field.png, and one named summary.png."""
    demo = make_demo_smear().image
    return [_write(tmp_path / "a" / "field.png", demo),
            _write(tmp_path / "b" / "field.png", np.ascontiguousarray(demo[::-1])),
            _write(tmp_path / "c" / "summary.png", np.ascontiguousarray(demo[:, ::-1]))]  # fmt: skip


@pytest.mark.parametrize("command", ["segment", "analyze"])
def test_an_input_with_a_long_legal_name_gets_shorter_output_names(
    command, tiny_models_dir, tmp_path, monkeypatch, capsys
):
    """A 250-byte name is legal, but its outputs' names were not: a review saw it stop the whole
    batch (exit 2, nothing written) and segment drop its overlay while reporting success."""
    demo = make_demo_smear().image
    long_name = _write(tmp_path / "in" / ("P" * 246 + ".png"), demo)
    other = _write(tmp_path / "in" / "field.png", demo[::-1].copy())
    out = tmp_path / "out"
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    assert cli([command, str(long_name), str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "its name is too long for its outputs' file names, so its outputs are named" in err
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert {r["image"][:3] for r in rows} == {"PPP", "fie"}  # both images' cells, in full
    assert all(len(p.name.encode()) <= 255 for p in out.rglob("*"))


@pytest.mark.parametrize("command", ["segment", "analyze"])
def test_an_input_whose_name_is_not_utf8_is_analysed_with_the_others(
    command, tiny_models_dir, tmp_path, monkeypatch, capsys
):
    """A Latin-1 name copied from an old share stopped the whole batch with a traceback."""
    demo = make_demo_smear().image
    folder = tmp_path / "in"
    folder.mkdir()
    latin1 = Path(os.fsdecode(bytes(folder) + b"/Patient_M\xfcller_1.png"))
    latin1.write_bytes(cv2.imencode(".png", cv2.cvtColor(demo, cv2.COLOR_RGB2BGR))[1].tobytes())
    other = _write(folder / "field.png", demo[::-1].copy())
    out = tmp_path / "out"
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tiny_models_dir))
    assert cli([command, str(latin1), str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "its name is not UTF-8 text (its odd bytes are written as ?)" in err
    rows = list(csv.DictReader((out / "cells.csv").open(encoding="utf-8")))
    assert {r["image"] for r in rows} == {"Patient_M?ller_1.png", "field.png"}


def test_segment_run_again_on_a_field_with_fewer_cells_leaves_no_crop_of_the_first_run(tmp_path):
    """Crops named cell_###.png of an earlier run stayed beside the new ones and the table."""
    out, field = tmp_path / "out", tmp_path / "field.png"
    cv2.imwrite(str(field), cv2.cvtColor(make_demo_smear().image, cv2.COLOR_RGB2BGR))
    assert cli(["segment", str(field), "--out", str(out)]) == 0
    first = sorted(p.name for p in (out / "field").glob("cell_*.png"))
    assert len(first) >= 2
    cv2.imwrite(str(field), np.full((480, 640, 3), 230, np.uint8))  # now blank: no cell
    cli(["segment", str(field), "--out", str(out)])
    assert list((out / "field").glob("cell_*.png")) == []


def test_segment_run_again_into_its_image_folder_segments_only_the_images(tmp_path, capsys):
    """With --out the image folder, a second run took its own overlays for fields."""
    folder = tmp_path / "fields"
    folder.mkdir()
    _write(folder / "field.png", make_demo_smear().image)
    for _ in range(2):
        assert cli(["segment", str(folder), "--out", str(folder)]) == 0
    rows = list(csv.DictReader((folder / "cells.csv").open()))
    assert {r["image"] for r in rows} == {"field.png"} and (
        folder / "field" / "overlay.png"
    ).is_file()


def test_segment_gives_inputs_of_the_same_name_their_own_outputs(same_names, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["segment", *map(str, same_names), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{same_names[1]}: another input (or an output of this command) has the same " in err
    assert "its outputs are named field-2 and it is field-2.png in the tables" in err
    overlays = {str(p.relative_to(out)) for p in out.glob("*/overlay.png")}
    assert overlays == {"field/overlay.png", "field-2/overlay.png", "summary/overlay.png"}
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert {r["image"] for r in rows} == {"field.png", "field-2.png", "summary.png"}
    assert {(r["image"], r["file"]) for r in rows} == {("field.png", str(same_names[0])),
        ("field-2.png", str(same_names[1])), ("summary.png", str(same_names[2]))}  # fmt: skip
    for row in rows:  # every crop row points at its own image's folder, and the crop exists
        assert row["crop_path"].startswith(Path(row["image"]).stem + "/")
        assert (out / row["crop_path"]).is_file()
    first, second = (cv2.imread(str(out / s / "overlay.png")) for s in ("field", "field-2"))
    assert not np.array_equal(first, second)  # the second did not overwrite the first


def test_analyze_gives_inputs_of_the_same_name_their_own_json(tiny_env, same_names, tmp_path,
                                                                capsys):  # fmt: skip
    out = tmp_path / "out"
    assert cli(["analyze", *map(str, same_names), "--model", "tiny", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "its outputs are named field-2" in err and "its outputs are named summary-2" in err
    assert {p.name for p in out.glob("*.json")} == {"field.json", "field-2.json",
                                                    "summary-2.json", "summary.json"}  # fmt: skip
    for stem, source in (("field", same_names[0]), ("field-2", same_names[1]),
                         ("summary-2", same_names[2])):  # fmt: skip
        image = json.loads((out / f"{stem}.json").read_text())
        assert image["image"] == f"{stem}.png" and image["file"] == str(source)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_analysed"] == 3 and summary["images_failed"] == []
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert {r["image"] for r in rows} == {"field.png", "field-2.png", "summary-2.png"}
    files = {r["image"]: r["file"] for r in rows}  # each row traces back to its input file
    assert files == {"field.png": str(same_names[0]), "field-2.png": str(same_names[1]),
                     "summary-2.png": str(same_names[2])}  # fmt: skip


def test_output_stems_are_unique_regardless_of_case():
    paths = [Path("a/X.png"), Path("b/x.PNG"), Path("c/x-2.png"), Path("d/cells.csv.png")]
    assert output_stems(paths, reserved=["cells.csv"]) == ["X", "x-3", "x-2", "cells.csv-2"]
    assert output_stems([Path("a/x.png"), Path("a/x.png")]) == ["x", "x-2"]


# ---- 4. damaged pixel data: corrupt JPEG data, NaN in a float TIFF ------------------------------
def _jpeg(rgb: np.ndarray, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90, **params)
    return buffer.getvalue()


def _corrupt_jpeg_pillow_reads() -> bytes:
    """The demo smear as JPEG with 2 kB overwritten mid-file, a copy Pillow decodes silently."""
    data = _jpeg(make_demo_smear().image)
    for seed in range(50):
        damaged = bytearray(data)
        middle = len(damaged) // 2
        damaged[middle : middle + 2048] = np.random.default_rng(seed).bytes(2048)
        try:
            with Image.open(io.BytesIO(damaged)) as im:
                im.load()
        except OSError:
            continue  # Pillow noticed this one itself
        return bytes(damaged)
    raise AssertionError("no silently decoded corruption found")


def test_corrupt_jpeg_data_is_noted_as_damaged():
    damaged = _corrupt_jpeg_pillow_reads()
    loaded = read_image(damaged, name="field.jpg")
    good = read_image(_jpeg(make_demo_smear().image)).rgb
    assert (np.abs(loaded.rgb.astype(int) - good).max(axis=2) > 40).mean() > 0.05  # visibly wrong
    assert loaded.notes[0].startswith("damaged image: results unreliable: the JPEG data is corrupt")
    prepared = read_for_analysis(damaged, "field.jpg")  # the app's path: notes become field notes
    assert analyze([prepared], None).fields[0].notes[0] == loaded.notes[0]


def test_cells_of_an_image_decoded_damaged_wait_for_review_as_a_warned_fields_do():
    """A review saw a corrupt JPEG counted "100% blasts" on the model's word under its own
    "damaged image: results unreliable" note."""
    sound = read_for_analysis(_jpeg(make_demo_smear().image), "field.jpg")
    note = "damaged image: results unreliable: the JPEG data is corrupt (test)"
    counted = analyze([sound], EveryCellABlast())
    analysis = analyze([dataclasses.replace(sound, notes=(note,))], EveryCellABlast())
    assert counted.fields[0].quality == analysis.fields[0].quality == ()  # no other warning
    assert CellLabel.BLAST in {c.label for c in counted.cells}
    assert {c.label for c in analysis.cells} <= {CellLabel.UNCERTAIN, CellLabel.BORDER}
    review = Review(analysis, sample_id="S-1")
    (waiting, *_) = [c for c in review.cells if c.label == CellLabel.UNCERTAIN]
    assert review.sent_to_review_because(waiting) == (
        "its image file is damaged (see the field's notes)"
    )


@pytest.mark.parametrize(
    "params",
    [{}, {"progressive": True}, {"optimize": True}, {"restart_marker_blocks": 3},
     {"restart_marker_rows": 1, "progressive": True}, {"subsampling": 0}],
)  # fmt: skip
def test_sound_jpegs_get_no_damage_note(params):
    data = _jpeg(make_demo_smear().image, **params)
    assert jpeg_damage(data) is None
    assert not any("damaged" in note for note in read_image(data).notes)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bytes.fromhex("ffd8 ffda0002 12ff0034ffd056 ffd9"), None),
        (bytes.fromhex("ffd8 ffda0002 12ffd156 ffd9"), "restart markers out of order at byte 7"),
        (bytes.fromhex("ffd8 ffda0002 12ff4556 ffd9"), "an unexpected marker 0xFF45 at byte 7"),
        (bytes.fromhex("ffd8 ffdb0010 12"), "a segment running past the end of the file at byte 2"),
        (bytes.fromhex("ffd8 ffda0002 1234"), "the file ends inside the image data"),
        (bytes.fromhex("ffd8 ffda0002 12ffc40002 34"), "bytes outside any segment at byte 11"),
        (bytes.fromhex("ffd8 fffe0003 00"), "the file ends before its end marker"),
    ],
)
def test_jpeg_structure_checks(data, words):
    assert jpeg_damage(data) == words


def test_nan_in_a_float_tiff_is_noted_as_damaged():
    pixels = np.full((80, 100, 3), 0.5, np.float32)
    pixels[:10, :20] = np.nan
    pixels[40, 40] = np.inf
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb")
    loaded = read_image(buffer.getvalue(), name="stack.tif")
    assert loaded.rgb[0, 0].tolist() == [0, 0, 0] and loaded.rgb[50, 50].tolist() == [128] * 3
    assert ("damaged image: results unreliable: 603 of its 24,000 samples are not numbers (NaN) "
            "or infinite and were set to 0") in loaded.notes  # fmt: skip
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.full((80, 100, 3), 0.5, np.float32), photometric="rgb")
    assert not any("damaged" in note for note in read_image(buffer.getvalue()).notes)


def test_the_command_line_says_which_images_are_damaged(tiny_env, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jpg").write_bytes(_corrupt_jpeg_pillow_reads())
    good = _write(tmp_path / "in" / "good.png", make_demo_smear().image)
    bad = tmp_path / "in" / "bad.jpg"
    assert cli(["segment", str(bad), str(good), "--out", str(tmp_path / "seg")]) == 0
    assert "bad.jpg: damaged image: results unreliable" in capsys.readouterr().err
    assert cli(["analyze", str(bad), str(good), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "bad.jpg: WARNING: damaged image: results unreliable" in err
    assert "good.png: damaged" not in err
    notes = json.loads((tmp_path / "out" / "bad.json").read_text())["notes"]
    assert notes[0].startswith("damaged image: results unreliable: the JPEG data is corrupt")
    assert json.loads((tmp_path / "out" / "good.json").read_text())["notes"] == []
    # why its cells went to review is in the table and the summary too, not only in its notes
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["damaged_images"] == ["bad.jpg"]
    with open(tmp_path / "out" / "cells.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {r["field_warnings"] for r in rows if r["image"] == "bad.jpg"} == {"damaged file"}
    assert {r["field_warnings"] for r in rows if r["image"] == "good.png"} == {""}
    assert {r["research_use"] for r in rows} == {"research use only; not for diagnosis"}


# ---- 5. formula-like image names in the command line's cells.csv ------------------------------
FORMULA_NAME = '=HYPERLINK("http:x","y").png'


def test_formula_like_names_are_text_in_the_command_lines_csv(tiny_env, tmp_path):
    path = _write(tmp_path / "in" / FORMULA_NAME, make_demo_smear().image)
    assert cli(["segment", str(path), "--out", str(tmp_path / "seg")]) == 0
    rows = list(csv.DictReader((tmp_path / "seg" / "cells.csv").open()))
    assert rows and {r["image"] for r in rows} == {"'" + FORMULA_NAME}
    assert all(r["crop_path"].startswith("'=HYPERLINK(") for r in rows)
    assert (tmp_path / "seg" / rows[0]["crop_path"][1:]).is_file()
    assert cli(["analyze", str(path), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "cells.csv").open()))
    assert rows and {r["image"] for r in rows} == {"'" + FORMULA_NAME}
    assert {r["file"] for r in rows} == {str(path)}  # a path starting "/" is no formula


@pytest.mark.parametrize(
    ("value", "expected"),
    [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
     ("\tx", "'\tx"), ("\rx", "'\rx"), ("field 1.png", "field 1.png"), ("", "")],
)  # fmt: skip
def test_spreadsheet_text(value, expected):
    assert spreadsheet_text(value) == expected


# ---- 6. model folders: names, config ranges, config checksum ------------------------------------
@pytest.fixture
def models(tiny_models_dir, tmp_path) -> Path:
    """A models folder with a copy of the tiny model, and a model folder outside it."""
    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    shutil.copytree(tiny_models_dir / "tiny", tmp_path / "elsewhere" / "outside")
    return root


def _config(root: Path, name: str = "tiny") -> dict:
    return json.loads((root / name / CONFIG_FILE).read_text())


@pytest.mark.parametrize("name", ["../elsewhere/outside", "..", ".", "../../../..", "tiny/",
                                  "{tmp}/elsewhere/outside", "/etc", ".hidden", "tiny\\x"])  # fmt: skip
def test_model_names_cannot_lead_out_of_the_models_folder(models, tmp_path, name, capsys):
    name = name.format(tmp=tmp_path)
    for call in (load_model, read_config):
        with pytest.raises(ModelNotFoundError, match=r"(is not a model name|no model named).*tiny"):
            call(name, models)
    assert train_cli(["activate", name, "--models-dir", str(models)]) == 2
    assert "error: " in capsys.readouterr().err
    assert not (models / "ACTIVE").exists() or (models / "ACTIVE").read_text() == "tiny\n"


def test_a_link_to_a_model_outside_is_not_listed_or_loaded(models, tmp_path):
    (models / "linked").symlink_to(tmp_path / "elsewhere" / "outside")
    assert list_models(models) == ["tiny"]
    with pytest.raises(ModelNotFoundError, match="'linked' is a link to a folder outside"):
        load_model("linked", models)


def test_the_command_line_refuses_a_model_path(models, tmp_path, field_png, capsys, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(models))
    outside = str(tmp_path / "elsewhere" / "outside")
    for name in (outside, "../elsewhere/outside"):
        code = cli(["analyze", str(field_png), "--model", name, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and "error: " in err and "is not a model name" in err


BAD_VALUES = [
    ({"calibration": {"temperature": -1.0}}, r"calibration\.temperature is -1\.0; use a number"),
    ({"calibration": {"temperature": 0.0}}, r"calibration\.temperature is 0\.0"),
    ({"calibration": {"temperature": float("nan")}}, r"calibration\.temperature is nan; expected a finite"),
    ({"calibration": {"temperature": "1.0"}}, r"calibration\.temperature is '1\.0'; expected a number"),
    ({"calibration": {"threshold": 2.0}}, r"calibration\.threshold is 2\.0; use a probability"),
    ({"calibration": {"threshold": 0.0}}, r"calibration\.threshold is 0\.0"),
    ({"calibration": {"uncertain_low": 0.6, "uncertain_high": 0.4}}, "review band is uncertain_low 0.6"),
    ({"calibration": {"uncertain_high": 0.3}}, "review band is .* uncertain_high 0.3"),
    ({"calibration": {"uncertain_high": 1.5}}, "review band"),
    ({"calibration": 0.5}, "calibration is 0.5; expected an object"),
    # misspelt or missing keys filled with defaults: a band of 0.02-0.5, one view of four
    ({"calibration": {"uncertain_hi": 0.9}}, r"calibration holds .*'uncertain_hi'.*expected all"),
    ({"test_time_view": 4}, r"unknown key\(s\) 'test_time_view'"),
    ({"calibration": {"temperature": 10**400}}, "calibration.temperature is too large"),
    ({"input_size": 20000}, "input_size is 20000; use a whole number from 32 to 1024"),
    ({"input_size": 8}, "input_size is 8"),
    ({"input_size": "224"}, "input_size is '224'"),
    ({"input_size": True}, "input_size is True"),
    ({"class_names": ["normal", "blast"]}, r"class_names is \['normal', 'blast'\]"),
    ({"architecture": "nope"}, "architecture is 'nope'; use one of"),
    ({"sha256": "abc"}, "sha256 is 'abc'; expected 64 hexadecimal digits"),
    ({"format_version": 2}, "format_version is 2; this version reads 1 to 1"),
    ({"weights_file": "other.keras"}, "weights_file is 'other.keras'"),
    ({"test_time_views": 3}, "test_time_views is 3"),
    ({"gradcam_layer": 7}, "gradcam_layer is 7"),
    ({"preprocessing": "magic"}, "preprocessing is 'magic'"),
    ({"domain": {"file": "domain.npz", "sha256": "0" * 64, "threshold": -1.0,
                 "statistic": "median cell score"}}, r"domain\.threshold is -1\.0"),
    ({"domain": {"file": "domain.npz", "sha256": "0" * 64, "threshold": float("inf"),
                 "statistic": "median cell score"}}, r"domain\.threshold is inf"),
]  # fmt: skip


def _with(values: dict, change: dict) -> dict:
    out = json.loads(json.dumps(values))
    for key, value in change.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and key in out else value
    return out


@pytest.mark.parametrize(("change", "words"), BAD_VALUES)
def test_every_config_value_is_checked_on_load_even_with_a_matching_checksum(models, change,
                                                                            words):  # fmt: skip
    bad = _with(_config(models), change)
    bad["config_sha256"] = config_checksum(bad)  # as if sealed: the range check still refuses it
    text = json.dumps(bad)
    (models / "tiny" / CONFIG_FILE).write_text(text)
    message = rf"config\.json of model 'tiny' is not a valid model config: .*{words}"
    with pytest.raises(ModelIntegrityError, match=message):
        load_model("tiny", models)
    with pytest.raises(ModelIntegrityError, match=words):  # and no writer writes it
        write_config(models / "tiny", bad)
    assert (models / "tiny" / CONFIG_FILE).read_text() == text


def test_a_changed_config_is_refused_by_its_checksum(models, capsys):
    values = _config(models)
    assert values["config_sha256"] == config_checksum(values)
    path = models / "tiny" / CONFIG_FILE
    path.write_text(json.dumps(values, indent=4))  # re-indented: the same values, still loads
    assert load_model("tiny", models).config.calibration.threshold == 0.5
    path.write_text(json.dumps(_with(values, {"calibration": {"threshold": 0.52}})))
    for call in (load_model, read_config):
        with pytest.raises(ModelIntegrityError, match="does not match its config_sha256: it was "
                           r"changed after it was written\. .*python -m train seal tiny"):  # fmt: skip
            call("tiny", models)
    del values["config_sha256"]
    path.write_text(json.dumps(values))
    with pytest.raises(ModelIntegrityError, match="has no config_sha256"):
        load_model("tiny", models)
    assert train_cli(["seal", "tiny", "--models-dir", str(models)]) == 0
    assert "tiny: config.json checked and sealed" in capsys.readouterr().out
    assert load_model("tiny", models).config.calibration.threshold == 0.5


def test_every_writer_of_a_config_writes_its_checksum(models):
    values = _config(models)
    assert values["config_sha256"] == config_checksum(values)  # save_model_folder
    rng = np.random.default_rng(0)
    width = int(load_model("tiny", models).keras_model.get_layer("logits").input.shape[-1])
    reference = DomainReference.fit(rng.normal(size=(40, width)), rng.normal(size=(40, 6)),
                                    n_components=4)  # fmt: skip
    write_domain_reference("tiny", reference, root=models)
    values = _config(models)
    assert values["domain"] and values["config_sha256"] == config_checksum(values)
    assert load_model("tiny", models).domain is not None


@pytest.mark.parametrize("name", ["lite0_blast_v1", "lite0_blast_v2"])
def test_the_bundled_models_are_sealed_and_keep_their_calibration(name):
    config = read_config(name, REPO / "models")
    values = json.loads((REPO / "models" / name / CONFIG_FILE).read_text())
    assert values["config_sha256"] == config_checksum(values)
    assert config.calibration.to_dict() == values["calibration"]
    expected = {"lite0_blast_v1": (0.66, 0.4, 0.92, 8), "lite0_blast_v2": (0.13, 0.02, 0.39, 4)}
    c = config.calibration
    assert (c.threshold, c.uncertain_low, c.uncertain_high, config.test_time_views) == expected[
        name
    ]


# ---- 7. zip import: the whole archive's ratio, one unpack per archive, long names -------------
def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png_bytes(value: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_many_members_under_the_per_member_floor_cannot_make_a_bomb(tmp_path):
    # Each member stays under the 1 MiB floor of the per-member ratio check.
    data = _zip({f"d/{i:02d}.bin": bytes(1_000_000) for i in range(40)})
    assert len(data) < 100_000
    with pytest.raises(UnsafeArchiveError, match=r"expands \d+-fold in all .* 40 members\), over"):
        extract_zip(data, tmp_path / "uploads")
    assert not any((tmp_path / "uploads").rglob("*"))
    # A real dataset (already compressed images) is far under the limit.
    assert extract_zip(_zip({f"d/blast/P{i}/a.png": _png_bytes(i) for i in range(30)}),
                       tmp_path / "uploads").name == "d"  # fmt: skip


def test_unpacking_the_same_archive_again_reuses_its_folder(tmp_path):
    dest = tmp_path / "uploads"
    data = _zip({"set/blast/P1/a.png": _png_bytes(), "set/normal/P2/b.png": _png_bytes(200)})
    first = extract_zip(data, dest)
    upload = io.BytesIO(data)
    upload.name = "renamed.zip"
    assert extract_zip(data, dest) == first == extract_zip(upload, dest)
    assert len(list(dest.iterdir())) == 1 and first.parent.name.endswith(
        hashlib.sha256(data).hexdigest()[:16]
    )
    other = extract_zip(_zip({"set/blast/P1/a.png": _png_bytes(90)}), dest)
    assert other != first and len(list(dest.iterdir())) == 2


def test_old_unpacked_uploads_are_removed_and_others_left_alone(tmp_path):
    dest = tmp_path / "uploads"
    old_data = _zip({"old/blast/P1/a.png": _png_bytes(10)})
    old = extract_zip(old_data, dest).parent
    used = extract_zip(_zip({"used/blast/P1/a.png": _png_bytes(20)}), dest).parent
    crashed = dest / ".extract-abc123"
    crashed.mkdir()
    unrelated = dest / "notes-from-admin"
    unrelated.mkdir()
    long_ago = time.time() - 8 * 86400
    for folder in (old, used, crashed, unrelated):
        os.utime(folder, (long_ago, long_ago))
    assert extract_zip(_zip({"used/blast/P1/a.png": _png_bytes(20)}), dest).parent == used
    assert used.stat().st_mtime > long_ago  # reused: kept and its time renewed
    new = extract_zip(_zip({"new/blast/P1/a.png": _png_bytes(30)}), dest).parent
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [used.name, new.name, "notes-from-admin"]
    )
    assert not old.exists() and not crashed.exists()


@pytest.mark.parametrize(
    ("member", "words"),
    [
        ("d/" + "x" * 300 + ".png", r"has a name of 304 bytes \('x{40}\.\.\.'\), over the 255"),
        ("/".join(["d" * 200] * 6) + "/a.png", "has a path over 1024 bytes long"),
    ],
)
def test_a_too_long_member_name_is_a_typed_error(tmp_path, member, words):
    with pytest.raises(UnsafeArchiveError, match=words):
        extract_zip(_zip({"d/a.png": _png_bytes(), member: _png_bytes()}), tmp_path / "uploads")
    assert not any((tmp_path / "uploads").rglob("*"))


def test_a_member_that_cannot_be_written_is_a_typed_error(tmp_path, monkeypatch):
    real_open = Path.open

    def full_disk(self, mode="r", *args, **kwargs):
        if mode == "xb":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(UnsafeArchiveError, match=r"'d/a\.png' cannot be written here \(No space"):
        extract_zip(_zip({"d/a.png": _png_bytes()}), tmp_path / "uploads")
    assert not any((tmp_path / "uploads").rglob("*"))


# ---- 8. server paths: names relative to a configured root in what users see -------------------
def _model_messages(root: Path, tmp_path: Path) -> list[str]:
    """The messages of every way a model folder can fail to load."""
    messages = []

    def attempt(name: str = "tiny") -> None:
        with pytest.raises(LeukemiaCoreError) as caught:
            load_model(name, root)
        messages.append(str(caught.value))

    attempt("nope")  # no such model
    weights = (root / "tiny" / WEIGHTS_FILE).read_bytes()
    (root / "tiny" / WEIGHTS_FILE).write_bytes(weights + b"changed")
    attempt()  # changed weights
    (root / "tiny" / WEIGHTS_FILE).unlink()
    attempt()  # missing weights
    (root / "tiny" / WEIGHTS_FILE).write_bytes(weights)
    values = _config(root)
    entry = {
        "file": "domain.npz",
        "sha256": "0" * 64,
        "threshold": 1.5,
        "statistic": "median cell score",
    }
    write_config(root / "tiny", {**values, "domain": entry})
    attempt()  # missing domain reference
    (root / "tiny" / "domain.npz").write_bytes(b"not an npz")
    attempt()  # changed domain reference
    digest = hashlib.sha256(b"not an npz").hexdigest()
    write_config(root / "tiny", {**values, "domain": {**entry, "sha256": digest}})
    attempt()  # unreadable domain reference
    (root / "tiny" / CONFIG_FILE).write_text("{not json")
    attempt()  # broken config
    return messages


def test_model_folder_messages_name_models_and_files_not_server_folders(models, tmp_path):
    messages = _model_messages(models, tmp_path)
    assert len(messages) == 7
    for message in messages:
        assert str(tmp_path) not in message and str(models) not in message, message
    assert "no model named 'nope' in the models folder" in messages[0]
    assert "weights of model 'tiny' (model.keras) do not match" in messages[1]
    assert "model 'tiny' has no weights file model.keras" in messages[2]
    assert "declares a domain reference domain.npz that is missing" in messages[3]
    assert "the domain reference domain.npz of model 'tiny' does not match" in messages[4]
    assert messages[5].startswith("model 'tiny': domain.npz is not a domain reference")


def test_no_model_help_names_no_server_folder(tmp_path, monkeypatch):
    from ui.models import no_model_help

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(tmp_path / "secret-models"))
    text = no_model_help()
    assert "No classifier model is installed" in text and "LEUKEMIA_MODELS_DIR" in text
    assert str(tmp_path) not in text


def test_reviewed_case_and_recalibration_messages_name_no_server_folder(models, tmp_path):
    from leukemia_core.store import CaseStore
    from train.records import DatasetError
    from train.reviewed_cases import export_reviewed_cases
    from train.run import recalibrate
    from train.splits import SplitError

    store = CaseStore(tmp_path / "private" / "cases.sqlite3")
    with pytest.raises(
        DatasetError, match=r"in the case database cases\.sqlite3: 0 signed"
    ) as caught:
        export_reviewed_cases(store, tmp_path / "out")
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(SplitError, match=r"model 'tiny' has no split\.csv") as caught:
        recalibrate("tiny", [], root=models)
    assert str(tmp_path) not in str(caught.value)


@pytest.fixture
def retrain_page(models, tmp_path, monkeypatch, apptest_navigation):
    """The Retrain page as a model admin, with its jobs, models and cases under tmp_path."""
    from conftest import log_in
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(models))
    monkeypatch.setenv("LEUKEMIA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(tmp_path / "cases.sqlite3"))
    monkeypatch.delenv("LEUKEMIA_DATA_ROOTS", raising=False)
    at = log_in(AppTest.from_file(str(REPO / "app.py"), default_timeout=120), "Dr. M",
                ("model_admin",)).run()  # fmt: skip
    at.switch_page("pages/retrain.py").run()
    assert not at.exception, at.exception
    return at


def _shown_texts(at) -> list[str]:
    return [e.value for e in (*at.error, *at.warning, *at.info, *at.success, *at.caption,
                              *at.markdown)]  # fmt: skip


def test_the_retrain_page_names_uploads_relative_to_their_folder(retrain_page, tmp_path):
    at = retrain_page
    at.radio(key="data_source").set_value("Upload a zip").run()
    data = _zip({"mine/blast/P1/notes.txt": b"no images here"})
    at.file_uploader(key="data_zip").set_value([("mine.zip", data, "application/zip")]).run()
    at.button(key="unpack").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert errors and "This dataset cannot be used" in errors[0] and "mine" in errors[0], errors
    assert not [t for t in _shown_texts(at) if str(tmp_path) in t]


def test_the_retrain_page_shows_a_failed_job_without_server_folders(retrain_page, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    from train import jobs
    from train.compare_settings import CompareSettings

    (tmp_path / "data").mkdir()
    monkeypatch.setenv("LEUKEMIA_DATA_ROOTS", str(tmp_path / "data"))  # the job's data
    runs = tmp_path / "runs"
    spec = jobs.JobSpec((str(tmp_path / "data" / "manifest.csv"),),
                        CompareSettings(("simple_cnn",), input_size=32), title="t")  # fmt: skip
    job_id = jobs.submit(spec, runs, user=User.shell())
    folder = runs / job_id
    jobs.write_status(folder, {
        "state": jobs.FAILED, "title": "t", "created": "2026-01-01T00:00:00+00:00",
        "error": f"DatasetError: {tmp_path / 'data' / 'a.png'} cannot be read",
        "message": f"Failed; the traceback is in {folder / jobs.ERROR_FILE}.",
    })  # fmt: skip
    at = retrain_page.run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error if "This job failed" in e.value]
    assert "This job failed: a.png cannot be read" in error and str(tmp_path) not in error
    assert "DatasetError" not in error  # the class name is for the administrator's details
    assert any(f"{job_id}/error.txt" in c.value for c in at.caption)
    assert not [t for t in _shown_texts(at) if str(runs) in t]
    details = [x for x in at.expander if x.label == "Details for the administrator"]
    assert details and str(folder / jobs.ERROR_FILE) in details[0].code[0].value
    assert "DatasetError" in details[0].code[0].value


def test_train_help_lists_every_command_it_accepts(capsys):
    import train.__main__ as train_main

    parser = train_main.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {line.split()[0] for line in train_main.__doc__.splitlines()
              if line.startswith("    ") and line.strip()}  # fmt: skip
    assert set(commands.choices) == listed
    with pytest.raises(SystemExit):
        train_cli(["--help"])
    assert "``" not in capsys.readouterr().out  # plain words, not reStructuredText


def test_options_must_be_written_whole_so_a_typo_is_not_read_as_another_option(capsys):
    """With abbreviations, '--mode cells' was read as '--model cells'."""
    from train.evaluate.__main__ import main as evaluate_cli

    for run, argv in ((cli, ["analyze", "a.png", "--out", "o", "--mode", "cells"]),
                      (cli, ["users", "add", "ana", "--rol", "admin"]),
                      (train_cli, ["inspect", "--dat", "x"]),
                      (evaluate_cli, ["cells", "--data", "x", "--mod", "tiny"])):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            run(argv)
        err = capsys.readouterr().err  # not taken for the whole option: unknown, or missing
        assert stop.value.code == 2 and ("unrecognized arguments" in err or "required" in err)


def test_segment_on_a_full_disk_stops_with_what_to_do_and_leaves_no_crops(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    """Each image was reported 'skipped ... could not write', its crops were left behind, and
    writing cells.csv then raised a traceback."""
    import errno

    from leukemia_core import segment_cli

    field = _write(tmp_path / "field.png", make_demo_smear().image)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(segment_cli, "_write_png", lambda path, rgb: full(path, b""))
    out = tmp_path / "out"
    assert cli(["segment", str(field), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not write the results" in err and "Free some space" in err
    assert "Traceback" not in err and not (out / "field").exists()


def test_a_failed_jobs_reason_is_said_without_the_exception_class_and_says_what_to_do():
    from ui.retrain_jobs import failure_words

    said = failure_words("DatasetNotFoundError: No dataset at cells/manifest.csv")
    assert said.startswith("No dataset at cells/manifest.csv") and "Error" not in said
    assert "moved or deleted after it was checked" in said
    assert failure_words("the worker stopped") == "the worker stopped"


def test_segment_never_replaces_a_table_or_files_it_did_not_write(tiny_env, tmp_path, capsys):
    """segment wrote over analyze's cells.csv (and a lab's), deleted a lab's
    cell_001_reviewed_by_MK.png in a folder named like an image, and on a failed write removed
    that whole folder."""
    folder = tmp_path / "fields"
    folder.mkdir()
    _write(folder / "field.png", make_demo_smear().image)
    results = tmp_path / "results"
    assert cli(["analyze", str(folder), "--model", "tiny", "--out", str(results)]) == 0
    analysed = (results / "cells.csv").read_bytes()
    assert cli(["segment", str(folder), "--out", str(results)]) == 2
    assert "holds cells.csv that this command did not write" in capsys.readouterr().err
    assert (results / "cells.csv").read_bytes() == analysed
    labs = tmp_path / "labs"
    (labs / "field").mkdir(parents=True)
    (labs / "field" / "cell_001_reviewed_by_MK.png").write_bytes(b"the lab's")
    (labs / "cells.csv").write_text("patient,count\nP1,3\n")
    assert cli(["segment", str(folder / "field.png"), "--out", str(labs)]) == 2
    (labs / "cells.csv").unlink()
    assert cli(["segment", str(folder / "field.png"), "--out", str(labs)]) == 0
    assert (labs / "field" / "cell_001_reviewed_by_MK.png").read_bytes() == b"the lab's"
    assert (labs / "field-2" / "overlay.png").is_file()
    rows = list(csv.DictReader((labs / "cells.csv").open()))
    assert {r["crop_path"].split("/")[0] for r in rows} == {"field-2"}
    assert cli(["segment", str(folder / "field.png"), "--out", str(labs)]) == 0  # again: same
    assert sorted(p.name for p in labs.iterdir()) == ["cells.csv", "field", "field-2"]
    # an interrupted run's folder (crops, no overlay yet) is still its own: no "-2" copy
    crops = tmp_path / "crops"
    (crops / "field").mkdir(parents=True)
    (crops / "field" / "cell_007.png").write_bytes(b"a crop of the interrupted run")
    assert cli(["segment", str(folder / "field.png"), "--out", str(crops)]) == 0
    assert sorted(p.name for p in crops.iterdir()) == ["cells.csv", "field"]
    assert not (crops / "field" / "cell_007.png").exists() or "cell_007" in (
        crops / "cells.csv").read_text()  # fmt: skip
    # a cells.csv of an older segment (fewer columns) is its own too
    (crops / "cells.csv").write_text("image,cell_id,x0,y0,x1,y1,crop_path\n")
    assert cli(["segment", str(folder / "field.png"), "--out", str(crops)]) == 0
