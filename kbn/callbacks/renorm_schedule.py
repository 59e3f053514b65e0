"""`RenormClippingSchedule`: the renormalization clip limits relaxed in training.

Holds the callback that sets every renorm layer's `rmax`, `rmin` and `dmax`
from a schedule of the global step (Ioffe, 2017, section 4). It must not
hold renormalization's maths (`kbn.ops`, `kbn.layers.renorm`).
"""

from kbn import checks
from kbn.callbacks.global_step import GlobalStepCallback
from kbn.layers.traversal import batch_norm_layers


class RenormClippingSchedule(GlobalStepCallback):
    """Relaxes batch renormalization's clip limits during training.

    Batch renormalization (Ioffe, 2017) starts as plain batch norm (`rmax =
    1`, `dmax = 0`) and relaxes the limits on its corrections as the moving
    statistics become reliable: in the paper `rmax` goes from 1 to 3 and
    `dmax` from 0 to 5, starting after 5,000 steps and reaching their final
    values at 40,000 and 25,000 steps. This callback sets the
    `renorm_rmax` and `renorm_dmax` weights of every kbn `BatchNorm(renorm=
    True)` in the model by linear interpolation on the global step (in
    batches). With `kbn.MultiStepTrainer` the limits change between
    compiled calls, every `batches_per_step` batches.

    Args:
        rmax: `(start, end)` values of `rmax`.
        dmax: `(start, end)` values of `dmax`.
        warmup_batches: Batches with the start values.
        rmax_batches: Global step at which `rmax` reaches its end value.
        dmax_batches: Global step at which `dmax` reaches its end value.
    """

    def __init__(
        self,
        rmax=(1.0, 3.0),
        dmax=(0.0, 5.0),
        warmup_batches=5_000,
        rmax_batches=40_000,
        dmax_batches=25_000,
    ):
        super().__init__()
        self.rmax = _check_pair(rmax, "rmax")
        self.dmax = _check_pair(dmax, "dmax")
        self.warmup_batches = checks.check_int(warmup_batches, "warmup_batches", 0)
        self.rmax_batches = checks.check_int(
            rmax_batches, "rmax_batches", self.warmup_batches + 1
        )
        self.dmax_batches = checks.check_int(
            dmax_batches, "dmax_batches", self.warmup_batches + 1
        )

    def values(self, step):
        """`(rmax, dmax)` at global step `step`."""
        return (
            _ramp(step, self.warmup_batches, self.rmax_batches, *self.rmax),
            _ramp(step, self.warmup_batches, self.dmax_batches, *self.dmax),
        )

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._layers = [
            layer
            for layer in batch_norm_layers(self._model)
            if getattr(layer, "renorm", False)
        ]
        if not self._layers:
            raise ValueError(
                "RenormClippingSchedule found no kbn BatchNorm with renorm=True "
                f"in the model. Received: model={self._model.name!r}"
            )
        self._current = None
        self._apply()

    def on_steps_end(self, logs=None):
        self._apply()

    def _apply(self):
        values = self.values(self.global_step)
        if values == self._current:
            return
        self.model  # noqa: B018 - syncs the JAX training state first
        for layer in self._layers:
            layer.renorm_rmax.assign(values[0])
            layer.renorm_dmax.assign(values[1])
        self._current = values


def _ramp(step, start_step, end_step, start, end):
    if step <= start_step:
        return start
    if step >= end_step:
        return end
    return start + (end - start) * (step - start_step) / (end_step - start_step)


def _check_pair(value, name):
    """`(start, end)`, two finite floats."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        checks.fail(name, value, "a (start, end) pair of floats", TypeError)
    return tuple(checks.check_float(v, name) for v in value)
