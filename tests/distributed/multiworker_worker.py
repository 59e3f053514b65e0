"""One worker of a two-worker MultiWorkerMirroredStrategy run.

Started by `tests/test_distributed.py` with its own TF_CONFIG. Trains the
small model for a few SGD steps on its half of each global batch of 60, with
synchronized batch norm, and saves its final weights and moving statistics,
and those of the same training on one device, to `<out>/worker<index>.npz`.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kbn import distributed  # noqa: E402
from kbn.layers import BatchNorm  # noqa: E402

GLOBAL_BATCH, STEPS, LEARNING_RATE = 60, 3, 0.1


def build():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, use_bias=False)(inputs)
    h = BatchNorm(synchronized=True, momentum=0.5, name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))


def data(step):
    rng = np.random.default_rng(step)
    x = np.concatenate(
        [rng.normal(0.0, 1.0, (30, 6)), rng.normal(3.0, 4.0, (30, 6))]
    ).astype("float32")
    return x, rng.normal(size=(GLOBAL_BATCH, 3)).astype("float32")


def state(model):
    bn = model.get_layer("bn")
    arrays = [np.asarray(w) for w in model.trainable_weights]
    return arrays + [np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)]


def main(out_dir):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = distributed.make_strategy("multiworker")
    local = distributed.replica_batch_size(GLOBAL_BATCH, strategy)
    with strategy.scope():
        model = build()

    @tf.function
    def step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                loss = tf.reduce_sum(tf.reduce_mean((outputs - y) ** 2, -1))
                loss = loss / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            context = tf.distribute.get_replica_context()
            grads = context.all_reduce("SUM", grads)
            for variable, grad in zip(model.trainable_variables, grads):
                variable.assign_sub(LEARNING_RATE * grad)

        strategy.run(replica, args=(x, y))

    for i in range(STEPS):
        x, y = data(i)
        step(
            x[index * local : (index + 1) * local],
            y[index * local : (index + 1) * local],
        )

    single = build()
    for i in range(STEPS):
        x, y = data(i)
        with tf.GradientTape() as tape:
            outputs = single(x, training=True)
            loss = tf.reduce_sum(tf.reduce_mean((outputs - y) ** 2, -1)) / GLOBAL_BATCH
        grads = tape.gradient(loss, single.trainable_variables)
        for variable, grad in zip(single.trainable_variables, grads):
            variable.assign_sub(LEARNING_RATE * grad)

    np.savez(os.path.join(out_dir, f"worker{index}.npz"), *state(model))
    np.savez(os.path.join(out_dir, f"single{index}.npz"), *state(single))
    print(f"worker {index} done")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
