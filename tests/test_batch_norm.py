"""kbn.layers.BatchNorm against keras.layers.BatchNormalization and NumPy.

These tests are backend-agnostic; `test_backends.py` runs them again on JAX.
"""

import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from kbn.layers import BatchNorm
from tests import reference
from tests.contract import run_layer_contract

# (input shape, feature axis): dense, channels-last conv, channels-first conv,
# and a sequence.
CASES = [
    ((32, 7), -1),
    ((8, 5, 6, 3), -1),
    ((8, 3, 5, 6), 1),
    # Channels first with the last axis as long as the channel axis: a
    # (1, C, 1, 1) statistic must not be added along the last axis.
    ((8, 4, 5, 4), 1),
    ((6, 4, 5), -1),
]
CASE_IDS = [
    "dense",
    "conv_channels_last",
    "conv_channels_first",
    "conv_channels_first_square",
    "sequence",
]


def _data(rng, shape, steps=4):
    # Features with different means and scales, so a per-feature error shows.
    return [
        (rng.normal(3.0, 2.0, size=shape) * rng.uniform(0.5, 4.0)).astype("float32")
        for _ in range(steps)
    ]


def _pair(axis, momentum=0.9, epsilon=1e-3, shape=None, rng=None, **kwargs):
    """A kbn layer and a Keras layer with equal settings and equal weights."""
    ours = BatchNorm(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
    theirs = keras.layers.BatchNormalization(
        axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
    )
    ours.build(shape)
    theirs.build(shape)
    for name in ("gamma", "beta"):
        ref = getattr(theirs, name)
        if ref is not None:
            value = rng.uniform(0.5, 1.5, size=ref.shape).astype("float32")
            ref.assign(value)
            getattr(ours, name).assign(value)
    return ours, theirs


@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
def test_matches_keras_in_training_and_inference(rng, shape, axis):
    batches = _data(rng, shape)
    scale = max(float(np.abs(b).max()) for b in batches)
    ours, theirs = _pair(axis, shape=shape, rng=rng)
    for x in batches:
        reference.assert_close(ours(x, training=True), theirs(x, training=True), scale)
        reference.assert_close(ours.moving_mean, theirs.moving_mean, scale)
        reference.assert_close(ours.moving_variance, theirs.moving_variance, scale**2)
    x = batches[0] + 1.0
    reference.assert_close(ours(x, training=False), theirs(x, training=False), scale)
    reference.assert_close(ours(x), theirs(x), scale)


@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
def test_matches_numpy_formula(rng, shape, axis):
    momentum, epsilon = 0.8, 1e-3
    layer = BatchNorm(axis=axis, momentum=momentum, epsilon=epsilon)
    layer.build(shape)
    gamma = rng.uniform(0.5, 1.5, size=layer.gamma.shape)
    beta = rng.normal(size=layer.beta.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)

    moving_mean = np.zeros(layer.moving_mean.shape)
    moving_variance = np.ones(layer.moving_variance.shape)
    batches = _data(rng, shape, steps=3)
    scale = max(float(np.abs(b).max()) for b in batches)
    for x in batches:
        mean, variance = reference.moments(x, axis)
        expected = reference.batch_norm(x, mean, variance, gamma, beta, epsilon, axis)
        reference.assert_close(layer(x, training=True), expected, scale)
        moving_mean = moving_mean * momentum + mean * (1 - momentum)
        moving_variance = moving_variance * momentum + variance * (1 - momentum)
    reference.assert_close(layer.moving_mean, moving_mean, scale)
    reference.assert_close(layer.moving_variance, moving_variance, scale**2)

    x = batches[0]
    expected = reference.batch_norm(
        x, moving_mean, moving_variance, gamma, beta, epsilon, axis
    )
    reference.assert_close(layer(x, training=False), expected, scale)


def test_training_output_is_normalized(rng):
    x = rng.normal(5.0, 3.0, size=(60, 100)).astype("float32")
    y = ops.convert_to_numpy(BatchNorm(epsilon=1e-6)(x, training=True))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=1e-4)


def test_list_of_axes_keeps_one_statistic_per_combination(rng):
    x = rng.normal(2.0, 3.0, size=(10, 4, 6)).astype("float32")
    layer = BatchNorm(axis=[1, 2], momentum=0.0, center=False, scale=False)
    y = layer(x, training=True)
    assert tuple(layer.moving_mean.shape) == (4, 6)
    mean, variance = reference.moments(x, [1, 2])
    reference.assert_close(layer.moving_mean, mean, 10.0)
    expected = reference.batch_norm(x, mean, variance, 1.0, 0.0, 1e-3, [1, 2])
    reference.assert_close(y, expected, 10.0)


def test_same_training_trajectory_as_keras(rng):
    """Gradients flow through the batch moments exactly as in Keras."""

    def model(bn_layer):
        keras.utils.set_random_seed(7)
        inputs = keras.Input((12,))
        h = keras.layers.Dense(16, use_bias=False)(inputs)
        h = bn_layer(h)
        h = keras.layers.Activation("relu")(h)
        outputs = keras.layers.Dense(3)(h)
        m = keras.Model(inputs, outputs)
        m.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return m

    x = rng.normal(size=(120, 12)).astype("float32")
    y = rng.integers(0, 3, size=120)
    ours = model(BatchNorm(momentum=0.9))
    theirs = model(keras.layers.BatchNormalization(momentum=0.9))
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    ours.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0)
    theirs.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(ours.weights, theirs.weights):
        reference.assert_close(a.numpy(), b.numpy())
    reference.assert_close(ours.predict(x, verbose=0), theirs.predict(x, verbose=0))


def test_training_none_and_frozen_layer_use_moving_statistics(rng):
    x = rng.normal(4.0, 2.0, size=(16, 5)).astype("float32")
    layer = BatchNorm(center=False, scale=False)
    # Initial moving statistics are mean 0 and variance 1: inference is
    # x / sqrt(1 + epsilon).
    expected = x / np.sqrt(1.0 + 1e-3)
    reference.assert_close(layer(x), expected, 10.0)
    layer.trainable = False
    reference.assert_close(layer(x, training=True), expected, 10.0)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0.0)


def test_momentum_one_freezes_statistics_and_zero_copies_the_batch(rng):
    x = rng.normal(4.0, 2.0, size=(16, 5)).astype("float32")
    frozen = BatchNorm(momentum=1.0)
    frozen(x, training=True)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), 0.0)
    copying = BatchNorm(momentum=0.0)
    copying(x, training=True)
    reference.assert_close(copying.moving_mean, x.mean(axis=0), 10.0)


def test_mask_excludes_padded_steps(rng):
    x = rng.normal(2.0, 1.5, size=(4, 6, 3)).astype("float32")
    mask = np.ones((4, 6), dtype=bool)
    mask[:, 4:] = False
    x_padded = x.copy()
    x_padded[:, 4:] = 1000.0  # would dominate the statistics if counted
    layer = BatchNorm(momentum=0.0, center=False, scale=False)
    y = layer(x_padded, training=True, mask=mask)
    mean, variance = reference.moments(x[:, :4].reshape(-1, 3))
    reference.assert_close(layer.moving_mean, mean, 10.0)
    reference.assert_close(layer.moving_variance, variance, 100.0)
    expected = reference.batch_norm(x[:, :4], mean, variance, 1.0, 0.0, 1e-3)
    reference.assert_close(ops.convert_to_numpy(y)[:, :4], expected, 10.0)


def test_mask_matches_keras(rng):
    x = rng.normal(2.0, 1.5, size=(4, 6, 3)).astype("float32")
    mask = rng.uniform(size=(4, 6)) > 0.3
    ours, theirs = _pair(-1, shape=x.shape, rng=rng)
    reference.assert_close(
        ours(x, training=True, mask=mask), theirs(x, training=True, mask=mask), 10.0
    )
    reference.assert_close(ours.moving_variance, theirs.moving_variance, 10.0)


def test_mask_of_wrong_rank_is_rejected(rng):
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"Received: mask.shape=\(4, 6, 3\)"):
        BatchNorm()(x, training=True, mask=np.ones((4, 6, 3), bool))


def test_masking_propagates_in_a_model(rng):
    """A Keras mask reaches the layer: padded steps leave the moments alone."""
    inputs = keras.Input((None, 3))
    h = keras.layers.Masking(0.0)(inputs)
    h = BatchNorm(momentum=0.0, name="bn")(h)
    outputs = keras.layers.LSTM(2)(h)
    model = keras.Model(inputs, outputs)
    x = np.zeros((2, 5, 3), "float32")
    x[:, :3] = rng.normal(4.0, 1.0, size=(2, 3, 3))
    assert model(x, training=True).shape == (2, 2)
    reference.assert_close(
        model.get_layer("bn").moving_mean, x[:, :3].reshape(-1, 3).mean(0), 10.0
    )


def test_float16_inputs_are_normalized_in_float32(rng):
    x = rng.normal(300.0, 100.0, size=(64, 4)).astype("float16")
    layer = BatchNorm(dtype="mixed_float16")
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.moving_mean.dtype) == "float32"
    # The float16 sum of squares (about 64 * 1e5) would overflow float16.
    mean, variance = reference.moments(x.astype("float32"))
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), 0.01 * variance + 0.99, rtol=1e-3
    )
    expected = reference.batch_norm(x.astype("float32"), mean, variance, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(y).astype("float32"), expected, atol=1e-2
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"axis": 1, "center": False},
        {"axis": [1, 2], "scale": False, "momentum": 0.5, "epsilon": 1e-5},
        {
            "gamma_regularizer": "l2",
            "beta_constraint": "non_neg",
            "gamma_initializer": keras.initializers.RandomUniform(0.5, 1.5),
        },
    ],
    ids=["defaults", "channels_first", "two_axes", "regularized"],
)
def test_layer_contract(kwargs, tmp_path):
    run_layer_contract(BatchNorm, kwargs, input_shape=(6, 3, 4), tmp_path=tmp_path)


def test_weights_and_names():
    layer = BatchNorm(scale=False)
    layer.build((None, 5))
    assert [w.name for w in layer.trainable_weights] == ["beta"]
    assert [w.name for w in layer.non_trainable_weights] == [
        "moving_mean",
        "moving_variance",
    ]


def test_regularizer_adds_a_loss():
    layer = BatchNorm(gamma_regularizer=keras.regularizers.L2(0.5))
    layer.build((None, 4))
    layer.gamma.assign(np.full(4, 2.0, "float32"))
    layer(np.ones((3, 4), "float32"), training=True)
    np.testing.assert_allclose(float(sum(layer.losses)), 0.5 * 4 * 4.0, rtol=1e-6)


SAVE_SCRIPT = """
import sys, json
import numpy as np
import keras
import kbn  # registers kbn's layers; no custom_objects needed
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps(keras.ops.convert_to_numpy(model(x, training=False)).tolist()))
"""


def test_keras_file_loads_in_a_new_process(rng, tmp_path):
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    h = BatchNorm(momentum=0.5)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3)(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(20, 6, 6, 2)).astype("float32")
    model.fit(x, rng.normal(size=(20, 3)), batch_size=10, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT, str(path), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = np.array(json.loads(out.stdout.strip().splitlines()[-1]), "float32")
    np.testing.assert_array_equal(
        loaded, ops.convert_to_numpy(model(x, training=False))
    )


@pytest.mark.parametrize(
    "kwargs,error,received",
    [
        ({"momentum": 1.5}, ValueError, "momentum=1.5"),
        ({"momentum": -0.1}, ValueError, "momentum=-0.1"),
        ({"momentum": "high"}, TypeError, "momentum='high'"),
        ({"epsilon": 0.0}, ValueError, "epsilon=0.0"),
        ({"epsilon": -1e-3}, ValueError, "epsilon=-0.001"),
        ({"axis": 1.0}, TypeError, "axis=1.0"),
        ({"axis": []}, TypeError, "axis=[]"),
    ],
)
def test_bad_arguments_name_the_received_value(kwargs, error, received):
    with pytest.raises(error, match=f"Received: {re.escape(received)}"):
        BatchNorm(**kwargs)


@pytest.mark.parametrize("axis", [2, -3, [1, 1]])
def test_axis_out_of_range_for_the_input(axis):
    with pytest.raises(ValueError, match=f"Received: axis={re.escape(repr(axis))}"):
        BatchNorm(axis=axis)(np.ones((4, 3), "float32"))
