"""The paper's inference statistics, recomputed after training.

Ioffe & Szegedy (2015), Algorithm 2: once the network is trained, the
inference mean and variance of each batch norm are the averages of the batch
statistics over the training data, `E[x] = E_B[mean_B]` and
`Var[x] = m / (m - 1) * E_B[var_B]`, computed with the final weights, rather
than moving averages collected while the weights were still changing.
`recompute_batch_norm_statistics` does that for every kbn `BatchNorm` and
`BNLSTM` of a model (PyTorch's `torch.optim.swa_utils.update_bn` does the
same for its layers).

It asks each layer for its statistics rather than re-deriving them: inside
`layer.recording_statistics(unbiased)`, a training-mode call of the layer
computes its batch moments with its own `compute_moments` and
`debias_variance` and records them instead of updating its state; the
averages go back through `layer.set_population_statistics`. A subclass that
changes the estimator therefore gets population statistics of its own
estimator, or a clear error.

It must not re-derive a layer's statistics: it asks the layers, through
their recording protocol (`kbn.layers.recording`).
"""

import contextlib
import json

import numpy as np
from keras import ops

from kbn import checks
from kbn.compiled import compiled
from kbn.compiled import model_cache
from kbn.layers.batch_norm import HOOKS
from kbn.layers.traversal import batch_norm_layers


def recompute_batch_norm_statistics(
    model, data, num_batches=None, batch_size=60, unbiased=True
):
    """Replaces moving statistics by population statistics of `data`.

    Passes `data` through the model in training mode (every batch norm
    normalizes with batch statistics, renorm layers with their corrections,
    as in training) and sets the moving mean and variance
    of every kbn `BatchNorm` that tracks running statistics (and of every
    `BNLSTM`, per time step) to the plain average of its batch moments
    over all batches, each batch variance made unbiased first (`unbiased=
    True`, the paper's choice: `m / (m - 1)` for the sample variance, `m`
    the number of values per feature in the batch). A batch that gives a
    layer a single value per feature does not count for that layer. No
    trainable weight and no other state changes; a layer with
    `momentum=None` counts the batches used in `num_batches`, and a renorm
    layer's `moving_stddev` becomes `sqrt(moving_variance + epsilon)`.

    Args:
        model: A built Keras model.
        data: An array of inputs (split into `batch_size` batches), or an
            iterable of batches, each inputs or an `(inputs, targets)` tuple.
        num_batches: Optional cap on the number of batches used.
        batch_size: Batch size when `data` is an array.
        unbiased: Store the unbiased variance.

    Returns:
        The number of batches passed through the model (a batch with one
        value per feature for a layer is passed, but does not count for
        that layer).

    Raises:
        ValueError: If the model has no such layer, `data` has no batch, or
            a layer cannot give these statistics (for example `unbiased=True`
            for a subclass whose `compute_moments` is not the sample
            variance and which does not override `debias_variance`); the
            message names the layer.
    """
    num_batches = checks.check_optional_int(num_batches, "num_batches")
    batch_size = checks.check_int(batch_size, "batch_size")
    layers = [
        layer
        for layer in batch_norm_layers(model)
        if getattr(layer, "track_running_stats", True)
    ]
    if not layers:
        raise ValueError(
            "The model has no kbn BatchNorm layer with running statistics. "
            f"Received: model={model.name!r}"
        )
    collectors = [_RecordedStatistics(layer, unbiased) for layer in layers]
    used = 0
    with contextlib.ExitStack() as stack:
        record_lists = [stack.enter_context(c.recording()) for c in collectors]
        step = _compiled_training_pass(model, layers, unbiased)
        trainable = [v.value for v in model.trainable_variables]
        initial = [v.value for v in model.non_trainable_variables]
        for batch in _batches(data, batch_size):
            if num_batches is not None and used >= num_batches:
                break
            inputs = ops.convert_to_tensor(batch)
            records, state = step(record_lists, trainable, initial, inputs)
            state = dict(zip(map(id, model.non_trainable_variables), state))
            for collector, layer_records in zip(collectors, records):
                collector.add(layer_records, state, inputs.shape[0])
            used += 1
    if used == 0:
        raise ValueError("Received no batches in data.")
    for collector in collectors:
        collector.finish()
    return used


class _Totals:
    """Weighted sums of recorded statistics, in float64."""

    def __init__(self):
        self.sums = {}
        self.weights = {}

    def add(self, name, value, weight):
        value = np.asarray(ops.convert_to_numpy(value), "float64")
        weight = np.asarray(ops.convert_to_numpy(weight), "float64")
        weighted = np.where(weight > 0, value, 0.0) * weight
        if name not in self.sums:
            self.sums[name] = np.zeros_like(weighted)
            self.weights[name] = np.zeros_like(weight)
        self.sums[name] = self.sums[name] + weighted
        self.weights[name] = self.weights[name] + weight

    def averages(self):
        return {
            name: self.sums[name] / np.maximum(self.weights[name], 1e-300)
            for name in self.sums
        }


class _RecordedStatistics:
    """A layer that implements the recording protocol itself."""

    def __init__(self, layer, unbiased):
        self.layer = layer
        self.unbiased = bool(unbiased)
        self.totals = _Totals()

    def recording(self):
        return self.layer.recording_statistics(self.unbiased)

    def add(self, records, state, batch_size):
        for record in records:
            for name, (value, weight) in record.items():
                self.totals.add(name, value, weight)

    def finish(self):
        if not self.totals.sums:
            raise ValueError(
                f"{type(self.layer).__name__} layer '{self.layer.name}' was not "
                "called in training mode by the model, so it recorded no "
                "statistics. Received: no records"
            )
        self.layer.set_population_statistics(
            self.totals.averages(), self.totals.weights
        )


def _batches(data, batch_size):
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        for start in range(0, len(data), batch_size):
            yield np.asarray(data[start : start + batch_size])
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield batch


def _compiled_training_pass(model, layers, unbiased):
    """A compiled training-mode pass returning the layers' records and state.

    Called as `step(record_lists, trainable, non_trainable, inputs)`: the
    layers append their records to `record_lists` (those of the recording
    contexts of this call) while the pass is traced, and the compiled
    function returns them as outputs. The pass is kept on the model
    (`kbn.compiled.model_cache`), so that computing statistics again (AdaBN
    on one target set after another) does not trace the model again; a
    layer whose configuration, `trainable` flag or hooks changed since gets
    a new pass.
    """
    key = (
        "population",
        bool(unbiased),
        tuple((id(layer), _fingerprint(layer)) for layer in layers),
    )
    cache = model_cache(model)
    if key not in cache:
        current = []

        def step(trainable, non_trainable, inputs):
            record_lists = current[0]
            for records in record_lists:
                if records is not None:
                    records.clear()
            _, non_trainable = model.stateless_call(
                trainable, non_trainable, inputs, training=True
            )
            records = [[] if r is None else list(r) for r in record_lists]
            return records, non_trainable

        cache[key] = (compiled(step), current)
    function, current = cache[key]

    def call(record_lists, trainable, non_trainable, inputs):
        current[:] = [record_lists]
        return function(trainable, non_trainable, inputs)

    return call


def _fingerprint(layer):
    """What a traced pass depends on, beside the weights: the layer's
    configuration, its `trainable` flag and its hooks (replaced on the class
    or on the layer)."""
    hooks = tuple(
        (name, id(getattr(getattr(layer, name), "__func__", getattr(layer, name))))
        for name in HOOKS
        if hasattr(layer, name)
    )
    # The layer's plain public attributes (its constructor's arguments, a
    # subclass's own): `get_config` would serialize the initializers, and
    # Keras's serialization imports TensorFlow when it is installed.
    config = json.dumps(
        {
            name: value
            for name, value in vars(layer).items()
            if not name.startswith("_") and isinstance(value, _PLAIN)
        },
        sort_keys=True,
        default=repr,
    )
    return config, bool(layer.trainable), hooks


_PLAIN = (bool, int, float, str, tuple, list, dict, type(None))
