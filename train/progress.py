"""Progress events of training: their type and the Keras callback that emits them per phase.

An event is a dict ``{"stage": ..., "done": int, "total": int, **details}``; the Retrain page's
worker, the command line's bars and the tests all receive the same events.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

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
