"""A deep conv net with and without batch norm per feature map.

The study ends by noting that convolutions need one mean and variance per
feature map, over batch, height and width. Its follow-up notebook trained a
20-layer conv net (19 convolutions and a dense layer) on MNIST with Adam at
0.002, batches of 64, for 800 batches: without batch norm about 0.11
accuracy (it does not learn), with batch norm about 0.97. Both variants here
start from the same kernels and see the same batches.

    python recipes/convnet.py                  # 800 batches, about a minute
    python recipes/convnet.py --depth 10 --batches 400

Writes `logs/convnet_<depth>_<batches>_seed<seed>/` like `compare.py`:
results, curves, plot, TensorBoard logs.
"""

import os

# TensorFlow's (oneDNN) convolutions ran this net 3-4x faster than JAX's on
# the 2-core development CPU; KERAS_BACKEND=jax still works.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse

import keras

import kbn
from kbn import cli
from kbn import fitting
from kbn import models


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--depth", type=cli.positive_int, default=19, help="convolutions"
    )
    parser.add_argument(
        "--width", type=cli.positive_int, default=4, help="filters per layer index"
    )
    parser.add_argument("--batches", type=cli.positive_int, default=800)
    parser.add_argument("--batch-size", type=cli.positive_int, default=64)
    parser.add_argument("--batches-per-sample", type=cli.positive_int, default=25)
    parser.add_argument(
        "--learning-rate", type=cli.positive_float, default=0.002, help="Adam"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--data", default=None, help="mnist.npz or IDX folder")
    cli.add_dataset_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with cli.bad_input_exits():
        dataset = kbn.load_mnist(args.data, name=args.dataset, flatten=False)
        schedule = fitting.Schedule(
            batches=args.batches,
            batches_per_sample=args.batches_per_sample,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    dataset = dataset.with_images(lambda images: images[..., None])
    print(f"Data: {dataset.describe()}")
    print(f"Backend: {keras.backend.backend()}")
    run_dir = os.path.join(
        args.log_dir, f"convnet_{args.depth}_{args.batches}_seed{args.seed}"
    )

    def builder(batch_norm):
        return lambda: models.build_convnet(
            depth=args.depth, width=args.width, batch_norm=batch_norm, seed=args.seed
        )

    result = fitting.compare_networks(
        {"without_bn": builder(False), "with_bn": builder(True)},
        dataset,
        lambda: keras.optimizers.Adam(args.learning_rate),
        schedule,
        run_dir=run_dir,
        title=(
            f"Conv net, {args.depth} convolutions + dense, "
            f"Adam {args.learning_rate:g}, "
            f"{args.batches:,} batches of {args.batch_size}"
        ),
        metadata={"args": vars(args)},
    )
    print()
    print(fitting.summary_text(result))
    print(
        "Published (20 layers, 800 batches, full MNIST): about 0.11 without, 0.97 with."
    )
    return result


if __name__ == "__main__":
    main()
