"""The README's subclassing example, run exactly as printed there."""

import os
import re

import keras
import numpy as np

from tests import reference

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


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


def test_readme_example_subtracts_the_batch_mean_only(rng):
    MeanOnlyBatchNorm = _example_class()
    x = rng.normal(3.0, 5.0, size=(32, 4)).astype("float32")
    layer = MeanOnlyBatchNorm(momentum=0.0)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    reference.assert_close(y, x - x.mean(0), 10.0)
    assert np.abs(y.std(0) - x.std(0)).max() < 1e-3  # not rescaled
    # Inference subtracts the moving mean.
    reference.assert_close(layer(x), x - x.mean(0), 10.0)
    assert [w.name for w in layer.trainable_weights] == ["beta"]


def test_readme_example_fits_and_round_trips(rng, tmp_path):
    MeanOnlyBatchNorm = _example_class()
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, use_bias=False)(inputs)
    h = MeanOnlyBatchNorm()(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(20, 6, 6, 1)).astype("float32")
    history = model.fit(x, rng.normal(size=(20, 2)), batch_size=10, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "mean_only.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[2]).__name__ == "MeanOnlyBatchNorm"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )
