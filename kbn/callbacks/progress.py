"""`TrainingProgress`: one progress line per run, on process 0 only.

Holds the callback that prints how far training is (a bar on a terminal,
a few lines elsewhere). It must not measure or write anything else.
"""

import math
import sys
import time

import numpy as np

from kbn import distributed
from kbn.callbacks.global_step import GlobalStepCallback


class TrainingProgress(GlobalStepCallback):
    """One progress line over all training batches of a `fit()` call.

        Keras's own bar restarts every epoch; the study counts its runs in
        batches and reports batches per second, so this bar counts global steps
        up to `total_batches` and shows the throughput and the latest training
        loss. On a terminal it redraws in place; otherwise (logs, CI) it prints
        one line when training ends. Use it with `fit(..., verbose=0)`. Under
    several JAX processes only process 0 writes (`kbn.distributed.is_writer`).

        Args:
            total_batches: Number of batches the run will train for.
            label: Text in front of the bar, such as the network's name.
            interval: Minimum seconds between two redraws. Reading the loss
                waits for the device, so it is not read on every call.
            stream: Where to write; defaults to `sys.stdout`.
    """

    def __init__(self, total_batches, label="", interval=0.25, stream=None):
        super().__init__()
        self.total_batches = int(total_batches)
        self.label = label
        self.interval = float(interval)
        self.stream = stream

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._stream = self.stream or sys.stdout
        self._live = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._silent = not distributed.is_writer()
        self._start = time.perf_counter()
        self._last_draw = -math.inf
        self._loss = math.nan

    def on_steps_end(self, logs=None):
        now = time.perf_counter()
        if self._silent or not self._live or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._loss = _loss(logs, self._loss)
        self._stream.write("\r" + self.line())
        self._stream.flush()

    def on_train_end(self, logs=None):
        if self._silent:
            return
        self._loss = _loss(logs, self._loss)
        self._stream.write(("\r" if self._live else "") + self.line() + "\n")
        self._stream.flush()

    def line(self):
        """The progress line for the current state."""
        elapsed = time.perf_counter() - self._start
        rate = self.global_step / elapsed if elapsed > 0 else 0.0
        done = min(self.global_step / max(self.total_batches, 1), 1.0)
        width = 24
        filled = int(round(done * width))
        bar = "#" * filled + "." * (width - filled)
        label = f"{self.label} " if self.label else ""
        return (
            f"{label}{self.global_step:>7,}/{self.total_batches:,} batches "
            f"[{bar}] {elapsed:6.1f}s, {rate:,.0f} batches/s, loss {self._loss:.4f}"
        )


def _loss(logs, default):
    if isinstance(logs, dict) and "loss" in logs:
        return float(np.asarray(logs["loss"]))
    return default
