"""``analyze --engine ray`` on a local Ray instance: the local engine's rows, resumable, and a
killed classifier worker costs no image (issue 14). Skipped where Ray is not installed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from leukemia_core.__main__ import PARTLY_FAILED
from leukemia_core.__main__ import main as cli
from leukemia_core.batch import PARTS_DIR
from leukemia_core.io import read_image

pytestmark = [pytest.mark.data, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
PROBABILITY = 6  # column of blast_probability in cells.csv


@pytest.fixture(scope="module")
def ray_module():
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def fields(shared_data) -> list[Path]:
    """Four ALL-IDB1 fields (2592x1944, blasts) and four BCCD fields (640x480, normal)."""
    paths = sorted((shared_data / "all_idb1" / "images").glob("*.jpg"))[:4]
    paths += sorted((shared_data / "bccd" / "images").glob("*.jpg"))[:4]
    if len(paths) < 8:
        pytest.skip("ALL-IDB1 or BCCD fields are absent")
    return paths


@pytest.fixture(scope="module")
def local_rows(fields, tmp_path_factory, tiny_models_dir_env) -> list[list[str]]:
    out = tmp_path_factory.mktemp("local")
    assert cli(["analyze", *map(str, fields), "--out", str(out)]) == 0
    return _rows(out)


@pytest.fixture(scope="module")
def tiny_models_dir_env(tiny_models_dir):
    """Both engines use the test model (the local engine here, Ray workers by inheritance)."""
    before = os.environ.get("LEUKEMIA_MODELS_DIR")
    os.environ["LEUKEMIA_MODELS_DIR"] = str(tiny_models_dir)
    yield tiny_models_dir
    if before is None:
        del os.environ["LEUKEMIA_MODELS_DIR"]
    else:
        os.environ["LEUKEMIA_MODELS_DIR"] = before


def _rows(out: Path) -> list[list[str]]:
    with open(out / "cells.csv", newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def _same_rows(rows: list[list[str]], expected: list[list[str]]) -> None:
    assert len(rows) == len(expected) and rows[0] == expected[0]
    for row, want in zip(rows[1:], expected[1:], strict=True):
        assert row[:PROBABILITY] == want[:PROBABILITY] and row[PROBABILITY + 1 :] == want[
            PROBABILITY + 1 :]  # fmt: skip
        if row[PROBABILITY] or want[PROBABILITY]:  # empty in the row of an image without cells
            assert abs(float(row[PROBABILITY]) - float(want[PROBABILITY])) <= 1e-4


def test_the_ray_engine_gives_the_local_rows_and_a_rerun_skips_what_is_done(
    ray_module, fields, local_rows, tmp_path
):
    out = tmp_path / "ray"
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    args = ["analyze", *map(str, fields), str(bad), "--out", str(out), "--engine", "ray",
            "--num-workers", "2"]  # fmt: skip
    assert cli(args) == PARTLY_FAILED  # results written; one input skipped
    _same_rows(_rows(out), local_rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_analysed"] == len(fields) and summary["model_runtime"] == "onnx"
    assert [f["image"] for f in summary["images_failed"]] == [str(bad)]  # its row, not the job
    assert all((out / f"{p.stem}.json").is_file() for p in fields)
    parts = {p: p.stat().st_mtime_ns for p in (out / PARTS_DIR).glob("*.json")}
    assert len(parts) == len(fields) + 1
    assert cli(args) == PARTLY_FAILED  # the finished images are read back, not analysed again
    again = {p: p.stat().st_mtime_ns for p in (out / PARTS_DIR).glob("*.json")}
    assert [p for p in parts if again[p] != parts[p]] == [out / PARTS_DIR / "notes.json"]
    _same_rows(_rows(out), local_rows)


def test_a_killed_classifier_worker_is_retried_and_every_image_has_its_rows_once(
    ray_module, fields, local_rows, tmp_path
):
    out = tmp_path / "killed"
    (tmp_path / "copies").mkdir()
    copies = []  # the ALL-IDB1 fields again, as PNG files: a longer run to interrupt; each is
    for path in fields[:4]:  # analysed, then counted once as a repeat of its picture
        copies.append(tmp_path / "copies" / f"{path.stem}.png")
        Image.fromarray(read_image(path).rgb).save(copies[-1])  # the same pixels
    many = [*fields, *copies]
    command = [sys.executable, "-m", "leukemia_core", "analyze", *map(str, many), "--out",
               str(out), "--engine", "ray"]  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "wb") as stream:
        run = subprocess.Popen(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        finished = list((out / PARTS_DIR).glob("*.json")) if (out / PARTS_DIR).is_dir() else []
        if 0 < len(finished) < len(many) - 2:  # mid-run: some images done, others to classify
            killed = _kill_one("ray::ClassifierWorker", run.pid)
        time.sleep(0.2)
    assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert killed is not None, "no classifier worker was found to kill mid-run"
    rows = _rows(out)
    by_image: dict[str, list[list[str]]] = {}
    for row in rows[1:]:
        by_image.setdefault(row[0], []).append(row)
    wanted: dict[str, list[list[str]]] = {}
    for row in local_rows[1:]:
        wanted.setdefault(row[0], []).append(row)
    assert set(by_image) == set(wanted)  # the copies' cells are not counted a second time
    for name, got in by_image.items():  # each image's rows exactly once, as the local engine's
        _same_rows([rows[0], *got], [local_rows[0], *wanted[name]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_analysed"] == len(fields) and summary["images_failed"] == []
    assert summary["images_repeated"] == [{"image": str(c), "same_as": str(f)}
                                          for c, f in zip(copies, fields[:4], strict=True)]  # fmt: skip


def _kill_one(title: str, ancestor: int) -> int | None:
    """SIGKILL the first process below ``ancestor`` whose title starts with ``title`` (Ray
    names its workers so; a local instance's workers descend from the driver)."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid, cmdline in titles.items():
        up = pid
        while up in parents and up not in (0, 1, ancestor):
            up = parents[up]
        if up == ancestor and cmdline.decode(errors="replace").startswith(title):
            os.kill(pid, signal.SIGKILL)
            return pid
    return None


def test_an_address_with_nothing_listening_or_too_few_gpus_is_said_at_once(
    ray_module, fields, tiny_models_dir_env, tmp_path, capsys
):
    """A mistyped --address waited about 14 minutes of Ray's retries, and more GPUs than the
    machine has 300 s, before the message."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    code = cli(["analyze", str(fields[0]), "--out", str(tmp_path / "a"), "--engine", "ray",
                "--address", f"127.0.0.1:{port}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Could not reach the Ray cluster" in err and "nothing answers" in err
    code = cli(
        [
            "analyze",
            str(fields[0]),
            "--out",
            str(tmp_path / "b"),
            "--engine",
            "ray",
            "--gpus-per-worker",
            "64",
        ]
    )  # fmt: skip (more than any machine here has)
    err = capsys.readouterr().err
    assert code == 2 and "need 64 GPUs; the cluster has" in err
    assert time.monotonic() - started < 120
