"""The paper's inference statistics, recomputed after training.

Ioffe & Szegedy (2015), Algorithm 2: once the network is trained, the
inference mean and variance of each batch norm are the averages of the batch
statistics over the training data, `E[x] = E_B[mean_B]` and
`Var[x] = m / (m - 1) * E_B[var_B]`, computed with the final weights, rather
than moving averages collected while the weights were still changing.
`recompute_batch_norm_statistics` does that for every kbn `BatchNorm` of a
model (PyTorch's `torch.optim.swa_utils.update_bn` does the same for its
layers).
"""

import keras
import numpy as np
from keras import ops

from kbn.layers import BatchNorm
from kbn.layers import BNLSTMCell


def batch_norm_layers(model):
    """Every kbn `BatchNorm` and `BNLSTMCell` in `model`, nested ones included."""
    found, stack, seen = [], [model], set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, (BatchNorm, BNLSTMCell)):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        cell = getattr(layer, "cell", None)
        if cell is not None:
            stack.append(cell)
        stack.extend(
            value
            for value in vars(layer).values()
            if isinstance(value, keras.layers.Layer) and value is not layer
        )
    return found


def recompute_batch_norm_statistics(
    model, data, num_batches=None, batch_size=60, unbiased=True
):
    """Replaces moving statistics by population statistics of `data`.

    Resets every kbn `BatchNorm` of `model` that tracks running statistics,
    (and every `BNLSTMCell`, per time step), then passes `data` through the
    model in training mode (batch statistics)
    and sets each layer's moving mean and variance to the plain average of
    its batch moments over all batches, the variance made unbiased with
    `m / (m - 1)` (`unbiased=True`, the paper's choice). No trainable weight
    changes. The layers' own settings (momentum and so on) are restored
    afterwards.

    Args:
        model: A built Keras model.
        data: An array of inputs (split into `batch_size` batches), or an
            iterable of batches, each inputs or an `(inputs, targets)` tuple.
        num_batches: Optional cap on the number of batches used.
        batch_size: Batch size when `data` is an array.
        unbiased: Store the unbiased variance.

    Returns:
        The number of batches used.
    """
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
    if any(getattr(layer, "renorm", False) for layer in layers):
        raise ValueError(
            "recompute_batch_norm_statistics does not support renorm=True "
            "layers (their moving statistics are standard deviations)."
        )
    saved = [
        (layer.momentum, getattr(layer, "unbiased_variance", None), layer.trainable)
        for layer in layers
    ]
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    try:
        for layer in layers:
            # With momentum 0 each pass leaves exactly that batch's moments
            # in the moving statistics; they are summed here.
            layer.momentum = 0.0
            if isinstance(layer, BatchNorm):
                layer.unbiased_variance = bool(unbiased)
            layer.trainable = True
        step = _compiled_training_pass(model)
        trainable = [v.value for v in model.trainable_variables]
        initial = [v.value for v in model.non_trainable_variables]
        sums = {}
        used = 0
        for batch in _batches(data, batch_size):
            if num_batches is not None and used >= num_batches:
                break
            state = step(trainable, initial, ops.convert_to_tensor(batch))
            for layer in layers:
                for variable in _statistics(layer):
                    value = state[position[id(variable)]]
                    key = id(variable)
                    sums[key] = value if key not in sums else sums[key] + value
            used += 1
        if used == 0:
            raise ValueError("Received no batches in data.")
        for layer in layers:
            for variable in _statistics(layer):
                variable.assign(sums[id(variable)] / used)
        for layer, (momentum, _, _) in zip(layers, saved):
            if isinstance(layer, BNLSTMCell):
                layer.num_updates.assign(
                    np.full(layer.num_updates.shape, used, "float32")
                )
            elif momentum is None:
                layer.num_batches.assign(float(used))
    finally:
        for layer, (momentum, unbiased_variance, trainable) in zip(layers, saved):
            layer.momentum = momentum
            if isinstance(layer, BatchNorm):
                layer.unbiased_variance = unbiased_variance
            layer.trainable = trainable
    return used


def _statistics(layer):
    if isinstance(layer, BNLSTMCell):
        return [
            getattr(layer, f"{name}_{part}")
            for part in "xhc"
            for name in ("moving_mean", "moving_variance")
        ]
    return [layer.moving_mean, layer.moving_variance]


def _batches(data, batch_size):
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        for start in range(0, len(data), batch_size):
            yield np.asarray(data[start : start + batch_size])
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield batch


def _compiled_training_pass(model):
    def step(trainable, non_trainable, inputs):
        _, non_trainable = model.stateless_call(
            trainable, non_trainable, inputs, training=True
        )
        return non_trainable

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(step)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(step, reduce_retracing=True)
    return step
