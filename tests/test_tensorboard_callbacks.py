"""kbn's TensorBoard callbacks in real fit runs, their event files read back."""

import os

import keras
import numpy as np
import pytest

from kbn import MultiStepTrainer
from kbn.callbacks import BatchNormStatistics
from kbn.callbacks import GlobalStepCallback
from kbn.callbacks import TrainingScalars
from kbn.callbacks import ValidationAccuracyRecorder
from kbn.layers import BatchNorm
from kbn.trainer import index_batches
from tests.helpers import read_histograms
from tests.helpers import read_scalars

EPSILON = 1e-3


def _network():
    """Dense -> BN -> ReLU -> Dense -> BN (no beta, unbiased) -> ReLU -> Dense."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, use_bias=False, name="dense_a")(inputs)
    h = BatchNorm(momentum=0.8, epsilon=EPSILON, name="bn_a")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Dense(5, use_bias=False, name="dense_b")(h)
    h = BatchNorm(
        momentum=0.8,
        epsilon=EPSILON,
        center=False,
        unbiased_variance=True,  # the moving variance averages m / (m - 1) var
        name="bn_b",
    )(h)
    h = keras.layers.Activation("relu")(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture
def task(rng):
    x = rng.normal(size=(70, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")
    return x, y


def _events(folder):
    return sorted(f for f in os.listdir(folder) if "tfevents" in f)


def test_every_curve_on_the_global_batch_in_one_event_file(task, tmp_path):
    """3 epochs of 7 batches, 5 per execution, sampled every 5 batches."""
    x, y = task
    log_dir = str(tmp_path / "run")
    model = _network()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=_loss(),
        metrics=["accuracy"],
        steps_per_execution=5,
    )
    validation = (x[:30], y[:30])
    callbacks = [
        ValidationAccuracyRecorder(validation, every_n_batches=5, log_dir=log_dir),
        TrainingScalars(log_dir, every_n_batches=5),
        BatchNormStatistics(log_dir, every_n_batches=5, probe_images=x[:10]),
    ]
    history = model.fit(
        x, y, batch_size=10, epochs=3, verbose=0, callbacks=callbacks
    ).history
    assert len(_events(log_dir)) == 1  # shared: one run, one file
    scalars = read_scalars(log_dir)
    steps = [5, 12, 19, 21]
    for tag in ("train/loss", "train/accuracy", "validation/accuracy"):
        assert [s for s, _ in scalars[tag]] == steps, tag
    # The learning rate is constant: not written.
    assert not any("learning_rate" in tag for tag in scalars)
    # Keras's own values: the last sample is the last epoch's logs.
    assert scalars["train/loss"][-1][1] == pytest.approx(history["loss"][-1], 1e-6)
    assert scalars["train/accuracy"][-1][1] == pytest.approx(history["accuracy"][-1])
    histograms = read_histograms(log_dir)
    assert sorted(histograms) == [
        "batch_norm/bn_a/beta",
        "batch_norm/bn_a/gamma",
        "batch_norm/bn_a/moving_mean",
        "batch_norm/bn_a/moving_variance",
        "batch_norm/bn_b/gamma",
        "batch_norm/bn_b/moving_mean",
        "batch_norm/bn_b/moving_variance",
    ]
    for tag, events in histograms.items():
        assert [s for s, _ in events] == [0, *steps], tag
    for layer in ("bn_a", "bn_b"):
        for gap in ("mean_gap", "variance_gap"):
            assert [s for s, _ in scalars[f"batch_norm/{layer}/{gap}"]] == [0, *steps]


def test_a_changing_learning_rate_is_written_from_step_0(task, tmp_path):
    x, y = task
    x, y = x[:60], y[:60]  # 6 batches per epoch
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=1, decay_rate=0.5
    )
    model = _network()
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=_loss())
    model.fit(
        x,
        y,
        batch_size=10,
        epochs=2,
        verbose=0,
        callbacks=[TrainingScalars(tmp_path, every_n_batches=4)],
    )
    rates = read_scalars(tmp_path)["train/learning_rate"]
    assert [s for s, _ in rates] == [0, 4, 8, 12]
    np.testing.assert_allclose(
        [r for _, r in rates], [0.1 * 0.5**s for s in (0, 4, 8, 12)], rtol=1e-5
    )


class _Snapshots(GlobalStepCallback):
    """The BN layers' weights and all kernels after every call, by global step."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.states = {0: self._state()}

    def on_steps_end(self, logs=None):
        self.states[self.global_step] = self._state()

    def _state(self):
        model = self.model.model  # syncs the JAX state; the trained network
        state = {
            variable.path: keras.ops.convert_to_numpy(variable).astype("float64")
            for variable in model.weights
        }
        return state


def _reference_statistics(state, probe):
    """What BatchNormStatistics should log for `_network`, in NumPy."""
    values = {}
    h = probe.astype("float64") @ state["dense_a/kernel"]
    for layer, kernel in (("bn_a", "dense_b/kernel"), ("bn_b", None)):
        mean, variance = h.mean(axis=0), h.var(axis=0)
        # What the moving variance averages: bn_b's is unbiased.
        averaged = variance * len(h) / (len(h) - 1) if layer == "bn_b" else variance
        moving_mean = state[f"{layer}/moving_mean"]
        moving_variance = state[f"{layer}/moving_variance"]
        values[f"batch_norm/{layer}/mean_gap"] = np.abs(mean - moving_mean).mean()
        values[f"batch_norm/{layer}/variance_gap"] = np.abs(
            averaged - moving_variance
        ).mean()
        for weight in ("moving_mean", "moving_variance", "gamma", "beta"):
            if f"{layer}/{weight}" in state:
                values[f"batch_norm/{layer}/{weight}"] = state[f"{layer}/{weight}"]
        if kernel is not None:
            normalized = (h - mean) / np.sqrt(variance + EPSILON)
            h = normalized * state[f"{layer}/gamma"] + state[f"{layer}/beta"]
            h = np.maximum(h, 0.0) @ state[kernel]
    return values


def _check_histogram(buckets, values):
    """TensorBoard's 30 buckets: edges from min to max, exact counts."""
    values = np.asarray(values, "float64").ravel()
    low, high = values.min(), values.max()
    np.testing.assert_allclose(buckets[0, 0], low, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(buckets[-1, 1], high, rtol=1e-6, atol=1e-7)
    assert buckets[:, 2].sum() == values.size
    if high > low:
        width = (buckets[-1, 1] - buckets[0, 0]) / len(buckets)
        index = np.minimum(((values - buckets[0, 0]) // width).astype(int), 29)
        np.testing.assert_array_equal(buckets[:, 2], np.bincount(index, minlength=30))


def test_batch_norm_statistics_are_the_layers_at_each_logged_step(task, tmp_path):
    """Under MultiStepTrainer (the study's path): 18 batches, 3 per call."""
    x, y = task
    probe = x[:20]
    model = _network()
    trainer = MultiStepTrainer(model, x, batches_per_step=3)
    trainer.compile(optimizer=keras.optimizers.SGD(0.2), loss=_loss())
    snapshots = _Snapshots()
    statistics = BatchNormStatistics(tmp_path, every_n_batches=6, probe_images=probe)
    trainer.fit(
        index_batches(y, batch_size=10, batches_per_step=3, seed=0),
        epochs=3,
        steps_per_epoch=2,
        callbacks=[statistics, snapshots],
        shuffle=False,
        verbose=0,
    )
    scalars = read_scalars(tmp_path)
    histograms = read_histograms(tmp_path)
    logged = [0, 6, 12, 18]
    # The state really moved between the logged steps.
    assert not np.allclose(
        snapshots.states[6]["bn_a/moving_mean"],
        snapshots.states[18]["bn_a/moving_mean"],
    )
    for index, step in enumerate(logged):
        expected = _reference_statistics(snapshots.states[step], probe)
        assert len(expected) == 11  # 7 histograms, 4 gaps
        for tag, value in expected.items():
            if tag in histograms:
                logged_step, buckets = histograms[tag][index]
                assert logged_step == step
                _check_histogram(buckets, value)
            else:
                logged_step, gap = scalars[tag][index]
                assert logged_step == step
                assert gap == pytest.approx(value, rel=1e-4, abs=1e-6), (tag, step)
    # The gaps are real: the moving statistics start far from the batch's.
    assert scalars["batch_norm/bn_a/variance_gap"][0][1] > 0.05
    # The pass changed nothing: the final state is the trained state.
    final = statistics.statistics()
    np.testing.assert_allclose(
        final["batch_norm/bn_a/moving_mean"],
        snapshots.states[18]["bn_a/moving_mean"],
        rtol=1e-6,
    )


def test_a_network_without_batch_norm_writes_nothing(task, tmp_path):
    x, y = task
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="sgd", loss=_loss())
    statistics = BatchNormStatistics(tmp_path, every_n_batches=2, probe_images=x[:10])
    model.fit(x, y, batch_size=10, verbose=0, callbacks=[statistics])
    assert os.listdir(tmp_path) == []


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.dense = keras.layers.Dense(4)
        self.norm = BatchNorm(name="norm")
        self.logits = keras.layers.Dense(3)

    def call(self, inputs, training=None):
        return self.logits(self.norm(self.dense(inputs), training=training))


def test_a_subclassed_model_gets_every_statistic(task, tmp_path):
    x, y = task
    model = _Subclassed()
    model(x[:2])  # built: its weights exist at step 0
    model.compile(optimizer="sgd", loss=_loss())
    statistics = BatchNormStatistics(tmp_path, every_n_batches=7, probe_images=x)
    model.fit(x, y, batch_size=10, verbose=0, callbacks=[statistics])
    histograms = read_histograms(tmp_path)
    assert [s for s, _ in histograms["batch_norm/norm/moving_variance"]] == [0, 7]
    gaps = read_scalars(tmp_path)
    assert sorted(gaps) == ["batch_norm/norm/mean_gap", "batch_norm/norm/variance_gap"]
    # The gap is the layer's: the moments of its inputs, the Dense outputs.
    h = keras.ops.convert_to_numpy(model.dense(x))
    moving = keras.ops.convert_to_numpy(model.norm.moving_mean)
    expected = np.abs(h.mean(axis=0) - moving).mean()
    assert gaps["batch_norm/norm/mean_gap"][-1][1] == pytest.approx(expected, 1e-4)


def test_histograms_only_without_probe_images(task, tmp_path):
    x, y = task
    model = _network()
    model.compile(optimizer="sgd", loss=_loss())
    statistics = BatchNormStatistics(tmp_path, every_n_batches=7)
    model.fit(x, y, batch_size=10, verbose=0, callbacks=[statistics])
    assert len(read_histograms(tmp_path)) == 7
    assert not read_scalars(tmp_path)


class _Fail(GlobalStepCallback):
    def on_steps_end(self, logs=None):
        if self.global_step == 4:
            raise RuntimeError("stop here")


def test_a_run_that_raised_leaves_its_events_and_the_next_runs_alone(task, tmp_path):
    """Keras skips on_train_end when fit raises: the shared writer stays open."""
    x, y = task
    model = _network()
    model.compile(optimizer="sgd", loss=_loss())
    with pytest.raises(RuntimeError, match="stop here"):
        model.fit(
            x,
            y,
            batch_size=10,
            verbose=0,
            callbacks=[TrainingScalars(tmp_path, every_n_batches=2), _Fail()],
        )
    assert [s for s, _ in read_scalars(tmp_path)["train/loss"]] == [2, 4]  # flushed
    # A rerun replaces the earlier run's events (as the study does).
    for name in _events(tmp_path):
        os.remove(tmp_path / name)
    model.fit(x, y, batch_size=10, verbose=0, callbacks=[TrainingScalars(tmp_path, 7)])
    assert [s for s, _ in read_scalars(tmp_path)["train/loss"]] == [7]


@pytest.mark.parametrize(
    "callback,every,error",
    [
        (TrainingScalars, 0, ValueError),
        (TrainingScalars, 2.5, TypeError),
        (BatchNormStatistics, -1, ValueError),
        (BatchNormStatistics, True, TypeError),
    ],
)
def test_bad_interval_is_rejected(tmp_path, callback, every, error):
    with pytest.raises(error, match=f"Received: every_n_batches={every!r}"):
        callback(tmp_path, every_n_batches=every)


@pytest.mark.parametrize(
    "values", [[0.5, -1.0, 2.0, 2.0, 0.25], [1.0, 1.0, 1.0], np.arange(100.0) ** 2]
)
def test_histograms_are_tensorboards_own(tmp_path, values):
    """The callback's NumPy buckets equal those of `tf.summary.histogram`."""
    import tensorflow as tf

    from kbn.event_file import histogram_buckets

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        tf.summary.histogram("h", np.asarray(values, "float32"), step=0)
    writer.close()
    ((_, expected),) = read_histograms(tmp_path)["h"]
    actual = histogram_buckets(np.asarray(values, "float32"))
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    assert histogram_buckets([np.nan, np.inf]) is None
