"""One training step on 2 logical CPUs with MirroredStrategy vs one device.

Run as a script (TensorFlow's devices must be configured before it starts);
prints one JSON line with the largest differences.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kbn import distributed  # noqa: E402

distributed.use_logical_cpus(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kbn.layers import BatchNorm  # noqa: E402

GLOBAL_BATCH = 60


def build(synchronized):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, use_bias=False)(inputs)
    h = BatchNorm(synchronized=synchronized, momentum=0.5, name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))


def loss_sum(outputs, targets):
    return tf.reduce_sum(tf.reduce_mean((outputs - targets) ** 2, axis=-1))


def main():
    rng = np.random.default_rng(0)
    # The two halves have different statistics, so per-replica statistics
    # differ from the global ones.
    x = np.concatenate(
        [rng.normal(0.0, 1.0, (30, 6)), rng.normal(3.0, 4.0, (30, 6))]
    ).astype("float32")
    y = rng.normal(size=(GLOBAL_BATCH, 3)).astype("float32")

    single = build(True)
    with tf.GradientTape() as tape:
        reference = single(x, training=True)
        loss = loss_sum(reference, y) / GLOBAL_BATCH
    reference_grads = tape.gradient(loss, single.trainable_variables)
    reference_mean = single.get_layer("bn").moving_mean.numpy()
    reference_variance = single.get_layer("bn").moving_variance.numpy()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {"replicas": strategy.num_replicas_in_sync}
    for synchronized in (True, False):
        with strategy.scope():
            model = build(synchronized)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

        @tf.function
        def step(batch, model=model):
            def replica(images, targets):
                with tf.GradientTape() as tape:
                    outputs = model(images, training=True)
                    loss = loss_sum(outputs, targets) / GLOBAL_BATCH
                return outputs, tape.gradient(loss, model.trainable_variables)

            outputs, grads = strategy.run(replica, args=batch)
            outputs = strategy.gather(outputs, axis=0)
            grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
            return outputs, grads

        outputs, grads = step(batch)
        bn = model.get_layer("bn")
        replica_means = [v.numpy() for v in bn.moving_mean.value.values]
        replica_variances = [v.numpy() for v in bn.moving_variance.value.values]
        key = "synchronized" if synchronized else "unsynchronized"
        report[key] = {
            "outputs": float(np.abs(outputs.numpy() - reference.numpy()).max()),
            "gradients": float(
                max(
                    np.abs(a.numpy() - b.numpy()).max()
                    for a, b in zip(grads, reference_grads)
                )
            ),
            "moving_mean": float(
                max(np.abs(m - reference_mean).max() for m in replica_means)
            ),
            "moving_variance": float(
                max(np.abs(v - reference_variance).max() for v in replica_variances)
            ),
            "replicas_agree": bool(
                all(np.array_equal(replica_means[0], m) for m in replica_means)
            ),
        }
    print("KBN-REPORT " + json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
