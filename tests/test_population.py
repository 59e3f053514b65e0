"""`kbn.recompute_batch_norm_statistics`: Algorithm 2, asked of each layer."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from kbn import ops as bn_ops
from kbn.layers import BNLSTM
from kbn.layers import BatchNorm
from kbn.layers.traversal import batch_norm_layers
from tests import reference


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


def _mlp(batch_norm_kwargs=None):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    h = inputs
    for _ in range(2):
        h = keras.layers.Dense(5, use_bias=False)(h)
        h = BatchNorm(**(batch_norm_kwargs or {}))(h)
        h = keras.layers.ReLU()(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def _numpy_training_pass(model, x):
    """The inputs each BatchNorm sees in a training-mode pass, in NumPy."""
    seen, h = [], x.astype("float64")
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Dense):
            h = h @ _np(layer.kernel) + (_np(layer.bias) if layer.use_bias else 0)
        elif isinstance(layer, BatchNorm):
            seen.append(h)
            mean, variance = h.mean(0), h.var(0)
            h = (h - mean) / np.sqrt(variance + layer.epsilon) * _np(layer.gamma)
            h = h + _np(layer.beta)
        else:
            h = np.maximum(h, 0)
    return seen


def test_recompute_statistics_against_numpy(rng):
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = rng.normal(2.0, 3.0, size=(50, 6)).astype("float32")
    model.fit(x, rng.normal(size=(50, 2)), batch_size=10, epochs=2, verbose=0)
    before = [_np(w) for w in model.trainable_weights]

    used = kbn.recompute_batch_norm_statistics(model, x, batch_size=10)
    assert used == 5
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    per_batch = [_numpy_training_pass(model, x[i : i + 10]) for i in range(0, 50, 10)]
    for index, norm in enumerate(norms):
        inputs = [batch[index] for batch in per_batch]
        mean = np.mean([h.mean(0) for h in inputs], 0)
        variance = np.mean([h.var(0) * 10 / 9 for h in inputs], 0)
        reference.assert_close(norm.moving_mean, mean, 10.0)
        reference.assert_close(norm.moving_variance, variance, 100.0)
    for a, b in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(a, _np(b))
    assert norms[0].momentum == 0.99  # settings restored


def test_recompute_statistics_takes_batches_and_a_cap(rng):
    model = _mlp({"momentum": None})
    batches = [(rng.normal(size=(8, 6)).astype("float32"), None) for _ in range(6)]
    assert kbn.recompute_batch_norm_statistics(model, iter(batches), num_batches=4) == 4
    norm = next(layer for layer in model.layers if isinstance(layer, BatchNorm))
    assert float(_np(norm.num_batches)) == 4.0
    first = [_numpy_training_pass(model, b[0])[0] for b in batches[:4]]
    reference.assert_close(norm.moving_mean, np.mean([h.mean(0) for h in first], 0))


def test_recompute_statistics_needs_batch_norm():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="Received: model="):
        kbn.recompute_batch_norm_statistics(model, np.ones((4, 3), "float32"))


def test_recompute_renorm_layers_keeps_moving_stddev_consistent(rng):
    # Clip limits that make renorm's corrections r = 1 and d = 0 in the pass
    # (it applies them as in training), so that the NumPy pass is plain BN.
    clipping = {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    model = _mlp({"renorm": True, "momentum": 0.9, "renorm_clipping": clipping})
    x = rng.normal(2.0, 3.0, size=(40, 6)).astype("float32")
    renorm_before = {
        id(v): _np(v) for v in model.non_trainable_weights if "renorm" in v.name
    }
    assert kbn.recompute_batch_norm_statistics(model, x, batch_size=10) == 4
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    passes = [_numpy_training_pass(model, x[i : i + 10]) for i in range(0, 40, 10)]
    for index, norm in enumerate(norms):
        inputs = [batch[index] for batch in passes]
        variance = np.mean([h.var(0) * 10 / 9 for h in inputs], 0)
        reference.assert_close(
            norm.moving_mean, np.mean([h.mean(0) for h in inputs], 0)
        )
        reference.assert_close(norm.moving_variance, variance, 100.0)
        reference.assert_close(
            norm.moving_stddev, np.sqrt(_np(norm.moving_variance) + norm.epsilon)
        )
    for variable in model.non_trainable_weights:
        if id(variable) in renorm_before:  # renorm's training state is kept
            np.testing.assert_array_equal(_np(variable), renorm_before[id(variable)])


def test_a_batch_with_one_value_per_feature_does_not_count(rng):
    model = _mlp({"momentum": None})
    x = rng.normal(2.0, 3.0, size=(31, 6)).astype("float32")  # last batch: 1
    with warnings.catch_warnings():
        # Warned of when the batch size is static (JAX), not when a compiled
        # pass has generalized it (TensorFlow); it does not count either way.
        warnings.simplefilter("ignore")
        used = kbn.recompute_batch_norm_statistics(model, x, batch_size=10)
    assert used == 4
    norm = next(layer for layer in model.layers if isinstance(layer, BatchNorm))
    assert float(_np(norm.num_batches)) == 3.0
    inputs = [_numpy_training_pass(model, x[i : i + 10])[0] for i in range(0, 30, 10)]
    reference.assert_close(norm.moving_mean, np.mean([h.mean(0) for h in inputs], 0))
    reference.assert_close(
        norm.moving_variance, np.mean([h.var(0) * 10 / 9 for h in inputs], 0), 100.0
    )


def test_masked_positions_do_not_count(rng):
    inputs = keras.Input((None, 3))
    outputs = BatchNorm(name="bn")(keras.layers.Masking(0.0)(inputs))
    model = keras.Model(inputs, outputs)
    x = rng.normal(4.0, 2.0, size=(12, 5, 3)).astype("float32")
    lengths = rng.integers(2, 6, size=12)
    for row, length in enumerate(lengths):
        x[row, length:] = 0.0
    kbn.recompute_batch_norm_statistics(model, x, batch_size=6)
    means, variances = [], []
    for start in (0, 6):
        kept = np.concatenate(
            [x[r, : lengths[r]] for r in range(start, start + 6)]
        ).astype("float64")
        means.append(kept.mean(0))
        variances.append(kept.var(0) * len(kept) / (len(kept) - 1))
    bn = model.get_layer("bn")
    reference.assert_close(bn.moving_mean, np.mean(means, 0), 10.0)
    reference.assert_close(bn.moving_variance, np.mean(variances, 0), 10.0)


def test_frozen_layers_are_recomputed_and_keras_layers_left_alone(rng):
    inputs = keras.Input((6,))
    h = BatchNorm(name="frozen")(keras.layers.Dense(5, use_bias=False)(inputs))
    h = keras.layers.BatchNormalization(name="keras_bn")(h)
    model = keras.Model(inputs, h)
    model.get_layer("frozen").trainable = False
    x = rng.normal(2.0, 3.0, size=(20, 6)).astype("float32")
    keras_before = [_np(v) for v in model.get_layer("keras_bn").weights]
    kbn.recompute_batch_norm_statistics(model, x, batch_size=10)
    frozen = model.get_layer("frozen")
    assert not frozen.trainable
    h = [x[i : i + 10] @ _np(model.layers[1].kernel) for i in (0, 10)]
    reference.assert_close(frozen.moving_mean, np.mean([v.mean(0) for v in h], 0), 10.0)
    for a, b in zip(keras_before, model.get_layer("keras_bn").weights):
        np.testing.assert_array_equal(a, _np(b))


class _SampleVarianceAgain(BatchNorm):
    """An estimator of its own that declares Bessel's correction right."""

    def compute_moments(self, inputs, axes, mask=None):
        return bn_ops.moments(inputs, axes, mask=mask)

    def debias_variance(self, variance, count):
        return super().debias_variance(variance, count)


def test_an_estimator_that_declares_its_correction_is_accepted(rng):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _SampleVarianceAgain(name="own")(inputs))
    x = rng.normal(1.0, 2.0, size=(20, 4)).astype("float32")
    kbn.recompute_batch_norm_statistics(model, x, batch_size=10)
    expected = np.mean([x[i : i + 10].var(0) * 10 / 9 for i in (0, 10)], 0)
    reference.assert_close(model.get_layer("own").moving_variance, expected, 10.0)


def test_recording_changes_no_state(rng):
    layer = BatchNorm(momentum=None, virtual_batch_size=5)
    x = rng.normal(3.0, 2.0, size=(10, 4)).astype("float32")
    layer.build(x.shape)
    before = [_np(v) for v in layer.weights]
    with layer.recording_statistics(unbiased=True) as records:
        layer(x, training=True)
    assert layer._recording is None
    for a, b in zip(before, layer.weights):
        np.testing.assert_array_equal(a, _np(b))
    ((mean, weight), (variance, _)) = (
        records[0]["moving_mean"],
        records[0]["moving_variance"],
    )
    groups = x.reshape(2, 5, 4).astype("float64")
    reference.assert_close(mean, groups.mean(1).mean(0), 10.0)
    reference.assert_close(variance, (groups.var(1) * 5 / 4).mean(0), 10.0)
    assert float(_np(weight)) == 1.0


def test_batch_norm_layers_finds_nested_layers():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, BatchNorm(name="inner_bn")(inner_in))
    inputs = keras.Input((3, 4))
    h = keras.layers.TimeDistributed(inner)(inputs)
    h = BNLSTM(2, 3)(h)
    model = keras.Model(inputs, BatchNorm(name="outer_bn")(h))
    found = batch_norm_layers(model)
    assert {layer.name for layer in found} >= {"inner_bn", "outer_bn"}
    assert sorted(type(layer).__name__ for layer in found) == [
        "BNLSTM",
        "BatchNorm",
        "BatchNorm",
    ]


@pytest.mark.parametrize(
    "kwargs,received",
    [({"batch_size": 0}, "batch_size=0"), ({"num_batches": 1.5}, "num_batches=1.5")],
)
def test_bad_arguments(kwargs, received):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, BatchNorm()(inputs))
    with pytest.raises((TypeError, ValueError), match=f"Received: {received}"):
        kbn.recompute_batch_norm_statistics(model, np.ones((4, 3), "float32"), **kwargs)
