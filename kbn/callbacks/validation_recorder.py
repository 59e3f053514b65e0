"""`ValidationAccuracyRecorder`: validation accuracy every N training batches.

Holds the callback the study's curves come from: a compiled inference pass
on fixed validation data at every sample, never `model.evaluate()`. It must
not hold the accuracy's computation (`kbn.evaluation`) nor write anything
but its one TensorBoard scalar.
"""

import math
import numbers
import os

import numpy as np

from kbn.callbacks import _summary_writers
from kbn.callbacks.global_step import GlobalStepCallback
from kbn.evaluation import Accuracy


class ValidationAccuracyRecorder(GlobalStepCallback):
    """Records validation accuracy every N training batches during `fit()`.

    The study samples the validation accuracy every `batches_per_sample`
    training batches to draw its learning curves. This callback does the
    same inside `model.fit`: after every `every_n_batches` batches (counted
    as a global step, right across epochs and with `steps_per_execution`), it
    runs its own compiled inference pass (`training=False`, so batch norm
    uses its moving statistics) on the validation images. It never calls
    `model.evaluate()`, which would reset the metrics that training is
    logging.

    With `steps_per_execution=k`, Keras calls back every `k` batches; a
    sample is then taken at the first call at or after each multiple of
    `every_n_batches`, and `steps` records the step it was really taken at.
    Choose `k` dividing `every_n_batches` to sample exactly on the multiples.

    Attributes:
        steps: Global steps at which accuracy was recorded.
        accuracies: Validation accuracy at those steps.
        losses: Training loss reported by `fit()` at those steps (the mean
            since the start of the epoch), `nan` if not reported.

    Args:
        validation_data: Tuple `(images, labels)`; labels are integers or
            one-hot rows.
        every_n_batches: Positive int, the sampling interval in batches.
        log_dir: Optional folder; the accuracy is then written there as the
            TensorBoard scalar `validation/accuracy`, its step the global
            step, in the event file that kbn's other callbacks with the same
            `log_dir` (`TrainingScalars`, `BatchNormStatistics`) share.
        record_final: Also record after the last batch when it is not a
            multiple of `every_n_batches`.
        batch_size: Optional chunk size of the inference pass.

    Example:

    ```python
    recorder = kbn.callbacks.ValidationAccuracyRecorder(
        (x_val, y_val), every_n_batches=500, log_dir="logs/run")
    model.fit(x, y, batch_size=60, epochs=5, callbacks=[recorder])
    recorder.steps, recorder.accuracies
    ```
    """

    def __init__(
        self,
        validation_data,
        every_n_batches,
        log_dir=None,
        record_final=True,
        batch_size=None,
    ):
        super().__init__()
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError(
                "Invalid value for argument validation_data. Expected a tuple "
                "(images, labels). Received: validation_data of type "
                f"{type(validation_data).__name__}"
            )
        if (
            not isinstance(every_n_batches, numbers.Integral)
            or isinstance(every_n_batches, bool)
            or every_n_batches < 1
        ):
            raise ValueError(
                "Invalid value for argument every_n_batches. Expected a "
                f"positive int. Received: every_n_batches={every_n_batches!r}"
            )
        self.validation_data = tuple(validation_data)
        self.every_n_batches = int(every_n_batches)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.record_final = bool(record_final)
        self.batch_size = batch_size
        self.steps = []
        self.accuracies = []
        self.losses = []

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.steps, self.accuracies, self.losses = [], [], []
        self.start_sampling(self.every_n_batches)
        self._writer = None
        # Compiled per run: the model may have changed since the last one.
        self._accuracy = Accuracy(
            self._model, *self.validation_data, batch_size=self.batch_size
        )

    def on_steps_end(self, logs=None):
        if self.sample_due():
            self._record(logs)

    def on_train_end(self, logs=None):
        if self.record_final and self.global_step > 0:
            if not self.steps or self.steps[-1] != self.global_step:
                self._record(logs)
        if self._writer is not None:
            _summary_writers.release(self.log_dir)
            self._writer = None

    def _record(self, logs):
        # Reading `self.model` syncs the JAX backend's training state into
        # the model's variables; it is done only at the sampling points.
        self.model  # noqa: B018
        accuracy = self._accuracy()
        loss = math.nan
        if isinstance(logs, dict) and "loss" in logs:
            loss = float(np.asarray(logs["loss"]))
        self.steps.append(self.global_step)
        self.accuracies.append(accuracy)
        self.losses.append(loss)
        if self.log_dir is not None:
            self._write(accuracy)

    def _write(self, accuracy):
        if self._writer is None:
            self._writer = _summary_writers.acquire(self.log_dir)
        self._writer.scalar("validation/accuracy", accuracy, step=self.global_step)
        self._writer.flush()
