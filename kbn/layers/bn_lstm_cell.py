import warnings

import keras
from keras import initializers
from keras import ops

from kbn import ops as bn_ops
from kbn.layers.bn_lstm_layer import seeded as _seeded


@keras.saving.register_keras_serializable(package="kbn")
class BNLSTMCell(keras.layers.Layer):
    """LSTM cell with recurrent batch normalization (Cooijmans et al., 2016).

    **Deprecated: use `kbn.layers.BNLSTM`**, the same maths in a compiled
    loop. This cell writes its statistics inside the recurrence, so it runs
    only in an unrolled `keras.layers.RNN` (784 steps do not compile in
    reasonable time), and its start-up average keeps the first batches'
    statistics for too long. It stays correct unrolled and keeps its
    behaviour, for models that use it.

    Batch norm is applied separately to the input-to-hidden and the
    hidden-to-hidden terms, and to the cell state before the output `tanh`:

    ```
    i, f, g, o = BN(W_h h_{t-1}; gamma_h) + BN(W_x x_t; gamma_x) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(BN(c_t; gamma_c, beta_c))
    ```

    The two gate normalizations have no offset (the bias `b` is the only
    one, no redundant biases), and every `gamma` starts at 0.1, as the paper
    recommends. Statistics are kept **per time step**: step `t` normalizes
    in training with the batch moments of step `t` and updates the moving
    statistics of step `t`; in inference it uses those. Steps from
    `max_time_steps` on share the statistics of the last one. The time step
    is carried as a third state.

    The moving statistics of a step are the plain average of its first
    batches, then an exponential moving average: the update uses momentum
    `min(momentum, n / (n + 1))` after `n` updates of that step. Without
    this, the initial variance of 1 lingers for hundreds of batches (0.99 **
    200 = 0.13), which wrecks inference for units whose true variance is
    small, as many are in a freshly initialized LSTM.

    Use it in `keras.layers.RNN(cell, unroll=True)`, or `kbn.layers.bn_lstm`
    which does that. The moving statistics are updated inside the
    recurrence, which needs an unrolled loop: JAX's `scan` cannot assign
    variables, and TensorFlow's `while_loop` path of `keras.layers.RNN` calls
    the cell once more at step 0 to learn its output shape, which would
    count step 0's statistics twice. Unrolling is cheap for tens of steps
    (28 rows of an MNIST image); for hundreds it makes compilation slow.

    Args:
        units: Size of the hidden and cell states.
        max_time_steps: Number of time steps with statistics of their own.
        momentum: Momentum of the moving statistics.
        epsilon: Added to the variances.
        gamma_initializer: Initializer of the three gammas (0.1).
        kernel_initializer: Initializer of `W_x` (Glorot uniform, as
            `keras.layers.LSTM`).
        recurrent_initializer: Initializer of `W_h` (orthogonal).
        bias_initializer: Initializer of `b` (zeros).
        unit_forget_bias: Add 1 to the forget gate's bias at initialization.
        seed: Optional seed of the kernel initializers, so that an LSTM and
            a BN-LSTM can start from the same kernels.

    Reference:

    - [Cooijmans et al., 2016](https://arxiv.org/abs/1603.09025).
    """

    def __init__(
        self,
        units,
        max_time_steps,
        momentum=0.99,
        epsilon=1e-3,
        gamma_initializer=0.1,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        warnings.warn(
            "BNLSTMCell is deprecated: it updates its statistics inside the "
            "recurrence and needs an unrolled loop. Use kbn.layers.BNLSTM, "
            "which runs in a compiled loop (keras.ops.scan).",
            DeprecationWarning,
            stacklevel=2,
        )
        for arg, value in (("units", units), ("max_time_steps", max_time_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"Invalid value for argument {arg}. Expected a positive int. "
                    f"Received: {arg}={value!r}"
                )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(
                "Invalid value for argument momentum. Expected a float in "
                f"[0, 1]. Received: momentum={momentum!r}"
            )
        if not epsilon > 0:
            raise ValueError(
                "Invalid value for argument epsilon. Expected a positive float. "
                f"Received: epsilon={epsilon!r}"
            )
        self.units = units
        self.max_time_steps = max_time_steps
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        if isinstance(gamma_initializer, (int, float)):
            gamma_initializer = initializers.Constant(float(gamma_initializer))
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.seed = seed
        self.state_size = [units, units, 1]
        self.output_size = units

    def build(self, input_shape):
        units, steps = self.units, self.max_time_steps
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4 * units),
            name="kernel",
            initializer=_seeded(self.kernel_initializer, self.seed, 0),
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=_seeded(self.recurrent_initializer, self.seed, 1),
        )

        def bias_initializer(shape, dtype=None):
            bias = self.bias_initializer(shape, dtype=dtype)
            if self.unit_forget_bias:
                forget = ops.concatenate(
                    [ops.zeros((units,)), ops.ones((units,)), ops.zeros((2 * units,))]
                )
                bias = bias + ops.cast(forget, bias.dtype)
            return bias

        self.bias = self.add_weight(
            shape=(4 * units,), name="bias", initializer=bias_initializer
        )
        self.gamma_x = self.add_weight(
            shape=(4 * units,), name="gamma_x", initializer=self.gamma_initializer
        )
        self.gamma_h = self.add_weight(
            shape=(4 * units,), name="gamma_h", initializer=self.gamma_initializer
        )
        self.gamma_c = self.add_weight(
            shape=(units,), name="gamma_c", initializer=self.gamma_initializer
        )
        self.beta_c = self.add_weight(
            shape=(units,), name="beta_c", initializer="zeros"
        )
        self.num_updates = self._statistic("num_updates", (steps,), "zeros")
        for part, size in (("x", 4 * units), ("h", 4 * units), ("c", units)):
            for name, initializer in (
                ("moving_mean", "zeros"),
                ("moving_variance", "ones"),
            ):
                setattr(
                    self,
                    f"{name}_{part}",
                    self._statistic(f"{name}_{part}", (steps, size), initializer),
                )

    def _statistic(self, name, shape, initializer):
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            trainable=False,
            autocast=False,
        )

    def call(self, inputs, states, training=None):
        h, c, t = states
        learning = bool(training) and self.trainable
        step = ops.minimum(ops.cast(t[0, 0], "int32"), self.max_time_steps - 1)
        select = ops.one_hot(step, self.max_time_steps, dtype=inputs.dtype)
        momentum = None
        if learning:
            count = ops.sum(select * ops.cast(self.num_updates, select.dtype))
            momentum = ops.minimum(self.momentum, count / (count + 1.0))
            self.num_updates.assign(ops.cast(self.num_updates, select.dtype) + select)
        wx = self._normalize(ops.matmul(inputs, self.kernel), "x", select, momentum)
        wh = self._normalize(
            ops.matmul(h, self.recurrent_kernel), "h", select, momentum
        )
        z = wx + wh + self.bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(self._normalize(c, "c", select, momentum))
        return h, [h, c, t + 1.0]

    def _normalize(self, x, part, select, momentum):
        """Batch norm of one part; `momentum` is None in inference."""
        moving_mean = getattr(self, f"moving_mean_{part}")
        moving_variance = getattr(self, f"moving_variance_{part}")
        gamma = getattr(self, f"gamma_{part}")
        beta = self.beta_c if part == "c" else None
        if momentum is not None:
            mean, variance = bn_ops.moments(x, [0])
            for moving, value in ((moving_mean, mean), (moving_variance, variance)):
                current = ops.cast(moving, x.dtype)
                row = ops.matmul(select[None, :], current)[0]
                updated = bn_ops.moving_average(row, value, momentum)
                moving.assign(current + select[:, None] * (updated - row)[None, :])
        else:
            mean = ops.matmul(select[None, :], ops.cast(moving_mean, x.dtype))[0]
            variance = ops.matmul(select[None, :], ops.cast(moving_variance, x.dtype))[
                0
            ]
        return bn_ops.normalize(x, mean, variance, gamma, beta, self.epsilon)

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype),
            ops.zeros((batch_size, 1), dtype=self.compute_dtype),
        ]

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
        }
        return {**super().get_config(), **config}


def bn_lstm(units, max_time_steps, cell_kwargs=None, **rnn_kwargs):
    """`keras.layers.RNN(BNLSTMCell(...), unroll=True)` (deprecated: use
    `kbn.layers.BNLSTM`).

    Args:
        units, max_time_steps: As `BNLSTMCell`.
        cell_kwargs: Other `BNLSTMCell` arguments.
        **rnn_kwargs: `keras.layers.RNN` arguments (`return_sequences`, ...).
    """
    if not rnn_kwargs.setdefault("unroll", True):
        raise ValueError(
            "BNLSTMCell updates its statistics inside the recurrence and needs "
            "an unrolled loop. Received: unroll=False"
        )
    cell = BNLSTMCell(units, max_time_steps, **(cell_kwargs or {}))
    return keras.layers.RNN(cell, **rnn_kwargs)
