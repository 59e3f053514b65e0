"""Batch renormalization (Ioffe, 2017), the part of `BatchNorm` that is its own.

Holds `Renormalization`, the mixin that `kbn.layers.BatchNorm` gets its
renormalization from: its options' checks, its state (the moving standard
deviation and the statistics it corrects towards, the clip limits as
weights that `kbn.callbacks.RenormClippingSchedule` relaxes), the
correction of a training batch, and the updates after one. It must not
hold the correction's arithmetic (`kbn.ops.renorm_affine`) nor anything
that runs without `renorm=True`: every method below is called only when the
layer renormalizes.

As in Keras (`keras.layers.BatchNormalization(renorm=True)`), the moving
variance follows the moving standard deviation: renormalization averages
`sqrt(variance + epsilon)`, not the variance.
"""

import math

import numpy as np
from keras import initializers
from keras import ops

from kbn import checks
from kbn import ops as bn_ops
from kbn.layers import batch_norm_options as options


class Renormalization:
    """Mixin: `renorm=True` for `kbn.layers.BatchNorm`."""

    def _check_renorm_options(self, momentum, track_running_stats):
        if self.momentum is None:
            checks.fail(
                "momentum",
                momentum,
                "a float with renorm=True (renorm corrects towards moving averages)",
            )
        if not self.track_running_stats:
            checks.fail(
                "track_running_stats",
                track_running_stats,
                "True with renorm=True (renorm corrects towards moving averages)",
            )

    def _build_renorm(self, shape):
        """The state of renormalization: standard deviations start at the
        square root of the moving variance's initial value."""
        variance_initializer = self.moving_variance_initializer

        def stddev_initializer(shape, dtype=None):
            clone = options.clone_initializer(variance_initializer)
            return ops.sqrt(clone(shape, dtype=dtype))

        self.moving_stddev = self._state("moving_stddev", shape, stddev_initializer)
        self.renorm_mean = self._state(
            "renorm_mean",
            shape,
            options.clone_initializer(self.moving_mean_initializer),
        )
        self.renorm_stddev = self._state("renorm_stddev", shape, stddev_initializer)
        defaults = {"rmax": math.inf, "rmin": 0.0, "dmax": math.inf}
        for key in options.RENORM_KEYS:
            value = self.renorm_clipping.get(key, defaults[key])
            setattr(
                self,
                f"renorm_{key}",
                self._state(f"renorm_{key}", (), initializers.Constant(value)),
            )

    def _renorm_corrected(self, mean, variance, gamma, beta):
        """`(gamma, beta)` with the batch's corrections `r` and `d` folded in."""
        dtype = variance.dtype
        return bn_ops.renorm_affine(
            mean,
            variance,
            gamma,
            beta,
            ops.cast(self.renorm_mean, dtype),
            ops.cast(self.renorm_stddev, dtype),
            limits=[
                ops.cast(getattr(self, f"renorm_{key}"), dtype)
                for key in options.RENORM_KEYS
            ],
            epsilon=self.epsilon,
        )

    def _renorm_moving_update(self, mean, variance, momentum):
        """The default moving update under renormalization: the standard
        deviation is averaged, the variance derived from it."""
        stddev = bn_ops.moving_average(
            ops.cast(self.moving_stddev, mean.dtype),
            ops.sqrt(variance + self.epsilon),
            momentum,
        )
        self.moving_stddev.assign(stddev)
        self.moving_variance.assign(ops.relu(stddev * stddev - self.epsilon))

    def _after_moving_update(self, mean, variance, overridden):
        """After a training batch's moving update: the moving standard
        deviation follows an overridden update's variance, then the
        statistics renorm corrects towards are updated."""
        if overridden:
            self.moving_stddev.assign(
                ops.sqrt(ops.cast(self.moving_variance, variance.dtype) + self.epsilon)
            )
        self.update_renorm_statistics(mean, variance)

    def _set_renorm_population(self, variance):
        """With population statistics: the moving standard deviation of the
        population variance."""
        self.moving_stddev.assign(np.sqrt(variance + self.epsilon))

    def update_renorm_statistics(self, mean, variance):
        """Updates the statistics that batch renormalization corrects towards.

        Called in training with `renorm=True`, with the same moments as
        `update_moving_statistics`. The default averages the mean and the
        standard deviation `sqrt(variance + epsilon)` with
        `renorm_momentum`, as Keras does.
        """
        for moving, value in (
            (self.renorm_mean, mean),
            (self.renorm_stddev, ops.sqrt(variance + self.epsilon)),
        ):
            moving.assign(
                bn_ops.moving_average(
                    ops.cast(moving, value.dtype), value, self.renorm_momentum
                )
            )
