"""JAX: batch norm under keras.distribution.DataParallel on 2 CPU devices.

A batch sharded over devices is one global array, so the batch moments are
global without any synchronization. Trains one step on 2 devices and on 1,
and prints the largest differences as one JSON line.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from kbn.layers import BatchNorm  # noqa: E402


def train(synchronized):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, use_bias=False)(inputs)
    h = BatchNorm(synchronized=synchronized, momentum=0.5, name="bn")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (30, 6)), rng.normal(3, 4, (30, 6))])
    model.fit(x.astype("float32"), rng.normal(size=(60, 3)), batch_size=60, verbose=0)
    bn = model.get_layer("bn")
    return [np.asarray(w) for w in model.weights], np.asarray(bn.moving_mean)


single, single_mean = train(False)
devices = jax.devices()
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
report = {"devices": len(devices)}
for synchronized in (False, True):
    weights, mean = train(synchronized)
    report["synchronized" if synchronized else "unsynchronized"] = {
        "weights": float(max(np.abs(a - b).max() for a, b in zip(weights, single))),
        "moving_mean": float(np.abs(mean - single_mean).max()),
    }
print("KBN-REPORT " + json.dumps(report))
