"""BNLSTMCell: per-time-step statistics against NumPy, in training and inference."""

import keras
import numpy as np
import pytest

from kbn.layers import BNLSTMCell
from kbn.layers import bn_lstm
from tests import reference

UNITS, STEPS, MAX_STEPS, FEATURES = 5, 4, 3, 3


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_bn_lstm(cell, x, moving, training, momentum, epsilon=1e-3):
    """The paper's equations in NumPy; updates `moving` in place when training."""
    kernel, recurrent, bias = (
        _np(cell.kernel),
        _np(cell.recurrent_kernel),
        _np(cell.bias),
    )
    gamma = {p: _np(getattr(cell, f"gamma_{p}")) for p in "xhc"}
    beta_c = _np(cell.beta_c)
    batch = x.shape[0]
    h = np.zeros((batch, UNITS))
    c = np.zeros((batch, UNITS))
    outputs = []

    def bn(value, part, step, beta=0.0):
        if training:
            mean, variance = value.mean(0), value.var(0)
            m, v = moving[part]
            n = moving["updates"][step]
            rate = min(momentum, n / (n + 1))  # plain average at first
            m[step] = m[step] * rate + mean * (1 - rate)
            v[step] = v[step] * rate + variance * (1 - rate)
        else:
            mean, variance = moving[part][0][step], moving[part][1][step]
        return (value - mean) / np.sqrt(variance + epsilon) * gamma[part] + beta

    for t in range(x.shape[1]):
        step = min(t, MAX_STEPS - 1)
        z = bn(x[:, t] @ kernel, "x", step) + bn(h @ recurrent, "h", step) + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(bn(c, "c", step, beta_c))
        if training:
            moving["updates"][step] += 1
        outputs.append(h)
    return np.stack(outputs, 1)


def test_per_time_step_statistics_match_numpy(rng):
    momentum = 0.7
    layer = bn_lstm(
        UNITS, MAX_STEPS, cell_kwargs={"momentum": momentum}, return_sequences=True
    )
    x = rng.normal(0.5, 2.0, size=(8, STEPS, FEATURES)).astype("float32")
    layer.build(x.shape)
    cell = layer.cell
    # Gammas away from their 0.1 start, so that a mix-up of parts shows.
    for part, value in (("x", 0.5), ("h", 1.5), ("c", 0.8)):
        getattr(cell, f"gamma_{part}").assign(
            np.full(getattr(cell, f"gamma_{part}").shape, value)
        )
    cell.beta_c.assign(rng.normal(size=UNITS))
    moving = {
        p: (np.zeros((MAX_STEPS, n)), np.ones((MAX_STEPS, n)))
        for p, n in (("x", 4 * UNITS), ("h", 4 * UNITS), ("c", UNITS))
    }
    moving["updates"] = np.zeros(MAX_STEPS)
    for _ in range(3):
        expected = numpy_bn_lstm(cell, x.astype("float64"), moving, True, momentum)
        reference.assert_close(layer(x, training=True), expected, 1.0)
    for part in "xhc":
        reference.assert_close(
            getattr(cell, f"moving_mean_{part}"), moving[part][0], 10.0
        )
        reference.assert_close(
            getattr(cell, f"moving_variance_{part}"), moving[part][1], 10.0
        )
    # Steps from max_time_steps on share the last step's statistics; every
    # step has statistics of its own.
    assert not np.allclose(moving["x"][0][0], moving["x"][0][1])
    np.testing.assert_array_equal(_np(cell.num_updates), [3, 3, 6])

    x_test = rng.normal(0.5, 2.0, size=(3, STEPS, FEATURES)).astype("float32")
    expected = numpy_bn_lstm(cell, x_test.astype("float64"), moving, False, momentum)
    reference.assert_close(layer(x_test, training=False), expected, 1.0)


def test_paper_initialization_and_config(tmp_path):
    cell = BNLSTMCell(4, 6, seed=3)
    layer = keras.layers.RNN(cell, unroll=True)
    inputs = keras.Input((6, 2))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    np.testing.assert_array_equal(_np(cell.gamma_x), np.float32(0.1))
    np.testing.assert_array_equal(_np(cell.gamma_c), np.float32(0.1))
    bias = _np(cell.bias)
    assert bias[4:8].tolist() == [1.0] * 4 and bias[:4].tolist() == [0.0] * 4
    assert cell.moving_mean_h.shape == (6, 16)
    # Same seed, same kernels as an LSTM-sized cell built again.
    again = BNLSTMCell(4, 6, seed=3)
    again.build((None, 2))
    np.testing.assert_array_equal(_np(again.kernel), _np(cell.kernel))
    x = np.random.default_rng(0).normal(size=(5, 6, 2)).astype("float32")
    model(x, training=True)
    path = tmp_path / "bn_lstm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), atol=1e-6)
    assert loaded.layers[1].cell.get_config() == cell.get_config()


def test_trains_in_a_model(rng):
    from kbn.trainer import MultiStepTrainer

    images = rng.normal(size=(64, 6, 3)).astype("float32")
    labels = (images[:, :, 0].mean(1) > 0).astype("int64")
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(bn_lstm(8, 6)(inputs)))
    trainer = MultiStepTrainer(model, images, batches_per_step=4)
    trainer.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    from kbn.trainer import index_batches

    history = trainer.fit(
        index_batches(labels, 16, batches_per_step=4, seed=0),
        steps_per_epoch=2,
        epochs=3,
        shuffle=False,
        verbose=0,
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(_np(model.layers[1].cell.moving_mean_x), 0.0)


@pytest.mark.parametrize(
    "kwargs,received",
    [
        ({"units": 0, "max_time_steps": 3}, "units=0"),
        ({"units": 2, "max_time_steps": 0}, "max_time_steps=0"),
    ],
)
def test_bad_arguments(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}"):
        BNLSTMCell(**kwargs)


def test_a_rolled_loop_is_refused():
    with pytest.raises(ValueError, match="Received: unroll=False"):
        bn_lstm(4, 3, unroll=False)
