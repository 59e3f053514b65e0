"""`Throughput`: batches per second of a run after its compilation.

Holds one callback; it must not print anything but its one line on process
0 (it is the distributed run's measure, `recipes/distributed.py`).
"""

import time

from kbn.callbacks.global_step import GlobalStepCallback


class Throughput(GlobalStepCallback):
    """Batches per second after the first sampling interval (compilation).

    Args:
        first: Batches that count as compilation (the first sampling
            interval: the first compiled call ends there).
        report: Print one line when they are done (process 0).

    Attributes:
        rate: Batches per second after `first` (NaN before the run ends).
    """

    def __init__(self, first, report):
        super().__init__()
        self.first_interval = first
        self.report = report
        self.rate = float("nan")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.first, self.rate, self._start = self.first_interval, float("nan"), None
        self._t0 = time.perf_counter()

    def on_steps_end(self, logs=None):
        if self._start is None and self.global_step >= self.first:
            self.first = self.global_step
            self._start = time.perf_counter()
            if self.report:
                print(
                    f"Trained the first {self.first:,} batches (with "
                    f"compilation) in {self._start - self._t0:.1f} s",
                    flush=True,
                )

    def on_train_end(self, logs=None):
        if self._start is not None and self.global_step > self.first:
            elapsed = time.perf_counter() - self._start
            self.rate = (self.global_step - self.first) / elapsed
