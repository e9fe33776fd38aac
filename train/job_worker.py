"""The comparison worker: runs queued jobs one at a time and reports their progress.

Started by :func:`train.jobs.ensure_worker` as ``python -m train worker``; holds the worker lock
while it lives (see :mod:`train.jobs` for the queue on disk and the lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from leukemia_core.outputs import write_text_atomic
from train.compare_settings import MODELS_SUBDIR, CompareCancelled
from train.jobs import (
    CANCEL_FILE,
    CANCELLED,
    DONE,
    ERROR_FILE,
    FAILED,
    JOB_FILE,
    QUEUED,
    RUNNING,
    WORKER_GONE,
    JobSpec,
    changed_since_check,
    finished_status,
    list_jobs,
    now_text,
    read_status,
    runs_dir,
    try_lock,
    write_status,
)

_WRITE_EVERY_S = 0.5


class _StatusWriter:
    """Turns progress events into ``status.json`` (throttled) and reads cancel requests."""

    def __init__(self, folder: Path, values: dict):
        self.folder, self.values = folder, values
        self.start = time.monotonic()
        self.last_write = 0.0

    def cancelled(self) -> bool:
        return (self.folder / CANCEL_FILE).exists()

    def __call__(self, event: dict) -> None:
        stage = event.get("stage", "")
        values = self.values
        values["event"] = {k: v for k, v in event.items() if isinstance(v, int | float | str)}
        if stage.endswith("_epoch"):
            row = {
                k: v
                for k, v in event.items()
                if k in ("fold", "phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy")
            }
            values.setdefault("curves", {}).setdefault(event.get("model", "?"), []).append(row)
        # Never backwards: a fine-tuning phase or the baseline restarts its own counters.
        # Below 100% until the job's status says done: the baseline and results come last.
        values["overall"] = min(0.99, max(values.get("overall") or 0.0, overall_fraction(event)))
        elapsed = time.monotonic() - self.start
        done = values["overall"]
        values["eta_s"] = elapsed * (1 - done) / done if done > 0.02 else None
        now = time.monotonic()
        if (
            now - self.last_write >= _WRITE_EVERY_S
            or stage in ("model", "model_done")
            or stage.endswith("_epoch")
        ):
            values["heartbeat"] = now_text()
            write_status(self.folder, values)
            self.last_write = now


# Shares of one model's time when its backbone's features are cached, as measured on 2 CPU
# cores (deepapl, 1,952 cells, the quick CPU preset: cutting the cells out 155 s, or 4 s from
# the crop cache (bench/crop_cache.py), features 20 s, the head of a fold 8 s, 5 folds); its
# folds share what is left. A model trained whole spends its time in its folds: then loading
# is one fold's share, as each fold is.
CACHED_SHARES = {"loading": 0.8, "features": 0.15}
WARM_CACHED_SHARES = {"loading": 0.06, "features": 0.31}  # the cells read from the crop cache


def overall_fraction(event: dict) -> float:
    """Share of the whole comparison done, from one progress event (0..1)."""
    n_models, n_folds = event.get("n_models") or 1, event.get("n_folds") or 1
    model = (event.get("model_index") or 1) - 1
    stage, done, total = event.get("stage", ""), event.get("done", 0), event.get("total") or 1
    if stage == "model_done":
        return min(1.0, done / n_models)
    if stage == "model":
        return model / n_models
    if event.get("cached_features"):
        shares = WARM_CACHED_SHARES if event.get("crops_cached") else CACHED_SHARES
        loading, features = shares["loading"], shares["features"]
        per_fold = (1.0 - loading - features) / n_folds
    else:
        loading, features, per_fold = 1 / (n_folds + 1), 0.0, 1 / (n_folds + 1)
    fold = event.get("fold") or 0
    within = min(done / total, 1.0)
    if stage == "loading":
        step = loading * within
    elif stage == "features":
        step = loading + features * within
    else:
        if "epoch" in event and "epochs" in event:  # batch events carry their epoch
            within = ((event["epoch"] - 1) + within) / max(event["epochs"], 1)
        elif not stage.endswith("_epoch"):
            within = 0.0
        step = loading + features + (max(fold, 1) - 1 + min(within, 1.0)) * per_fold
    return min(1.0, (model + min(step, 1.0)) / n_models)


def load_job_data(spec: JobSpec):
    """``(records, words about them, the check's notes)`` of a job's datasets, with the
    picker's checks."""
    from train.inspection import DatasetSource, inspect_datasets
    from train.records import DatasetError

    # Images are decoded only to leave out the unreadable ones the picker left out too.
    table, summary = inspect_datasets([DatasetSource(d, spec.format) for d in spec.data],
                                      verify=spec.skip_unreadable,
                                      skip_unreadable=spec.skip_unreadable,
                                      allow_ungrouped=spec.allow_ungrouped,
                                      class_labels=dict(spec.class_labels))  # fmt: skip
    if changed := changed_since_check(spec, summary):
        raise DatasetError(changed)
    classes = ", ".join(f"{n} {label}" for label, n in summary.per_class.items())
    words = (f"{summary.n_cells} cells ({classes}) in {summary.n_groups} groups from "
             f"{', '.join(spec.data)} ({summary.format})")  # fmt: skip
    return table.records, words, list(table.notes)


def run_job(folder: Path) -> str:
    """Run one queued job in this process; returns its final state."""
    from train.compare import compare_models  # imports TensorFlow
    from train.crop_cache import CACHE_FOLDER, CropCache

    values = {**read_status(folder), "state": RUNNING, "started": now_text(), "pid": os.getpid(),
              "message": "Loading the data."}  # fmt: skip
    write_status(folder, values)
    writer = _StatusWriter(folder, values)
    try:  # a job file that no longer parses fails this job, not the whole queue
        spec = JobSpec.from_dict(json.loads((folder / JOB_FILE).read_text()))
        if writer.cancelled():  # cancelled as the worker picked it up: not a minute of loading
            raise CompareCancelled("The comparison was cancelled before it started.")
        records, words, notes = load_job_data(spec)
        values["data_notes"] = notes  # shown with the results and before promotion
        comparison = compare_models(records, spec.settings, run_dir=folder, data_description=words,
                                    progress=writer, cancelled=writer.cancelled,
                                    crop_cache=CropCache(folder.parent / CACHE_FOLDER))  # fmt: skip
        values |= finished_status(comparison)
    except CompareCancelled:
        values |= {"state": CANCELLED, "message": "Cancelled; nothing was kept."}
    except Exception as error:  # any failure must end as a readable status, never a hang
        write_text_atomic(folder / ERROR_FILE, traceback.format_exc())
        values |= {"state": FAILED, "error": f"{type(error).__name__}: {error}",
                   "message": f"Failed; the traceback is in {folder / ERROR_FILE}."}  # fmt: skip
    if values["state"] != DONE:
        shutil.rmtree(folder / MODELS_SUBDIR, ignore_errors=True)  # no half-finished models
    values["finished"] = now_text()
    write_status(folder, values)
    return values["state"]


def _mark_orphans(root: Path) -> None:
    """Jobs left ``running`` by a dead worker are failed, for good."""
    for folder in (d for d in root.iterdir() if (d / JOB_FILE).is_file()):
        values = read_status(folder)
        if values.get("state") == RUNNING:
            shutil.rmtree(folder / MODELS_SUBDIR, ignore_errors=True)
            write_status(folder, {**values, "state": FAILED, "error": WORKER_GONE,
                                   "message": "Failed: its worker stopped; nothing was kept.",
                                   "finished": now_text()})  # fmt: skip


def _next_queued(root: Path) -> Path | None:
    queued = [j for j in list_jobs(root) if j.state == QUEUED]
    return min(queued, key=lambda j: j.job_id).folder if queued else None


def run_worker(root: Path | None = None, *, idle_s: float = 2.0, lock_wait_s: float = 5.0) -> int:
    """The worker loop: run queued jobs one by one, then exit once the queue stays empty.

    Returns the number of jobs run; 0 at once when another worker holds the lock.
    """
    root = root or runs_dir()
    with contextlib.suppress(OSError):
        os.nice(5)  # training yields to the app's own requests
    ran = 0
    while True:
        deadline = time.monotonic() + lock_wait_s
        while (lock := try_lock(root)) is None:  # a page may be peeking at the lock right now
            if time.monotonic() > deadline:
                return ran
            time.sleep(0.2)
        with contextlib.closing(lock):
            _mark_orphans(root)
            ran += _drain(root, idle_s)
        # A job queued after the last look but before the lock was dropped found this worker
        # still alive and started none: take it too.
        if _next_queued(root) is None:
            return ran


def _drain(root: Path, idle_s: float) -> int:
    """Run queued jobs until the queue has stayed empty for ``idle_s``; returns how many ran."""
    ran, idle_since = 0, time.monotonic()
    while True:
        folder = _next_queued(root)
        if folder is None:
            if time.monotonic() - idle_since > idle_s:
                return ran
            time.sleep(0.2)
            continue
        run_job(folder)
        ran, idle_since = ran + 1, time.monotonic()
