"""The Ray engine of ``python -m leukemia_core analyze ... --engine ray``: an archive on many cores.

Each image is a Ray task (read, segment, crop: :func:`leukemia_core.batch.analyze_image`, the
local engine's own function), and its crops are classified by a pool of actors that each load
the model once (:class:`ClassifierWorker`). The driver is the one writer: it keeps each finished
image as a part file and assembles ``cells.csv``, the image JSONs and ``summary.json`` exactly as
the local engine does, so both give the same rows, and a rerun skips the images already done.

A killed classifier worker is restarted once and its calls retried once; a task whose worker
died is retried once; an image that still fails gets a failure entry, never a failed job.

Ray is optional (``pip install -r requirements-ray.txt``); the app and the local engine never
import it. On an existing cluster: ``ray start --head`` on one machine, ``ray start --address
HEAD:6379`` on the others, then ``--address HEAD:6379`` here; every node needs this project and
the model folder at the same path.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from leukemia_core.batch import (
    analyze_image,
    failed_result,
    keep_part,
    model_summary,
    plan,
    write_outputs,
)
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.labellers import CropCalls, ModelLabeller

WORKER_START_TIMEOUT_S = 300  # loading the model; longer means the cluster cannot place them
IN_FLIGHT_PER_CPU = 2


class RayUnavailableError(LeukemiaCoreError, RuntimeError):
    """``--engine ray`` was asked for, but Ray is not installed or the cluster cannot be reached."""


class ClassifierWorker:
    """A Ray actor: the model loaded once, labelling batches of crops."""

    def __init__(self, model_name: str | None, models_root: str, runtime: str = "auto") -> None:
        from leukemia_core.classify import Classifier
        from leukemia_core.models.folder import load_model

        model = load_model(model_name, Path(models_root))
        self.labeller = ModelLabeller(Classifier(model, runtime=runtime))

    def describe(self) -> dict:
        labeller = self.labeller
        return {"name": labeller.name, "checksum": labeller.checksum,
                "settings": labeller.decision_settings(), "runtime": labeller.runtime,
                "input_size": labeller.input_size,
                "description": labeller.description}  # fmt: skip

    def label(self, crops: list) -> CropCalls:
        return self.labeller.label(crops)

    def assess(self, scores: list):
        return self.labeller.assess(scores)


class RemoteLabeller:
    """A :class:`~leukemia_core.labellers.Labeller` whose calls go to one classifier actor."""

    def __init__(self, worker, described: dict) -> None:
        self.worker = worker
        self.name, self.checksum = described["name"], described["checksum"]
        self.runtime = described["runtime"]
        self.input_size = described["input_size"]
        self.description = described["description"]
        self._settings = described["settings"]

    def decision_settings(self) -> dict:
        return dict(self._settings)

    def label(self, crops, progress=None) -> CropCalls:
        import ray

        return ray.get(self.worker.label.remote(list(crops)))

    def assess(self, scores):
        import ray

        return ray.get(self.worker.assess.remote(list(scores)))


def analyze_files_ray(
    paths: Sequence[Path],
    out: Path,
    model_name: str | None,
    models_root: Path,
    *,
    single_cells: bool = False,
    address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    runtime: str = "auto",
) -> tuple[int, dict]:
    """Analyse every image into ``out`` on Ray (a new local instance when ``address`` is
    None); returns (number of failed images, set summary), as :func:`batch.analyze_files`.

    Raises:
        RayUnavailableError: Ray is not installed, the cluster at ``address`` is not there, or
            the classifier workers cannot start (too few GPUs, a model that does not load).
    """
    from leukemia_core.models.folder import verify_model_files

    # Named here, not by each node's ACTIVE file: every worker loads the model the run names;
    # checked here too, so a damaged folder is one line, not every worker's traceback.
    model_name = verify_model_files(model_name, Path(models_root)).name
    ray = _ray()
    unreachable = (f"Could not reach the Ray cluster at {address!r} ({{}}); start it with "
                   "`ray start --head` there, or leave out --address for a local instance.")  # fmt: skip
    if address and (why := _not_listening(address)):  # Ray itself retries for minutes
        raise RayUnavailableError(unreachable.format(why))
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayUnavailableError(unreachable.format(error)) from None
    if (gpus := ray.cluster_resources().get("GPU", 0)) < num_workers * gpus_per_worker:
        raise RayUnavailableError(  # said now, not after the workers' start timeout
            f"{num_workers} classifier worker(s) with {gpus_per_worker} GPU each need "
            f"{num_workers * gpus_per_worker:g} GPUs; the cluster has {gpus:g}. Ask for fewer "
            "--num-workers or --gpus-per-worker."
        )
    # Classifier actors reserve no CPU, so every core can run reading and segmentation tasks
    # (which wait, CPU released, while an actor classifies their crops).
    worker_class = ray.remote(num_cpus=0, num_gpus=gpus_per_worker, max_restarts=1,
                              max_task_retries=1)(ClassifierWorker)  # fmt: skip
    workers = [
        worker_class.remote(model_name, str(models_root), runtime) for _ in range(num_workers)
    ]
    try:
        described = _start(ray, workers, gpus_per_worker)
        labellers = [RemoteLabeller(worker, described) for worker in workers]
        planned, done = plan(paths, out, labellers[0], single_cells=single_cells)
        _run(ray, planned, done, labellers, out, single_cells)

        def assess(scores):  # on a worker that is still alive, else on a new one
            for labeller in labellers:
                try:
                    return labeller.assess(scores)
                except ray.exceptions.RayActorError:
                    continue
            workers.append(worker_class.remote(model_name, str(models_root), runtime))
            return RemoteLabeller(workers[-1], described).assess(scores)

        results = [done[stem] for _, stem in planned]
        return write_outputs(out, results, assess, model=model_summary(labellers[0]),
                             single_cells=single_cells)  # fmt: skip
    finally:
        for worker in workers:  # a second run in this process starts with fresh workers
            ray.kill(worker)


def _start(ray, workers: list, gpus_per_worker: float) -> dict:
    """Wait until every classifier worker has loaded the model; its description."""
    try:
        ready, waiting = ray.wait([w.describe.remote() for w in workers],
                                  num_returns=len(workers), timeout=WORKER_START_TIMEOUT_S)  # fmt: skip
        if waiting:
            raise RayUnavailableError(
                f"{len(waiting)} of {len(workers)} classifier workers could not start within "
                f"{WORKER_START_TIMEOUT_S} s: the cluster has {ray.cluster_resources()} and each "
                f"worker needs {gpus_per_worker} GPU; ask for fewer --num-workers or "
                "--gpus-per-worker."
            )
        described = ray.get(ready)
        # Each worker loads the model from its own node's models folder: one with another
        # version (or another ACTIVE) would label its share of the images by other rules.
        models = {(d["name"], d["checksum"], json.dumps(d["settings"], sort_keys=True))
                  for d in described}  # fmt: skip
        if len(models) > 1:
            found = "; ".join(f"{name} (weights {checksum[:12]})" for name, checksum, _ in
                              sorted(models))  # fmt: skip
            raise RayUnavailableError(
                f"The classifier workers loaded different models: {found}. Give every node "
                "the same model folder (and ACTIVE file) at the same path, or name the model "
                "with --model."
            )
        # Each worker picks its runtime at load (ONNX Runtime or Keras): say every one used.
        runtimes = sorted({d["runtime"] for d in described})
        return {**described[0], "runtime": ", ".join(runtimes)}
    except ray.exceptions.RayActorError as error:
        raise RayUnavailableError(
            f"The classifier workers could not load the model: {_last_line(error)}"
        ) from None


def _run(ray, planned, done: dict, labellers: list, out: Path, single_cells: bool) -> None:
    """Analyse the images not done yet, at most a few per CPU in flight (each holds a field
    and a worker process); keep each result as it arrives."""
    task = ray.remote(num_cpus=1, max_retries=1)(analyze_image)
    todo = iter([p for p in planned if p[1] not in done])
    limit = IN_FLIGHT_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: dict = {}

    def submit() -> None:
        for path, stem in todo:  # the next image, if any
            labeller = labellers[(len(done) + len(pending)) % len(labellers)]
            pending[task.remote(path, stem, labeller, single_cells=single_cells)] = (path, stem)
            return

    for _ in range(limit):
        submit()
    with tqdm(total=len(planned), initial=len(done), desc="analysing", unit="image",
              file=sys.stderr) as bar:  # fmt: skip
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            path, stem = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as error:  # failed again after its retry
                result = failed_result(path, stem, labellers[0], single_cells,
                                       f"the Ray worker failed: {_last_line(error)}")  # fmt: skip
            done[stem] = result
            keep_part(out, result)
            bar.update()
            submit()


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--engine ray needs Ray: pip install -r requirements-ray.txt (or use the default "
            "--engine local)."
        ) from None
    return ray


def _last_line(error: BaseException) -> str:
    """Ray's text is a coloured traceback: its last line, plain (the cause's where it has one)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error.__cause__ or error)).strip()
    return (text.splitlines() or [""])[-1]


def _not_listening(address: str) -> str | None:
    """Why nothing answers at a ``host:port`` address (None when something does, or for the
    other address forms, which Ray checks itself)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()  # [::1]
    except OSError as error:
        return f"nothing answers at {host}:{port}: {error.strerror or error}"
    return None
