"""Batch norm when the data moves: adapting a trained model's batch norms.

A model trained on one distribution (the source) and used on another (the
target: corrupted images, another camera, new classes) normalizes the
target's features with the source's statistics. These calls adapt the batch
norms of a trained model without labels:

- `adapt_batch_norm_statistics`: AdaBN (Li et al., 2016), the moving
  statistics recomputed on unlabeled target data; with `source_samples=N`,
  mixed with the source's statistics as Schneider et al. (2020) mix them;
- `mix_statistics`, `batch_norm_statistics`, `set_batch_norm_statistics`:
  that mixing as a pure function, and a model's statistics read and set;
- `use_test_batch_statistics` / `use_moving_statistics`: every batch norm
  of a model switched to the statistics of the batch it predicts
  (prediction-time batch norm, Nado et al., 2020), or to Schneider's mix of
  them with the source's, and back;
- `Tent` (Wang et al., 2021): test-time entropy minimization over the batch
  norms' `gamma` and `beta` only, with test-batch statistics, online over a
  stream of batches, resettable to the source model.

They work on kbn's `BatchNorm`. `batch_norm_statistics`,
`set_batch_norm_statistics` and `Tent` also work directly on Keras's
`BatchNormalization`; the others refuse a model that has one, naming the
layers and the call that converts them (`kbn.convert_batch_norm`).

It must not hold a layer's maths (`kbn.ops`, the layer's hooks) nor
re-derive population statistics (`kbn.population` asks the layers), and
nothing of a study (no data, no training loop, no files).
"""

import contextlib

import keras
import numpy as np
from keras import ops

from kbn import checks
from kbn import evaluation
from kbn import ops as bn_ops
from kbn.compiled import compiled
from kbn.layers.batch_norm import BatchNorm
from kbn.layers.traversal import layers_of_type
from kbn.population import recompute_batch_norm_statistics

_CONVERT = "model = kbn.convert_batch_norm(model)"


# --- Statistics: read, mix, set ---------------------------------------------


def batch_norm_statistics(model):
    """The moving statistics of every batch norm of `model`, as NumPy arrays.

    Works on kbn's `BatchNorm` and Keras's `BatchNormalization` (a kbn layer
    with `track_running_stats=False` has none and is left out).

    Returns:
        `{layer.path: (moving_mean, moving_variance)}`, float32 copies.
    """
    return {
        layer.path: (
            np.array(ops.convert_to_numpy(layer.moving_mean)),
            np.array(ops.convert_to_numpy(layer.moving_variance)),
        )
        for layer in _layers_with_statistics(model)
    }


def set_batch_norm_statistics(model, statistics):
    """Sets the moving statistics of the batch norms of `model`.

    Args:
        model: A model with kbn `BatchNorm` or Keras `BatchNormalization`
            layers.
        statistics: `{layer.path: (mean, variance)}` for every batch norm
            of the model that keeps moving statistics, as
            `batch_norm_statistics` returns.

    A kbn layer receives them through its `set_population_statistics`, so
    that state kept in step with them (renorm's `moving_stddev`) follows;
    a layer with `momentum=None` keeps its batch count.
    """
    layers = _layers_with_statistics(model)
    missing = sorted({layer.path for layer in layers} - set(statistics))
    unknown = sorted(set(statistics) - {layer.path for layer in layers})
    if missing or unknown:
        raise ValueError(
            "Invalid value for argument statistics. Expected one (mean, "
            "variance) pair per batch norm of the model, keyed by layer "
            f"path. Received: missing={missing}, unknown={unknown}"
        )
    for layer in layers:
        mean, variance = (np.asarray(a, "float32") for a in statistics[layer.path])
        if isinstance(layer, BatchNorm):
            batches = 1.0
            if layer.momentum is None:
                batches = max(float(ops.convert_to_numpy(layer.num_batches)), 1.0)
            layer.set_population_statistics(
                {"moving_mean": mean, "moving_variance": variance},
                {"moving_mean": batches, "moving_variance": batches},
            )
        else:
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def mix_statistics(source, target, source_samples, target_samples):
    """Schneider et al.'s mix of source and target statistics.

    `mean = N / (N + n) * mean_source + n / (N + n) * mean_target`, and the
    variance likewise, `variance = N / (N + n) * variance_source + n / (N +
    n) * variance_target`: the source statistics count as `N` pseudo
    samples beside the `n` target samples. As in the paper and its
    reference code, the variances are averaged as they are, without the
    term `N n / (N + n)^2 (mean_source - mean_target)^2` that the variance
    of the pooled samples would add. `N = 0` gives the target statistics,
    `N -> inf` the source's.

    Args:
        source, target: `{name: (mean, variance)}` with the same names
            (`batch_norm_statistics`).
        source_samples: `N`, a float >= 0.
        target_samples: `n`, a float > 0: the number of target examples
            behind `target` (images, not pixels, for a conv net's layers).

    Returns:
        `{name: (mean, variance)}`, float32.

    Reference:
        [Schneider et al., 2020](https://arxiv.org/abs/2006.16971),
        "Improving robustness against common corruptions by covariate shift
        adaptation" (NeurIPS 2020), section 2.
    """
    weight = _source_weight(source_samples, target_samples)
    if set(source) != set(target):
        raise ValueError(
            "Invalid value for argument target. Expected the names of source. "
            f"Received: source={sorted(source)}, target={sorted(target)}"
        )
    mixed = {}
    for name, (source_mean, source_variance) in source.items():
        target_mean, target_variance = target[name]
        mixed[name] = tuple(
            (
                weight * np.asarray(s, "float64")
                + (1.0 - weight) * np.asarray(t, "float64")
            ).astype("float32")
            for s, t in (
                (source_mean, target_mean),
                (source_variance, target_variance),
            )
        )
    return mixed


def _source_weight(source_samples, target_samples):
    """`N / (N + n)`, the arguments checked."""
    source_samples = checks.check_float(source_samples, "source_samples", minimum=0)
    target_samples = checks.check_float(target_samples, "target_samples")
    if not target_samples > 0:
        checks.fail("target_samples", target_samples, "a positive float")
    return source_samples / (source_samples + target_samples)


# --- AdaBN -------------------------------------------------------------------


def adapt_batch_norm_statistics(
    model, images, source_samples=0, batch_size=None, unbiased=False
):
    """AdaBN: every batch norm's statistics recomputed on unlabeled target data.

    Li et al.'s adaptive batch normalization: the moving mean and variance
    of each batch norm become those of its inputs on the target data, with
    the trained weights unchanged; no label is needed. The statistics are
    gathered by `kbn.recompute_batch_norm_statistics` (the layers record
    their own batch moments in a training-mode pass that changes nothing
    else). With `source_samples=N > 0`, the source's statistics then count
    as `N` pseudo samples beside the `n` target images
    (`mix_statistics`, Schneider et al.).

    Args:
        model: A built model with kbn `BatchNorm` layers. A model with
            Keras's `BatchNormalization` is refused: convert it first
            (`model = kbn.convert_batch_norm(model)`).
        images: The target inputs, without labels: an array, or an
            iterable of batches (arrays, or tuples whose first element is
            the inputs; any other element is ignored).
        source_samples: `N`, a float >= 0; 0 (the default) is AdaBN.
        batch_size: For an array: pass it in batches of this size, the
            statistics being the average of the batches' (for data too
            large for one batch). `None` (the default) passes the whole
            array as one batch: the exact statistics of the target set,
            every layer's inputs normalized by the target statistics of the
            layers below, as in AdaBN.
        unbiased: Store the unbiased variance `m / (m - 1) * variance`
            (`m` values per feature in a batch) instead of the variance of
            the target data itself. `False` (the default) makes inference
            on one batch of the target data reproduce its training-mode
            outputs exactly.

    Returns:
        `n`, the number of target examples used.

    Raises:
        TypeError: If the model has a Keras `BatchNormalization`.
        ValueError: If it has no kbn batch norm with moving statistics, or
            `images` is empty.

    References:

    - [Li et al., 2016](https://arxiv.org/abs/1603.04779), "Revisiting batch
      normalization for practical domain adaptation" (AdaBN).
    - [Schneider et al., 2020](https://arxiv.org/abs/2006.16971).

    Example:

    >>> kbn.adapt_batch_norm_statistics(model, x_target)  # AdaBN
    >>> kbn.adapt_batch_norm_statistics(model, x_target[:8], source_samples=16)
    """
    _refuse_keras_layers(model, "adapt_batch_norm_statistics")
    checks.check_float(source_samples, "source_samples", minimum=0)
    batch_size = checks.check_optional_int(batch_size, "batch_size")
    source = batch_norm_statistics(model) if source_samples > 0 else None
    counter = _ExampleCounter()
    if isinstance(images, np.ndarray) or hasattr(images, "shape"):
        if len(images) == 0:
            raise ValueError("Received no images (an empty array).")
        counter.count = len(images)
        size = len(images) if batch_size is None else batch_size
        recompute_batch_norm_statistics(
            model, images, batch_size=size, unbiased=unbiased
        )
    else:
        recompute_batch_norm_statistics(
            model, counter.batches(images), unbiased=unbiased
        )
    if source is not None:
        target = batch_norm_statistics(model)
        mixed = mix_statistics(source, target, source_samples, counter.count)
        set_batch_norm_statistics(model, mixed)
    return counter.count


class _ExampleCounter:
    """Counts the examples of an iterable of batches as they pass."""

    def __init__(self):
        self.count = 0

    def batches(self, data):
        for batch in data:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.count += int(ops.shape(inputs)[0])
            yield inputs


# --- Prediction-time batch norm ---------------------------------------------


class TestBatchStatistics:
    """The switch of `use_test_batch_statistics`: undo it with `restore()`,
    or use it as a context manager."""

    def __init__(self, model, layers, source_samples):
        self.model = model
        self.layers = layers
        self.source_samples = source_samples

    def restore(self):
        """Switches the layers back to their moving statistics."""
        for layer in self.layers:
            if isinstance(layer.__dict__.get("normalize"), _TestBatchNormalize):
                del layer.normalize
        evaluation.forget_compiled_passes(self.model)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.restore()


def use_test_batch_statistics(model, source_samples=0, group_size=None):
    """Switches every batch norm of `model` to the statistics of the test batch.

    Prediction-time batch normalization (Nado et al., 2020): in inference
    (`predict`, `training=False`), each kbn `BatchNorm` normalizes with the
    mean and variance of the batch it is given, computed over its reduction
    axes, instead of its moving statistics; nothing is updated. With
    `source_samples=N > 0` it normalizes with Schneider et al.'s mix of the
    two, `N / (N + n) * moving + n / (N + n) * batch` for the mean and the
    variance, `n` the batch's number of examples (`mix_statistics`). Training
    calls are unchanged (they normalize with batch statistics anyway). With
    `group_size=g`, each group of `g` consecutive examples of a batch is
    normalized with its own statistics (`n = g`), as if the batch were
    `batch_size / g` test batches of `g` predicted one after the other:
    many small test batches in one call.

    The switch replaces the layers' `normalize` hook on the layers
    themselves (nothing is saved with the model; the weights are not
    touched) and drops the model's compiled passes so that `predict`
    traces it again. A wrapper that compiled the model before (a
    `kbn.MultiStepTrainer`) must be rebuilt.

    The statistics are those of the whole batch: with a mask, masked
    positions count; with `virtual_batch_size`, inference uses the whole
    batch too. A batch of one example gives a feature a single value in a
    `Dense` layer's batch norm (variance 0, every output `beta`), while a
    convolution's has one per pixel.

    Args:
        model: A built model with kbn `BatchNorm` layers. A model with
            Keras's `BatchNormalization` is refused: convert it first
            (`model = kbn.convert_batch_norm(model)`).
        source_samples: `N`, a float >= 0: 0 (the default) uses the test
            batch's statistics alone.
        group_size: `None` (the default): the statistics of the whole
            batch; an int: those of each group of this many consecutive
            examples (the batch size must be a multiple of it).

    Returns:
        A `TestBatchStatistics`: `restore()` switches back (or use it in a
        `with` block); `kbn.use_moving_statistics(model)` does the same.

    Raises:
        TypeError: If the model has a Keras `BatchNormalization`.
        ValueError: If it has no kbn `BatchNorm`, or a layer that cannot
            switch: already switched, one whose `normalize` or `call` is
            overridden, a renorm layer (its corrections are folded into the
            normalization), or one without moving statistics when
            `source_samples > 0`.

    References:

    - [Nado et al., 2020](https://arxiv.org/abs/2006.10963), "Evaluating
      prediction-time batch normalization for robustness under covariate
      shift".
    - [Schneider et al., 2020](https://arxiv.org/abs/2006.16971).

    Example:

    >>> with kbn.use_test_batch_statistics(model):
    ...     logits = model.predict(x_target, batch_size=64)
    """
    _refuse_keras_layers(model, "use_test_batch_statistics")
    source_samples = checks.check_float(source_samples, "source_samples", minimum=0)
    group_size = checks.check_optional_int(group_size, "group_size")
    layers = _switchable_layers(model, source_samples, "use_test_batch_statistics")
    for layer in layers:
        layer.normalize = _TestBatchNormalize(layer, source_samples, group_size)
    evaluation.forget_compiled_passes(model)
    return TestBatchStatistics(model, layers, source_samples)


def use_moving_statistics(model):
    """Undoes `use_test_batch_statistics` on every batch norm of `model`."""
    layers = layers_of_type(model, BatchNorm)
    TestBatchStatistics(model, layers, None).restore()


class _TestBatchNormalize:
    """A layer's `normalize` hook with test-batch (or mixed) statistics.

    In inference the layer passes its moving statistics; this hook
    normalizes with the batch's own moments, or their mix with the moving
    ones, per group of `group_size` examples if set. A training call passes
    the batch moments already (mixing them with themselves changes nothing,
    and groups are not formed); inputs split into virtual batches are
    normalized as the layer gives them.
    """

    def __init__(self, layer, source_samples, group_size=None):
        self.layer = layer
        self.source_samples = source_samples
        self.group_size = group_size

    def __call__(self, inputs, mean, variance, gamma, beta):
        layer = self.layer
        axes = layer.reduction_axes
        if len(inputs.shape) != len(axes) + len(layer.feature_axes):
            return bn_ops.normalize(inputs, mean, variance, gamma, beta, layer.epsilon)
        shape = ops.shape(inputs)
        if self.group_size is not None:
            # (groups, group_size, ...): the statistics of each group.
            inputs = ops.reshape(inputs, (-1, self.group_size, *inputs.shape[1:]))
            axes = [1] + [a + 1 for a in axes if a != 0]
            mean, variance, gamma, beta = (
                None if t is None else ops.expand_dims(t, 0)
                for t in (mean, variance, gamma, beta)
            )
        batch_mean, batch_variance = bn_ops.moments(inputs, axes, keepdims=True)
        if self.source_samples > 0:
            count = ops.cast(ops.shape(inputs)[axes[0]], inputs.dtype)
            weight = self.source_samples / (self.source_samples + count)
            mean = weight * mean + (1.0 - weight) * batch_mean
            variance = weight * variance + (1.0 - weight) * batch_variance
        else:
            mean, variance = batch_mean, batch_variance
        outputs = bn_ops.normalize(inputs, mean, variance, gamma, beta, layer.epsilon)
        return ops.reshape(outputs, shape) if self.group_size is not None else outputs


def _switchable_layers(model, source_samples, what):
    layers = layers_of_type(model, BatchNorm)
    if not layers:
        raise ValueError(
            f"{what} needs a model with kbn BatchNorm layers. Received: "
            f"model={model.name!r} without any"
        )
    for layer in layers:
        reason = None
        if isinstance(layer.__dict__.get("normalize"), _TestBatchNormalize):
            reason = "is switched already (restore it first)"
        elif layer._overrides("normalize") or layer._overrides("call"):
            reason = "overrides normalize or call, which the switch replaces"
        elif layer.renorm:
            reason = "uses renorm, whose corrections the switch would drop"
        elif not layer.built:
            reason = "is not built"
        elif source_samples > 0 and not layer.track_running_stats:
            reason = "keeps no moving statistics to mix (track_running_stats=False)"
        if reason:
            raise ValueError(
                f"{type(layer).__name__} layer '{layer.name}' cannot switch to "
                f"test-batch statistics: it {reason}. Received: {what} on "
                f"model={model.name!r}"
            )
    return layers


# --- Tent --------------------------------------------------------------------


class Tent:
    """Tent: test-time entropy minimization over the batch norms' scale and offset.

    Wang et al. (2021) adapt a trained classifier while it predicts: for each
    test batch, the model normalizes with the batch's own statistics, the
    mean entropy of its softmax predictions is the loss, and one optimizer
    step updates the `gamma` and `beta` of every batch norm, nothing else.
    The next batch is predicted by the updated model (online adaptation
    over a stream); `reset()` returns to the source model.

    As in the reference implementation (github.com/DequanWang/tent): the
    parameters are the batch norms' scale and shift only; the forward pass
    runs in training mode with test-batch statistics whatever the layers'
    `trainable` flags (Tent's `configure_model` sets
    `track_running_stats=False`), and the moving statistics are neither
    used nor updated; the loss is the batch mean of `-sum(softmax(z) *
    log_softmax(z))`; the returned predictions are those of the forward
    pass before the update (`forward_and_adapt`); one step per batch; the
    default optimizer is Adam at 1e-3 (betas 0.9, 0.999, no weight decay),
    the reference's setting for CIFAR-10-C; `reset()` restores the
    parameters and the optimizer's state (`episodic=True` there resets
    before every batch).

    Works on kbn's `BatchNorm` and directly on Keras's
    `BatchNormalization` (whose training-mode statistics are the batch's:
    a frozen Keras layer, which runs in inference mode whatever `training`
    says, is refused). Other layers run in training mode too (dropout
    included, as in the reference); their state updates are discarded.

    Args:
        model: A built classifier; see `from_logits`.
        optimizer: A Keras optimizer, fresh (never applied); default
            `keras.optimizers.Adam(1e-3)`. Tent builds it for the
            parameters, and `reset()` sets its variables (step count,
            moments) back to their initial values.
        from_logits: Whether the model returns logits (default) or
            probabilities.

    Call `adapt(images)` (or the object itself) on each test batch: it
    returns the predictions (NumPy logits) and updates the parameters.

    Reference:
        [Wang et al., 2021](https://arxiv.org/abs/2006.10726), "Tent: fully
        test-time adaptation by entropy minimization" (ICLR 2021).

    Example:

    >>> tent = kbn.Tent(model)
    >>> for images in stream:
    ...     predictions = tent.adapt(images).argmax(-1)
    >>> tent.reset()  # the source model again
    """

    def __init__(self, model, optimizer=None, from_logits=True):
        self.model = model
        self.from_logits = bool(from_logits)
        kbn_layers = layers_of_type(model, BatchNorm)
        keras_layers = layers_of_type(model, keras.layers.BatchNormalization)
        for layer in keras_layers:
            if not layer.trainable:
                raise ValueError(
                    f"Keras BatchNormalization layer '{layer.name}' is frozen: "
                    "it runs in inference mode whatever `training` says, so "
                    "Tent cannot give it test-batch statistics. Set "
                    f"trainable=True on it, or convert the model first ({_CONVERT}). "
                    "Received: trainable=False"
                )
        self._switched = _switchable_layers(model, 0.0, "Tent") if kbn_layers else []
        self.parameters = [
            variable
            for layer in [*kbn_layers, *keras_layers]
            for variable in (layer.gamma, layer.beta)
            if variable is not None
        ]
        if not self.parameters:
            raise ValueError(
                "Tent needs a model with batch norms that have gamma or beta. "
                f"Received: model={model.name!r}"
            )
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            checks.fail("optimizer", optimizer, "a Keras optimizer", TypeError)
        if optimizer.built:
            checks.fail("optimizer", optimizer, "a fresh optimizer, never applied")
        optimizer.build(self.parameters)
        self.optimizer = optimizer
        self._source = [np.array(ops.convert_to_numpy(v)) for v in self.parameters]
        self._optimizer_start = [
            np.array(ops.convert_to_numpy(v)) for v in optimizer.variables
        ]
        self._step = _entropy_gradient_step(model, self.parameters, self.from_logits)
        self._apply = self._apply_gradients
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # One compiled update instead of the optimizer's eager ops.
            self._apply = tf.function(self._apply_gradients)

    def adapt(self, images):
        """Predicts `images` with test-batch statistics, then takes one step.

        Returns:
            The model's outputs for `images` before the update, as NumPy.
        """
        images = ops.convert_to_tensor(images)
        with _test_batch_statistics(self._switched):
            logits, gradients = self._step(
                [v.value for v in self.parameters],
                [v.value for v in self.model.trainable_variables],
                [v.value for v in self.model.non_trainable_variables],
                images,
            )
        self._apply(gradients)
        return ops.convert_to_numpy(logits)

    __call__ = adapt

    def _apply_gradients(self, gradients):
        self.optimizer.apply(gradients, self.parameters)

    def reset(self):
        """The source model again: parameters and optimizer as they started
        (its step count and moments back to their initial values)."""
        for variable, value in zip(self.parameters, self._source):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)


def mean_entropy(outputs, from_logits=True):
    """Tent's loss: the batch mean of the predictions' entropy,
    `-sum(p * log p)` over the last axis."""
    if from_logits:
        log_p = ops.log_softmax(outputs, axis=-1)
    else:
        log_p = ops.log(ops.clip(outputs, 1e-12, 1.0))
    return ops.mean(-ops.sum(ops.exp(log_p) * log_p, axis=-1))


@contextlib.contextmanager
def _test_batch_statistics(layers):
    """Switches `layers` while Tent's step runs (and traces), no more."""
    for layer in layers:
        layer.normalize = _TestBatchNormalize(layer, 0.0)
    try:
        yield
    finally:
        for layer in layers:
            del layer.normalize


def _entropy_gradient_step(model, parameters, from_logits):
    """A compiled `(parameter values, trainable values, non-trainable
    values, images) -> (outputs, gradients)`: the mean entropy of the
    training-mode outputs and its gradient with respect to `parameters`,
    which replace their variables in the pass. State updates are dropped."""
    positions = {id(v): i for i, v in enumerate(parameters)}

    def entropy(parameter_values, trainable, non_trainable, images):
        def substituted(variables, values):
            return [
                parameter_values[positions[id(v)]] if id(v) in positions else value
                for v, value in zip(variables, values)
            ]

        outputs, _ = model.stateless_call(
            substituted(model.trainable_variables, trainable),
            substituted(model.non_trainable_variables, non_trainable),
            images,
            training=True,
        )
        return mean_entropy(outputs, from_logits), outputs

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gradient = jax.value_and_grad(entropy, has_aux=True)

        def step(parameter_values, trainable, non_trainable, images):
            (_, outputs), gradients = gradient(
                parameter_values, trainable, non_trainable, images
            )
            return outputs, gradients

    elif backend == "tensorflow":
        import tensorflow as tf

        def step(parameter_values, trainable, non_trainable, images):
            with tf.GradientTape() as tape:
                tape.watch(parameter_values)
                loss, outputs = entropy(
                    parameter_values, trainable, non_trainable, images
                )
            return outputs, tape.gradient(loss, parameter_values)

    else:
        raise ValueError(
            "Tent computes gradients with JAX or TensorFlow. Received: "
            f"backend={backend!r}"
        )
    return compiled(step)


# --- Layers ------------------------------------------------------------------


def _layers_with_statistics(model):
    layers = [
        layer
        for layer in layers_of_type(model, (BatchNorm, keras.layers.BatchNormalization))
        if getattr(layer, "track_running_stats", True)
    ]
    if not layers:
        raise ValueError(
            "The model has no batch norm with moving statistics (kbn BatchNorm "
            "or keras BatchNormalization). Received: "
            f"model={model.name!r}"
        )
    return layers


def _refuse_keras_layers(model, what):
    """Refuses Keras's `BatchNormalization`, pointing to the conversion."""
    keras_layers = layers_of_type(model, keras.layers.BatchNormalization)
    if keras_layers:
        names = [layer.name for layer in keras_layers]
        raise TypeError(
            f"{what} works on kbn's BatchNorm, and the model has Keras "
            f"BatchNormalization layers {names}. Convert them first, weights "
            f"and statistics carried over: {_CONVERT}. Received: "
            f"model={model.name!r}"
        )
