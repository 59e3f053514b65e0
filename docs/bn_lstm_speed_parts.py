"""Where the BN-LSTM's training time goes, on one backend.

Times `train_on_batch` and `predict_on_batch` of a `keras.layers.LSTM` and a
`kbn.layers.BNLSTM` (100 units, 784 steps of one value, batches of 64),
interleaved, and prints the medians and BN-LSTM / LSTM ratios. With
`--no-batch-norm`, the BN-LSTM's in-step batch norms are replaced by a plain
`x * gamma (+ beta)` (no moments), to separate the cost of the loop from
that of the normalizations.

    KERAS_BACKEND=tensorflow python docs/bn_lstm_speed_parts.py
    KERAS_BACKEND=tensorflow python docs/bn_lstm_speed_parts.py --no-batch-norm
    KERAS_BACKEND=tensorflow python docs/bn_lstm_speed_parts.py --count-ops

`--count-ops` (TensorFlow) prints instead how many operations the loop's
body and its gradient dispatch per step, constants apart, for each model:
without XLA, TensorFlow's time at this size follows that count.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--count-ops", action="store_true")
    args = parser.parse_args()
    backend = os.environ["KERAS_BACKEND"]
    if args.count_ops and backend != "tensorflow":
        parser.error(
            "--count-ops counts TensorFlow's operations: run it with "
            f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}"
        )

    import keras
    import numpy as np
    from keras import ops

    import kbn
    from kbn import ops as bn_ops

    if args.no_batch_norm:

        def scaled(x, gamma, beta, epsilon):
            zeros = ops.zeros_like(x[0])
            y = x * gamma if beta is None else x * gamma + beta
            return y, (zeros, zeros)

        bn_ops.step_batch_norm = scaled

    steps = 784
    rng = np.random.default_rng(0)
    x = (rng.random((64, steps, 1)) > 0.8).astype("float32")
    y = rng.integers(0, 10, 64)

    def build(batch_norm):
        inputs = keras.Input((steps, 1))
        rnn = kbn.layers.BNLSTM(100, steps, seed=0) if batch_norm else None
        rnn = rnn or keras.layers.LSTM(100)
        model = keras.Model(inputs, keras.layers.Dense(10)(rnn(inputs)))
        model.compile(
            keras.optimizers.Adam(0.001),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.train_on_batch(x, y)
        model.predict_on_batch(x)
        return model

    models = {"lstm": build(False), "bn_lstm": build(True)}
    if args.count_ops:
        for name, model in models.items():
            print(name, count_loop_ops(model, x, y))
        return
    train = {name: [] for name in models}
    predict = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            float(np.asarray(model.train_on_batch(x, y)))
            train[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            np.asarray(model.predict_on_batch(x))
            predict[name].append(time.perf_counter() - start)
    for label, times in (("train", train), ("predict", predict)):
        median = {name: float(np.median(t)) for name, t in times.items()}
        print(
            f"{keras.backend.backend()} {label}: LSTM {median['lstm']:.3f} s, "
            f"BN-LSTM {median['bn_lstm']:.3f} s, ratio "
            f"{median['bn_lstm'] / median['lstm']:.2f}"
            + (" (batch norms replaced)" if args.no_batch_norm else "")
        )


def count_loop_ops(model, x, y):
    """`{function: (operations, constants)}` of the `while` bodies (and
    their gradients) in one traced training step of `model` (TensorFlow)."""
    import keras
    import tensorflow as tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    graph = train.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    counts = {}
    for function in graph.as_graph_def().library.function:
        name = function.signature.name
        if "body" in name and "rewritten" not in name:
            kind = "gradient" if "_grad_" in name else "forward"
            ops = [node.op for node in function.node_def]
            constants = ops.count("Const")
            counts[kind] = (len(ops) - constants, constants)
    return counts


if __name__ == "__main__":
    main()
