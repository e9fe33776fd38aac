"""Progress events of training: their type, the Keras callback that emits them, the CLI's bars.

An event is a dict ``{"stage": ..., "done": int, "total": int, **details}``; the Retrain page's
worker, the command line's bars (:class:`ProgressBars`) and the tests all receive the same
events.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import keras
from tqdm import tqdm

ProgressCallback = Callable[[dict], None]


class EpochProgress(keras.callbacks.Callback):
    """Keras callback: a progress event per batch and per epoch of one phase, and its history."""

    def __init__(self, report: ProgressCallback | None, phase: str, epochs: int, steps: int):
        super().__init__()
        self.report, self.phase, self.epochs, self.steps = report, phase, epochs, steps
        self.epoch = 0
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.report:
            self.report({"stage": self.phase, "epoch": self.epoch + 1, "epochs": self.epochs,
                         "done": batch + 1, "total": self.steps, **(logs or {})})  # fmt: skip

    def on_epoch_end(self, epoch, logs=None):
        row = {"phase": self.phase, "epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        self.history.append(row)
        if self.report:
            self.report({"stage": f"{self.phase}_epoch", "done": epoch + 1,
                         "total": self.epochs, **row})  # fmt: skip


class ProgressBars:
    """Progress events to stderr: tqdm bars on a terminal, plain lines in a log file."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}
        self.tty = sys.stderr.isatty()
        self.last_stage = ""

    def __call__(self, event: dict) -> None:
        stage, done, total = event["stage"], event.get("done", 0), event.get("total", 0)
        shown = {k: round(v, 4) for k, v in event.items() if k in ("loss", "accuracy",
                                                                    "val_loss", "val_accuracy")}  # fmt: skip
        where = " ".join(f"{k} {event[k]}" for k in ("model", "fold") if event.get(k))
        if stage.endswith("_epoch") or stage in ("model", "model_done"):
            line = f"{where} {stage} {done}/{total}: {shown or event.get('status', '')}".strip()
            (tqdm.write if self.tty else print)(line, file=sys.stderr)
        if not self.tty:  # a log: one line when a stage starts, none per batch
            if stage != self.last_stage and not stage.endswith("_epoch"):
                print(f"{where} {stage} ({total})".strip(), file=sys.stderr)
            self.last_stage = stage
            return
        bar = self.bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = self.bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if shown:
            bar.set_postfix(shown)
