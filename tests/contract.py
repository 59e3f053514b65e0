"""A layer contract, after Keras's (private) `run_layer_test`."""

import keras
import numpy as np
from keras import ops


def run_layer_contract(layer_cls, init_kwargs, input_shape, tmp_path, seed=0):
    """Build, weights, output shape, config round trip and `.keras` round trip.

    The layer is trained for a step first, so that a round trip that loses
    moving statistics shows in the outputs.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, size=input_shape).astype("float32")

    layer = layer_cls(**init_kwargs)
    y = layer(x, training=True)
    assert tuple(y.shape) == tuple(input_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(input_shape)
    assert len(layer.weights) == len(layer.trainable_weights) + len(
        layer.non_trainable_weights
    )

    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(layer(x))
    )

    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    model(x, training=True)
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x))
    )
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    return layer
