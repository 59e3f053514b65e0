"""ActivationPercentiles against NumPy percentiles of the same model's layers."""

import keras
import numpy as np
import pandas as pd
import pytest

from kbn import MultiStepTrainer
from kbn.callbacks import ActivationPercentiles
from kbn.layers import BatchNorm
from kbn.trainer import index_batches
from tests.helpers import read_histograms
from tests.helpers import read_scalars

# Both sides compute the same float32 network on the same weights (the
# callback compiled, the reference eagerly): they differ by rounding, a few
# float32 ulps of values of order 1. One SGD step at learning rate 0.5 moves
# the percentiles by far more (checked below), so a sample taken one batch
# early or late cannot pass.
TOLERANCE = 1e-5


def _network(batch_norm=True):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, use_bias=not batch_norm, name="dense")(inputs)
    if batch_norm:
        h = BatchNorm(momentum=0.8, name="bn")(h)
    h = keras.layers.Activation("sigmoid", name="act")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.fixture
def task(rng):
    x = rng.normal(size=(40, 6)).astype("float32") * 2 + 1
    y = (x[:, 0] > 1).astype("int64") + (x[:, 1] > 2).astype("int64")
    probe = rng.normal(size=(25, 6)).astype("float32") * 2 + 1
    return x, y, probe


def _train(model, x, y, batches):
    """The first `batches` batches of 10 of `fit(x, y, shuffle=False)`."""
    per_epoch = len(x) // 10
    for _ in range(batches // per_epoch):
        model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    rest = batches % per_epoch
    if rest:
        model.fit(
            x[: 10 * rest], y[: 10 * rest], batch_size=10, shuffle=False, verbose=0
        )


def _reference(model, probe, training, tensor="input"):
    """NumPy percentiles (15, 50, 85) per unit of act's input on the probe."""
    layer = model.get_layer("act")
    probe_model = keras.Model(model.input, getattr(layer, tensor))
    values = keras.ops.convert_to_numpy(probe_model(probe, training=training))
    return np.percentile(np.asarray(values, "float64"), (15, 50, 85), axis=0)


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_percentiles_are_numpys_after_the_same_steps(task, batch_norm, training):
    """8 batches (2 epochs of 4) sampled every 3: steps 0, 3, 6 and 8."""
    x, y, probe = task
    callback = ActivationPercentiles(
        "act", probe, every_n_batches=3, tensor="input", training=training
    )
    model = _compile(_network(batch_norm))
    model.fit(
        x, y, batch_size=10, epochs=2, shuffle=False, verbose=0, callbacks=[callback]
    )
    assert callback.steps == [0, 3, 6, 8]
    recorded = callback.values["act"]
    assert recorded.shape == (4, 3, 8)
    for index, step in enumerate(callback.steps):
        reference = _compile(_network(batch_norm))
        _train(reference, x, y, step)
        expected = _reference(reference, probe, training)
        np.testing.assert_allclose(recorded[index], expected, atol=TOLERANCE, rtol=0)
    # The network did learn: consecutive samples differ by far more.
    assert np.abs(np.diff(recorded, axis=0)).max(axis=(1, 2)).min() > 100 * TOLERANCE


def test_chosen_units_scalars_and_histograms_in_tensorboard(task, tmp_path):
    x, y, probe = task
    log_dir = tmp_path / "run"
    callback = ActivationPercentiles(
        ["bn", "dense"], probe, percentiles=(15, 50, 85), every_n_batches=4,
        units=[1, 5], log_dir=log_dir,
    )  # fmt: skip
    model = _compile(_network())
    model.fit(
        x, y, batch_size=10, epochs=2, shuffle=False, verbose=0, callbacks=[callback]
    )
    assert callback.steps == [0, 4, 8]
    # "bn"'s output is act's input, with training=True.
    expected = _reference(model, probe, training=True)[:, [1, 5]]
    np.testing.assert_allclose(callback.values["bn"][-1], expected, atol=TOLERANCE)
    dense = keras.Model(model.input, model.get_layer("dense").output)
    raw = np.asarray(keras.ops.convert_to_numpy(dense(probe)), "float64")[:, [1, 5]]
    np.testing.assert_allclose(
        callback.values["dense"][-1],
        np.percentile(raw, (15, 50, 85), axis=0),
        atol=TOLERANCE,
    )

    scalars = read_scalars(log_dir)
    for name in ("bn", "dense"):
        for column, unit in enumerate([1, 5]):
            for row, q in enumerate((15, 50, 85)):
                events = scalars[f"activation_percentiles/{name}/unit_{unit}/p{q}"]
                assert [s for s, _ in events] == [0, 4, 8]
                np.testing.assert_allclose(
                    [v for _, v in events],
                    callback.values[name][:, row, column],
                    rtol=1e-6,  # written as float32
                    atol=1e-6,
                )
    histograms = read_histograms(log_dir)
    events = histograms["activation_percentiles/bn/values"]
    assert [s for s, _ in events] == [0, 4, 8]
    for _, buckets in events:
        assert buckets[:, 2].sum() == len(probe) * 2  # every value of 2 units

    table = pd.DataFrame(callback.records())
    assert len(table) == 2 * 3 * 3 * 2  # layers, samples, percentiles, units
    row = table[(table.layer == "bn") & (table.step == 8) & (table.unit == 5)]
    np.testing.assert_allclose(
        row.sort_values("percentile")["value"], expected[:, 1], atol=TOLERANCE
    )


def test_every_unit_pooled_scalars_and_a_multi_step_trainer(task, tmp_path):
    """Through kbn.MultiStepTrainer, 2 batches per call: the global step
    counts batches; scalars pool every unit's values."""
    x, y, probe = task
    model = _network()
    trainer = MultiStepTrainer(model, x, batches_per_step=2)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callback = ActivationPercentiles(
        "act", probe, every_n_batches=4, tensor="input", log_dir=tmp_path
    )
    blocks = index_batches(y, batch_size=10, batches_per_step=2, seed=0)
    trainer.fit(
        blocks,
        steps_per_epoch=3,
        epochs=1,
        verbose=0,
        callbacks=[callback],
        shuffle=False,
    )
    assert callback.steps == [0, 4, 6]
    recorded = callback.values["act"][-1]
    np.testing.assert_allclose(
        recorded, _reference(model, probe, training=True), atol=TOLERANCE
    )
    probe_model = keras.Model(model.input, model.get_layer("act").input)
    pooled = np.percentile(
        np.asarray(keras.ops.convert_to_numpy(probe_model(probe, training=True))),
        50,
    )
    events = read_scalars(tmp_path)["activation_percentiles/act/p50"]
    assert [s for s, _ in events] == [0, 4, 6]
    assert events[-1][1] == pytest.approx(pooled, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"layer_names": []}, TypeError, "Received: layer_names=[]"),
        ({"layer_names": ["act", "act"]}, TypeError, "distinct layer names"),
        ({"probe": None}, TypeError, "Received: probe=None"),
        ({"percentiles": (15, 101)}, ValueError, "Received: percentiles=(15, 101)"),
        ({"percentiles": ()}, ValueError, "at least one"),
        ({"every_n_batches": 0}, ValueError, "Received: every_n_batches=0"),
        ({"units": -1}, ValueError, "Received: units=-1"),
        ({"units": [1, 1]}, ValueError, "Received: units=[1, 1]"),
        ({"tensor": "pre"}, ValueError, "Received: tensor='pre'"),
    ],
)
def test_bad_arguments_say_what_was_expected(task, kwargs, error, message):
    _, _, probe = task
    arguments = {"layer_names": "act", "probe": probe, **kwargs}
    with pytest.raises(error, match="Expected") as info:
        ActivationPercentiles(**arguments)
    assert message in str(info.value)


def test_unknown_layer_and_unit_out_of_range_fail_at_the_start(task):
    x, y, probe = task
    model = _compile(_network())
    with pytest.raises(ValueError, match=r"no layer named \['sigmoid_3'\]"):
        model.fit(x, y, batch_size=10, verbose=0, callbacks=[
            ActivationPercentiles("sigmoid_3", probe)])  # fmt: skip
    with pytest.raises(ValueError, match="Layer 'act' has 8 units"):
        model.fit(x, y, batch_size=10, verbose=0, callbacks=[
            ActivationPercentiles("act", probe, units=8, tensor="input")])  # fmt: skip
