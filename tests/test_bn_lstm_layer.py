"""BNLSTM: the paper's equations against NumPy, scan against a Python loop,
statistics after the loop, population statistics."""

import keras
import numpy as np
import pytest

import kbn
from kbn.layers import BNLSTM
from tests import reference

UNITS, FEATURES, MAX_STEPS = 5, 3, 3
NAMES = [
    "moving_mean_input",
    "moving_covariance_input",
    "moving_mean_h",
    "moving_variance_h",
    "moving_mean_c",
    "moving_variance_c",
]


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def new_state(features=FEATURES, max_steps=MAX_STEPS):
    return {
        "moving_mean_input": np.zeros((max_steps, features)),
        "moving_covariance_input": np.zeros((max_steps, features, features)),
        "moving_mean_h": np.zeros((max_steps, 4 * UNITS)),
        "moving_variance_h": np.ones((max_steps, 4 * UNITS)),
        "moving_mean_c": np.zeros((max_steps, UNITS)),
        "moving_variance_c": np.ones((max_steps, UNITS)),
        "num_updates": np.zeros(max_steps),
    }


def numpy_bn_lstm(layer, x, state, training, momentum, epsilon=1e-3):
    """The paper's equations in NumPy, float64; updates `state` when training.

    Training: batch moments per step (the input term's from `W_x x_t`
    directly); then, per row, the average of the steps sharing it, folded
    into a debiased moving average. Inference: the input term's statistics
    from the input moments and the *current* kernel.
    """
    kernel, recurrent, bias = (
        _np(layer.kernel),
        _np(layer.recurrent_kernel),
        _np(layer.bias),
    )
    gamma = {p: _np(getattr(layer, f"gamma_{p}")) for p in "xhc"}
    beta_c = _np(layer.beta_c)
    batch, steps, _ = x.shape
    max_steps = len(state["num_updates"])
    h = np.zeros((batch, UNITS))
    c = np.zeros((batch, UNITS))
    outputs, seen = [], {name: [] for name in NAMES}

    def bn(value, mean, variance, g, beta=0.0):
        return (value - mean) / np.sqrt(variance + epsilon) * g + beta

    for t in range(steps):
        row = min(t, max_steps - 1)
        wx = x[:, t] @ kernel
        if training:
            xc = x[:, t] - x[:, t].mean(0)
            seen["moving_mean_input"].append(x[:, t].mean(0))
            seen["moving_covariance_input"].append(xc.T @ xc / batch)
            mean_x, variance_x = wx.mean(0), wx.var(0)
        else:
            mean_x = state["moving_mean_input"][row] @ kernel
            variance_x = np.einsum(
                "fg,fk,gk->k", state["moving_covariance_input"][row], kernel, kernel
            )
        wh = h @ recurrent
        if training:
            mean_h, variance_h = wh.mean(0), wh.var(0)
        else:
            mean_h = state["moving_mean_h"][row]
            variance_h = state["moving_variance_h"][row]
        z = bn(wx, mean_x, variance_x, gamma["x"])
        z = z + bn(wh, mean_h, variance_h, gamma["h"]) + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        if training:
            mean_c, variance_c = c.mean(0), c.var(0)
        else:
            mean_c = state["moving_mean_c"][row]
            variance_c = state["moving_variance_c"][row]
        h = _sigmoid(o) * np.tanh(bn(c, mean_c, variance_c, gamma["c"], beta_c))
        for name, value in (
            ("moving_mean_h", mean_h),
            ("moving_variance_h", variance_h),
            ("moving_mean_c", mean_c),
            ("moving_variance_c", variance_c),
        ):
            seen[name].append(value)
        outputs.append(h)
    if training and batch > 1:
        for row in range(min(steps, max_steps)):
            n = state["num_updates"][row] + 1
            rate = momentum * (1 - momentum ** (n - 1)) / (1 - momentum**n)
            last = row == max_steps - 1
            for name in NAMES:
                value = np.mean(seen[name][row:], 0) if last else seen[name][row]
                state[name][row] = state[name][row] * rate + value * (1 - rate)
            state["num_updates"][row] = n
    return np.stack(outputs, 1)


def _gammas_away_from_start(layer, rng):
    # Gammas away from their 0.1 start, so that a mix-up of parts shows.
    for part, value in (("x", 0.5), ("h", 1.5), ("c", 0.8)):
        variable = getattr(layer, f"gamma_{part}")
        variable.assign(np.full(variable.shape, value))
    layer.beta_c.assign(rng.normal(size=UNITS))


@pytest.mark.parametrize("steps", [2, 5], ids=["shorter", "longer"])
def test_per_time_step_statistics_match_numpy(rng, steps):
    """Rows per step; steps from max_time_steps - 1 on share the last row."""
    momentum = 0.7
    layer = BNLSTM(UNITS, MAX_STEPS, momentum=momentum, return_sequences=True)
    x = rng.normal(0.5, 2.0, size=(8, steps, FEATURES)).astype("float32")
    layer.build(x.shape)
    _gammas_away_from_start(layer, rng)
    state = new_state()
    for i in range(3):
        batch = x[i:] if i else x  # batches of 8, 7, 6
        expected = numpy_bn_lstm(layer, batch.astype("float64"), state, True, momentum)
        reference.assert_close(layer(batch, training=True), expected, 1.0)
    for name in NAMES + ["num_updates"]:
        reference.assert_close(getattr(layer, name), state[name], 10.0)
    covered = min(steps, MAX_STEPS)
    np.testing.assert_array_equal(
        _np(layer.num_updates), [3.0] * covered + [0.0] * (MAX_STEPS - covered)
    )
    # Inference follows the current kernel: change it after training.
    layer.kernel.assign(_np(layer.kernel) * 1.7 + 0.1)
    x_test = rng.normal(0.5, 2.0, size=(3, steps, FEATURES)).astype("float32")
    expected = numpy_bn_lstm(layer, x_test.astype("float64"), state, False, momentum)
    reference.assert_close(layer(x_test, training=False), expected, 1.0)


def test_the_first_batch_counts_fully(rng):
    """Debiased averages: after one batch the statistics are its moments."""
    layer = BNLSTM(UNITS, MAX_STEPS, momentum=0.99)
    x = rng.normal(3.0, 0.1, size=(8, MAX_STEPS, FEATURES)).astype("float32")
    layer(x, training=True)
    reference.assert_close(layer.moving_mean_input, x.astype("float64").mean(0), 10.0)
    statistics = layer.moving_statistics()
    wx = x.astype("float64") @ _np(layer.kernel)
    reference.assert_close(statistics["moving_mean_x"], wx.mean(0), 10.0)
    reference.assert_close(statistics["moving_variance_x"], wx.var(0), 1.0)
    inference = _np(layer(x, training=False))
    training = _np(layer(x, training=True))
    # Same batch, same statistics: same outputs in both modes.
    reference.assert_close(inference, training, 10.0)


def _gradients(layer, x):
    """Outputs and gradients of `sum(outputs * weights)` w.r.t. the
    trainable variables, with the non-trainable state after the pass."""
    weights = np.linspace(-1.0, 1.0, layer.units).astype("float32")
    trainable = [v.value for v in layer.trainable_variables]
    state = [v.value for v in layer.non_trainable_variables]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(trainable):
            y, new_state = layer.stateless_call(trainable, state, x, training=True)
            return keras.ops.sum(y * weights), (y, new_state)

        (_, (y, new_state)), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            y, new_state = layer.stateless_call(trainable, state, x, training=True)
            value = tf.reduce_sum(y * weights)
        grads = tape.gradient(value, trainable)
    else:
        pytest.skip(f"no gradient helper for {backend}")
    return _np(y), [_np(g) for g in grads], [_np(s) for s in new_state]


def test_scan_equals_python_loop(rng):
    """Same outputs, gradients and statistics, scanned or unrolled."""
    x = rng.normal(0.5, 2.0, size=(6, 5, FEATURES)).astype("float32")
    results = []
    for unroll in (False, True):
        layer = BNLSTM(UNITS, MAX_STEPS, seed=4, unroll=unroll)
        layer.build(x.shape)
        _gammas_away_from_start(layer, np.random.default_rng(0))
        layer(x[:4], training=True)  # statistics away from their start
        results.append(_gradients(layer, x) + (_np(layer(x, training=False)),))
    (y_s, g_s, s_s, i_s), (y_u, g_u, s_u, i_u) = results
    reference.assert_close(y_s, y_u, 1.0)
    reference.assert_close(i_s, i_u, 1.0)
    assert len(g_s) == 7 and len(s_s) == 7
    for a, b in zip(g_s + s_s, g_u + s_u):
        reference.assert_close(a, b, 10.0)


def test_written_out_gradient_equals_automatic_one(rng, monkeypatch):
    """The step's batch norm with its gradient written out gives the outputs,
    gradients and statistics of the same batch norm differentiated
    automatically (`kbn.ops.moments` and `kbn.ops.normalize`), constant
    features included (the first step's `W_h h_0` is 0 for every example)."""
    from kbn import ops as bn_ops

    x = rng.normal(0.5, 2.0, size=(6, 5, FEATURES)).astype("float32")
    x[:, 1, 0] = 0.25  # a constant input feature at the second step
    layer = BNLSTM(UNITS, MAX_STEPS, seed=4)
    layer.build(x.shape)
    _gammas_away_from_start(layer, np.random.default_rng(0))
    written = _gradients(layer, x)

    def automatic(x, gamma, beta, epsilon):
        mean, variance = bn_ops.moments(x, [0])
        y = bn_ops.normalize(x, mean, variance, gamma, beta, epsilon)
        return y, (mean, variance)

    monkeypatch.setattr(bn_ops, "step_batch_norm", automatic)
    layer = BNLSTM(UNITS, MAX_STEPS, seed=4)
    layer.build(x.shape)
    _gammas_away_from_start(layer, np.random.default_rng(0))
    expected = _gradients(layer, x)
    reference.assert_close(written[0], expected[0], 1.0)
    assert len(written[1]) == 7
    for a, b in zip(written[1] + written[2], expected[1] + expected[2]):
        reference.assert_close(a, b, 10.0)


def test_a_batch_of_one_changes_no_statistic(rng):
    layer = BNLSTM(UNITS, MAX_STEPS)
    x = rng.normal(size=(4, MAX_STEPS, FEATURES)).astype("float32")
    layer(x, training=True)
    before = [_np(v) for v in layer.non_trainable_variables]
    layer(x[:1], training=True)
    for a, b in zip(before, layer.non_trainable_variables):
        np.testing.assert_array_equal(a, _np(b))


def _model(steps=4, momentum=0.9, return_sequences=False):
    keras.utils.set_random_seed(11)
    inputs = keras.Input((steps, FEATURES))
    layer = BNLSTM(UNITS, MAX_STEPS, momentum=momentum, name="bn_lstm")
    layer.return_sequences = return_sequences
    return keras.Model(inputs, layer(inputs))


def test_population_statistics_per_row(rng):
    """Unbiased (m / (m - 1)) averages of the rows' batch moments; the
    batch of one does not count."""
    x = rng.normal(0.5, 2.0, size=(17, 4, FEATURES)).astype("float32")
    model = _model()
    model(x[:8], training=True)
    used = kbn.recompute_batch_norm_statistics(model, x, batch_size=8)
    assert used == 3
    layer = model.get_layer("bn_lstm")
    expected = {name: [] for name in NAMES}
    for start in (0, 8):
        state = new_state()
        numpy_bn_lstm(layer, x[start : start + 8].astype("float64"), state, True, 0.9)
        for name in NAMES:  # one update from zero: the rows themselves
            value = state[name]
            if "variance" in name:
                value = value * 8 / 7
            expected[name].append(value)
    for name in NAMES:
        reference.assert_close(getattr(layer, name), np.mean(expected[name], 0), 10.0)
    np.testing.assert_array_equal(_np(layer.num_updates), [2, 2, 2])


def test_paper_initialization_and_config(tmp_path):
    layer = BNLSTM(4, 6, seed=3, return_sequences=True)
    inputs = keras.Input((6, 2))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    for part in "xhc":
        np.testing.assert_array_equal(
            _np(getattr(layer, f"gamma_{part}")), np.float32(0.1)
        )
    np.testing.assert_array_equal(_np(layer.beta_c), 0.0)
    bias = _np(layer.bias)
    assert bias[4:8].tolist() == [1.0] * 4 and bias[:4].tolist() == [0.0] * 4
    # One bias per gate: the gate normalizations have no offset of their own.
    assert sorted(w.path.split("/")[-1] for w in layer.trainable_weights) == [
        "beta_c", "bias", "gamma_c", "gamma_h", "gamma_x", "kernel",
        "recurrent_kernel",
    ]  # fmt: skip
    again = BNLSTM(4, 6, seed=3)
    again.build((None, 6, 2))
    np.testing.assert_array_equal(_np(again.kernel), _np(layer.kernel))
    x = np.random.default_rng(0).normal(size=(5, 6, 2)).astype("float32")
    model(x, training=True)
    path = tmp_path / "bn_lstm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), atol=1e-6)
    assert loaded.layers[1].get_config() == layer.get_config()


def test_trains_in_a_model(rng):
    images = rng.normal(size=(64, 6, 3)).astype("float32")
    labels = (images[:, :, 0].mean(1) > 0).astype("int64")
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(BNLSTM(8, 6)(inputs)))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(images, labels, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(_np(model.layers[1].num_updates), 12.0)
    # Compiled inference (predict) gives the eager inference outputs.
    reference.assert_close(
        model.predict(images, batch_size=32, verbose=0), model(images), 1.0
    )


@pytest.mark.parametrize(
    "kwargs,received",
    [
        ({"units": 0, "max_time_steps": 3}, "units=0"),
        ({"units": 2, "max_time_steps": 0}, "max_time_steps=0"),
        ({"units": 2, "max_time_steps": 3, "momentum": 1.0}, "momentum=1.0"),
    ],
)
def test_bad_arguments(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}"):
        BNLSTM(**kwargs)


def test_unknown_time_steps_are_refused():
    with pytest.raises(ValueError, match="Received: inputs.shape"):
        BNLSTM(2, 3)(keras.Input((None, 4)))


def test_constant_steps_stay_constant_in_inference(rng):
    """Blank leading steps (as the first rows of a digit): the state is the
    same for every example, batch norm maps it to beta in training; with the
    weights moved since the statistics were taken, inference must too."""
    x = rng.normal(size=(8, 5, FEATURES)).astype("float32")
    x[:, :2] = 0.0
    layer = BNLSTM(UNITS, 5, return_sequences=True)
    layer(x, training=True)
    layer.bias.assign(_np(layer.bias) + rng.normal(size=4 * UNITS))
    layer.recurrent_kernel.assign(_np(layer.recurrent_kernel) * 1.5)
    for name in ("moving_variance_h", "moving_variance_c"):
        np.testing.assert_array_equal(_np(getattr(layer, name))[:2][:, 0], 0.0)
    training = _np(layer(x, training=True))
    inference = _np(layer(x, training=False))
    reference.assert_close(inference[:, :2], training[:, :2], 1.0)
    assert not np.allclose(inference[:, 2:], training[:, 2:], atol=1e-3)
