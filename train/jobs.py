"""Comparison jobs in the background: a queue on disk and one worker process per server.

The Retrain page never trains in its own script thread: it writes a job folder
(``runs/<job id>/job.json``) and makes sure a worker process runs (``python -m train worker``).
The worker holds an exclusive lock on ``runs/worker.lock`` while it lives, so one job trains at
a time per server and the others wait in the queue; the kernel drops the lock when the worker
dies, however it dies, which is how a job whose worker was killed is told from a running one.
The worker reports progress in ``status.json`` (written atomically), stops between two batches
when ``cancel`` appears in the job folder, and writes results only at the end: a cancelled,
failed or killed job leaves no model behind, and nothing outside its job folder changes until
a user promotes a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from leukemia_core.outputs import write_text_atomic
from train.compare_settings import MODELS_SUBDIR, RESULTS_FILE, CompareCancelled, CompareSettings

RUNS_ENV_VAR = "LEUKEMIA_RUNS_DIR"
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
JOB_FILE, STATUS_FILE, CANCEL_FILE, ERROR_FILE = "job.json", "status.json", "cancel", "error.txt"
LOCK_FILE, LOG_FILE = "worker.lock", "worker.log"
WORKER_GONE = (
    "The worker process stopped while this job was running (it was killed, or the server "
    "restarted or ran out of memory). Nothing was promoted and the model registry is unchanged. "
    "Start the job again; its log is runs/worker.log."
)
_WRITE_EVERY_S = 0.5
_spawned: dict[str, list[subprocess.Popen]] = {}  # runs folder -> workers started here


def runs_dir() -> Path:
    """Job folders live here: ``$LEUKEMIA_RUNS_DIR``, or ``runs/`` beside ``app.py``."""
    configured = os.environ.get(RUNS_ENV_VAR)
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "runs"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobSpec:
    """What to compare on which data.

    Attributes:
        data: Dataset folders or CSV manifests (see :mod:`train.inspection`).
        settings: The comparison's settings.
        format: Layout of every dataset (detected when None).
        allow_ungrouped: Accept cells without subject or field ids (each its own group).
        title: Words for the queue, e.g. the preset's name.
    """

    data: tuple[str, ...]
    settings: CompareSettings
    format: str | None = None
    allow_ungrouped: bool = False
    title: str = ""

    def __post_init__(self) -> None:
        # Absolute paths: the worker process runs from the repository folder, not the caller's.
        object.__setattr__(self, "data", tuple(str(Path(d).expanduser().resolve())
                                               for d in self.data))  # fmt: skip

    def to_dict(self) -> dict:
        return {**asdict(self), "data": list(self.data), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> JobSpec:
        return cls(tuple(values["data"]), CompareSettings.from_dict(values["settings"]),
                   values.get("format"), values.get("allow_ungrouped", False),
                   values.get("title", ""))  # fmt: skip

    def command(self, out: str | Path) -> str:
        """The ``python -m train compare`` command line that runs the same comparison."""
        s = self.settings
        parts = ["python -m train compare"]
        parts += [f"--data {shlex.quote(d)}" for d in self.data]
        parts += [f"--format {self.format}"] * bool(self.format)
        parts += ["--allow-ungrouped"] * self.allow_ungrouped
        parts += ["--architectures " + " ".join(s.architectures)]
        parts += [f"--input-size {s.input_size or 'default'}"]
        parts += [f"--epochs {s.epochs}", f"--batch-size {s.batch_size}",
                  f"--fine-tune-epochs {s.fine_tune_epochs}",
                  f"--fine-tune-layers {s.fine_tune_layers}", f"--balance {s.balance}"]  # fmt: skip
        parts += ["--no-augment"] * (not s.augment)
        parts += ["--augmentations " + " ".join(s.augmentations)] * bool(s.augmentations)
        parts += ["--cached-features" if s.cached_features else "--no-cached-features"]
        parts += [f"--feature-views {s.feature_views}", f"--test-time-views {s.test_time_views}",
                  f"--patience {s.patience}",
                  f"--folds {s.folds}", f"--seed {s.seed}",
                  f"--missing-weights {s.missing_weights}",
                  f"--protocol {s.protocol.replace('_', '-')}",
                  f"--stain-normalisation {s.stain_normalisation}",
                  f"--threshold-rule {s.threshold_rule}", f"--out {shlex.quote(str(out))}"]  # fmt: skip
        return " \\\n    ".join(parts)


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands, as read from its folder."""

    job_id: str
    folder: Path
    state: str
    title: str = ""
    created: str = ""
    started: str | None = None
    finished: str | None = None
    message: str = ""
    error: str | None = None
    event: dict = field(default_factory=dict)  # the latest progress event
    overall: float = 0.0  # share of the whole job done, 0..1
    eta_s: float | None = None
    curves: dict = field(default_factory=dict)  # model -> epoch rows (loss, accuracy, ...)
    best: str | None = None

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def spec(self) -> JobSpec:
        return JobSpec.from_dict(json.loads((self.folder / JOB_FILE).read_text()))

    def results(self) -> dict:
        """``results.json`` of a finished job."""
        return json.loads((self.folder / RESULTS_FILE).read_text())


def _write_status(folder: Path, values: dict) -> None:
    write_text_atomic(folder / STATUS_FILE, json.dumps(values, indent=1) + "\n")


def _read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def submit(spec: JobSpec, root: Path | None = None) -> str:
    """Queue a job (its folder is complete before it becomes visible); returns its id."""
    root = root or runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Sortable ids: the queue runs in id order, which is submission order.
    job_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f-") + uuid.uuid4().hex[:4]
    staging = root / f".{job_id}.partial"
    staging.mkdir()
    write_text_atomic(staging / JOB_FILE, json.dumps(spec.to_dict(), indent=1) + "\n")
    _write_status(staging, {"state": QUEUED, "created": _now(), "title": spec.title})
    os.replace(staging, root / job_id)
    return job_id


def record_finished_job(folder: Path, spec: JobSpec, comparison) -> None:
    """Make a finished command-line comparison a done job, so the page lists and promotes it.

    Written only at the end: a command stopped half-way leaves no job behind.
    """
    write_text_atomic(folder / JOB_FILE, json.dumps(spec.to_dict(), indent=1) + "\n")
    best = comparison.best()
    _write_status(folder, {"state": DONE, "created": _now(), "finished": _now(), "overall": 1.0,
                           "title": spec.title, "best": best.name if best else None,
                           "message": f"Finished in {comparison.seconds:.0f} s."})  # fmt: skip


def _status(folder: Path, worker_running: bool) -> JobStatus:
    values = _read_status(folder)
    state = values.get("state", FAILED)
    error = values.get("error")
    if state == RUNNING and not worker_running:
        state, error = FAILED, WORKER_GONE
    known = {"title", "created", "started", "finished", "message", "event", "overall", "eta_s",
             "curves", "best"}  # fmt: skip
    return JobStatus(folder.name, folder, state, error=error,
                     **{k: v for k, v in values.items() if k in known})  # fmt: skip


def job_status(job_id: str, root: Path | None = None) -> JobStatus:
    """The status of one job; a running job whose worker died reads as failed."""
    root = root or runs_dir()
    folder = root / job_id
    if not (folder / JOB_FILE).is_file():
        raise FileNotFoundError(f"No job {job_id!r} in {root}.")
    return _status(folder, worker_alive(root))


def list_jobs(root: Path | None = None) -> list[JobStatus]:
    """Every job, newest first."""
    root = root or runs_dir()
    if not root.is_dir():
        return []
    alive = worker_alive(root)
    folders = [d for d in root.iterdir() if (d / JOB_FILE).is_file() and not d.name.startswith(".")]
    statuses = [_status(d, alive) for d in folders]
    return sorted(statuses, key=lambda j: (j.created, j.job_id), reverse=True)


def cancel_job(job_id: str, root: Path | None = None) -> None:
    """Stop a job: a queued one never starts; a running one stops at its next batch."""
    root = root or runs_dir()
    folder = root / job_id
    (folder / CANCEL_FILE).touch()
    values = _read_status(folder)
    if values.get("state") == QUEUED:
        _write_status(folder, {**values, "state": CANCELLED, "finished": _now(),
                               "message": "Cancelled before it started."})  # fmt: skip


# --------------------------------------------------------------------------- the worker


def _try_lock(root: Path):
    """The worker lock's open file when this process got the lock, else None."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_FILE, "a+")  # noqa: SIM115  (held open for the worker's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def worker_alive(root: Path | None = None) -> bool:
    """True while a worker process holds the lock of ``root``."""
    handle = _try_lock(root or runs_dir())
    if handle is None:
        return True
    handle.close()  # closing drops the lock we just took to look
    return False


def ensure_worker(root: Path | None = None) -> bool:
    """Start a worker process unless one runs or nothing is queued; True if one was started."""
    root = root or runs_dir()
    spawned = _spawned.setdefault(str(root.resolve()), [])
    spawned[:] = [p for p in spawned if p.poll() is None]  # reap finished workers
    starting = bool(spawned)  # started by this server, maybe not holding the lock yet
    if starting or worker_alive(root) or not any(j.state == QUEUED for j in list_jobs(root)):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "train", "worker", "--runs", str(root.resolve())],
            cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # survives the page's reruns
        )  # fmt: skip
    spawned.append(process)
    return True


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
        values["overall"] = max(values.get("overall") or 0.0, overall_fraction(event))
        elapsed = time.monotonic() - self.start
        done = values["overall"]
        values["eta_s"] = elapsed * (1 - done) / done if done > 0.02 else None
        now = time.monotonic()
        if (
            now - self.last_write >= _WRITE_EVERY_S
            or stage in ("model", "model_done")
            or stage.endswith("_epoch")
        ):
            values["heartbeat"] = _now()
            _write_status(self.folder, values)
            self.last_write = now


def overall_fraction(event: dict) -> float:
    """Share of the whole comparison done, from one progress event (0..1).

    Each model counts as ``n_folds + 1`` equal steps: loading and features, then one per fold.
    """
    n_models, n_folds = event.get("n_models") or 1, event.get("n_folds") or 1
    model = (event.get("model_index") or 1) - 1
    stage, done, total = event.get("stage", ""), event.get("done", 0), event.get("total") or 1
    if stage == "model_done":
        return min(1.0, done / n_models)
    if stage == "model":
        return model / n_models
    fold = event.get("fold") or 0
    if stage in ("loading", "features"):
        within = done / total
    elif "epoch" in event and "epochs" in event:  # batch events carry their epoch
        within = ((event["epoch"] - 1) + done / total) / max(event["epochs"], 1)
    elif stage.endswith("_epoch"):
        within = done / total
    else:
        within = 0.0
    step = (fold + min(within, 1.0)) if fold else min(within, 1.0)
    return min(1.0, (model + step / (n_folds + 1)) / n_models)


def load_job_data(spec: JobSpec):
    """``(records, words about them)`` of a job's datasets, with the picker's checks."""
    from train.inspection import DatasetSource, inspect_datasets

    table, summary = inspect_datasets([DatasetSource(d, spec.format) for d in spec.data],
                                      verify=False, allow_ungrouped=spec.allow_ungrouped)  # fmt: skip
    classes = ", ".join(f"{n} {label}" for label, n in summary.per_class.items())
    words = (f"{summary.n_cells} cells ({classes}) in {summary.n_groups} groups from "
             f"{', '.join(spec.data)} ({summary.format})")  # fmt: skip
    return table.records, words


def run_job(folder: Path) -> str:
    """Run one queued job in this process; returns its final state."""
    from train.compare import compare_models  # imports TensorFlow

    values = {**_read_status(folder), "state": RUNNING, "started": _now(), "pid": os.getpid(),
              "message": "Loading the data."}  # fmt: skip
    _write_status(folder, values)
    writer = _StatusWriter(folder, values)
    try:  # a job file that no longer parses fails this job, not the whole queue
        spec = JobSpec.from_dict(json.loads((folder / JOB_FILE).read_text()))
        records, words = load_job_data(spec)
        comparison = compare_models(records, spec.settings, run_dir=folder, data_description=words,
                                    progress=writer, cancelled=writer.cancelled)  # fmt: skip
        best = comparison.best()
        values |= {"state": DONE, "best": best.name if best else None, "overall": 1.0,
                   "eta_s": 0, "message": f"Finished in {comparison.seconds:.0f} s."}  # fmt: skip
    except CompareCancelled:
        values |= {"state": CANCELLED, "message": "Cancelled; nothing was kept."}
    except Exception as error:  # any failure must end as a readable status, never a hang
        write_text_atomic(folder / ERROR_FILE, traceback.format_exc())
        values |= {"state": FAILED, "error": f"{type(error).__name__}: {error}",
                   "message": f"Failed; the traceback is in {folder / ERROR_FILE}."}  # fmt: skip
    if values["state"] != DONE:
        shutil.rmtree(folder / MODELS_SUBDIR, ignore_errors=True)  # no half-finished models
    values["finished"] = _now()
    _write_status(folder, values)
    return values["state"]


def _mark_orphans(root: Path) -> None:
    """Jobs left ``running`` by a dead worker are failed, for good."""
    for folder in (d for d in root.iterdir() if (d / JOB_FILE).is_file()):
        values = _read_status(folder)
        if values.get("state") == RUNNING:
            shutil.rmtree(folder / MODELS_SUBDIR, ignore_errors=True)
            _write_status(folder, {**values, "state": FAILED, "error": WORKER_GONE,
                                   "finished": _now()})  # fmt: skip


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
        while (lock := _try_lock(root)) is None:  # a page may be peeking at the lock right now
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


def queue_position(job_id: str, jobs: Sequence[JobStatus]) -> int | None:
    """1 for the next job to start, 2 for the one after, ...; None when not queued."""
    queued = sorted(j.job_id for j in jobs if j.state == QUEUED)
    return queued.index(job_id) + 1 if job_id in queued else None
