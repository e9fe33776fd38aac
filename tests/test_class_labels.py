"""Class folders whose names say neither blast nor normal: labels given by the user, checked."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import save_picture

from leukemia_core.roles import User
from train import jobs
from train.cli_compare import class_label_arg
from train.compare_settings import CompareSettings
from train.inspection import inspect_datasets
from train.records import DatasetError, UnknownClassFolderError


def _class_folders(root: Path, names: tuple[str, ...]) -> Path:
    for k, name in enumerate(names):
        for subject in ("P1", "P2"):
            folder = root / name / subject
            folder.mkdir(parents=True)
            save_picture(folder / "0.png", 16, (40 * k + 20, 90, 160))
    return root


def test_labels_of_several_locations_apply_to_each_ones_own_folders(tmp_path):
    first = _class_folders(tmp_path / "a", ("Pre", "Benign"))
    second = _class_folders(tmp_path / "b", ("Early", "Late"))
    with pytest.raises(UnknownClassFolderError) as raised:  # what the page asks about
        inspect_datasets([first, second], verify=False, class_labels={"Pre": "blast"})
    assert raised.value.unknown == ("Benign",) and raised.value.folders == ("Benign", "Pre")
    labels = {"Pre": "blast", "Benign": "normal", "Early": "blast", "Late": None}
    table, summary = inspect_datasets([first, second], verify=False, class_labels=labels)
    assert summary.per_class == {"blast": 4, "normal": 2}  # Late left out
    assert {r.cell_type for r in table if r.label == "blast"} == {"Pre", "Early"}


def test_a_label_naming_no_folder_is_refused_with_the_folders_there_are(tmp_path):
    data = _class_folders(tmp_path, ("Pre", "Benign"))
    with pytest.raises(DatasetError, match=r"pre name no class folder .* Benign, Pre"):
        inspect_datasets([data], verify=False, class_labels={"pre": "blast", "Benign": "normal"})


@pytest.mark.parametrize("text", ["Pre", "=blast", "Pre=maybe", "Pre="])
def test_a_malformed_class_label_says_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="FOLDER=blast, FOLDER=normal"):
        class_label_arg(text)


def test_class_label_values_read_as_labels():
    assert class_label_arg(" Pre = Blast ") == ("Pre", "blast")
    assert class_label_arg("Other=none") == ("Other", None)


def test_a_job_of_an_earlier_release_without_class_labels_still_loads(tmp_path):
    spec = jobs.JobSpec((str(tmp_path),), CompareSettings(("simple_cnn",)))
    stored = spec.to_dict()
    del stored["class_labels"]  # job.json as an earlier release wrote it
    assert jobs.JobSpec.from_dict(json.loads(json.dumps(stored))).class_labels == ()


def test_cancelling_is_said_only_while_a_running_job_has_yet_to_stop(tmp_path):
    job_id = jobs.submit(jobs.JobSpec((str(tmp_path),), CompareSettings(("simple_cnn",))),
                         root=tmp_path, user=User.shell())  # fmt: skip
    folder = tmp_path / job_id
    jobs.write_status(folder, {**jobs.read_status(folder), "state": jobs.RUNNING})
    (folder / jobs.CANCEL_FILE).touch()
    status = jobs._status(folder, worker_running=True)
    assert status.cancelling and status.state_text == "cancelling"
    for state in (jobs.QUEUED, jobs.CANCELLED, jobs.DONE):
        jobs.write_status(folder, {**jobs.read_status(folder), "state": state})
        assert jobs._status(folder, worker_running=True).state_text == state
