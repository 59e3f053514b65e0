"""Folding batch norm into the preceding layer, for inference.

In inference, batch norm is an affine map per feature, `y = x * scale +
offset`; for the standard layer `scale = gamma / sqrt(moving_variance +
epsilon)` and `offset = beta - moving_mean * scale`
(`kbn.ops.fold_into_affine`). When it directly follows a `Dense` or
convolution without activation, whose output nothing else reads, the map
merges into that layer: `kernel' = kernel * scale` (per output feature) and
`bias' = bias * scale + offset`. The folded model gives the same inference
outputs with one layer fewer per batch norm.

The map is the layer's to give: a kbn `BatchNorm`, subclasses included,
answers `inference_affine()` (or raises if its inference map is not affine);
Keras's `BatchNormalization` is read in closed form.

It must not hold a layer's maths: it asks each layer for its inference map
(`inference_affine`).
"""

import keras
import numpy as np
from keras import ops

from kbn import ops as bn_ops
from kbn.layers import BatchNorm

_FOLDABLE = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def fold_batch_norm(model):
    """A copy of `model` with batch norms folded into preceding layers.

    Works for kbn's `BatchNorm` (and its subclasses, through their
    `inference_affine()`) and for `keras.layers.BatchNormalization`. A batch
    norm is folded when it directly follows a `Dense`, `Conv1D`, `Conv2D` or
    `Conv3D` layer with a linear activation, that layer's output feeds only
    the batch norm, and the batch norm normalizes that layer's feature axis.
    Other batch norms are kept as they are, and so is a kbn `BatchNorm` with
    `track_running_stats=False`, which normalizes every batch with its own
    statistics and so has no fixed inference map.

    Args:
        model: A Keras functional model.

    Returns:
        A new functional model for inference (its weights are copies).

    Raises:
        ValueError: If a batch norm to fold has an inference map that is not
            affine per feature (a subclass's `normalize`); the message names
            the layer.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        raise TypeError(
            "Invalid value for argument model. Expected a functional "
            f"keras.Model. Received: model of type {type(model).__name__}"
        )
    pairs = _foldable_pairs(model)
    folded_producers = {id(producer): norm for producer, norm in pairs}
    skipped = {id(norm) for _, norm in pairs}
    originals = {}

    def clone_function(layer):
        config = layer.get_config()
        if id(layer) in folded_producers:
            config["use_bias"] = True
        clone = layer.__class__.from_config(config)
        originals[id(clone)] = layer
        return clone

    def call_function(layer, *args, **kwargs):
        if id(originals[id(layer)]) in skipped:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(
        model, clone_function=clone_function, call_function=call_function
    )
    for clone in folded.layers:
        original = originals.get(id(clone))
        if original is None:
            continue
        if id(original) in folded_producers:
            kernel, bias = _folded_weights(original, folded_producers[id(original)])
            clone.kernel.assign(kernel)
            clone.bias.assign(bias)
        elif original.weights:
            clone.set_weights(original.get_weights())
    return folded


def _folded_weights(producer, norm):
    kernel = ops.convert_to_numpy(producer.kernel).astype("float64")
    out_features = kernel.shape[-1]
    bias = (
        ops.convert_to_numpy(producer.bias).astype("float64")
        if producer.use_bias
        else np.zeros(out_features)
    )
    scale, offset = (np.asarray(_numpy(v)).reshape(-1) for v in _affine_map(norm))
    dtype = keras.backend.standardize_dtype(producer.kernel.dtype)
    return (kernel * scale).astype(dtype), (bias * scale + offset).astype(dtype)


def _affine_map(norm):
    """`(scale, offset)` of a batch norm's inference map."""
    if isinstance(norm, BatchNorm):
        return norm.inference_affine()
    return bn_ops.fold_into_affine(
        _numpy(norm.moving_mean),
        _numpy(norm.moving_variance),
        None if norm.gamma is None else _numpy(norm.gamma),
        None if norm.beta is None else _numpy(norm.beta),
        norm.epsilon,
    )


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value), "float64")


def _foldable_pairs(model):
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, (BatchNorm, keras.layers.BatchNormalization)):
            continue
        if len(layer._inbound_nodes) != 1:
            continue
        if isinstance(layer, BatchNorm) and (not layer.track_running_stats):
            continue
        node = layer._inbound_nodes[0]
        if len(node.input_tensors) != 1:
            continue
        producer = node.input_tensors[0]._keras_history.operation
        if not isinstance(producer, _FOLDABLE):
            continue
        if producer.activation is not keras.activations.linear:
            continue
        if len(producer._inbound_nodes) != 1 or len(producer._outbound_nodes) != 1:
            continue
        if _feature_axis(producer, len(node.input_tensors[0].shape)) != _norm_axes(
            layer, len(node.input_tensors[0].shape)
        ):
            continue
        pairs.append((producer, layer))
    return pairs


def _feature_axis(producer, rank):
    if getattr(producer, "data_format", "channels_last") == "channels_first":
        return [1]
    return [rank - 1]


def _norm_axes(norm, rank):
    axes = [norm.axis] if isinstance(norm.axis, int) else list(norm.axis)
    return sorted(a % rank for a in axes)
