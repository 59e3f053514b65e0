import numbers

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kbn import ops as bn_ops


@keras.saving.register_keras_serializable(package="kbn")
class BatchNorm(keras.layers.Layer):
    """Batch normalization, written from primitives.

    Normalizes each feature with the mean and variance of the current batch
    in training, and with moving averages of them in inference, then scales
    by `gamma` and shifts by `beta`:

    `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`

    With equal arguments it gives the same outputs and the same moving
    statistics as `keras.layers.BatchNormalization`. Unlike Keras's layer,
    each step is a method of its own, so a subclass can change one of them
    without copying `call`:

    - `compute_moments(inputs, mask)`: the batch statistics in training;
    - `update_moving_statistics(mean, variance)`: the state update;
    - `normalize(inputs, mean, variance)`: the affine normalization.

    The arithmetic itself lives in the pure functions of `kbn.ops`.

    **Training and inference.** The layer uses batch statistics when it is
    called with `training=True` (as `fit()` does) *and* `trainable` is
    `True`. Otherwise, including `training=None`, it uses the moving
    statistics: as in Keras, setting `trainable = False` freezes the layer
    and runs it in inference mode.

    Statistics are per feature: with `axis=-1` on a `(batch, features)`
    input one mean per feature over the batch; on a channels-last image
    batch `(batch, height, width, channels)` one mean per feature map over
    batch, height and width. Use `axis=1` after a channels-first
    convolution. A list of axes keeps one statistic per combination of
    them.

    Args:
        axis: Integer or list of integers, the feature axes (not reduced).
        momentum: Momentum of the moving averages, in `[0, 1]`:
            `moving = moving * momentum + batch * (1 - momentum)`.
        epsilon: Positive float added to the variance before the square
            root.
        center: If `True`, add the learned offset `beta`.
        scale: If `True`, multiply by the learned scale `gamma`.
        beta_initializer: Initializer for `beta`.
        gamma_initializer: Initializer for `gamma`.
        moving_mean_initializer: Initializer for the moving mean.
        moving_variance_initializer: Initializer for the moving variance.
        beta_regularizer: Optional regularizer for `beta`.
        gamma_regularizer: Optional regularizer for `gamma`.
        beta_constraint: Optional constraint for `beta`.
        gamma_constraint: Optional constraint for `gamma`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Python boolean; `True` normalizes with batch statistics
            and updates the moving statistics.
        mask: Optional boolean tensor with one dimension fewer than
            `inputs` (for example `(batch, time)` for a sequence); masked
            positions do not count in the batch statistics.

    Returns:
        A tensor of the shape of `inputs`, in the layer's compute dtype.
        Float16 and bfloat16 inputs are normalized in float32.

    Reference:

    - [Ioffe and Szegedy, 2015](https://arxiv.org/abs/1502.03167).

    Example:

    >>> x = np.random.normal(3.0, 2.0, size=(60, 100)).astype("float32")
    >>> layer = kbn.layers.BatchNorm()
    >>> y = layer(x, training=True)
    >>> float(ops.mean(y)), float(ops.std(y))  # about 0 and 1
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _validate_axis(axis)
        self.momentum = _validate_momentum(momentum)
        self.epsilon = _validate_epsilon(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True

        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None

    def build(self, input_shape):
        rank = len(input_shape)
        self._feature_axes = _resolve_axes(self.axis, rank, input_shape)
        self._reduction_axes = [i for i in range(rank) if i not in self._feature_axes]
        shape = tuple(input_shape[i] for i in self._feature_axes)
        self._broadcast_shape = [
            input_shape[i] if i in self._feature_axes else 1 for i in range(rank)
        ]
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )
        self.moving_mean = self.add_weight(
            shape=shape,
            name="moving_mean",
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=shape,
            name="moving_variance",
            initializer=self.moving_variance_initializer,
            trainable=False,
            autocast=False,
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=rank, axes={i: input_shape[i] for i in self._feature_axes}
        )

    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "Invalid mask for BatchNorm. Expected a mask with one "
                "dimension fewer than the inputs. Received: "
                f"mask.shape={mask.shape}, inputs.shape={inputs.shape}"
            )
        # Half-precision statistics overflow easily: compute in float32.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, dtype)
        if training and self.trainable:
            mean, variance = self.compute_moments(inputs, mask=mask)
            self.update_moving_statistics(mean, variance)
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        outputs = self.normalize(inputs, mean, variance)
        return ops.cast(outputs, self.compute_dtype)

    def compute_moments(self, inputs, mask=None):
        """Batch mean and variance, one value per feature.

        Override to change the estimator of the batch statistics.

        Args:
            inputs: The float32 (or wider) input tensor.
            mask: Optional boolean mask with one dimension fewer than
                `inputs`.

        Returns:
            A tuple `(mean, variance)` of tensors shaped like the moving
            statistics.
        """
        if mask is not None:
            mask = ops.expand_dims(mask, axis=-1)
        return bn_ops.moments(inputs, self._reduction_axes, mask=mask)

    def update_moving_statistics(self, mean, variance):
        """Updates the moving statistics with one batch's moments.

        Called in training only, with the output of `compute_moments`.
        """
        self.moving_mean.assign(
            bn_ops.moving_average(
                ops.cast(self.moving_mean, mean.dtype), mean, self.momentum
            )
        )
        self.moving_variance.assign(
            bn_ops.moving_average(
                ops.cast(self.moving_variance, variance.dtype),
                variance,
                self.momentum,
            )
        )

    def normalize(self, inputs, mean, variance):
        """Returns `(inputs - mean) / sqrt(variance + epsilon) * gamma + beta`.

        `mean` and `variance` are shaped like the moving statistics.
        """
        gamma = self._broadcast(self.gamma, inputs.dtype)
        beta = self._broadcast(self.beta, inputs.dtype)
        return bn_ops.normalize(
            inputs,
            self._broadcast(mean, inputs.dtype),
            self._broadcast(variance, inputs.dtype),
            gamma=gamma,
            beta=beta,
            epsilon=self.epsilon,
        )

    def _broadcast(self, statistic, dtype):
        """Reshapes a per-feature tensor so that it broadcasts to the input."""
        if statistic is None:
            return None
        statistic = ops.cast(statistic, dtype)
        if self._feature_axes == [len(self._broadcast_shape) - 1]:
            return statistic
        return ops.reshape(statistic, self._broadcast_shape)

    def compute_output_shape(self, input_shape):
        _resolve_axes(self.axis, len(input_shape), input_shape)
        return input_shape

    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(
                self.moving_mean_initializer
            ),
            "moving_variance_initializer": initializers.serialize(
                self.moving_variance_initializer
            ),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate_axis(axis):
    if _is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(_is_int(a) for a in axis):
        return [int(a) for a in axis]
    raise TypeError(
        "Invalid value for argument axis. Expected an int or a non-empty "
        f"list of ints. Received: axis={axis!r}"
    )


def _validate_momentum(momentum):
    if not _is_real(momentum):
        raise TypeError(
            "Invalid value for argument momentum. Expected a float in [0, 1]. "
            f"Received: momentum={momentum!r}"
        )
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            "Invalid value for argument momentum. Expected a float in [0, 1]. "
            f"Received: momentum={momentum!r}"
        )
    return float(momentum)


def _validate_epsilon(epsilon):
    if not _is_real(epsilon):
        raise TypeError(
            "Invalid value for argument epsilon. Expected a positive float. "
            f"Received: epsilon={epsilon!r}"
        )
    if not epsilon > 0.0:
        raise ValueError(
            "Invalid value for argument epsilon. Expected a positive float. "
            f"Received: epsilon={epsilon!r}"
        )
    return float(epsilon)


def _resolve_axes(axis, rank, input_shape):
    """Sorted non-negative feature axes; raises if one is out of range."""
    axes = [axis] if _is_int(axis) else list(axis)
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(
                f"Invalid value for argument axis. Expected axes in "
                f"[{-rank}, {rank}) for an input of rank {rank} (shape "
                f"{tuple(input_shape)}). Received: axis={axis!r}"
            )
    resolved = sorted(a % rank for a in axes)
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            "Invalid value for argument axis. Expected distinct axes. "
            f"Received: axis={axis!r} for an input of rank {rank}"
        )
    for a in resolved:
        if input_shape[a] is None:
            raise ValueError(
                "BatchNorm needs a known size on each feature axis. "
                f"Received: axis={axis!r} with input shape {tuple(input_shape)}"
            )
    return resolved
