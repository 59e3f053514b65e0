"""How far a BN-LSTM's moving statistics lag behind its population statistics.

Trains one `kbn.layers.BNLSTM` (rows of 28 pixels, 64 units, Adam 0.001,
batches of 64) per momentum on the same batches, and every `--every` batches
measures the validation accuracy with the layer's moving statistics and with
population statistics recomputed on 50 training batches (the weights are the
same; the statistics do not change training). Optionally (`--frozen N`) also
after N more passes with the weights frozen, to tell lag from noise.

    python docs/bn_lstm_momentum.py --dataset fashion_mnist --momenta 0.99,0.9,0.6

Writes `logs/bn_lstm_momentum.csv` and prints the mean gap per momentum.
The numbers in docs/recurrent_bn.md come from this script.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--momenta", default="0.99,0.9,0.6")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--frozen", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="logs/bn_lstm_momentum.csv")
    args = parser.parse_args()

    import keras
    import numpy as np
    import pandas as pd

    import kbn
    from kbn_study.data import mnist

    data = mnist.load_mnist(name=args.dataset)
    x, y = data.train.images.reshape(-1, 28, 28), data.train.labels
    x_val = data.validation.images.reshape(-1, 28, 28)
    y_val = data.validation.labels
    print(data.describe())

    def accuracy(model):
        logits = model.predict(x_val, batch_size=500, verbose=0)
        return float(np.mean(np.argmax(logits, -1) == y_val))

    rows = []
    for momentum in [float(m) for m in args.momenta.split(",")]:
        kbn.set_random_seed(args.seed)
        inputs = keras.Input((28, 28))
        layer = kbn.layers.BNLSTM(64, 28, momentum=momentum, seed=args.seed)
        model = keras.Model(inputs, keras.layers.Dense(10)(layer(inputs)))
        model.compile(
            keras.optimizers.Adam(0.001),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rng = np.random.default_rng(args.seed)
        order = np.concatenate(
            [rng.permutation(len(x)) for _ in range(args.batches * 64 // len(x) + 1)]
        )
        start = time.perf_counter()
        for done in range(args.every, args.batches + 1, args.every):
            batch = order[(done - args.every) * 64 : done * 64]
            model.fit(x[batch], y[batch], batch_size=64, shuffle=False, verbose=0)
            saved = [v.numpy() for v in layer.non_trainable_variables]
            row = {"momentum": momentum, "batch": done, "moving": accuracy(model)}
            if args.frozen:
                for i in range(args.frozen):
                    model(x[order[i * 64 : (i + 1) * 64]], training=True)
                row["frozen"] = accuracy(model)
                for v, value in zip(layer.non_trainable_variables, saved):
                    v.assign(value)
            kbn.recompute_batch_norm_statistics(model, x, num_batches=50, batch_size=64)
            row["population"] = accuracy(model)
            for v, value in zip(layer.non_trainable_variables, saved):
                v.assign(value)
            row["gap_points"] = 100 * (row["population"] - row["moving"])
            rows.append(row)
            # Written as it goes: a long run that stops keeps what it measured.
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
            frozen = f"  frozen {row['frozen']:.4f}" if args.frozen else ""
            print(
                f"momentum {momentum}: batch {done:5d}  moving {row['moving']:.4f}  "
                f"population {row['population']:.4f}{frozen}  "
                f"gap {row['gap_points']:+.2f}  "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        gammas = {
            w.name: float(np.mean(np.abs(w.numpy())))
            for w in layer.trainable_weights
            if w.name.startswith("gamma")
        }
        print(f"momentum {momentum}: mean |gamma| after training", gammas)
    # How sensitive inference is to the statistics: the last network, with
    # population statistics whose recurrent and cell variances are scaled.
    kbn.recompute_batch_norm_statistics(model, x, num_batches=50, batch_size=64)
    population = [v.numpy() for v in layer.non_trainable_variables]
    for factor in (0.9, 0.95, 1.0, 1.05, 1.1):
        for name in ("moving_variance_h", "moving_variance_c"):
            variable = getattr(layer, name)
            index = [v.path for v in layer.non_trainable_variables].index(variable.path)
            variable.assign(population[index] * factor)
        print(f"population variances x {factor}: validation {accuracy(model):.4f}")
    table = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = table.groupby("momentum", sort=False)["gap_points"].agg(["mean", "max"])
    print(summary.round(2).to_string())
    print(f"Written: {args.out}")


if __name__ == "__main__":
    main()
