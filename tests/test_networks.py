"""kbn_study.models.networks: the study's MLP pair and conv net."""

import keras
import numpy as np
import pytest

from kbn.layers import BatchNorm
from kbn_study.models import networks as models


def test_initial_weights_shapes_and_scale():
    kernels = models.initial_weights(scale=5.0, seed=1)
    assert [k.shape for k in kernels] == [(784, 100), (100, 100), (100, 100), (100, 10)]
    assert all(k.dtype == np.float32 for k in kernels)
    np.testing.assert_allclose(kernels[0].std(), 5.0, rtol=0.01)
    np.testing.assert_array_equal(
        kernels[0], models.initial_weights(scale=5.0, seed=1)[0]
    )
    assert not np.array_equal(kernels[0], models.initial_weights(scale=5.0, seed=2)[0])


def test_both_networks_start_from_the_same_kernels():
    kernels = models.initial_weights(seed=0)
    plain = models.build_mlp(kernels, "relu", batch_norm=False)
    normed = models.build_mlp(kernels, "relu", batch_norm=True)
    plain_kernels = [
        layer.kernel.numpy()
        for layer in plain.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    normed_kernels = [
        layer.kernel.numpy()
        for layer in normed.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    for a, b, k in zip(plain_kernels, normed_kernels, kernels):
        np.testing.assert_array_equal(a, k)
        np.testing.assert_array_equal(b, k)


def test_structure_with_and_without_batch_norm():
    kernels = models.initial_weights(seed=0)
    normed = models.build_mlp(kernels, "sigmoid", batch_norm=True)
    dense = [layer for layer in normed.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.use_bias for d in dense] == [False, False, False, True]
    assert sum(isinstance(layer, BatchNorm) for layer in normed.layers) == 3
    assert normed.layers[-1].activation is keras.activations.linear
    assert normed.name == "mlp_with_bn"
    plain = models.build_mlp(kernels, "sigmoid")
    assert all(d.use_bias for d in plain.layers if isinstance(d, keras.layers.Dense))
    assert not any(isinstance(layer, BatchNorm) for layer in plain.layers)
    assert plain.count_params() == 784 * 100 + 100 * 100 * 2 + 100 * 10 + 310
    assert normed.output.shape == (None, 10)


def test_keras_batch_normalization_can_stand_in():
    model = models.build_mlp(
        models.initial_weights(seed=0), batch_norm=keras.layers.BatchNormalization
    )
    assert (
        sum(
            isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
        )
        == 3
    )


def test_bad_arguments():
    kernels = models.initial_weights(seed=0)
    with pytest.raises(ValueError, match="Received: activation='relux'"):
        models.build_mlp(kernels, "relux")
    with pytest.raises(TypeError, match="Received: batch_norm='yes'"):
        models.build_mlp(kernels, batch_norm="yes")
    with pytest.raises(ValueError, match="Received: shapes="):
        models.build_mlp([kernels[0], kernels[0]])
    with pytest.raises(ValueError, match="Received: scale=0"):
        models.initial_weights(scale=0)


def test_convnet_variants_start_from_the_same_kernels():
    plain = models.build_convnet(depth=6, batch_norm=False, seed=3)
    normed = models.build_convnet(depth=6, batch_norm=True, seed=3)
    convs = [
        (a, b)
        for a, b in zip(
            [x for x in plain.layers if isinstance(x, keras.layers.Conv2D)],
            [x for x in normed.layers if isinstance(x, keras.layers.Conv2D)],
        )
    ]
    assert len(convs) == 6
    for a, b in convs:
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
        assert a.use_bias and not b.use_bias
    assert [c.strides for c, _ in convs] == [(1, 1), (1, 1), (2, 2)] * 2
    assert [c.filters for c, _ in convs] == [4, 8, 12, 16, 20, 24]
    norms = [x for x in normed.layers if isinstance(x, BatchNorm)]
    # One statistic per feature map, and one per unit of the dense layer.
    assert [tuple(n.moving_mean.shape) for n in norms] == [
        (f,) for f in (4, 8, 12, 16, 20, 24, 100)
    ]
    assert normed.output.shape == (None, 10)
    other = models.build_convnet(depth=6, seed=4)
    assert not np.array_equal(
        other.layers[1].kernel.numpy(), convs[0][0].kernel.numpy()
    )


def test_convnet_bad_depth():
    with pytest.raises(ValueError, match="Received: depth=0"):
        models.build_convnet(depth=0)
