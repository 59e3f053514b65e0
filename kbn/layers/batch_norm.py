import math
import numbers
import warnings

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kbn import ops as bn_ops

_RENORM_KEYS = ("rmax", "rmin", "dmax")


@keras.saving.register_keras_serializable(package="kbn")
class BatchNorm(keras.layers.Layer):
    """Batch normalization, written from primitives.

    Normalizes each feature with the mean and variance of the current batch
    in training, and with moving averages of them in inference, then scales
    by `gamma` and shifts by `beta`:

    `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`

    With equal arguments it gives the same outputs and the same moving
    statistics as `keras.layers.BatchNormalization` (renormalization
    included). It also does what Keras 3 does not: ghost batches
    (`virtual_batch_size`), the paper's population statistics
    (`momentum=None`, `unbiased_variance=True`, and
    `kbn.recompute_batch_norm_statistics`), batch statistics in inference
    (`track_running_stats=False`), renormalization clip limits that a
    callback can schedule, and folding into the preceding layer
    (`kbn.fold_batch_norm`).

    Each step is a method of its own, so a subclass changes one of them
    without copying `call`:

    - `compute_moments(inputs, mask)`: the batch statistics in training;
    - `update_moving_statistics(mean, variance)`: the state update;
    - `normalize(inputs, mean, variance, gamma, beta)`: the normalization.

    The arithmetic lives in the pure functions of `kbn.ops`.

    **Training and inference.** The layer uses batch statistics when it is
    called with `training=True` (as `fit()` does) *and* `trainable` is
    `True`. Otherwise, including `training=None`, it uses the moving
    statistics: as in Keras, setting `trainable = False` freezes the layer
    and runs it in inference mode. With `track_running_stats=False` it has no
    moving statistics and always uses batch statistics (PyTorch's
    convention).

    Statistics are per feature: with `axis=-1` on a `(batch, features)`
    input one mean per feature over the batch; on a channels-last image
    batch `(batch, height, width, channels)` one mean per feature map over
    batch, height and width. Use `axis=1` after a channels-first
    convolution. A list of axes keeps one statistic per combination of them.

    Args:
        axis: Integer or list of integers, the feature axes (not reduced).
        momentum: Momentum of the moving averages, in `[0, 1]`:
            `moving = moving * momentum + batch * (1 - momentum)`. `None`
            makes the moving statistics the cumulative average of all batch
            statistics seen (Ioffe & Szegedy's Algorithm 2; PyTorch's
            `momentum=None`), counted in the weight `num_batches`.
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
        virtual_batch_size: Optional int. Ghost batch normalization (Hoffer
            et al., 2017): in training, each batch is split into virtual
            batches of this many examples, each normalized with its own
            statistics; the moving statistics are updated once per batch with
            the average of the virtual batches' moments. The batch size must
            be a multiple of it.
        renorm: Batch renormalization (Ioffe, 2017): in training, the batch
            normalization is corrected towards the moving statistics by
            `r = std_batch / std_moving` and `d = (mean_batch - mean_moving) /
            std_moving`, clipped to `[rmin, rmax]` and `[-dmax, dmax]`.
        renorm_clipping: Dict with optional keys `"rmax"`, `"rmin"`,
            `"dmax"` (default `inf`, `0`, `inf`). The limits are stored as
            the non-trainable weights `renorm_rmax`, `renorm_rmin` and
            `renorm_dmax`, so that `kbn.callbacks.RenormClippingSchedule` can
            relax them during training, as the paper does.
        renorm_momentum: Momentum of the statistics that renorm corrects
            towards.
        unbiased_variance: If `True`, the moving variance averages the
            unbiased batch variance `m / (m - 1) * variance`, with `m` the
            number of values per feature in the batch, as the paper's
            inference statistics and PyTorch do. Normalization in training
            always uses the biased batch variance.
        track_running_stats: If `False`, no moving statistics are kept and
            batch statistics are used in training and inference alike.
        synchronized: If `True`, under a `tf.distribute` strategy the batch
            statistics are those of the global batch, all-reduced across
            replicas (TensorFlow backend). On JAX, a batch sharded by
            `keras.distribution.DataParallel` is one global array, and its
            statistics are global already, synchronized or not.
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

    References:

    - [Ioffe and Szegedy, 2015](https://arxiv.org/abs/1502.03167).
    - [Hoffer et al., 2017](https://arxiv.org/abs/1705.08741) (ghost batches).
    - [Ioffe, 2017](https://arxiv.org/abs/1702.03275) (renormalization).

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
        virtual_batch_size=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        unbiased_variance=False,
        track_running_stats=True,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _validate_axis(axis)
        self.momentum = _validate_momentum(momentum, "momentum", allow_none=True)
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
        self.virtual_batch_size = _validate_virtual_batch_size(virtual_batch_size)
        self.renorm = bool(renorm)
        self.renorm_clipping = _validate_renorm_clipping(renorm_clipping, renorm)
        self.renorm_momentum = _validate_momentum(renorm_momentum, "renorm_momentum")
        self.unbiased_variance = bool(unbiased_variance)
        self.track_running_stats = bool(track_running_stats)
        self.synchronized = bool(synchronized)
        if self.renorm and (self.momentum is None or not self.track_running_stats):
            raise ValueError(
                "renorm=True corrects towards moving statistics: it needs "
                "track_running_stats=True and a float momentum. Received: "
                f"momentum={momentum!r}, track_running_stats={track_running_stats!r}"
            )
        if self.synchronized and keras.backend.backend() not in ("tensorflow", "jax"):
            raise ValueError(
                "synchronized=True needs the TensorFlow backend (tf.distribute) "
                "or JAX (global arrays). Received: synchronized=True on backend "
                f"{keras.backend.backend()!r}"
            )
        self.supports_masking = True
        self._warned_single_value = False

        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None

    def build(self, input_shape):
        rank = len(input_shape)
        self._rank = rank
        self._feature_axes = _resolve_axes(self.axis, rank, input_shape)
        self._reduction_axes = [i for i in range(rank) if i not in self._feature_axes]
        if self.virtual_batch_size is not None and 0 in self._feature_axes:
            raise ValueError(
                "virtual_batch_size splits the batch axis 0, which cannot be a "
                f"feature axis. Received: axis={self.axis!r}"
            )
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
        if self.track_running_stats:
            self.moving_mean = self._state(
                "moving_mean", shape, self.moving_mean_initializer
            )
            self.moving_variance = self._state(
                "moving_variance", shape, self.moving_variance_initializer
            )
        if self.momentum is None and self.track_running_stats:
            self.num_batches = self._state("num_batches", (), "zeros")
        if self.renorm:
            variance_initializer = self.moving_variance_initializer

            def stddev_initializer(shape, dtype=None):
                clone = _clone_initializer(variance_initializer)
                return ops.sqrt(clone(shape, dtype=dtype))

            self.moving_stddev = self._state("moving_stddev", shape, stddev_initializer)
            self.renorm_mean = self._state(
                "renorm_mean", shape, _clone_initializer(self.moving_mean_initializer)
            )
            self.renorm_stddev = self._state("renorm_stddev", shape, stddev_initializer)
            defaults = {"rmax": math.inf, "rmin": 0.0, "dmax": math.inf}
            for key in _RENORM_KEYS:
                value = self.renorm_clipping.get(key, defaults[key])
                setattr(
                    self,
                    f"renorm_{key}",
                    self._state(f"renorm_{key}", (), initializers.Constant(value)),
                )
        self.input_spec = keras.layers.InputSpec(
            ndim=rank, axes={i: input_shape[i] for i in self._feature_axes}
        )

    def _state(self, name, shape, initializer):
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            trainable=False,
            autocast=False,
        )

    @property
    def feature_axes(self):
        """Sorted non-negative feature axes (after `build`)."""
        return list(self._feature_axes)

    @property
    def reduction_axes(self):
        """Axes the batch statistics reduce over (after `build`)."""
        return list(self._reduction_axes)

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
        gamma = None if self.gamma is None else ops.cast(self.gamma, dtype)
        beta = None if self.beta is None else ops.cast(self.beta, dtype)
        learning = bool(training) and self.trainable
        if not learning and self.track_running_stats:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
            outputs = self.normalize(inputs, mean, variance, gamma, beta)
            return ops.cast(outputs, self.compute_dtype)

        shape = ops.shape(inputs)
        if self.virtual_batch_size is not None:
            inputs, mask = self._split_virtual_batches(inputs, mask)
        self._warn_if_single_value(inputs)
        mean, variance = self.compute_moments(inputs, mask=mask)
        if learning and self.track_running_stats:
            batch_mean, batch_variance = mean, variance
            if self.virtual_batch_size is not None:
                batch_mean = ops.mean(mean, axis=0)
                batch_variance = ops.mean(variance, axis=0)
            if self.unbiased_variance:
                count = self._values_per_feature(inputs, mask)
                batch_variance = batch_variance * count / ops.maximum(count - 1.0, 1.0)
            if self.renorm:
                gamma, beta = self._renormalized_affine(mean, variance, gamma, beta)
            self.update_moving_statistics(batch_mean, batch_variance)
        outputs = self.normalize(inputs, mean, variance, gamma, beta)
        if self.virtual_batch_size is not None:
            outputs = ops.reshape(outputs, shape)
        return ops.cast(outputs, self.compute_dtype)

    def compute_moments(self, inputs, mask=None):
        """Batch mean and variance, one value per feature.

        Override to change the estimator of the batch statistics.

        Args:
            inputs: The float32 (or wider) input tensor; with
                `virtual_batch_size`, reshaped to `(virtual batches,
                virtual_batch_size, ...)`.
            mask: Optional boolean mask with one dimension fewer than
                `inputs`.

        Returns:
            A tuple `(mean, variance)` shaped like the moving statistics
            (with a leading axis of one row per virtual batch when
            `virtual_batch_size` is set).
        """
        axes = self._reduction_axes_of(inputs)
        if mask is not None:
            if self.synchronized:
                raise ValueError(
                    "BatchNorm(synchronized=True) does not support masks. "
                    f"Received: mask.shape={mask.shape}"
                )
            mask = ops.expand_dims(mask, axis=-1)
            return bn_ops.moments(inputs, axes, mask=mask)
        if self.synchronized and keras.backend.backend() == "tensorflow":
            return ops.moments(inputs, axes=axes, synchronized=True)
        return bn_ops.moments(inputs, axes)

    def update_moving_statistics(self, mean, variance):
        """Updates the moving statistics with one batch's moments.

        Called in training only, with the batch moments (averaged over
        virtual batches, and unbiased if `unbiased_variance`).
        """
        if self.renorm:
            self._update_renorm_statistics(mean, variance)
            return
        if self.momentum is None:
            count = ops.cast(self.num_batches, mean.dtype) + 1.0
            self.num_batches.assign(count)
            # The cumulative average: moving += (batch - moving) / count.
            momentum = 1.0 - 1.0 / count
        else:
            momentum = self.momentum
        for moving, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            moving.assign(
                bn_ops.moving_average(ops.cast(moving, value.dtype), value, momentum)
            )

    def normalize(self, inputs, mean, variance, gamma, beta):
        """Returns `(inputs - mean) / sqrt(variance + epsilon) * gamma + beta`.

        `mean`, `variance`, `gamma` and `beta` are per feature (`gamma` and
        `beta` may be `None`); `broadcast` reshapes them against `inputs`.
        """
        return bn_ops.normalize(
            inputs,
            self.broadcast(mean, inputs),
            self.broadcast(variance, inputs),
            gamma=self.broadcast(gamma, inputs),
            beta=self.broadcast(beta, inputs),
            epsilon=self.epsilon,
        )

    def broadcast(self, tensor, inputs):
        """Reshapes a per-feature tensor so that it broadcasts to `inputs`.

        A tensor with one row per virtual batch broadcasts to inputs split
        into virtual batches.
        """
        if tensor is None:
            return None
        tensor = ops.cast(tensor, inputs.dtype)
        base = self._broadcast_shape
        if len(inputs.shape) == self._rank + 1:  # split into virtual batches
            rows = len(tensor.shape) == len(self._feature_axes) + 1
            return ops.reshape(tensor, [-1 if rows else 1, *base])
        if self._feature_axes == [self._rank - 1]:
            return tensor
        return ops.reshape(tensor, base)

    def _reduction_axes_of(self, inputs):
        if len(inputs.shape) == self._rank + 1:  # split into virtual batches
            return [1] + [a + 1 for a in self._reduction_axes if a != 0]
        return self._reduction_axes

    def _split_virtual_batches(self, inputs, mask):
        size = self.virtual_batch_size
        batch = inputs.shape[0]
        if batch is not None and batch % size:
            raise ValueError(
                f"BatchNorm '{self.name}': the batch size must be a multiple "
                f"of virtual_batch_size={size}. Received: batch size {batch}"
            )
        inputs = ops.reshape(inputs, (-1, size, *inputs.shape[1:]))
        if mask is not None:
            mask = ops.reshape(mask, (-1, size, *mask.shape[1:]))
        return inputs, mask

    def _values_per_feature(self, inputs, mask):
        """`m`, the number of values behind each feature's batch statistic."""
        axes = self._reduction_axes_of(inputs)
        if mask is not None:
            count = ops.sum(ops.cast(mask, inputs.dtype))
            if len(inputs.shape) == self._rank + 1:
                count = count / ops.cast(ops.shape(inputs)[0], inputs.dtype)
            return count
        shape = ops.shape(inputs)
        count = 1
        for axis in axes:
            count = count * shape[axis]
        return ops.cast(count, inputs.dtype)

    def _warn_if_single_value(self, inputs):
        if self._warned_single_value:
            return
        axes = self._reduction_axes_of(inputs)
        sizes = [inputs.shape[a] for a in axes]
        if sizes and all(s is not None for s in sizes) and math.prod(sizes) == 1:
            self._warned_single_value = True
            warnings.warn(
                f"BatchNorm layer '{self.name}' normalizes a training batch with "
                "one value per feature: its variance is 0, so every output "
                "equals beta whatever the input. Use batches of more than one "
                "example, or call the layer with training=False.",
                stacklevel=2,
            )

    def _renormalized_affine(self, mean, variance, gamma, beta):
        """Batch renorm's `(r, d)` folded into gamma and beta, as in Keras."""
        stddev = ops.sqrt(variance + self.epsilon)
        renorm_mean = ops.cast(self.renorm_mean, mean.dtype)
        renorm_stddev = ops.maximum(
            ops.cast(self.renorm_stddev, mean.dtype),
            ops.sqrt(ops.cast(self.epsilon, mean.dtype)),
        )
        r = stddev / renorm_stddev
        d = (mean - renorm_mean) / renorm_stddev
        r = ops.clip(
            r, ops.cast(self.renorm_rmin, r.dtype), ops.cast(self.renorm_rmax, r.dtype)
        )
        dmax = ops.cast(self.renorm_dmax, d.dtype)
        d = ops.clip(d, -dmax, dmax)
        r = ops.stop_gradient(r)
        d = ops.stop_gradient(d)
        if gamma is None:
            return r, d if beta is None else d + beta
        effective_beta = d * gamma if beta is None else d * gamma + beta
        return r * gamma, effective_beta

    def _update_renorm_statistics(self, mean, variance):
        stddev = ops.sqrt(variance + self.epsilon)
        for moving, value, momentum in (
            (self.renorm_mean, mean, self.renorm_momentum),
            (self.renorm_stddev, stddev, self.renorm_momentum),
            (self.moving_mean, mean, self.momentum),
        ):
            moving.assign(
                bn_ops.moving_average(ops.cast(moving, value.dtype), value, momentum)
            )
        new_stddev = bn_ops.moving_average(
            ops.cast(self.moving_stddev, stddev.dtype), stddev, self.momentum
        )
        self.moving_stddev.assign(new_stddev)
        self.moving_variance.assign(ops.relu(new_stddev * new_stddev - self.epsilon))

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
            "virtual_batch_size": self.virtual_batch_size,
            "renorm": self.renorm,
            "renorm_clipping": dict(self.renorm_clipping),
            "renorm_momentum": self.renorm_momentum,
            "unbiased_variance": self.unbiased_variance,
            "track_running_stats": self.track_running_stats,
            "synchronized": self.synchronized,
        }
        return {**super().get_config(), **config}


def _clone_initializer(initializer):
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


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


def _validate_momentum(momentum, name, allow_none=False):
    expected = "a float in [0, 1]" + (" or None" if allow_none else "")
    if momentum is None and allow_none:
        return None
    if not _is_real(momentum):
        raise TypeError(
            f"Invalid value for argument {name}. Expected {expected}. "
            f"Received: {name}={momentum!r}"
        )
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"Invalid value for argument {name}. Expected {expected}. "
            f"Received: {name}={momentum!r}"
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


def _validate_virtual_batch_size(size):
    if size is None:
        return None
    if not _is_int(size) or size < 1:
        raise ValueError(
            "Invalid value for argument virtual_batch_size. Expected a positive "
            f"int or None. Received: virtual_batch_size={size!r}"
        )
    return int(size)


def _validate_renorm_clipping(clipping, renorm):
    clipping = {} if clipping is None else clipping
    if not isinstance(clipping, dict) or set(clipping) - set(_RENORM_KEYS):
        raise ValueError(
            "Invalid value for argument renorm_clipping. Expected a dict with "
            f"keys among {_RENORM_KEYS}. Received: renorm_clipping={clipping!r}"
        )
    if clipping and not renorm:
        raise ValueError(
            "renorm_clipping applies to batch renormalization only. Received: "
            f"renorm_clipping={clipping!r} with renorm=False"
        )
    clipping = {k: float(v) for k, v in clipping.items()}
    rmax, rmin, dmax = (clipping.get(k) for k in _RENORM_KEYS)
    if rmin is not None and rmin < 0:
        raise ValueError(f"Expected rmin >= 0. Received: rmin={rmin}")
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            f"Expected rmax >= rmin in renorm_clipping. Received: rmax={rmax}, "
            f"rmin={rmin}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(f"Expected dmax >= 0. Received: dmax={dmax}")
    return clipping


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
