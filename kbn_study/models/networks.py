"""Model builders of the study: the MLP with and without batch norm.

Both networks of a comparison are built from one list of initial kernels, so
they start from identical weights and differ only by batch normalization.

It must not train, load data or hold normalization maths (`kbn.layers`).
"""

import keras
import numpy as np

from kbn import checks
from kbn.layers import BatchNorm

MLP_LAYER_SIZES = (784, 100, 100, 100, 10)
GOOD_WEIGHT_SCALE = 0.05
BAD_WEIGHT_SCALE = 5.0


def initial_weights(layer_sizes=MLP_LAYER_SIZES, scale=GOOD_WEIGHT_SCALE, seed=None):
    """Kernels drawn from a normal distribution N(0, scale), as in the study.

    Args:
        layer_sizes: Sizes of the input, hidden and output layers.
        scale: Standard deviation: the study's good weights are 0.05, its bad
            ones 5.0.
        seed: Seed of the NumPy generator; `None` draws fresh weights.

    Returns:
        A list of float32 arrays, `(layer_sizes[i], layer_sizes[i + 1])` each.
    """
    sizes = tuple(layer_sizes)
    if len(sizes) < 2 or not all(checks.is_int(s) and s > 0 for s in sizes):
        checks.fail("layer_sizes", layer_sizes, "at least two positive ints")
    checks.check_float(scale, "scale", positive=True)
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0.0, scale, size=(n_in, n_out)).astype("float32")
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]


def build_mlp(initial_weights, activation="relu", batch_norm=False, name=None):
    """The study's fully connected network.

    Every hidden layer is `Dense -> [BatchNorm] -> activation`; with batch
    norm the hidden Dense layers have no bias (beta takes its place). The
    output layer is a linear Dense with a bias, without batch norm, returning
    logits.

    Args:
        initial_weights: List of kernels from `initial_weights()`; the last is
            the output layer's. Biases start at zero.
        activation: Name of a Keras activation for the hidden layers, such as
            `"relu"` or `"sigmoid"`.
        batch_norm: `False`, `True` (kbn's `BatchNorm` with its defaults) or a
            callable returning a new normalization layer, for example
            `keras.layers.BatchNormalization`.
        name: Model name; defaults to `"mlp_with_bn"` / `"mlp_without_bn"`.

    Returns:
        An uncompiled functional `keras.Model` from `(784,)` inputs to logits.
    """
    kernels = [np.asarray(w, dtype="float32") for w in initial_weights]
    if not kernels or any(k.ndim != 2 for k in kernels):
        raise ValueError(
            "Invalid value for argument initial_weights. Expected a list of 2-D "
            f"kernels. Received: shapes={[np.shape(k) for k in kernels]}"
        )
    for a, b in zip(kernels[:-1], kernels[1:]):
        if a.shape[1] != b.shape[0]:
            raise ValueError(
                "Invalid value for argument initial_weights: consecutive kernels "
                f"must chain. Received: shapes={[k.shape for k in kernels]}"
            )
    try:
        keras.activations.get(activation)
    except ValueError:
        checks.fail("activation", activation, "the name of a Keras activation")
    make_norm = _normalization_factory(batch_norm)
    if name is None:
        name = "mlp_with_bn" if make_norm else "mlp_without_bn"

    inputs = keras.Input((kernels[0].shape[0],), name="images")
    x = inputs
    dense_layers = []
    for i, kernel in enumerate(kernels[:-1], start=1):
        dense = keras.layers.Dense(
            kernel.shape[1], use_bias=make_norm is None, name=f"dense_{i}"
        )
        dense_layers.append(dense)
        x = dense(x)
        if make_norm is not None:
            x = make_norm(name=f"batch_norm_{i}")(x)
        x = keras.layers.Activation(activation, name=f"{activation}_{i}")(x)
    output = keras.layers.Dense(kernels[-1].shape[1], name="logits")
    dense_layers.append(output)
    outputs = output(x)
    model = keras.Model(inputs, outputs, name=name)
    for dense, kernel in zip(dense_layers, kernels):
        dense.kernel.assign(kernel)
    return model


def _normalization_factory(batch_norm):
    if batch_norm is False or batch_norm is None:
        return None
    if batch_norm is True:
        return BatchNorm
    if callable(batch_norm):
        return batch_norm
    checks.fail(
        "batch_norm",
        batch_norm,
        "a bool or a callable returning a normalization layer",
        TypeError,
    )


def build_convnet(
    depth=19,
    batch_norm=False,
    width=4,
    stride_every=3,
    dense_units=100,
    input_shape=(28, 28, 1),
    num_classes=10,
    seed=0,
    name=None,
):
    """A deep stack of 3x3 convolutions, with or without batch norm.

    Layer `i` (1 to `depth`) is a 3x3 convolution with `i * width` filters,
    stride 2 when `i` is a multiple of `stride_every` (else 1), "same"
    padding and ReLU; with `batch_norm`, a kbn `BatchNorm` over each feature
    map (moments over batch, height and width) sits between the convolution
    and the ReLU, and the convolution has no bias. Then a Dense layer of
    `dense_units` (batch-normalized too), ReLU, and a linear output of
    `num_classes` logits. This is the conv net of the study's follow-up
    notebook (19 convolutions, Adam at 0.002, batches of 64).

    The kernels come from seeded Glorot-uniform initializers, so the
    variants with and without batch norm built with one seed start from the
    same kernels.

    Returns:
        An uncompiled functional `keras.Model`, channels-last inputs.
    """
    for arg, value in (
        ("depth", depth),
        ("width", width),
        ("stride_every", stride_every),
    ):
        checks.check_int(value, arg)
    make_norm = _normalization_factory(batch_norm)
    if name is None:
        name = "convnet_with_bn" if make_norm else "convnet_without_bn"

    def initializer(index):
        return keras.initializers.GlorotUniform(seed=seed * 1000 + index)

    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for i in range(1, depth + 1):
        x = keras.layers.Conv2D(
            i * width,
            3,
            strides=2 if i % stride_every == 0 else 1,
            padding="same",
            use_bias=make_norm is None,
            kernel_initializer=initializer(i),
            name=f"conv_{i}",
        )(x)
        if make_norm is not None:
            x = make_norm(name=f"batch_norm_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        dense_units,
        use_bias=make_norm is None,
        kernel_initializer=initializer(depth + 1),
        name="dense",
    )(x)
    if make_norm is not None:
        x = make_norm(name="batch_norm_dense")(x)
    x = keras.layers.ReLU(name="relu_dense")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=initializer(depth + 2), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name)
