"""`TrainingScalars`: the training loss, metrics and learning rate against the
global batch, in TensorBoard.

Holds one callback; it must not evaluate the model (the validation recorder
does) nor write anything but scalars.
"""

import os

import keras
import numpy as np

from kbn import checks
from kbn.callbacks import _summary_writers
from kbn.callbacks.global_step import GlobalStepCallback


class TrainingScalars(GlobalStepCallback):
    """Writes the training loss, metrics and learning rate against the global batch.

    `keras.callbacks.TensorBoard` writes its scalars against the epoch
    number, and the learning rate every epoch whether it changes or not, so
    its training curves do not line up with curves sampled in batches, such
    as `ValidationAccuracyRecorder`'s. This callback writes, every
    `every_n_batches` training batches (counted as a global step, right
    across epochs, with `steps_per_execution` and with
    `kbn.MultiStepTrainer`) and after the last batch, TensorBoard scalars
    whose step is the number of training batches run so far:

    - `train/<name>` for every scalar in the logs that `fit` passes to
      callbacks: `train/loss`, and `train/accuracy` (or another compiled
      metric's name) when the model was compiled with it. These are Keras's
      values: running means over the batches since the start of the current
      Keras epoch (also with `kbn.MultiStepTrainer`, whose compiled call
      runs many batches through the same metrics), so with one epoch per
      sampling interval, the mean over the last interval.
    - `train/learning_rate`, the optimizer's learning rate, only if it
      changes during training (a schedule, or a callback that sets it):
      from the first change on, every sample is written, those before it
      included, from step 0.

    Give `ValidationAccuracyRecorder` and `BatchNormStatistics` the same
    `log_dir`: kbn's callbacks share one event file per folder, so the
    folder is one TensorBoard run with every curve on one step axis.

    Args:
        log_dir: Folder of the event file (one TensorBoard run).
        every_n_batches: Positive int, the sampling interval in batches.
        record_final: Also write after the last batch when it is not a
            multiple of `every_n_batches`.

    Example:

    ```python
    callbacks = [
        kbn.callbacks.ValidationAccuracyRecorder(
            (x_val, y_val), every_n_batches=100, log_dir="logs/run"),
        kbn.callbacks.TrainingScalars("logs/run", every_n_batches=100),
    ]
    model.fit(x, y, batch_size=60, epochs=5, callbacks=callbacks)
    ```
    """

    def __init__(self, log_dir, every_n_batches, record_final=True):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.every_n_batches = checks.check_int(every_n_batches, "every_n_batches")
        self.record_final = bool(record_final)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.start_sampling(self.every_n_batches)
        self._last_sample = None
        self._writer = None
        # (step, rate) of every sample, written once the rate has changed.
        self._rates = [(0, self._learning_rate())]
        self._rate_changed = False

    def on_steps_end(self, logs=None):
        if self.sample_due():
            self._sample(logs)

    def on_train_end(self, logs=None):
        if self.record_final and self.global_step > 0:
            if self._last_sample != self.global_step:
                self._sample(logs)
        if self._writer is not None:
            _summary_writers.release(self.log_dir)
            self._writer = None

    def _sample(self, logs):
        step = self.global_step
        self._last_sample = step
        scalars = {
            f"train/{name}": value
            for name, value in _scalar_logs(logs).items()
            if name != "learning_rate"
        }
        self._rates.append((step, self._learning_rate()))
        rates = []
        if self._rate_changed:
            rates = self._rates[-1:]
        elif self._rates[-1][1] != self._rates[0][1]:
            self._rate_changed = True
            rates = self._rates
        if not scalars and not rates:
            return
        if self._writer is None:
            self._writer = _summary_writers.acquire(self.log_dir)
        if scalars:
            self._writer.values(scalars, step=step)
        for rate_step, rate in rates:
            self._writer.scalar("train/learning_rate", rate, step=rate_step)
        self._writer.flush()

    def _learning_rate(self):
        # Reading `self.model` syncs the JAX backend's training state (the
        # optimizer's iterations, which a schedule depends on).
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def _scalar_logs(logs):
    """`{name: float}` for the scalar entries of Keras's `logs`."""
    result = {}
    for name, value in (logs or {}).items():
        array = np.asarray(value)
        if array.size == 1 and np.issubdtype(array.dtype, np.number):
            result[name] = float(array.reshape(()))
    return result
