"""Throughput measurements of the study's MLP, for `recipes/benchmark.py`.

Each function trains the 784-100-100-100-10 MLP (ReLU, SGD, batches of 60)
on the same data in the current backend and returns training steps per
second, measured after a warm-up that compiles everything:

- `kbn_path`: the study's own training path (`kbn_study.training.runs`:
  `MultiStepTrainer` + `fit`, with the validation recorder or without);
- `keras_fit`: plain `model.fit` on a batch generator with Keras's
  `steps_per_execution`, what a Keras user writes;
- `handwritten_loop`: every step inside one compiled loop
  (`jax.lax.fori_loop`, or `tf.while_loop` without XLA), data on the device:
  the ceiling.

`sequence_training` times the training step of an LSTM and a BN-LSTM
(`kbn.layers.BNLSTM`) on pixel-by-pixel MNIST sequences (784 steps of 1
pixel, 100 units, batches of 64, as Cooijmans et al. 2016): the ratio of the
two is the cost of recurrent batch norm.

Timings depend on the machine and its load; compare ratios measured side by
side in one run.

It must not write files or print (the command does). Over 400 lines: the
hand-written loops are one per framework on purpose (JAX's `fori_loop`,
TensorFlow's `while_loop`), the baselines the ratios are measured against.
"""

import time

import keras
import numpy as np

from kbn import callbacks as kbn_callbacks
from kbn.trainer import batch_indices
from kbn_study.data import mnist
from kbn_study.models import networks as models
from kbn_study.training import runs

LEARNING_RATE = 0.01
MOMENTUM = 0.99
EPSILON = 1e-3


def kbn_path(
    dataset,
    batch_norm,
    batches=10_000,
    batches_per_sample=500,
    record=True,
    seed=0,
):
    """Steps/s of the study's training path (`kbn_study.training.runs`).

    Args:
        dataset: `kbn_study.data.mnist.Dataset`.
        batch_norm: As `kbn_study.models.networks.build_mlp`'s argument.
        batches: Timed batches (a multiple of `batches_per_sample`).
        batches_per_sample: Validation sampling interval.
        record: Whether the validation recorder runs.
        seed: Initial weights and batch order.
    """
    schedule = runs.Schedule(
        batches=batches, batches_per_sample=batches_per_sample, seed=seed
    )
    model = models.build_mlp(models.initial_weights(seed=seed), "relu", batch_norm)
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    trainer = runs.make_trainer(model, dataset, optimizer, schedule)
    callbacks = []
    if record:
        callbacks.append(
            kbn_callbacks.ValidationAccuracyRecorder(
                (dataset.validation.images, dataset.validation.labels),
                every_n_batches=batches_per_sample,
            )
        )
    blocks = runs.training_blocks(schedule, dataset)
    runs.fit_batches(trainer, schedule, blocks, schedule.sample_interval, callbacks)
    wall = runs.fit_batches(trainer, schedule, blocks, batches, callbacks)
    return batches / wall


def keras_fit(dataset, batch_norm, batches=10_000, steps_per_execution=50, seed=0):
    """Steps/s of plain `model.fit` on a generator of batches."""
    model = models.build_mlp(models.initial_weights(seed=seed), "relu", batch_norm)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    batches_iter = mnist.training_batches(
        dataset.train.images, dataset.train.labels, batch_size=60, seed=seed
    )
    per_epoch = 500
    model.fit(batches_iter, steps_per_epoch=per_epoch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(
        batches_iter,
        steps_per_epoch=per_epoch,
        epochs=max(1, batches // per_epoch),
        shuffle=False,
        verbose=0,
    )
    return max(1, batches // per_epoch) * per_epoch / (time.perf_counter() - start)


def handwritten_loop(dataset, batch_norm, batches=10_000, seed=0):
    """Steps/s of a hand-written training loop compiled as a whole.

    The same network, loss, SGD update and moving-average update as the kbn
    path, with every step inside one compiled loop and the data on the
    device. JAX: `jax.lax.fori_loop` under `jax.jit`. TensorFlow:
    `tf.while_loop` in a `tf.function`, without XLA (XLA inside the loop is
    much slower on a CPU).
    """
    kernels = models.initial_weights(seed=seed)
    stream = batch_indices(len(dataset.train), 60, seed=seed)
    order = np.stack([next(stream) for _ in range(batches)]).astype("int32")
    backend = keras.backend.backend()
    if backend == "jax":
        run = _jax_loop(dataset, kernels, batch_norm, order)
    elif backend == "tensorflow":
        run = _tensorflow_loop(dataset, kernels, batch_norm, order)
    else:
        raise ValueError(
            "handwritten_loop supports the jax and tensorflow backends. "
            f"Received: backend={backend!r}"
        )
    run()  # compiles
    start = time.perf_counter()
    run()
    return batches / (time.perf_counter() - start)


def _initial_parameters(kernels, batch_norm):
    hidden = [k.shape[1] for k in kernels[:-1]]
    return {
        "kernels": [np.asarray(k) for k in kernels],
        "shifts": [np.zeros(n, "float32") for n in hidden]
        + [np.zeros(kernels[-1].shape[1], "float32")],
        "scales": [np.ones(n, "float32") for n in hidden] if batch_norm else [],
    }


def _jax_loop(dataset, kernels, batch_norm, order):
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(dataset.train.images)
    labels = jnp.asarray(dataset.train.labels.astype("int32"))
    order = jnp.asarray(order)
    params = jax.tree.map(jnp.asarray, _initial_parameters(kernels, batch_norm))
    moving = (
        [(jnp.zeros(k.shape[1]), jnp.ones(k.shape[1])) for k in kernels[:-1]]
        if batch_norm
        else []
    )

    def loss(params, x, y):
        h, stats = x, []
        for i in range(len(params["kernels"]) - 1):
            h = h @ params["kernels"][i]
            if batch_norm:
                mean, var = jnp.mean(h, 0), jnp.var(h, 0)
                stats.append((mean, var))
                h = (h - mean) * jax.lax.rsqrt(var + EPSILON)
                h = h * params["scales"][i] + params["shifts"][i]
            else:
                h = h + params["shifts"][i]
            h = jax.nn.relu(h)
        logits = h @ params["kernels"][-1] + params["shifts"][-1]
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], 1)), stats

    def step(i, carry):
        params, moving = carry
        index = order[i]
        grads, stats = jax.grad(loss, has_aux=True)(
            params, images[index], labels[index]
        )
        params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
        moving = [
            (m * MOMENTUM + bm * (1 - MOMENTUM), v * MOMENTUM + bv * (1 - MOMENTUM))
            for (m, v), (bm, bv) in zip(moving, stats)
        ]
        return params, moving

    compiled = jax.jit(lambda p, m: jax.lax.fori_loop(0, order.shape[0], step, (p, m)))
    return lambda: jax.block_until_ready(compiled(params, moving))


def _tensorflow_loop(dataset, kernels, batch_norm, order):
    import tensorflow as tf

    images = tf.constant(dataset.train.images)
    labels = tf.constant(dataset.train.labels.astype("int32"))
    order = tf.constant(order)
    initial = _initial_parameters(kernels, batch_norm)
    params = tf.nest.map_structure(tf.Variable, initial)
    flat = tf.nest.flatten(params)
    moving = (
        [
            (tf.Variable(tf.zeros(k.shape[1])), tf.Variable(tf.ones(k.shape[1])))
            for k in kernels[:-1]
        ]
        if batch_norm
        else []
    )

    def step(i):
        index = order[i]
        x, y = tf.gather(images, index), tf.gather(labels, index)
        with tf.GradientTape() as tape:
            h, stats = x, []
            for j in range(len(params["kernels"]) - 1):
                h = h @ params["kernels"][j]
                if batch_norm:
                    mean, var = tf.nn.moments(h, [0])
                    stats.append((mean, var))
                    h = (h - mean) * tf.math.rsqrt(var + EPSILON)
                    h = h * params["scales"][j] + params["shifts"][j]
                else:
                    h = h + params["shifts"][j]
                h = tf.nn.relu(h)
            logits = h @ params["kernels"][-1] + params["shifts"][-1]
            value = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            )
        for variable, grad in zip(flat, tape.gradient(value, flat)):
            variable.assign_sub(LEARNING_RATE * grad)
        for (m, v), (bm, bv) in zip(moving, stats):
            m.assign(m * MOMENTUM + bm * (1 - MOMENTUM))
            v.assign(v * MOMENTUM + bv * (1 - MOMENTUM))
        return (i + 1,)

    @tf.function(jit_compile=False)
    def run():
        tf.while_loop(lambda i: i < order.shape[0], step, (tf.constant(0),))

    return run


def inference(dataset, batch_norm, batches=10_000, fold=False, seed=0, batch_size=500):
    """Compiled inference passes per second, batches of `batch_size` images.

    `fold=True` measures the model returned by `kbn.fold_batch_norm`.
    """
    from kbn.evaluation import compiled_forward
    from kbn.folding import fold_batch_norm

    model = models.build_mlp(models.initial_weights(seed=seed), "relu", batch_norm)
    if fold:
        model = fold_batch_norm(model)
    forward = compiled_forward(model, training=False)
    images = keras.ops.convert_to_tensor(dataset.train.images[:batch_size])
    calls = max(1, batches // 10)
    keras.ops.convert_to_numpy(forward(images))
    start = time.perf_counter()
    for _ in range(calls):
        outputs = forward(images)
    keras.ops.convert_to_numpy(outputs)
    return calls / (time.perf_counter() - start)


SEQUENCE_UNITS = 100
SEQUENCE_BATCH_SIZE = 64


def sequence_training(dataset, batch_norm, batches=5, steps=784, seed=0):
    """Training batches/s of an LSTM or a BN-LSTM on pixel sequences.

    A `(steps, 784 // steps)` sequence per image, `SEQUENCE_UNITS` units and
    a linear readout, Adam, `train_on_batch` on batches of
    `SEQUENCE_BATCH_SIZE` (a compiled step), timed after one warm-up batch
    that compiles it.
    """
    from kbn.layers import BNLSTM

    features = 784 // steps
    images = dataset.train.images[: SEQUENCE_BATCH_SIZE * 4]
    images = images.reshape(-1, steps, features)
    labels = dataset.train.labels[: len(images)]
    inputs = keras.Input((steps, features))
    if batch_norm:
        rnn = BNLSTM(SEQUENCE_UNITS, steps, seed=seed)
    else:
        rnn = keras.layers.LSTM(SEQUENCE_UNITS)
    model = keras.Model(inputs, keras.layers.Dense(10)(rnn(inputs)))
    model.compile(
        optimizer=keras.optimizers.Adam(0.001),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    size = SEQUENCE_BATCH_SIZE

    def batch(i):
        start = (i % 4) * size
        return images[start : start + size], labels[start : start + size]

    model.train_on_batch(*batch(0))
    start = time.perf_counter()
    for i in range(batches):
        loss = model.train_on_batch(*batch(i + 1))
    float(np.asarray(loss))
    return batches / (time.perf_counter() - start)


SEQUENCE_MEASUREMENTS = {
    "LSTM, 784 pixel steps": (sequence_training, {"batch_norm": False}),
    "BN-LSTM, 784 pixel steps": (sequence_training, {"batch_norm": True}),
}

MEASUREMENTS = {
    # name: (function, keyword arguments)
    "kbn path, BN": (kbn_path, {"batch_norm": True}),
    "kbn path, no BN": (kbn_path, {"batch_norm": False}),
    "kbn path, BN, no recorder": (kbn_path, {"batch_norm": True, "record": False}),
    "kbn path, keras BatchNormalization": (
        kbn_path,
        {"batch_norm": keras.layers.BatchNormalization},
    ),
    "keras fit (steps_per_execution=50), BN": (keras_fit, {"batch_norm": True}),
    "keras fit (steps_per_execution=50), no BN": (keras_fit, {"batch_norm": False}),
    "hand-written loop, BN": (handwritten_loop, {"batch_norm": True}),
    "hand-written loop, no BN": (handwritten_loop, {"batch_norm": False}),
    "inference, BN model": (inference, {"batch_norm": True}),
    "inference, folded BN model": (inference, {"batch_norm": True, "fold": True}),
    **SEQUENCE_MEASUREMENTS,
}
MLP_MEASUREMENTS = [n for n in MEASUREMENTS if n not in SEQUENCE_MEASUREMENTS]


def measure(dataset, batches, repeats, names=None, sequence_batches=5):
    """Runs every measurement `repeats` times, interleaved; returns rows.

    The MLP's measurements time `batches` batches, the sequences'
    `sequence_batches` (a 784-step batch costs about a thousand MLP ones).

    Interleaving (all measurements once, then all again) spreads a burst of
    load on a shared machine over all of them instead of one.
    """
    names = list(MEASUREMENTS) if names is None else names
    rows = []
    for repeat in range(repeats):
        for name in names:
            function, kwargs = MEASUREMENTS[name]
            keras.backend.clear_session()
            rows.append(
                {
                    "backend": keras.backend.backend(),
                    "measurement": name,
                    "repeat": repeat,
                    "steps_per_second": function(
                        dataset,
                        batches=(
                            sequence_batches
                            if function is sequence_training
                            else batches
                        ),
                        **kwargs,
                    ),
                    "unit": (
                        "inference calls (500 images)/s"
                        if function is inference
                        else "training batches/s"
                    ),
                }
            )
    return rows


def ratios(medians):
    """The issue's goals as measured ratios.

    Args:
        medians: DataFrame indexed by (backend, measurement) with a
            `steps_per_second` column of medians.

    Returns:
        A list of dicts: `ratio`, `backend`, `value`, `goal`.
    """
    speed = medians["steps_per_second"]
    backends = sorted({b for b, _ in speed.index})
    rows = []
    for b in backends:
        lstm = speed.get((b, "LSTM, 784 pixel steps"))
        bn_lstm = speed.get((b, "BN-LSTM, 784 pixel steps"))
        if lstm and bn_lstm:
            rows.append(
                {
                    "ratio": "BN-LSTM / LSTM time per training batch (784 steps)",
                    "backend": b,
                    "value": lstm / bn_lstm,
                    "goal": "<= 1.5",
                }
            )
    if not any(speed.get((b, "kbn path, BN")) for b in backends):
        return rows
    hand = {b: speed.get((b, "hand-written loop, BN")) for b in backends}
    fastest = max((b for b in backends if hand[b]), key=lambda b: hand[b], default=None)
    for b in backends:
        kbn_bn = speed.get((b, "kbn path, BN"))
        if fastest is not None:
            rows.append(
                {
                    "ratio": f"kbn BN path / hand-written BN loop ({fastest})",
                    "backend": b,
                    "value": kbn_bn / hand[fastest],
                    "goal": ">= 0.9",
                }
            )
        rows.append(
            {
                "ratio": "kbn BatchNorm / keras BatchNormalization (kbn path)",
                "backend": b,
                "value": kbn_bn / speed.get((b, "kbn path, keras BatchNormalization")),
                "goal": ">= 1.0",
            }
        )
        rows.append(
            {
                "ratio": "BN / no BN (kbn path)",
                "backend": b,
                "value": kbn_bn / speed.get((b, "kbn path, no BN")),
                "goal": ">= 0.9",
            }
        )
        rows.append(
            {
                "ratio": "hand-written loop: BN / no BN",
                "backend": b,
                "value": hand[b] / speed.get((b, "hand-written loop, no BN")),
                "goal": "(the ceiling's own cost of BN)",
            }
        )
        folded = speed.get((b, "inference, folded BN model"))
        if folded:
            rows.append(
                {
                    "ratio": "inference: folded / unfolded BN model",
                    "backend": b,
                    "value": folded / speed.get((b, "inference, BN model")),
                    "goal": "(measured)",
                }
            )
        rows.append(
            {
                "ratio": "validation recorder overhead (1 - with / without)",
                "backend": b,
                "value": 1 - kbn_bn / speed.get((b, "kbn path, BN, no recorder")),
                "goal": "<= 0.03",
            }
        )
    return rows
