from kbn.callbacks.global_step import GlobalStepCallback


class RenormClippingSchedule(GlobalStepCallback):
    """Relaxes batch renormalization's clip limits during training.

    Batch renormalization (Ioffe, 2017) starts as plain batch norm (`rmax =
    1`, `dmax = 0`) and relaxes the limits on its corrections as the moving
    statistics become reliable: in the paper `rmax` goes from 1 to 3 and
    `dmax` from 0 to 5, starting after 5,000 steps and reaching their final
    values at 40,000 and 25,000 steps. This callback sets the
    `renorm_rmax` and `renorm_dmax` weights of every kbn `BatchNorm(renorm=
    True)` in the model by linear interpolation on the global step (in
    batches). With `kbn.training.MultiStepTrainer` the limits change between
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
        for name, end in (
            ("rmax_batches", rmax_batches),
            ("dmax_batches", dmax_batches),
        ):
            if not end > warmup_batches:
                raise ValueError(
                    f"Invalid value for argument {name}. Expected more than "
                    f"warmup_batches={warmup_batches}. Received: {name}={end!r}"
                )
        self.rmax = tuple(float(v) for v in rmax)
        self.dmax = tuple(float(v) for v in dmax)
        self.warmup_batches = int(warmup_batches)
        self.rmax_batches = int(rmax_batches)
        self.dmax_batches = int(dmax_batches)

    def values(self, step):
        """`(rmax, dmax)` at global step `step`."""
        return (
            _ramp(step, self.warmup_batches, self.rmax_batches, *self.rmax),
            _ramp(step, self.warmup_batches, self.dmax_batches, *self.dmax),
        )

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        from kbn.population import batch_norm_layers

        self._layers = [
            layer for layer in batch_norm_layers(self._model) if layer.renorm
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
