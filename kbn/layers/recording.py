"""The statistics-recording protocol shared by kbn's batch-norm layers.

Holds `RecordsStatistics`, the mixin that gives `BatchNorm` and `BNLSTM`
their `recording_statistics` context, and `Recording`, what a context
collects. `kbn.recompute_batch_norm_statistics` and
`kbn.callbacks.BatchNormStatistics` speak this protocol; each layer says
in `_check_recording` what it cannot record and writes its records in its
own `call`. It must not hold any layer's maths.
"""

import contextlib


class Recording:
    """What a `recording_statistics` context collects (a plain object: Keras
    would track, and copy, a list or dict set on a layer)."""

    def __init__(self, unbiased):
        self.unbiased = unbiased
        self.records = []


class RecordsStatistics:
    """Mixin: `recording_statistics` for a layer that keeps moving statistics.

    The layer reads `self._recording` in `call`: when it is a `Recording`,
    a training-mode call appends one record of its batch statistics to
    `self._recording.records` instead of updating its state.
    """

    _recording = None

    @contextlib.contextmanager
    def recording_statistics(self, unbiased=True):
        """Records batch statistics instead of updating the moving ones.

        The protocol of `kbn.recompute_batch_norm_statistics`. Inside the
        context, a call with `training=True` (even on a frozen layer)
        normalizes with batch statistics as in training but changes no
        state; it appends to the yielded list one record, a dict from the
        names of the layer's moving statistics to `(value, weight)`: the
        batch's statistic (variances made unbiased if `unbiased`) and its
        weight, 0 for a batch that gives a feature (a time step) a single
        value, which does not count. `set_population_statistics` then takes
        their weighted averages.

        Raises:
            ValueError: If the layer cannot record such statistics (the
                message says why).
        """
        self._check_recording(bool(unbiased))
        recording = Recording(bool(unbiased))
        self._recording = recording
        try:
            yield recording.records
        finally:
            self._recording = None

    def _check_recording(self, unbiased):
        """Raises a `ValueError` if the layer cannot record (override)."""

    def set_population_statistics(self, statistics, counts):
        """Sets the moving statistics to recorded averages (override).

        Args:
            statistics: Dict from the names of the records to the weighted
                averages of their values over the recorded batches.
            counts: Dict from the same names to the total weights.
        """
        raise NotImplementedError
