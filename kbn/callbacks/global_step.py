"""`GlobalStepCallback`: the base of kbn's callbacks, counting global batches.

Holds the step counting (right across epochs, with `steps_per_execution`
and `kbn.MultiStepTrainer`) and the sampling schedule every callback uses.
It must not write or evaluate anything.
"""

import keras


class GlobalStepCallback(keras.callbacks.Callback):
    """Base callback that counts training steps across epochs.

    Keras calls `on_train_batch_end(batch)` with a batch index that restarts
    every epoch and, with `steps_per_execution=k`, jumps by `k`. This base
    keeps `global_step`, the number of training batches run since
    `on_train_begin`, right in both cases, and calls `on_steps_end(logs)`
    after each call of the training function. A model that trains several
    batches per Keras step (`kbn.MultiStepTrainer`) says so with a
    `batches_per_step` attribute, and each Keras step counts that many.

    Subclasses that override `on_train_begin`, `on_train_batch_begin` or
    `on_train_batch_end` call `super()` first.
    """

    def __init__(self):
        super().__init__()
        self.global_step = 0
        self._begin = 0

    def on_train_begin(self, logs=None):
        self.global_step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch

    def on_train_batch_end(self, batch, logs=None):
        end = batch + 1
        steps_per_epoch = (self.params or {}).get("steps")
        if steps_per_epoch:
            # The last call of an epoch may run fewer than
            # `steps_per_execution` batches; Keras still reports the index
            # of a full execution.
            end = min(end, steps_per_epoch)
        batches_per_step = getattr(self._model, "batches_per_step", 1)
        self.global_step += (end - self._begin) * batches_per_step
        self.on_steps_end(logs)

    def on_steps_end(self, logs=None):
        """Called after each training-function call, with `global_step` set."""

    def start_sampling(self, every_n_batches):
        """Starts the schedule of `sample_due`: every `every_n_batches`."""
        self._sample_every = every_n_batches
        self._next_sample = every_n_batches

    def sample_due(self):
        """Whether `global_step` has reached the next multiple of the
        sampling interval since the last sample; if so, moves the schedule
        to the multiple after `global_step` (one sample per training-function
        call, however many batches it ran)."""
        if self.global_step < self._next_sample:
            return False
        n = self._sample_every
        self._next_sample = (self.global_step // n + 1) * n
        return True
