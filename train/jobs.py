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

import fcntl
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from leukemia_core.outputs import write_text_atomic
from leukemia_core.roles import Permission, User, require
from train.compare_settings import RESULTS_FILE, CompareSettings
from train.records import NO_LABEL

RUNS_ENV_VAR = "LEUKEMIA_RUNS_DIR"
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
JOB_FILE, STATUS_FILE, CANCEL_FILE, ERROR_FILE = "job.json", "status.json", "cancel", "error.txt"
LOCK_FILE, LOG_FILE = "worker.lock", "worker.log"
WORKER_GONE = (
    "The worker process stopped while this job was running (it was killed, or the server "
    "restarted or ran out of memory). Nothing was promoted and the model registry is unchanged. "
    "Start the job again; the worker's log is worker.log in the runs folder ($LEUKEMIA_RUNS_DIR, "
    "default runs/)."
)
_spawned: dict[str, list[subprocess.Popen]] = {}  # runs folder -> workers started here


def runs_dir() -> Path:
    """Job folders live here: ``$LEUKEMIA_RUNS_DIR``, or ``runs/`` beside ``app.py``."""
    configured = os.environ.get(RUNS_ENV_VAR)
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "runs"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobSpec:
    """What to compare on which data.

    Attributes:
        data: Dataset folders or CSV manifests (see :mod:`train.inspection`).
        settings: The comparison's settings.
        format: Layout of every dataset (detected when None).
        allow_ungrouped: Accept cells without subject or field ids (each its own group).
        skip_unreadable: Leave out images that cannot be decoded (the worker decodes each).
        title: Words for the queue, e.g. the preset's name.
        class_labels: Class-folder name -> ``"blast"``, ``"normal"`` or None (left out), for
            folders whose names say neither (see :func:`train.inspection.inspect_datasets`).
        checked: What the dataset check found when the job was queued (:func:`data_counts`):
            the worker refuses a set that changed since (files removed while it waited).
    """

    data: tuple[str, ...]
    settings: CompareSettings
    format: str | None = None
    allow_ungrouped: bool = False
    title: str = ""
    skip_unreadable: bool = False
    class_labels: tuple[tuple[str, str | None], ...] = ()
    checked: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        # Absolute paths: the worker process runs from the repository folder, not the caller's.
        object.__setattr__(self, "data", tuple(str(Path(d).expanduser().resolve())
                                               for d in self.data))  # fmt: skip
        labels = self.class_labels  # a mapping or pairs; kept as sorted pairs (frozen, hashable)
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        object.__setattr__(self, "class_labels", tuple(sorted((str(k), v) for k, v in pairs)))

    def to_dict(self) -> dict:
        return {**asdict(self), "data": list(self.data), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> JobSpec:
        return cls(tuple(values["data"]), CompareSettings.from_dict(values["settings"]),
                   values.get("format"), values.get("allow_ungrouped", False),
                   values.get("title", ""), values.get("skip_unreadable", False),
                   tuple(map(tuple, values.get("class_labels") or ())),
                   tuple(map(tuple, values.get("checked") or ())))  # fmt: skip

    def command(self, out: str | Path) -> str:
        """The ``python -m train compare`` command line that runs the same comparison."""
        s = self.settings
        parts = ["python -m train compare"]
        parts += [f"--data {shlex.quote(d)}" for d in self.data]
        parts += [f"--format {self.format}"] * bool(self.format)
        parts += ["--allow-ungrouped"] * self.allow_ungrouped
        parts += ["--skip-unreadable"] * self.skip_unreadable
        parts += [f"--class-label {shlex.quote(f'{name}={label or NO_LABEL}')}"
                  for name, label in self.class_labels]  # fmt: skip
        parts += ["--architectures " + " ".join(s.architectures)]
        parts += [f"--input-size {s.input_size or 'default'}"]
        parts += [f"--epochs {s.epochs}", f"--batch-size {s.batch_size}",
                  f"--fine-tune-epochs {s.fine_tune_epochs}",
                  f"--fine-tune-layers {s.fine_tune_layers}", f"--balance {s.balance}"]  # fmt: skip
        # Augmentation on with none chosen trains with none: on the command line, --no-augment
        # (left out, the command would apply the default five).
        parts += ["--no-augment"] * (not s.augment or not s.augmentations)
        parts += ["--augmentations " + " ".join(s.augmentations)] * (
            s.augment and bool(s.augmentations)
        )
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
    data_notes: list = field(default_factory=list)  # what the dataset check said of its cells

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def cancelling(self) -> bool:
        """Cancel was asked for and the worker has yet to stop (it stops at its next batch)."""
        return self.state == RUNNING and (self.folder / CANCEL_FILE).exists()

    @property
    def state_text(self) -> str:
        """The state in words: ``cancelling`` while a running job has yet to stop."""
        return "cancelling" if self.cancelling else self.state

    def spec(self) -> JobSpec:
        return JobSpec.from_dict(json.loads((self.folder / JOB_FILE).read_text()))

    def results(self) -> dict:
        """``results.json`` of a finished job."""
        return json.loads((self.folder / RESULTS_FILE).read_text())


def write_status(folder: Path, values: dict) -> None:
    write_text_atomic(folder / STATUS_FILE, json.dumps(values, indent=1) + "\n")


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def data_counts(summary) -> tuple[tuple[str, int], ...]:
    """What a dataset check found, to compare with what the worker reads: cells, groups and
    cells per class."""
    return (("cells", summary.n_cells), ("groups", summary.n_groups),
            *sorted(summary.per_class.items()))  # fmt: skip


def changed_since_check(spec: JobSpec, summary) -> str | None:
    """Why the job's data are not what was checked when it was queued (None: the same)."""
    if not spec.checked or tuple(map(tuple, spec.checked)) == data_counts(summary):
        return None

    def words(counts) -> str:
        return ", ".join(f"{n} {what}" for what, n in counts)

    return (f"The dataset changed after it was checked (checked: {words(spec.checked)}; now: "
            f"{words(data_counts(summary))}): files were added, moved or deleted while the job "
            "waited. Check it again in step 1 and start a new comparison, so that the models "
            "are trained on the cells you checked.")  # fmt: skip


def submit(spec: JobSpec, root: Path | None = None, *, user: User) -> str:
    """Queue a job (its folder is complete before it becomes visible); returns its id. Needs an
    account allowed to manage models; who queued it is kept in its status."""
    require(user, Permission.MANAGE_MODELS)
    root = root or runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Sortable ids: the queue runs in id order, which is submission order.
    job_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f-") + uuid.uuid4().hex[:4]
    staging = root / f".{job_id}.partial"
    staging.mkdir()
    write_text_atomic(staging / JOB_FILE, json.dumps(spec.to_dict(), indent=1) + "\n")
    write_status(staging, {"state": QUEUED, "created": now_text(), "title": spec.title,
                           "submitted_by": user.name})  # fmt: skip
    os.replace(staging, root / job_id)
    return job_id


def record_finished_job(
    folder: Path, spec: JobSpec, comparison, data_notes: Sequence[str] = ()
) -> None:
    """Make a finished command-line comparison a done job, so the page lists and promotes it
    (``data_notes``: what the dataset check said, shown before promotion).

    Written only at the end: a command stopped half-way leaves no job behind.
    """
    write_text_atomic(folder / JOB_FILE, json.dumps(spec.to_dict(), indent=1) + "\n")
    finished = now_text()
    write_status(folder, {"created": finished, "finished": finished, "title": spec.title,
                          "data_notes": list(data_notes), **finished_status(comparison)})  # fmt: skip


def finished_status(comparison) -> dict:
    """Status values of a comparison that ran to its end: done, or failed when no requested
    model was trained (every one skipped or failed), with each model's reason."""
    values = {"overall": 1.0, "eta_s": 0}
    if reason := comparison.untrained_reason():
        return values | {"state": FAILED, "error": reason, "best": None,
                         "message": f"Ran for {comparison.seconds:.0f} s; the size-only "
                         "baseline's figures are in the run folder."}  # fmt: skip
    best = comparison.best()
    return values | {"state": DONE, "best": best.name if best else None,
                     "message": f"Finished in {comparison.seconds:.0f} s."}  # fmt: skip


def _status(folder: Path, worker_running: bool) -> JobStatus:
    values = read_status(folder)
    state = values.get("state", FAILED)
    error = values.get("error")
    if state == RUNNING and not worker_running:
        state, error = FAILED, WORKER_GONE
    known = {"title", "created", "started", "finished", "message", "event", "overall", "eta_s",
             "curves", "best", "data_notes"}  # fmt: skip
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


def cancel_job(job_id: str, root: Path | None = None, *, user: User) -> None:
    """Stop a job: a queued one never starts; a running one stops at its next batch. Needs an
    account allowed to manage models; who cancelled it is kept in its status."""
    require(user, Permission.MANAGE_MODELS)
    root = root or runs_dir()
    folder = root / job_id
    (folder / CANCEL_FILE).write_text(user.name + "\n")
    values = read_status(folder)
    if values.get("state") == QUEUED:
        write_status(folder, {**values, "state": CANCELLED, "finished": now_text(),
                               "message": f"Cancelled by {user.name} before it started.",
                               "cancelled_by": user.name})  # fmt: skip


# --------------------------------------------------------------------------- the worker lock


def try_lock(root: Path):
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
    handle = try_lock(root or runs_dir())
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


def queue_position(job_id: str, jobs: Sequence[JobStatus]) -> int | None:
    """1 for the next job to start, 2 for the one after, ...; None when not queued."""
    queued = sorted(j.job_id for j in jobs if j.state == QUEUED)
    return queued.index(job_id) + 1 if job_id in queued else None
