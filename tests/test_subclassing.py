"""The hooks of BatchNorm: what an override receives, and what is refused.

Also runs the README's subclassing example exactly as printed there.
"""

import os
import re

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from kbn import ops as bn_ops
from kbn.layers import BatchNorm
from tests import reference

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
TENSORFLOW = keras.backend.backend() == "tensorflow"


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


def _example_class():
    text = open(README).read()
    block = re.search(
        r"<!-- subclass-example -->\s*```python\n(.*?)```"
        r"\s*<!-- end subclass-example -->",
        text,
        re.S,
    )
    assert block, "README lost its subclass-example block"
    namespace = {}
    exec(compile(block.group(1), README, "exec"), namespace)
    return namespace["MeanOnlyBatchNorm"]


# --- The README's example -------------------------------------------------------


def test_readme_example_subtracts_the_batch_mean_only(rng):
    MeanOnlyBatchNorm = _example_class()
    x = rng.normal(3.0, 5.0, size=(32, 4)).astype("float32")
    layer = MeanOnlyBatchNorm(momentum=0.0)
    y = _np(layer(x, training=True))
    reference.assert_close(y, x - x.mean(0), 10.0)
    assert np.abs(y.std(0) - x.std(0)).max() < 1e-3  # not rescaled
    # Inference subtracts the moving mean.
    reference.assert_close(layer(x), x - x.mean(0), 10.0)
    assert [w.name for w in layer.trainable_weights] == ["beta"]


def test_readme_example_with_ghost_batches(rng):
    layer = _example_class()(virtual_batch_size=4, momentum=0.0)
    x = rng.normal(3.0, 5.0, size=(16, 3)).astype("float32")
    groups = x.reshape(4, 4, 3)
    expected = (groups - groups.mean(1, keepdims=True)).reshape(16, 3)
    reference.assert_close(layer(x, training=True), expected, 10.0)


def test_readme_example_fits_and_round_trips(rng, tmp_path):
    MeanOnlyBatchNorm = _example_class()
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, use_bias=False)(inputs)
    h = MeanOnlyBatchNorm()(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x = rng.normal(size=(20, 6, 6, 1)).astype("float32")
    y = x.reshape(20, -1)[:, :2] * 2.0  # learnable
    history = model.fit(x, y, batch_size=10, epochs=10, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    path = tmp_path / "mean_only.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[2]).__name__ == "MeanOnlyBatchNorm"
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))


def test_readme_example_folds_to_the_same_predictions(rng):
    """Issue 10: this fold was off by up to 1.2, silently."""
    inputs = keras.Input((8,))
    h = keras.layers.Dense(6, use_bias=False)(inputs)
    h = keras.layers.ReLU()(_example_class()(momentum=0.5)(h))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    x = rng.normal(2.0, 3.0, size=(32, 8)).astype("float32")
    for start in range(0, 32, 8):
        model(x[start : start + 8], training=True)
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers) - 1
    expected = _np(model(x, training=False))
    reference.assert_close(folded(x), expected, float(np.abs(expected).max()))


# --- What each hook receives ----------------------------------------------------


class _Spy(BatchNorm):
    """Records what the hooks receive, and leaves the maths alone."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def compute_moments(self, inputs, axes, mask=None):
        self.seen.append(("compute_moments", tuple(inputs.shape), list(axes), mask))
        return super().compute_moments(inputs, axes, mask)

    def normalize(self, inputs, mean, variance, gamma, beta):
        shapes = [None if t is None else tuple(t.shape) for t in (mean, gamma, beta)]
        self.seen.append(("normalize", tuple(inputs.shape), *shapes))
        return super().normalize(inputs, mean, variance, gamma, beta)

    def update_moving_statistics(self, mean, variance, momentum):
        self.seen.append(("update", float(_np(momentum))))
        super().update_moving_statistics(mean, variance, momentum)


def test_compute_moments_gets_split_axes_and_a_broadcastable_mask(rng):
    layer = _Spy(virtual_batch_size=2)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    mask = rng.uniform(size=(8, 6)) > 0.2
    mask[:, 0] = True
    layer(x, training=True, mask=mask)
    name, shape, axes, given = layer.seen[0]
    assert name == "compute_moments"
    assert shape == (4, 2, 6, 3) and axes == [1, 2]
    assert tuple(given.shape) == (4, 2, 6, 1)
    np.testing.assert_array_equal(_np(given)[..., 0], mask.reshape(4, 2, 6))


def test_a_mask_changes_the_moments(rng):
    x = rng.normal(2.0, 1.5, size=(4, 6, 3)).astype("float32")
    mask = np.ones((4, 6), bool)
    mask[:, 3:] = False
    x[:, 3:] += 50.0
    masked, plain = BatchNorm(momentum=0.0), BatchNorm(momentum=0.0)
    masked(x, training=True, mask=mask)
    plain(x, training=True)
    kept = x[:, :3].reshape(-1, 3)
    reference.assert_close(masked.moving_mean, kept.mean(0), 100.0)
    assert np.all(_np(plain.moving_mean) - _np(masked.moving_mean) > 20.0)


def test_normalize_gets_broadcast_statistics(rng):
    layer = _Spy(axis=1, virtual_batch_size=2, scale=False)
    x = rng.normal(size=(4, 3, 5)).astype("float32")
    layer(x, training=True)
    layer(x, training=False)
    training, inference = [s for s in layer.seen if s[0] == "normalize"]
    # (inputs, mean, gamma, beta) shapes: one row of statistics per virtual
    # batch in training; gamma is None with scale=False.
    assert training[1:] == ((2, 2, 3, 5), (2, 1, 3, 1), None, (1, 1, 3, 1))
    assert inference[1:] == ((4, 3, 5), (1, 3, 1), None, (1, 3, 1))


def test_update_gets_the_momentum_of_each_batch(rng):
    x = rng.normal(size=(6, 2)).astype("float32")
    fixed, cumulative = _Spy(momentum=0.8), _Spy(momentum=None)
    for _ in range(3):
        fixed(x, training=True)
        cumulative(x, training=True)
    assert [s[1] for s in fixed.seen if s[0] == "update"] == pytest.approx([0.8] * 3)
    assert [s[1] for s in cumulative.seen if s[0] == "update"] == pytest.approx(
        [0.0, 1 / 2, 2 / 3]
    )


class _HalfwayUpdate(BatchNorm):
    """Moves the moving statistics halfway to each batch, ignoring momentum."""

    def update_moving_statistics(self, mean, variance, momentum):
        for moving, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            moving.assign(bn_ops.moving_average(moving, value, 0.5))


def test_an_update_override_keeps_renorm_and_the_counter(rng):
    kwargs = dict(renorm=True, renorm_momentum=0.7, momentum=0.9)
    ours, default = _HalfwayUpdate(**kwargs), BatchNorm(**kwargs)
    counted = _HalfwayUpdate(momentum=None)
    for step in range(3):
        x = rng.normal(step, 1.0 + step, size=(10, 3)).astype("float32")
        ours(x, training=True)
        default(x, training=True)
        counted(x, training=True)
    # Renorm's own statistics are updated whatever the moving-statistics
    # update is; moving_stddev follows the overridden moving variance.
    for name in ("renorm_mean", "renorm_stddev"):
        reference.assert_close(getattr(ours, name), getattr(default, name), 10.0)
    reference.assert_close(
        ours.moving_stddev, np.sqrt(_np(ours.moving_variance) + ours.epsilon)
    )
    assert not np.allclose(_np(ours.moving_mean), _np(default.moving_mean))
    assert float(_np(counted.num_batches)) == 3.0


# --- What is refused --------------------------------------------------------------


class _OwnMoments(BatchNorm):
    def compute_moments(self, inputs, axes, mask=None):
        return bn_ops.moments(inputs, axes, mask=mask)


class _OwnMomentsWithCorrection(_OwnMoments):
    def debias_variance(self, variance, count):
        return super().debias_variance(variance, count)


class _OwnNormalize(BatchNorm):
    def normalize(self, inputs, mean, variance, gamma, beta):
        return super().normalize(inputs, mean, variance, gamma, beta)


REFUSED = [
    (_OwnMoments, {"unbiased_variance": True}, "compute_moments"),
    (_OwnNormalize, {"renorm": True}, "normalize"),
]
if TENSORFLOW:
    REFUSED.append((_OwnMoments, {"synchronized": True}, "compute_moments"))


@pytest.mark.parametrize(
    "cls,kwargs,hook",
    REFUSED,
    ids=[f"{c.__name__}-{list(k)[0]}" for c, k, _ in REFUSED],
)
def test_refused_combinations_say_what_and_why(cls, kwargs, hook):
    layer = cls(name="mine", **kwargs)
    ((option, value),) = kwargs.items()
    with pytest.raises(ValueError, match=re.escape(f"Received: {option}={value}")) as e:
        layer.build((None, 3))
    message = str(e.value)
    assert f"{cls.__name__} layer 'mine' overrides {hook}" in message
    assert "Use " in message or "Override " in message  # what to do


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (_OwnMomentsWithCorrection, {"unbiased_variance": True}),
        (_OwnMoments, {"renorm": True, "virtual_batch_size": 2, "momentum": 0.5}),
        (_OwnNormalize, {"unbiased_variance": True, "momentum": None}),
    ]
    + ([] if TENSORFLOW else [(_OwnMoments, {"synchronized": True})]),
)
def test_sound_combinations_are_accepted_and_equal_the_default(rng, cls, kwargs):
    x = rng.normal(2.0, 3.0, size=(8, 3)).astype("float32")
    ours, default = cls(**kwargs), BatchNorm(**kwargs)
    for _ in range(2):
        reference.assert_close(ours(x, training=True), default(x, training=True), 10.0)
    for a, b in zip(ours.weights, default.weights):
        reference.assert_close(a, b, 10.0)


# --- An override is used however it is made --------------------------------


def _recording_moments(calls):
    def compute_moments(self, inputs, axes, mask=None):
        calls.append(tuple(axes))
        return bn_ops.moments(inputs, axes, mask=mask)

    return compute_moments


def test_a_compute_moments_patched_on_the_class_is_called(rng):
    """`mock.patch.object(BatchNorm, "compute_moments", ...)`: the layer uses
    the patch in training (it looks when it is called, not when built)."""
    from unittest import mock

    x = rng.normal(2.0, 3.0, size=(16, 5)).astype("float32")
    layer = BatchNorm()
    layer.build(x.shape)  # built before the patch
    expected = _np(layer(x, training=True))
    calls = []
    with mock.patch.object(
        BatchNorm, "compute_moments", autospec=True, side_effect=None
    ) as patched:
        patched.side_effect = _recording_moments(calls)
        outputs = _np(layer(x, training=True))
    assert patched.call_count == 1 and calls == [(0,)]
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_a_compute_moments_set_on_the_layer_is_called(rng):
    x = rng.normal(2.0, 3.0, size=(16, 5)).astype("float32")
    layer = BatchNorm()
    layer.build(x.shape)
    calls = []
    layer.compute_moments = lambda inputs, axes, mask=None: _recording_moments(calls)(
        layer, inputs, axes, mask=mask
    )
    layer(x, training=True)
    assert calls == [(0,)]


def test_a_patch_the_options_cannot_honour_is_refused_by_name(rng):
    """An override made after the layer was built is checked when it is
    called: unbiased variances need the estimator's own correction."""
    from unittest import mock

    x = rng.normal(size=(8, 3)).astype("float32")
    layer = BatchNorm(unbiased_variance=True)
    layer.build(x.shape)
    with mock.patch.object(
        BatchNorm, "compute_moments", autospec=True, side_effect=_recording_moments([])
    ):
        with pytest.raises(ValueError, match="overrides compute_moments"):
            layer(x, training=True)
