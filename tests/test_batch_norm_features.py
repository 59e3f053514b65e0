"""BatchNorm beyond Keras: each option against NumPy (and Keras where it has it).

Backend-agnostic; `test_backends.py` runs it again on JAX.
"""

import re
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kbn.callbacks import RenormClippingSchedule
from kbn.layers import BatchNorm
from tests import reference
from tests.contract import run_layer_contract


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


# --- Ghost batch normalization ------------------------------------------------


@pytest.mark.parametrize(
    "shape,axis", [((12, 5), -1), ((8, 3, 3, 2), -1), ((8, 2, 3, 3), 1)]
)
def test_ghost_batches_match_numpy(rng, shape, axis):
    size, momentum = 4, 0.9
    layer = BatchNorm(axis=axis, virtual_batch_size=size, momentum=momentum)
    layer.build(shape)
    gamma = rng.uniform(0.5, 1.5, size=layer.gamma.shape)
    beta = rng.normal(size=layer.beta.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    y = _np(layer(x, training=True))

    groups = x.reshape(-1, size, *shape[1:])
    means, variances = [], []
    for i, group in enumerate(groups):
        mean, variance = reference.moments(group, axis)
        means.append(mean)
        variances.append(variance)
        expected = reference.batch_norm(group, mean, variance, gamma, beta, 1e-3, axis)
        reference.assert_close(y[i * size : (i + 1) * size], expected, 10.0)
    # One update per real batch, from the averaged virtual-batch moments.
    reference.assert_close(layer.moving_mean, (1 - momentum) * np.mean(means, 0), 10.0)
    reference.assert_close(
        layer.moving_variance,
        momentum + (1 - momentum) * np.mean(variances, 0),
        100.0,
    )
    # Inference uses the moving statistics, whatever the batch size.
    expected = reference.batch_norm(
        x[:3],
        _np(layer.moving_mean),
        _np(layer.moving_variance),
        gamma,
        beta,
        1e-3,
        axis,
    )
    reference.assert_close(layer(x[:3]), expected, 10.0)


def _normalized(x, epsilon=1e-3):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + epsilon)


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_ghost_batch_grouping(rng, grouping):
    """Which examples share a virtual batch: consecutive ones (kbn's default,
    Hoffer et al.), or every G-th one (tf-keras 2's rule, G the number of
    virtual batches); pinned against NumPy."""
    x = rng.normal(size=(12, 3)).astype("float64") * np.arange(1, 13)[:, None]
    layer = BatchNorm(
        virtual_batch_size=4, virtual_batch_grouping=grouping, momentum=0.0
    )
    y = _np(layer(x.astype("float32"), training=True))
    groups = 12 // 4
    if grouping == "contiguous":
        members = [np.arange(g * 4, g * 4 + 4) for g in range(groups)]
    else:
        members = [np.arange(g, 12, groups) for g in range(groups)]
    expected = np.empty_like(x)
    for index in members:
        expected[index] = _normalized(x[index])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # The moving statistics average the virtual batches' moments.
    np.testing.assert_allclose(
        _np(layer.moving_mean), np.mean([x[i].mean(0) for i in members], 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        _np(layer.moving_variance),
        np.mean([x[i].var(0) for i in members], 0),
        rtol=1e-4,
    )


def test_the_two_groupings_differ_and_the_option_round_trips(rng):
    x = rng.normal(size=(8, 2)).astype("float32") * np.arange(1, 9)[:, None]
    outputs = {
        g: _np(
            BatchNorm(virtual_batch_size=4, virtual_batch_grouping=g)(x, training=True)
        )
        for g in ("contiguous", "strided")
    }
    assert np.abs(outputs["contiguous"] - outputs["strided"]).max() > 0.1
    layer = BatchNorm(virtual_batch_size=4, virtual_batch_grouping="strided")
    again = BatchNorm.from_config(layer.get_config())
    assert again.virtual_batch_grouping == "strided"
    with pytest.raises(ValueError, match="Received: virtual_batch_grouping='random'"):
        BatchNorm(virtual_batch_size=4, virtual_batch_grouping="random")


def test_ghost_batch_size_must_divide_the_batch(rng):
    layer = BatchNorm(virtual_batch_size=5)
    with pytest.raises(ValueError, match="Received: batch size 12"):
        layer(rng.normal(size=(12, 3)).astype("float32"), training=True)


def test_ghost_batches_in_a_compiled_fit(rng):
    """Inside `fit` (batch size unknown when traced): one update per batch
    from the average of its ghost batches' moments."""
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(8, use_bias=False)
    norm = BatchNorm(virtual_batch_size=5, momentum=0.5)
    model = keras.Model(inputs, keras.layers.Dense(2)(norm(dense(inputs))))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = rng.normal(2.0, 3.0, size=(40, 6)).astype("float32")
    model.fit(x, np.zeros((40, 2)), batch_size=20, shuffle=False, verbose=0)
    h = x.astype("float64") @ _np(dense.kernel)
    mean, variance = np.zeros(8), np.ones(8)
    for batch in (h[:20], h[20:]):
        ghosts = batch.reshape(4, 5, 8)
        mean = 0.5 * mean + 0.5 * ghosts.mean(1).mean(0)
        variance = 0.5 * variance + 0.5 * ghosts.var(1).mean(0)
    reference.assert_close(norm.moving_mean, mean, 10.0)
    reference.assert_close(norm.moving_variance, variance, 100.0)
    # Not what whole batches give: ghost variances average lower.
    whole = 0.5 * (0.5 * 1.0 + 0.5 * h[:20].var(0)) + 0.5 * h[20:].var(0)
    assert np.all(_np(norm.moving_variance) < whole)


# --- Batch renormalization ----------------------------------------------------

RENORM = {"rmax": 1.5, "rmin": 0.7, "dmax": 0.4}


@pytest.mark.parametrize("shape,axis", [((16, 5), -1), ((6, 4, 4, 3), -1)])
def test_renorm_matches_keras(rng, shape, axis):
    kwargs = dict(
        axis=axis,
        momentum=0.8,
        renorm=True,
        renorm_clipping=RENORM,
        renorm_momentum=0.7,
    )
    ours, theirs = BatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(shape)
    theirs.build(shape)
    for name in ("gamma", "beta"):
        value = rng.uniform(0.5, 1.5, size=getattr(theirs, name).shape)
        getattr(theirs, name).assign(value)
        getattr(ours, name).assign(value)
    for step in range(5):
        x = (rng.normal(1.0 + step, 2.0 + step, size=shape)).astype("float32")
        reference.assert_close(ours(x, training=True), theirs(x, training=True), 20.0)
        for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
            reference.assert_close(getattr(ours, name), getattr(theirs, name), 50.0)
    reference.assert_close(ours(x), theirs(x), 20.0)


def test_renorm_matches_numpy_formula(rng):
    x = rng.normal(4.0, 3.0, size=(20, 3)).astype("float32")
    layer = BatchNorm(renorm=True, renorm_clipping=RENORM, center=False, scale=False)
    y = _np(layer(x, training=True))
    mean, variance = reference.moments(x)
    std = np.sqrt(variance + 1e-3)
    # The renorm statistics start at mean 0 and stddev 1.
    r = np.clip(std / 1.0, RENORM["rmin"], RENORM["rmax"])
    d = np.clip((mean - 0.0) / 1.0, -RENORM["dmax"], RENORM["dmax"])
    reference.assert_close(y, (x - mean) / std * r + d, 10.0)


def test_renorm_gradients_match_keras(rng):
    def trained(layer):
        keras.utils.set_random_seed(2)
        inputs = keras.Input((6,))
        h = layer(keras.layers.Dense(8, use_bias=False)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))
        model.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
        model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
        return model

    x = rng.normal(1.0, 2.0, size=(40, 6)).astype("float32")
    y = rng.normal(size=(40, 3)).astype("float32")
    kwargs = dict(momentum=0.9, renorm=True, renorm_clipping=RENORM)
    ours = trained(BatchNorm(**kwargs))
    theirs = trained(keras.layers.BatchNormalization(**kwargs))
    for a, b in zip(ours.trainable_weights, theirs.trainable_weights):
        reference.assert_close(a, b, 1.0)


def test_clip_limits_are_weights_a_schedule_moves(rng):
    x = rng.normal(size=(40, 4)).astype("float32")
    y = rng.normal(size=(40, 1)).astype("float32")
    inputs = keras.Input((4,))
    norm = BatchNorm(renorm=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(norm(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    names = {w.name for w in norm.non_trainable_weights}
    assert {"renorm_rmax", "renorm_rmin", "renorm_dmax"} <= names
    assert float(_np(norm.renorm_rmax)) == np.inf
    schedule = RenormClippingSchedule(warmup_batches=2, rmax_batches=6, dmax_batches=10)
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[schedule])
    # 8 batches: rmax ramps 1 -> 3 over steps 2..6, dmax 0 -> 5 over 2..10.
    assert float(_np(norm.renorm_rmax)) == pytest.approx(3.0)
    assert float(_np(norm.renorm_dmax)) == pytest.approx(5.0 * 6 / 8)
    assert schedule.values(0) == (1.0, 0.0) and schedule.values(4) == (2.0, 1.25)


def test_assigned_clip_limits_change_the_output(rng):
    x = rng.normal(5.0, 2.0, size=(20, 3)).astype("float32")
    layer = BatchNorm(renorm=True, center=False, scale=False)
    layer.build(x.shape)
    layer.renorm_rmax.assign(1.0)
    layer.renorm_rmin.assign(1.0)
    layer.renorm_dmax.assign(0.0)
    # r = 1 and d = 0: plain batch normalization.
    mean, variance = reference.moments(x)
    reference.assert_close(
        layer(x, training=True),
        reference.batch_norm(x, mean, variance, 1, 0, 1e-3),
        10.0,
    )


# --- The paper's population statistics -----------------------------------------


def test_momentum_none_is_the_cumulative_average(rng):
    layer = BatchNorm(momentum=None)
    batches = [rng.normal(i, 1 + i, size=(30, 4)).astype("float32") for i in range(4)]
    for x in batches:
        layer(x, training=True)
    stats = [reference.moments(x) for x in batches]
    reference.assert_close(layer.moving_mean, np.mean([m for m, _ in stats], 0), 10.0)
    reference.assert_close(
        layer.moving_variance, np.mean([v for _, v in stats], 0), 100.0
    )
    assert float(_np(layer.num_batches)) == 4.0


@pytest.mark.parametrize("shape,axis", [((10, 3), -1), ((4, 3, 5, 2), -1)])
def test_unbiased_population_variance(rng, shape, axis):
    x = rng.normal(1.0, 2.0, size=shape).astype("float32")
    layer = BatchNorm(axis=axis, momentum=0.0, unbiased_variance=True)
    y = layer(x, training=True)
    mean, variance = reference.moments(x, axis)
    m = x.size / shape[axis]
    reference.assert_close(layer.moving_variance, variance * m / (m - 1), 10.0)
    # Training itself still normalizes with the biased batch variance.
    reference.assert_close(
        y, reference.batch_norm(x, mean, variance, 1.0, 0.0, 1e-3, axis), 10.0
    )


# --- Modes and edge cases -----------------------------------------------------


def test_batch_statistics_always(rng):
    x = rng.normal(3.0, 2.0, size=(16, 4)).astype("float32")
    layer = BatchNorm(track_running_stats=False)
    mean, variance = reference.moments(x)
    expected = reference.batch_norm(x, mean, variance, 1.0, 0.0, 1e-3)
    reference.assert_close(layer(x, training=False), expected, 10.0)
    reference.assert_close(layer(x, training=True), expected, 10.0)
    assert layer.moving_mean is None
    assert [w.name for w in layer.weights] == ["gamma", "beta"]


def test_one_value_per_feature_warns_once_naming_the_layer():
    layer = BatchNorm(name="bn_single")
    with pytest.warns(UserWarning, match="'bn_single'.*one value per feature"):
        y = layer(np.full((1, 3), 7.0, "float32"), training=True)
    np.testing.assert_allclose(_np(y), 0.0)  # beta
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(np.full((1, 3), 7.0, "float32"), training=True)
    # Inference with one example is fine and silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchNorm()(np.ones((1, 3), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_half_precision_large_values_do_not_overflow(rng, policy):
    x = rng.normal(2.0e4, 8.0e3, size=(64, 3)).astype("float32")
    layer = BatchNorm(dtype=policy)
    y = layer(ops.cast(x, policy.split("_")[1]), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    y = _np(y)
    assert np.isfinite(y).all()
    # The variance (about 6e7) overflows float16 (max 65,504): computed in
    # float32, the outputs are normalized.
    np.testing.assert_allclose(y.mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose(y.std(0), 1.0, atol=0.05)
    assert np.isfinite(_np(layer.moving_variance)).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"virtual_batch_size": 3},
        {"renorm": True, "renorm_clipping": {"rmax": 2.0, "dmax": 1.0}},
        {"momentum": None, "unbiased_variance": True},
        {"track_running_stats": False},
        {"synchronized": True},
    ],
    ids=[
        "ghost",
        "renorm",
        "cumulative_unbiased",
        "batch_stats_always",
        "synchronized",
    ],
)
def test_every_option_survives_a_keras_round_trip(kwargs, tmp_path):
    run_layer_contract(BatchNorm, kwargs, input_shape=(6, 3, 4), tmp_path=tmp_path)


@pytest.mark.parametrize(
    "kwargs,received",
    [
        ({"virtual_batch_size": 0}, "virtual_batch_size=0"),
        ({"renorm_clipping": {"rmax": 2}}, "renorm=False"),
        ({"renorm": True, "renorm_clipping": {"r": 1}}, "renorm_clipping={'r': 1}"),
        (
            {"renorm": True, "renorm_clipping": {"rmax": 1, "rmin": 2}},
            "renorm_clipping={'rmax': 1, 'rmin': 2}",
        ),
        ({"renorm": True, "momentum": None}, "momentum=None"),
        ({"renorm_momentum": 2}, "renorm_momentum=2"),
    ],
)
def test_bad_options_name_the_value(kwargs, received):
    with pytest.raises(ValueError, match=re.escape(received)):
        BatchNorm(**kwargs)
