"""`BNLSTM`: recurrent batch normalization in a compiled loop.

Holds the layer: its weights and per-step statistics, the step it runs over
time, and what it does with the step's moments after the loop (update or
record them). It must not hold the step's maths (`kbn.ops`), the
TensorFlow loop (`kbn.layers.recurrence`) or the recording protocol
(`kbn.layers.recording`). Over 400 lines: one layer class with its
documented statistics methods.
"""

import keras
import numpy as np
from keras import initializers
from keras import ops

from kbn import ops as bn_ops
from kbn.layers import recurrence
from kbn.layers.recording import RecordsStatistics

_PARTS = ("h", "c")


@keras.saving.register_keras_serializable(package="kbn")
class BNLSTM(RecordsStatistics, keras.layers.Layer):
    """LSTM with recurrent batch normalization (Cooijmans et al., 2016).

    Batch norm is applied separately to the input-to-hidden and the
    hidden-to-hidden terms, and to the cell state before the output `tanh`:

    ```
    i, f, g, o = BN(W_h h_{t-1}; gamma_h) + BN(W_x x_t; gamma_x) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(BN(c_t; gamma_c, beta_c))
    ```

    The gate normalizations have no offset (the bias `b` is the only one),
    and every `gamma` starts at 0.1, as in the paper. Statistics are **per
    time step**: in training step `t` normalizes with the batch moments of
    step `t`; in inference with the statistics of step `t`, steps from
    `max_time_steps - 1` on sharing the last row (the paper's `T_max`).

    **A compiled loop.** The recurrence runs in `keras.ops.scan` (a
    `lax.scan` on JAX; on TensorFlow a `while_loop` that carries the states
    in its loop variables, as Keras's TensorFlow RNN loop does). It writes
    no state: each step returns its batch moments as outputs, and the moving
    statistics of every step are updated once after the loop, in one
    vectorized assignment per statistic. The input-to-hidden batch norm of
    all steps is folded before the loop into per-step kernels and offsets,
    `BN(W_x x_t) + b = x_t @ (W_x * scale_t) + offset_t`. `unroll=True` runs
    the same step in a Python loop instead (same numbers; for tests and
    short sequences).

    **Moving statistics that keep up.** Each row is a debiased exponential
    moving average: after `n` updates, the weight of the batch `k` updates
    old is `momentum ** k`, normalized over the `n` batches seen (as Adam's
    bias correction), so the first batch counts fully and no start-up value
    lingers. The default momentum is 0.6, not Keras's 0.99: the hidden and
    cell statistics move fast while training (every gamma starts at 0.1 and
    Adam moves it by about its learning rate per batch), and inference
    through hundreds of steps is sensitive to the resulting lag. Measured
    on Fashion-MNIST rows (`docs/recurrent_bn.md`): the validation accuracy
    with recomputed population statistics minus that with the moving ones,
    averaged over ten points of a 1,000-batch run, is 5.75 points with
    momentum 0.99 (28 at batch 200), 0.40 with 0.9, 0.16 with 0.6; with
    the weights frozen the moving statistics catch up with the population
    ones, so the gap is lag, not noise.

    The input-to-hidden statistics are kept for the *inputs* (their
    per-step mean and covariance, which do not depend on the weights), and
    in inference turned into the statistics of `W_x x_t` with the current
    kernel: `mean @ W_x` and `diag(W_x^T cov W_x)`, exactly those a batch
    with these input moments gives in training. They therefore never lag
    behind the kernel. The hidden-to-hidden and cell statistics depend on
    the network's state, and are the debiased moving averages of their batch
    moments. A feature constant over every training batch of its step (the
    state during the blank first rows or pixels of a digit, the same for
    every example) normalizes to exactly `beta` in training whatever its
    value; its moving variance is then exactly 0 and inference maps it to
    `beta` too, instead of amplifying the lag of its moving mean by
    `1 / sqrt(epsilon)`.

    A training batch of one example does not update the statistics.
    `kbn.recompute_batch_norm_statistics` replaces them by population
    statistics (`recording_statistics` / `set_population_statistics`).

    Args:
        units: Size of the hidden and cell states.
        max_time_steps: Number of time steps with statistics of their own.
        momentum: Momentum of the moving statistics, in `[0, 1)`, or `None`
            for the plain average of all batches. The weight of the
            previous average, as in `keras.layers.BatchNormalization`; 0.6
            by default (see above).
        epsilon: Added to the variances.
        gamma_initializer: Initializer of the three gammas (0.1).
        kernel_initializer: Initializer of `W_x` (Glorot uniform, as
            `keras.layers.LSTM`).
        recurrent_initializer: Initializer of `W_h` (orthogonal).
        bias_initializer: Initializer of `b` (zeros).
        unit_forget_bias: Add 1 to the forget gate's bias at initialization.
        seed: Optional seed of the kernel initializers, so that an LSTM and
            a BN-LSTM can start from the same kernels.
        return_sequences: Return the hidden state of every step, `(batch,
            time, units)`, instead of the last one.
        unroll: Run the recurrence as a Python loop instead of a scan.

    Inputs have a known number of time steps, `(batch, time, features)`;
    masks are not supported.

    Reference:

    - [Cooijmans et al., 2016](https://arxiv.org/abs/1603.09025).
    """

    def __init__(
        self,
        units,
        max_time_steps,
        momentum=0.6,
        epsilon=1e-3,
        gamma_initializer=0.1,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        seed=None,
        return_sequences=False,
        unroll=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("units", units), ("max_time_steps", max_time_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"Invalid value for argument {arg}. Expected a positive int. "
                    f"Received: {arg}={value!r}"
                )
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(
                "Invalid value for argument momentum. Expected a float in "
                f"[0, 1) or None. Received: momentum={momentum!r}"
            )
        if not epsilon > 0:
            raise ValueError(
                "Invalid value for argument epsilon. Expected a positive float. "
                f"Received: epsilon={epsilon!r}"
            )
        self.units = units
        self.max_time_steps = max_time_steps
        self.momentum = None if momentum is None else float(momentum)
        self.epsilon = float(epsilon)
        if isinstance(gamma_initializer, (int, float)):
            gamma_initializer = initializers.Constant(float(gamma_initializer))
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.unroll = bool(unroll)
        self._recording = None

    def build(self, input_shape):
        if len(input_shape) != 3 or None in tuple(input_shape)[1:]:
            raise ValueError(
                "BNLSTM expects inputs of shape (batch, time, features) with "
                "a known number of time steps and features. Received: "
                f"inputs.shape={tuple(input_shape)}"
            )
        units, steps, features = self.units, self.max_time_steps, input_shape[-1]
        self.kernel = self.add_weight(
            shape=(features, 4 * units),
            name="kernel",
            initializer=seeded(self.kernel_initializer, self.seed, 0),
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=seeded(self.recurrent_initializer, self.seed, 1),
        )

        def bias_initializer(shape, dtype=None):
            bias = self.bias_initializer(shape, dtype=dtype)
            if self.unit_forget_bias:
                forget = np.zeros(shape, "float32")
                forget[units : 2 * units] = 1.0
                bias = bias + ops.cast(forget, bias.dtype)
            return bias

        self.bias = self.add_weight(
            shape=(4 * units,), name="bias", initializer=bias_initializer
        )
        for part, size in (("x", 4 * units), ("h", 4 * units), ("c", units)):
            setattr(
                self,
                f"gamma_{part}",
                self.add_weight(
                    shape=(size,),
                    name=f"gamma_{part}",
                    initializer=self.gamma_initializer,
                ),
            )
        self.beta_c = self.add_weight(
            shape=(units,), name="beta_c", initializer="zeros"
        )
        self.num_updates = self._statistic("num_updates", (steps,), "zeros")
        self.moving_mean_input = self._statistic(
            "moving_mean_input", (steps, features), "zeros"
        )
        self.moving_covariance_input = self._statistic(
            "moving_covariance_input", (steps, features, features), "zeros"
        )
        for part, size in (("h", 4 * units), ("c", units)):
            self._statistic(f"moving_mean_{part}", (steps, size), "zeros")
            self._statistic(f"moving_variance_{part}", (steps, size), "ones")

    def _statistic(self, name, shape, initializer):
        variable = self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            trainable=False,
            autocast=False,
        )
        setattr(self, name, variable)
        return variable

    @property
    def statistic_names(self):
        """Names of the per-step statistics, each `(max_time_steps, ...)`."""
        return [
            "moving_mean_input",
            "moving_covariance_input",
            *(f"moving_{s}_{p}" for p in _PARTS for s in ("mean", "variance")),
        ]

    # --- Forward pass ----------------------------------------------------

    def call(self, inputs, training=None):
        steps = inputs.shape[1]
        if steps is None:
            raise ValueError(
                "BNLSTM needs a known number of time steps. Received: "
                f"inputs.shape={tuple(inputs.shape)}"
            )
        learning = bool(training) and (self.trainable or self._recording is not None)
        dtype = self.compute_dtype
        # Time major throughout: a reduction over the batch of a (batch,
        # time, 4 units) tensor costs more than the whole recurrence on a CPU.
        inputs = ops.transpose(ops.cast(inputs, dtype), (1, 0, 2))  # (T, B, F)
        rows = np.minimum(np.arange(steps), self.max_time_steps - 1)
        if learning:
            # The batch moments of W_x x_t from those of x_t: the same
            # numbers (and gradients) as moments of W_x x_t, without a pass
            # over the (time, batch, 4 units) tensor.
            mean_in, covariance_in = bn_ops.sequence_input_moments(inputs)
            mean_x, variance_x = bn_ops.project_moments(
                mean_in, covariance_in, self.kernel
            )
        else:
            mean_x, variance_x = self.input_term_statistics(rows)
        scale, offset = bn_ops.fold_into_affine_keeping_constants(
            mean_x, variance_x, self.gamma_x, None, self.epsilon
        )
        # BN(W_x x_t) + b = x_t @ (W_x * scale_t) + offset_t, computed in the
        # step: a (time, batch, 4 units) tensor of all steps' input terms
        # would be written, read and differentiated whole.
        kernels = ops.cast(self.kernel, dtype)[None] * scale[:, None, :]
        xs = (inputs, kernels, offset + ops.cast(self.bias, dtype))
        if not learning:
            rows_of = {n: ops.take(self._moving(n), rows, axis=0) for n in _NAMES}
            for part, beta in (("h", None), ("c", self.beta_c)):
                xs += bn_ops.fold_into_affine_keeping_constants(
                    rows_of[f"moving_mean_{part}"],
                    rows_of[f"moving_variance_{part}"],
                    getattr(self, f"gamma_{part}"),
                    beta,
                    self.epsilon,
                )
        batch = ops.shape(inputs)[1]
        zeros = ops.zeros((batch, self.units), dtype)
        recurrent_kernel = ops.cast(self.recurrent_kernel, dtype)
        gamma_h, gamma_c, beta_c = (
            ops.cast(v, dtype) for v in (self.gamma_h, self.gamma_c, self.beta_c)
        )
        keep = self.return_sequences

        def step(carry, x):
            (h, c), (x_t, kernel_t, offset_t) = carry, x[:3]
            if not learning:
                scale_h, offset_h, scale_c, offset_c = x[3:]
            wh = ops.matmul(h, recurrent_kernel)
            if learning:
                wh, moments_h = bn_ops.step_batch_norm(wh, gamma_h, None, self.epsilon)
            else:
                wh, moments_h = wh * scale_h + offset_h, ()
            wx = ops.matmul(x_t, kernel_t) + offset_t
            i, f, g, o = ops.split(wx + wh, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            if learning:
                normalized, moments_c = bn_ops.step_batch_norm(
                    c, gamma_c, beta_c, self.epsilon
                )
            else:
                normalized, moments_c = c * scale_c + offset_c, ()
            h = ops.sigmoid(o) * ops.tanh(normalized)
            # What the loop stacks over time: the hidden state if returned,
            # and in training the step's moments.
            return (h, c), ((h,) if keep else ()) + moments_h + moments_c

        (last, _), ys = self._loop(step, (zeros, zeros), xs, steps)
        if learning:
            self._after_training_pass(mean_in, covariance_in, batch, ys[-4:], steps)
        if self.return_sequences:
            return ops.transpose(ys[0], (1, 0, 2))
        return last

    def _loop(self, step, carry, xs, steps):
        """Runs `step(carry, x) -> (carry, y)` over the time axis of `xs`.

        Returns the last carry and the `y`s stacked over time: a Python loop
        if `unroll`, else `keras.ops.scan`, or on TensorFlow a `while_loop`
        written here (see `kbn.layers.recurrence`).
        """
        if self.unroll:
            outputs = []
            for t in range(steps):
                carry, y = step(carry, tuple(x[t] for x in xs))
                outputs.append(y)
            return carry, tuple(ops.stack(parts) for parts in zip(*outputs))
        if keras.backend.backend() == "tensorflow":
            return recurrence.tensorflow_scan(step, carry, xs, steps)
        return ops.scan(step, carry, xs)

    def _moving(self, name):
        return ops.cast(getattr(self, name), self.compute_dtype)

    def input_term_statistics(self, rows=None):
        """Inference mean and variance of `W_x x_t` with the current kernel.

        `moving_mean_input @ W_x` and `diag(W_x^T moving_covariance_input
        W_x)` per step, for the steps `rows` (all rows by default).
        """
        mean = self._moving("moving_mean_input")
        covariance = self._moving("moving_covariance_input")
        if rows is not None:
            mean = ops.take(mean, rows, axis=0)
            covariance = ops.take(covariance, rows, axis=0)
        return bn_ops.project_moments(mean, covariance, self.kernel)

    # --- Statistics after the loop --------------------------------------

    def _after_training_pass(self, mean_in, covariance_in, batch, moments, steps):
        """Per-row batch statistics of the pass; updates or records them."""
        batch = ops.cast(batch, "float32")
        mean_in, covariance_in = map(ops.stop_gradient, (mean_in, covariance_in))
        values = dict(
            zip(
                self.statistic_names,
                [mean_in, covariance_in, *map(ops.stop_gradient, moments)],
            )
        )
        covered = np.zeros((self.max_time_steps,), "float32")
        covered[: min(steps, self.max_time_steps)] = 1.0
        # A batch of one example has no spread: it does not count.
        weight = ops.convert_to_tensor(covered) * ops.cast(batch > 1, "float32")
        rows = {name: self._to_rows(value, steps) for name, value in values.items()}
        if self._recording is not None:
            correction = batch / ops.maximum(batch - 1.0, 1.0)
            record = {}
            for name, value in rows.items():
                value = ops.cast(value, "float32")
                if self._recording.unbiased and (
                    "variance" in name or "covariance" in name
                ):
                    value = value * correction
                shape = (self.max_time_steps,) + (1,) * (len(value.shape) - 1)
                record[name] = (value, ops.reshape(weight, shape))
            self._recording.records.append(record)
            return
        if not self.trainable:
            return
        count = ops.cast(self.num_updates, "float32") + weight
        rate = self._update_rate(count)
        for name, value in rows.items():
            variable = getattr(self, name)
            shape = (self.max_time_steps,) + (1,) * (len(variable.shape) - 1)
            keep = ops.reshape(ops.where(weight > 0, rate, 1.0), shape)
            moving = ops.cast(variable, "float32")
            variable.assign(moving * keep + ops.cast(value, "float32") * (1.0 - keep))
        self.num_updates.assign(count)

    def _update_rate(self, count):
        """Weight of the old value in the debiased moving average.

        With `n` updates counted (this one included) the debiased average
        `(1 - m) * sum_k m**k x_{n-k} / (1 - m**n)` is
        `rate * previous + (1 - rate) * x_n`, with
        `rate = m * (1 - m**(n - 1)) / (1 - m**n)`; for `momentum=None`,
        `(n - 1) / n`, the plain average.
        """
        n = ops.maximum(count, 1.0)
        if self.momentum is None:
            return (n - 1.0) / n
        m = self.momentum
        if m == 0.0:
            return ops.zeros_like(n)
        return m * (1.0 - m ** (n - 1.0)) / (1.0 - m**n)

    def _to_rows(self, value, steps):
        """`(T, ...)` per-step values to `(max_time_steps, ...)` rows.

        Steps from `max_time_steps - 1` on share the last row: their average.
        Rows beyond the sequence are zeros (their weight is 0).
        """
        last = self.max_time_steps - 1
        if steps <= last:
            pad = [(0, self.max_time_steps - steps)] + [(0, 0)] * (len(value.shape) - 1)
            return ops.pad(value, pad)
        shared = ops.mean(value[last:], axis=0, keepdims=True)
        return ops.concatenate([value[:last], shared], axis=0)

    # --- Population statistics protocol ---------------------------------

    # `recording_statistics` (kbn.layers.recording) records, per call,
    # `{name: (value, weight)}` for each name of `statistic_names`: the
    # `(max_time_steps, ...)` rows of the batch (steps sharing a row
    # averaged; variances and the input covariance times `m / (m - 1)`, `m`
    # the batch size, if `unbiased`), weights 1 for the rows the batch
    # covers, 0 for the others and for a batch of one example.

    def set_population_statistics(self, statistics, counts):
        """Sets the rows with a positive count to the given statistics.

        Args:
            statistics: Dict from `statistic_names` to `(max_time_steps,
                ...)` arrays (weighted averages of recorded values).
            counts: Dict from the same names to the total weights per row;
                `num_updates` becomes them on those rows.
        """
        rows = np.asarray(counts["moving_mean_input"]).reshape(self.max_time_steps)
        if not np.any(rows > 0):
            raise ValueError(
                f"BNLSTM layer '{self.name}' saw no batch of more than one "
                "example, so it has no population statistics. Received: no "
                "batch that counts"
            )
        counted = rows > 0
        for name in self.statistic_names:
            variable = getattr(self, name)
            current = np.asarray(ops.convert_to_numpy(variable), "float64")
            mask = counted.reshape((-1,) + (1,) * (current.ndim - 1))
            variable.assign(np.where(mask, statistics[name], current))
        num_updates = np.asarray(ops.convert_to_numpy(self.num_updates))
        self.num_updates.assign(np.where(counted, rows, num_updates))

    def moving_statistics(self):
        """`{name: array}`: the inference statistics per row, the input term's
        as `moving_mean_x` / `moving_variance_x` (with the current kernel)."""
        mean_x, variance_x = self.input_term_statistics()
        result = {
            "moving_mean_x": ops.convert_to_numpy(mean_x),
            "moving_variance_x": ops.convert_to_numpy(variance_x),
        }
        for name in self.statistic_names:
            result[name] = ops.convert_to_numpy(getattr(self, name))
        return result

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def get_config(self):
        config = {
            "units": self.units,
            "max_time_steps": self.max_time_steps,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "unroll": self.unroll,
        }
        return {**super().get_config(), **config}


_NAMES = [f"moving_{s}_{p}" for p in _PARTS for s in ("mean", "variance")]


def seeded(initializer, seed, offset):
    """`initializer` with seed `seed * 10 + offset` (if it takes a seed)."""
    if seed is None or not isinstance(initializer, initializers.Initializer):
        return initializer
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    config["seed"] = seed * 10 + offset
    return initializer.__class__.from_config(config)
