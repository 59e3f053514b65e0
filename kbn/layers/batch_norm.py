"""`BatchNorm`: batch normalization written from primitives, with hooks.

Holds the layer: its options, its state, `call`'s bookkeeping (dtypes,
virtual batches, masks, the `momentum=None` counter, batches with one value
per feature, training or inference) and the hooks a subclass overrides. It
must not hold the arithmetic (`kbn.ops`), renormalization's own part
(`kbn.layers.renorm`), the recording protocol (`kbn.layers.recording`) or
the argument checks (`kbn.layers.batch_norm_options`). It is over 400 lines
because the hooks are methods of the layer, each with the documentation a
subclass needs.
"""

import math
import warnings

import keras
import numpy as np
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kbn import checks
from kbn import ops as bn_ops
from kbn.layers import affine_probe
from kbn.layers import batch_norm_options as options
from kbn.layers.recording import RecordsStatistics
from kbn.layers.renorm import Renormalization

# How examples are grouped into virtual batches (`virtual_batch_grouping`).
GROUPINGS = ("contiguous", "strided")
# The hooks a subclass may override; see `BatchNorm._overrides`.
HOOKS = (
    "call",
    "compute_moments",
    "normalize",
    "update_moving_statistics",
    "update_renorm_statistics",
    "debias_variance",
    "inference_affine",
)


@keras.saving.register_keras_serializable(package="kbn")
class BatchNorm(Renormalization, RecordsStatistics, keras.layers.Layer):
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

    **Batches with one value per feature.** A training batch that gives a
    feature a single value (a batch of one example, a ghost batch of one,
    one unmasked position, or a fully masked batch) has no spread. The layer
    normalizes it with its batch statistics all the same (every output
    equals `beta`; outputs at masked positions carry no meaning) but leaves
    its moving statistics, and every other state (the `momentum=None`
    counter, renorm's statistics, a subclass's own), unchanged: inference
    afterwards is what it was before. When the shapes show it, the layer
    warns once; under a mask the count exists only at run time, and the
    update is undone by a traced `where`, so compiled steps (`jit`,
    `tf.function`) keep working. (PyTorch raises a `ValueError` instead,
    which a compiled step cannot do for a count known at run time only.)

    **Numerics.** The layer computes in the wider of the input dtype and
    float32: float64 stays float64 (on JAX with `jax_enable_x64`), and
    float16 and bfloat16 inputs are normalized in float32. In training it
    subtracts from the inputs the first value of each feature
    (`kbn.ops.feature_shift`, a no-op in exact arithmetic) before the two
    passes of the moments and the normalization, and in inference it
    subtracts the moving mean first, so that the float32 error of outputs
    and gradients does not grow with |mean| / spread. This is the layer's
    own maths: an overridden `compute_moments` or `normalize` sees the
    inputs as they are (`kbn.ops.moments` shifts internally).

    **Subclassing.** Each step of the maths is a method of its own, which a
    subclass overrides without copying `call` (`docs/subclassing.md` has a
    guide and three tested examples):

    - `compute_moments(inputs, axes, mask)`: the batch mean and variance;
    - `normalize(inputs, mean, variance, gamma, beta)`: the normalization;
    - `update_moving_statistics(mean, variance, momentum)`: the moving
      statistics after a training batch;
    - `update_renorm_statistics(mean, variance)`: the statistics batch
      renormalization corrects towards;
    - `debias_variance(variance, count)`: the unbiased variance estimate
      (`unbiased_variance=True`, population statistics);
    - `inference_affine()`: the inference map as a per-feature scale and
      offset, which `kbn.fold_batch_norm` reads.

    `call` does the bookkeeping around them (dtypes, virtual batches, masks,
    the `momentum=None` counter, renorm's corrections, skipping batches with
    one value per feature), so an override is right under every option that applies.
    Where it cannot be, the layer refuses the combination with a
    `ValueError` when it is built: an overridden `compute_moments` with
    `unbiased_variance=True` (unless `debias_variance` is overridden too) or
    with `synchronized=True` on TensorFlow, and an overridden `normalize`
    with `renorm=True`. A method counts as overridden when a subclass
    defines it (even if it calls `super()`), when it is replaced on the
    class (`unittest.mock.patch.object(BatchNorm, "compute_moments", ...)`)
    or set on one layer (`layer.compute_moments = f`): the layer looks when
    it is called (a compiled step, when it is traced), so every override
    is used, or refused with the error above. The arithmetic lives in the
    pure functions of `kbn.ops`.

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
            be a multiple of it. Which examples share a virtual batch:
            `virtual_batch_grouping`.
        virtual_batch_grouping: `"contiguous"` (the default): example `i`
            of a batch of `B` is in virtual batch `i // virtual_batch_size`,
            consecutive examples together, as Hoffer et al. describe and as
            per-replica statistics fall under data parallelism.
            `"strided"`: example `i` is in virtual batch `i % (B //
            virtual_batch_size)`, the rule of tf-keras 2's
            `BatchNormalization(virtual_batch_size=...)`: choose it to get
            tf-keras's numbers (on the same inputs the two groupings give
            different outputs and moving statistics).
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
            number of values per feature in the batch (per virtual batch),
            as the paper's inference statistics and PyTorch do.
            Normalization in training always uses the biased batch variance.
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
        A tensor of the shape of `inputs`, in the layer's compute dtype
        (computed in float32, or float64 for float64 inputs).

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
        virtual_batch_grouping="contiguous",
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        unbiased_variance=False,
        track_running_stats=True,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = options.check_axis(axis)
        self.momentum = (
            None if momentum is None else checks.check_float(momentum, "momentum", 0, 1)
        )
        self.epsilon = checks.check_float(epsilon, "epsilon", positive=True)
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
        self.virtual_batch_size = checks.check_optional_int(
            virtual_batch_size, "virtual_batch_size"
        )
        self.virtual_batch_grouping = checks.check_choice(
            virtual_batch_grouping, "virtual_batch_grouping", GROUPINGS
        )
        self.renorm = bool(renorm)
        self.renorm_clipping = options.check_renorm_clipping(
            renorm_clipping, self.renorm
        )
        self.renorm_momentum = checks.check_float(
            renorm_momentum, "renorm_momentum", 0, 1
        )
        self.unbiased_variance = bool(unbiased_variance)
        self.track_running_stats = bool(track_running_stats)
        self.synchronized = bool(synchronized)
        if self.renorm:
            self._check_renorm_options(momentum, track_running_stats)
        if self.synchronized and keras.backend.backend() not in ("tensorflow", "jax"):
            checks.fail(
                "synchronized",
                synchronized,
                "False on backend "
                f"{keras.backend.backend()!r} (synchronized=True needs "
                "TensorFlow's tf.distribute or JAX's global arrays)",
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
        self._feature_axes = options.resolve_axes(self.axis, rank, input_shape)
        self._reduction_axes = [i for i in range(rank) if i not in self._feature_axes]
        if self.virtual_batch_size is not None and 0 in self._feature_axes:
            checks.fail(
                "axis",
                self.axis,
                "feature axes other than the batch axis 0, which "
                "virtual_batch_size splits",
            )
        self._check_hooks()
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
            self._build_renorm(shape)
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
        """Axes the batch statistics reduce over (after `build`).

        With `virtual_batch_size`, `compute_moments` receives the inputs
        split into virtual batches and the axes to reduce for them.
        """
        return list(self._reduction_axes)

    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "Invalid mask for BatchNorm. Expected a mask with one "
                "dimension fewer than the inputs. Received: "
                f"mask.shape={mask.shape}, inputs.shape={inputs.shape}"
            )
        self._check_hooks()  # also overrides made after build
        own_normalize = not (self._overrides("normalize") or self._overrides("call"))
        own_moments = not self._overrides("compute_moments") and not (
            self.synchronized and keras.backend.backend() == "tensorflow"
        )
        dtype = options.computation_dtype(inputs.dtype)
        inputs = ops.cast(inputs, dtype)
        gamma = None if self.gamma is None else ops.cast(self.gamma, dtype)
        beta = None if self.beta is None else ops.cast(self.beta, dtype)
        recording = self._recording is not None
        learning = bool(training) and (self.trainable or recording)
        if not learning and self.track_running_stats:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
            if own_normalize:
                # `(x - mean) * scale + beta`: subtracting first keeps the
                # float32 error independent of |mean| / spread.
                inputs = inputs - self._broadcast(mean, inputs)
                mean = ops.zeros_like(mean)
            outputs = self._normalize(inputs, mean, variance, gamma, beta)
            return ops.cast(outputs, self.compute_dtype)

        shape = ops.shape(inputs)
        if mask is not None:
            mask = ops.expand_dims(ops.cast(mask, "bool"), axis=-1)
        if self.virtual_batch_size is not None:
            inputs, mask = self._split_virtual_batches(inputs, mask)
        axes = self._moment_axes(inputs)
        count = bn_ops.count(inputs, axes, mask)
        self._warn_if_single_value(count)
        if own_normalize and own_moments:
            # The layer's own maths, about a value near the data: the inputs
            # and the mean are shifted alike, and the normalization is the
            # same, with a float32 error independent of |mean| / spread.
            shift = bn_ops.feature_shift(inputs, axes, mask)
            inputs = inputs - shift
            mean, variance = bn_ops.two_pass_moments(inputs, axes, mask)
            batch_mean = mean + ops.squeeze(shift, axis=axes)
        else:
            mean, variance = self.compute_moments(inputs, axes, mask=mask)
            batch_mean = mean
        if learning and self.track_running_stats:
            enough = self._enough_values(inputs, axes, mask, count)
            if self.renorm:
                gamma, beta = self._renorm_corrected(batch_mean, variance, gamma, beta)
            batch_mean, batch_variance = self._moments_to_average(
                batch_mean, variance, count
            )
            if recording:
                self._record(batch_mean, batch_variance, enough)
            else:
                self._update_state(batch_mean, batch_variance, enough)
        outputs = self._normalize(inputs, mean, variance, gamma, beta)
        if self.virtual_batch_size is not None:
            outputs = self._ungroup(outputs, shape)
        return ops.cast(outputs, self.compute_dtype)

    # --- Hooks -----------------------------------------------------------

    def compute_moments(self, inputs, axes, mask=None):
        """Batch mean and variance, one value per feature.

        Override to change the estimator of the batch statistics. The
        variance must be the layer's notion of spread: training normalizes
        by `sqrt(variance + epsilon)`, and the moving variance averages it.

        Args:
            inputs: The input tensor, float32 or wider. With
                `virtual_batch_size` it arrives split into virtual batches,
                `(virtual batches, virtual_batch_size, ...)`.
            axes: List of ints, the axes of `inputs` to reduce (with
                virtual batches, every reduction axis but the axis of the
                virtual batches).
            mask: `None`, or a boolean tensor of the rank of `inputs` that
                broadcasts against it; only positions where it is `True`
                count. `kbn.ops.masked_mean` and `kbn.ops.moments` honour
                it in one call.

        Returns:
            A tuple `(mean, variance)` of tensors with the `axes` removed:
            shaped like the moving statistics, with a leading axis of one
            row per virtual batch when `virtual_batch_size` is set.
        """
        if self.synchronized and keras.backend.backend() == "tensorflow":
            if mask is not None:
                raise ValueError(
                    f"{type(self).__name__} layer '{self.name}' with "
                    "synchronized=True does not support masks. Received: "
                    f"mask.shape={mask.shape}"
                )
            return ops.moments(inputs, axes=axes, synchronized=True)
        return bn_ops.moments(inputs, axes, mask=mask)

    def normalize(self, inputs, mean, variance, gamma, beta):
        """Returns `(inputs - mean) / sqrt(variance + epsilon) * gamma + beta`.

        Override to change the normalization, in training and inference.
        Every argument broadcasts against `inputs` already (with virtual
        batches, `mean` and `variance` hold one row per virtual batch), so
        an override is plain arithmetic.

        Args:
            inputs: The input tensor, float32 or wider; split into virtual
                batches in training with `virtual_batch_size`.
            mean, variance: The batch moments in training, the moving
                statistics in inference.
            gamma, beta: The scale and offset, or `None` when `scale` or
                `center` is off. (With `renorm=True`, renorm's corrections
                are folded into them.)
        """
        return bn_ops.normalize(inputs, mean, variance, gamma, beta, self.epsilon)

    def update_moving_statistics(self, mean, variance, momentum):
        """Updates the moving statistics with one training batch's moments.

        Override to change how the moving statistics follow the batches.
        The layer calls it in training only, and not for a batch that gives
        a feature a single value. Renorm's own statistics have a hook of
        their own (`update_renorm_statistics`), called whether this method
        is overridden or not.

        Args:
            mean, variance: Per-feature batch moments, averaged over the
                virtual batches, the variance unbiased by `debias_variance`
                if `unbiased_variance`.
            momentum: Scalar tensor, the momentum to use for this batch:
                the layer's `momentum`, or with `momentum=None` the
                cumulative average's `1 - 1 / n` for the `n`-th batch (the
                layer counts `n` in `num_batches` itself).

        With `renorm=True` the default also keeps `moving_stddev`, which
        Keras's renormalization averages instead of the variance; after an
        overridden update the layer sets it to `sqrt(moving_variance +
        epsilon)`.
        """
        moving_mean = ops.cast(self.moving_mean, mean.dtype)
        self.moving_mean.assign(bn_ops.moving_average(moving_mean, mean, momentum))
        if self.renorm:
            # As in Keras: renormalization averages the standard deviation
            # and derives the variance from it (kbn.layers.renorm).
            self._renorm_moving_update(mean, variance, momentum)
            return
        moving_variance = ops.cast(self.moving_variance, variance.dtype)
        self.moving_variance.assign(
            bn_ops.moving_average(moving_variance, variance, momentum)
        )

    def debias_variance(self, variance, count):
        """The unbiased population variance from a batch variance.

        Bessel's correction `variance * count / (count - 1)`, right for the
        sample variance that the default `compute_moments` returns. Used
        with `unbiased_variance=True` and by
        `kbn.recompute_batch_norm_statistics(unbiased=True)`. A subclass
        that overrides `compute_moments` must override this too before
        either accepts it (return `super().debias_variance(...)` if its
        estimator is the sample variance too).

        Args:
            variance: Batch variance, one row per virtual batch with
                `virtual_batch_size`.
            count: The number of values behind each variance (`m`): an int,
                or a tensor that broadcasts against `variance` (with masks).
        """
        count = ops.cast(count, variance.dtype)
        return variance * count / ops.maximum(count - 1.0, 1.0)

    def inference_affine(self):
        """The layer's inference map as `outputs = inputs * scale + offset`.

        `kbn.fold_batch_norm` reads it to fold the layer into the preceding
        `Dense` or convolution. The default derives it in closed form from
        the moving statistics (`kbn.ops.fold_into_affine`). When a subclass
        overrides `normalize` (or `call`), the default instead evaluates the
        layer in inference on probe inputs: two points per feature give the
        scale and offset, and random points check that the map is affine per
        feature, else a `ValueError` names the layer. Override this method
        to give an exact closed form for a subclass.

        Returns:
            A tuple `(scale, offset)` of per-feature tensors shaped like the
            moving statistics.

        Raises:
            ValueError: If the layer is not built, has no moving statistics
                (`track_running_stats=False`: its inference output depends
                on the batch, so it has no such map), or its inference map is
                not affine per feature.
        """
        self._require_moving_statistics("inference_affine()")
        if self._overrides("normalize") or self._overrides("call"):
            return affine_probe.probed_affine(self)
        dtype = self.moving_mean.dtype
        return bn_ops.fold_into_affine(
            ops.cast(self.moving_mean, dtype),
            ops.cast(self.moving_variance, dtype),
            None if self.gamma is None else ops.cast(self.gamma, dtype),
            None if self.beta is None else ops.cast(self.beta, dtype),
            self.epsilon,
        )

    # --- Population statistics (kbn.recompute_batch_norm_statistics) ------

    def _check_recording(self, unbiased):
        """`recording_statistics` (`kbn.layers.recording`) records, per call,
        `{"moving_mean": (mean, weight), "moving_variance": (variance,
        weight)}`: the batch moments from `compute_moments` (averaged over
        virtual batches, the variance passed through `debias_variance` if
        `unbiased`). It refuses a layer without moving statistics, and
        `unbiased` for an overridden `compute_moments` without a
        `debias_variance` of its own."""
        self._require_moving_statistics("recording_statistics()")
        if unbiased and self._overrides("compute_moments"):
            if not self._overrides("debias_variance"):
                raise ValueError(
                    f"{type(self).__name__} layer '{self.name}' overrides "
                    "compute_moments, so Bessel's correction m / (m - 1), "
                    "which unbiases the sample variance only, may not "
                    "unbias its variance. Override debias_variance(variance, "
                    "count) with your estimator's correction, or recompute "
                    "the statistics with unbiased=False. Received: "
                    "unbiased=True"
                )

    def set_population_statistics(self, statistics, counts):
        """Sets the moving statistics to population statistics.

        Args:
            statistics: Dict from the names of `recording_statistics`'s
                records to the weighted averages of their values over the
                recorded batches (NumPy arrays).
            counts: Dict from the same names to the total weights (the
                number of batches that counted).
        """
        batches = float(np.max(counts["moving_mean"]))
        if batches == 0:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' saw no batch with "
                "more than one value per feature, so it has no population "
                "statistics. Received: no batch that counts"
            )
        variance = np.asarray(statistics["moving_variance"])
        self.moving_mean.assign(statistics["moving_mean"])
        self.moving_variance.assign(variance)
        if self.renorm:
            self._set_renorm_population(variance)
        if self.momentum is None:
            self.num_batches.assign(batches)

    # --- Bookkeeping -----------------------------------------------------

    def _check_hooks(self):
        """Refuses the options an overridden hook would get wrong."""
        if self._overrides("compute_moments"):
            if self.unbiased_variance and not self._overrides("debias_variance"):
                self._refuse(
                    "compute_moments",
                    "unbiased_variance=True",
                    "multiplies the variance by Bessel's correction m / (m - 1), "
                    "which unbiases the sample variance only",
                    "Override debias_variance(variance, count) with your "
                    "estimator's correction, or use unbiased_variance=False",
                )
            if self.synchronized and keras.backend.backend() == "tensorflow":
                self._refuse(
                    "compute_moments",
                    "synchronized=True",
                    "all-reduces the sample moments across tf.distribute "
                    "replicas and cannot all-reduce another estimator",
                    "Use synchronized=False (and all-reduce inside your "
                    "compute_moments if you need global statistics)",
                )
        if self._overrides("normalize") and self.renorm:
            self._refuse(
                "normalize",
                "renorm=True",
                "folds its corrections r and d into gamma and beta, which is "
                "right for the standard normalization only",
                "Use renorm=False, or leave normalize alone",
            )

    def _refuse(self, hook, option, reason, advice):
        raise ValueError(
            f"{type(self).__name__} layer '{self.name}' overrides {hook}, and "
            f"{option} {reason}. {advice}. Received: {option}"
        )

    def _overrides(self, method):
        """Whether this layer's `method` is not BatchNorm's own: defined by a
        subclass, replaced on a class, or set on the layer itself."""
        current = getattr(self, method)
        return getattr(current, "__func__", current) is not _DEFAULTS[method]

    def _require_moving_statistics(self, what):
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' is not built: "
                f"call it on data or build it before {what}. Received: an "
                "unbuilt layer"
            )
        if not self.track_running_stats:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' keeps no moving "
                "statistics: it normalizes every batch with its own "
                f"statistics, so {what} has nothing to work on. Received: "
                "track_running_stats=False"
            )

    def _normalize(self, inputs, mean, variance, gamma, beta):
        return self.normalize(
            inputs,
            self._broadcast(mean, inputs),
            self._broadcast(variance, inputs),
            self._broadcast(gamma, inputs),
            self._broadcast(beta, inputs),
        )

    def _broadcast(self, tensor, inputs):
        """Reshapes a per-feature tensor so that it broadcasts to `inputs`.

        A tensor with one row per virtual batch broadcasts to inputs split
        into virtual batches.
        """
        if tensor is None:
            return None
        shape = list(self._broadcast_shape)
        if len(inputs.shape) == self._rank + 1:  # split into virtual batches
            rows = len(tensor.shape) == len(self._feature_axes) + 1
            shape = [-1 if rows else 1, *shape]
        elif self._feature_axes == [self._rank - 1]:
            return tensor  # broadcasts as it is
        return ops.reshape(tensor, shape)

    def _moment_axes(self, inputs):
        if len(inputs.shape) == self._rank + 1:  # split into virtual batches
            return [1] + [a + 1 for a in self._reduction_axes if a != 0]
        return list(self._reduction_axes)

    def _split_virtual_batches(self, inputs, mask):
        size = self.virtual_batch_size
        batch = inputs.shape[0]
        if batch is not None and batch % size:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}': the batch size "
                f"must be a multiple of virtual_batch_size={size}. Received: "
                f"batch size {batch}"
            )
        return self._group(inputs), None if mask is None else self._group(mask)

    def _group(self, tensor):
        """`(batch, ...)` as `(virtual batches, virtual_batch_size, ...)`."""
        size, rest = self.virtual_batch_size, tensor.shape[1:]
        if self.virtual_batch_grouping == "contiguous":
            return ops.reshape(tensor, (-1, size, *rest))
        # Strided: row j of the virtual batches holds examples j, j + G, ...
        grouped = ops.reshape(tensor, (size, -1, *rest))
        return ops.swapaxes(grouped, 0, 1)

    def _ungroup(self, tensor, shape):
        """The inverse of `_group`: back to the batch's order and `shape`."""
        if self.virtual_batch_grouping == "strided":
            tensor = ops.swapaxes(tensor, 0, 1)
        return ops.reshape(tensor, shape)

    def _moments_to_average(self, mean, variance, count):
        """The batch moments that the moving statistics average."""
        unbiased = (
            self._recording.unbiased
            if self._recording is not None
            else self.unbiased_variance
        )
        if unbiased:
            variance = self.debias_variance(variance, count)
        if self.virtual_batch_size is not None:
            mean = bn_ops.masked_mean(mean, [0])
            variance = bn_ops.masked_mean(variance, [0])
        return mean, variance

    def _update_state(self, mean, variance, enough):
        """Calls the update hooks with one batch's moments.

        A batch without more than one value per feature (`enough` false)
        changes no state: statically known, the hooks are not called;
        known at run time only (masks, an unknown batch size), every
        non-trainable variable of the layer (counters, renorm statistics, a
        subclass's own state) is set back by a traced `where`.
        """
        if enough is False:
            return
        saved = None
        if enough is not True:
            # `copy` takes a snapshot (converting a TensorFlow variable
            # gives the variable itself).
            saved = [(v, ops.copy(v)) for v in self.non_trainable_variables]
        momentum = self._momentum_of_this_batch(mean.dtype)
        self.update_moving_statistics(mean, variance, momentum)
        if self.renorm:
            self._after_moving_update(
                mean, variance, self._overrides("update_moving_statistics")
            )
        if saved is not None:
            for variable, before in saved:
                variable.assign(ops.where(enough, ops.copy(variable), before))

    def _momentum_of_this_batch(self, dtype):
        if self.momentum is not None:
            return ops.convert_to_tensor(self.momentum, dtype=dtype)
        count = ops.cast(self.num_batches, dtype) + 1.0
        self.num_batches.assign(count)
        # The cumulative average: moving += (batch - moving) / count.
        return 1.0 - 1.0 / count

    def _enough_values(self, inputs, axes, mask, count):
        """Whether each statistic has more than one value behind it.

        A Python bool when the shapes tell, else a scalar boolean tensor.
        """
        if isinstance(count, int):
            return count > 1
        known = [inputs.shape[a] for a in axes if inputs.shape[a] is not None]
        if mask is None and math.prod(known) > 1:
            return True  # whatever the unknown sizes (at least 1)
        return (count if mask is None else ops.min(count)) > 1

    def _record(self, mean, variance, enough):
        weight = ops.cast(enough, mean.dtype)
        self._recording.records.append(
            {"moving_mean": (mean, weight), "moving_variance": (variance, weight)}
        )

    def _warn_if_single_value(self, count):
        if self._warned_single_value or not isinstance(count, int) or count > 1:
            return
        self._warned_single_value = True
        warnings.warn(
            f"{type(self).__name__} layer '{self.name}' normalizes a training "
            "batch with one value per feature: its variance is 0, so every "
            "output equals beta whatever the input, and the moving statistics "
            "are not updated. Use batches of more than one example, or call "
            "the layer with training=False.",
            stacklevel=3,
        )

    def compute_output_shape(self, input_shape):
        options.resolve_axes(self.axis, len(input_shape), input_shape)
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
            "virtual_batch_grouping": self.virtual_batch_grouping,
            "renorm": self.renorm,
            "renorm_clipping": dict(self.renorm_clipping),
            "renorm_momentum": self.renorm_momentum,
            "unbiased_variance": self.unbiased_variance,
            "track_running_stats": self.track_running_stats,
            "synchronized": self.synchronized,
        }
        return {**super().get_config(), **config}


# BatchNorm's own hooks, as functions: what `_overrides` compares with.
_DEFAULTS = {name: getattr(BatchNorm, name) for name in HOOKS}
