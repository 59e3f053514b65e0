"""The study's first experiment: the same MLP with and without batch norm.

Two 784-100-100-100-10 networks start from the same initial weights; one
normalizes each hidden layer's pre-activations with `kbn.layers.BatchNorm`.
Both train with plain SGD on the same batches of 60 MNIST images, and the
validation accuracy (5,000 images, inference mode) is sampled along the way.

Run (about 9 s on a 2-core CPU, offline MNIST subset, JAX backend; 27 s
with --full):

    python recipes/compare.py
    python recipes/compare.py --full        # the study's 50,000 batches
    python recipes/compare.py --activation sigmoid --learning-rate 1

Expected with the defaults (ReLU, learning rate 0.01, good weights, 2,000
batches): the batch-norm network ends clearly above the plain one; the study
printed 0.95 vs 0.83 validation accuracy on full MNIST.

Writes `logs/<run>/` (results, curves, plot, TensorBoard logs); view them
with `tensorboard --logdir logs`. The backend is JAX unless `KERAS_BACKEND`
says otherwise (JAX trains 3-4x faster than TensorFlow on a CPU here).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse

import keras

import kbn
from kbn import cli
from kbn.study import published_runs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--activation", choices=["relu", "sigmoid"], default="relu")
    parser.add_argument(
        "--learning-rate", type=cli.positive_float, default=0.01, help="plain SGD"
    )
    parser.add_argument(
        "--weights",
        choices=["good", "bad"],
        default="good",
        help="initial kernels: good N(0, 0.05), bad N(0, 5.0)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--batches", type=cli.positive_int, default=2_000)
    length.add_argument(
        "--full", action="store_true", help="the study's 50,000 batches"
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=None,
        help="validation sampling interval (default: 50, or 500 from 10,000 "
        "batches on, as in the study)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument(
        "--data",
        default=None,
        help="mnist.npz or a folder of IDX files (default: Keras's cache, "
        "download, then the offline 5,000-digit subset)",
    )
    cli.add_dataset_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    batches = 50_000 if args.full else args.batches
    config = kbn.ExperimentConfig(
        activation=args.activation,
        learning_rate=args.learning_rate,
        weights=args.weights,
        batches=batches,
        batches_per_sample=args.batches_per_sample or cli.study_interval(batches),
        seed=args.seed,
        log_dir=args.log_dir,
        data=args.data,
        dataset=args.dataset,
    )
    with cli.bad_input_exits():
        dataset = kbn.load_mnist(config.data, name=config.dataset)
    print(f"Data: {dataset.describe()}")
    print(f"Backend: {keras.backend.backend()}; run: {config.name}")
    result = kbn.train_and_test(config, dataset=dataset)

    columns = [
        "network",
        "final_validation_accuracy",
        "test_accuracy",
        "first_step_0.9",
        "diverged",
        "steps_per_second",
    ]
    print()
    print(
        result.summary()[columns].to_string(index=False, float_format="{:.4f}".format)
    )
    published = published_runs(
        config.activation, config.learning_rate, config.weights, config.batches
    )
    if len(published) and config.dataset == "mnist":
        print("\nThe study (full MNIST, TensorFlow 1, one run per row):")
        columns = ["row", "network", "final_validation_accuracy", "test_accuracy"]
        print(published[columns].to_string(index=False))
    print()
    for name, path in result.paths.items():
        print(f"{name:>13}: {path}")
    print(f"Data source: {dataset.source}")
    return result


if __name__ == "__main__":
    main()
