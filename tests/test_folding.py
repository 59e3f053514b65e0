"""`kbn.fold_batch_norm` and the inference map it asks the layers for."""

import re

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from kbn.layers import BatchNorm
from tests import helpers
from tests import reference


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


def _trained(model, x, rng):
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    y = rng.normal(size=(len(x), *model.output.shape[1:])).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("norm", [BatchNorm, keras.layers.BatchNormalization])
def test_fold_dense(rng, norm):
    inputs = keras.Input((7,))
    h = keras.layers.Dense(6, use_bias=False)(inputs)
    h = keras.layers.ReLU()(norm()(h))
    h = keras.layers.Dense(5)(h)  # with a bias
    h = norm(center=False)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.normal(1.0, 2.0, size=(32, 7)).astype("float32")
    _trained(model, x, rng)
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers) - 2
    assert not any(isinstance(layer, norm) for layer in folded.layers)
    reference.assert_close(folded(x), model(x, training=False), 10.0)


@pytest.mark.parametrize(
    "data_format,axis", [("channels_last", -1), ("channels_first", 1)]
)
def test_fold_conv(rng, data_format, axis):
    # Widths differ from the filter counts: Keras 3.15's ops.add on
    # TensorFlow adds a (1, C, 1, 1) bias on the last axis when that axis also
    # has size C, which breaks Conv2D(data_format="channels_first") itself.
    if data_format == "channels_first" and not helpers.channels_first_conv_runs():
        pytest.skip(
            "TensorFlow's CPU kernels here have no channels-first Conv2D "
            "(only oneDNN builds do); the suite's JAX run checks this case"
        )
    shape = (7, 7, 2) if data_format == "channels_last" else (2, 7, 7)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(4, 3, use_bias=False, data_format=data_format)(inputs)
    h = keras.layers.ReLU()(BatchNorm(axis=axis)(h))
    h = keras.layers.Conv2D(5, 3, data_format=data_format)(h)
    h = keras.layers.BatchNormalization(axis=axis)(h)
    model = keras.Model(inputs, keras.layers.Flatten()(h))
    x = rng.normal(size=(16, *shape)).astype("float32")
    _trained(model, x, rng)
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers) - 2
    reference.assert_close(folded(x), model(x, training=False), 10.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"renorm": True, "renorm_clipping": {"rmax": 2.0, "dmax": 1.0}},
        {"virtual_batch_size": 4, "unbiased_variance": True},
        {"momentum": None, "scale": False},
    ],
    ids=["renorm", "ghost_unbiased", "cumulative_no_scale"],
)
def test_fold_layers_with_options(rng, kwargs):
    inputs = keras.Input((5,))
    h = BatchNorm(**kwargs)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.normal(3.0, 2.0, size=(32, 5)).astype("float32")
    _trained(model, x, rng)
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers) - 1
    reference.assert_close(folded(x), model(x, training=False), 10.0)


def test_fold_keeps_what_it_cannot_fold(rng):
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, activation="relu")(inputs)
    a = BatchNorm()(a)  # after an activation: not foldable
    b = keras.layers.Dense(3)(inputs)
    c = keras.layers.Add()([b, a])
    c = BatchNorm()(c)  # after Add: not foldable
    d = keras.layers.Dense(3)(c)
    e = BatchNorm(track_running_stats=False)(d)  # batch statistics always
    model = keras.Model(inputs, e)
    x = rng.normal(size=(8, 4)).astype("float32")
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers)
    reference.assert_close(folded(x), model(x), 10.0)


def test_fold_rejects_a_non_model():
    with pytest.raises(TypeError, match="Received: model of type BatchNorm"):
        kbn.fold_batch_norm(BatchNorm())


# --- inference_affine ------------------------------------------------------------


def _trained_layer(layer, rng, shape=(32, 4)):
    for step in range(3):
        layer(rng.normal(step, 1.0 + step, size=shape).astype("float32"), training=True)
    if layer.gamma is not None:
        layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
    if layer.beta is not None:
        layer.beta.assign(rng.normal(size=layer.beta.shape))
    return layer


def test_inference_affine_is_the_inference_map(rng):
    layer = _trained_layer(BatchNorm(momentum=0.5), rng)
    scale, offset = (_np(v) for v in layer.inference_affine())
    x = rng.normal(2.0, 3.0, size=(10, 4)).astype("float32")
    reference.assert_close(layer(x), x * scale + offset, 10.0)


class _SameNormalize(BatchNorm):
    """Overrides normalize without changing it: inference_affine probes."""

    def normalize(self, inputs, mean, variance, gamma, beta):
        return super().normalize(inputs, mean, variance, gamma, beta)


class _SquashingBatchNorm(BatchNorm):
    """A normalization whose inference map is not affine."""

    def normalize(self, inputs, mean, variance, gamma, beta):
        return ops.tanh(super().normalize(inputs, mean, variance, gamma, beta))


def test_probed_affine_equals_the_closed_form(rng):
    probed = _trained_layer(_SameNormalize(momentum=0.5), rng)
    plain = BatchNorm(momentum=0.5)
    plain.build((None, 4))
    plain.set_weights(probed.get_weights())
    for ours, closed in zip(probed.inference_affine(), plain.inference_affine()):
        np.testing.assert_allclose(_np(ours), _np(closed), rtol=1e-5, atol=1e-6)


def test_a_map_that_is_not_affine_is_not_folded(rng):
    inputs = keras.Input((4,))
    h = _SquashingBatchNorm(name="squash")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, h)
    model(rng.normal(size=(8, 4)).astype("float32"), training=True)
    with pytest.raises(ValueError, match="Received: a largest deviation") as error:
        kbn.fold_batch_norm(model)
    assert "_SquashingBatchNorm layer 'squash'" in str(error.value)


def test_batch_statistics_layer_has_no_inference_map():
    layer = BatchNorm(track_running_stats=False, name="batchwise")
    layer.build((None, 3))
    with pytest.raises(
        ValueError, match=re.escape("Received: track_running_stats=False")
    ) as error:
        layer.inference_affine()
    assert "'batchwise'" in str(error.value)


def test_unbuilt_layer_has_no_inference_map():
    with pytest.raises(ValueError, match="Received: an unbuilt layer"):
        BatchNorm().inference_affine()
