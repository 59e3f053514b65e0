"""Model builders of the study: the MLP with and without batch norm, the deep
conv net, and two networks built with Keras's batch norm for MNIST (a small
ResNet, and `keras.applications`' MobileNetV2).

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


def build_mobilenet_v2(alpha=0.35, input_shape=(28, 28, 1), num_classes=10, name=None):
    """`keras.applications.MobileNetV2` (`weights=None`) as an MNIST classifier.

    The digits are zero-padded to 32x32 (the smallest input MobileNetV2
    takes) and repeated into three channels; the backbone (a nested model,
    52 `keras.layers.BatchNormalization` layers with Keras's momentum 0.999)
    ends in global average pooling and a Dense layer of `num_classes`
    logits. Its weights come from Keras's seeded initializers: built twice
    after the same `kbn.set_random_seed`, it starts from the same weights.

    Returns:
        An uncompiled functional `keras.Model` built with Keras's batch norm.
    """
    height, width = input_shape[:2]
    pad = ((max(0, 32 - height) + 1) // 2, (max(0, 32 - width) + 1) // 2)
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.ZeroPadding2D(pad, name="pad")(inputs)
    size = (height + 2 * pad[0], width + 2 * pad[1])
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="rgb")([x, x, x])
    backbone = keras.applications.MobileNetV2(
        input_shape=(*size, 3),
        alpha=alpha,
        include_top=False,
        weights=None,
        pooling="avg",
    )
    outputs = keras.layers.Dense(num_classes, name="logits")(backbone(x))
    return keras.Model(inputs, outputs, name=name or "mobilenet_v2")


def build_resnet(
    widths=(16, 32, 64), input_shape=(28, 28, 1), num_classes=10, name=None
):
    """A small ResNet built with `keras.layers.BatchNormalization`.

    A 3x3 convolution of `widths[0]` filters, then per width one residual
    block (He et al., 2016): two 3x3 convolutions, each followed by batch
    norm, ReLU after the first and after the sum; the first convolution of
    every block after the first has stride 2, and its shortcut is a 1x1
    convolution of stride 2 with batch norm. Global average pooling and a
    Dense layer of `num_classes` logits. With the default widths: 8 batch
    norms (Keras's defaults: momentum 0.99, epsilon 1e-3), 80k weights.
    Its weights come from Keras's seeded initializers: built twice after
    the same `kbn.set_random_seed`, it starts from the same weights.

    Returns:
        An uncompiled functional `keras.Model`.
    """
    layers = keras.layers

    def conv(filters, kernel, strides, label):
        return layers.Conv2D(
            filters, kernel, strides=strides, padding="same", use_bias=False,
            name=label,
        )  # fmt: skip

    inputs = keras.Input(input_shape, name="images")
    x = conv(widths[0], 3, 1, "stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate(widths, start=1):
        strides = 1 if i == 1 else 2
        shortcut = x
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = conv(filters, 1, strides, f"block{i}_shortcut_conv")(x)
            shortcut = layers.BatchNormalization(name=f"block{i}_shortcut_bn")(shortcut)
        y = conv(filters, 3, strides, f"block{i}_conv1")(x)
        y = layers.BatchNormalization(name=f"block{i}_bn1")(y)
        y = layers.ReLU(name=f"block{i}_relu1")(y)
        y = conv(filters, 3, 1, f"block{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"block{i}_bn2")(y)
        x = layers.ReLU(name=f"block{i}_relu2")(
            layers.Add(name=f"block{i}_add")([shortcut, y])
        )
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "resnet")
