"""Batch norm under corrupted test digits: source statistics, test-batch
statistics, AdaBN, Schneider et al.'s mixed statistics and Tent, over
several seeds.

The entry point of `recipes/corruptions.py` (see its docstring), also
`python -m kbn_study.commands.corruptions` and `kbn-corruptions`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import argparse
import hashlib
import json

from kbn_study import cli
from kbn_study import startup
from kbn_study.data import corruptions as data_corruptions

# model: (training batches of 60, optimizer, learning rate).
TRAINING = {"convnet": (300, "Adam", 0.002), "mlp": (2_000, "SGD", 0.1)}
DEFAULTS = {
    "corruptions": list(data_corruptions.CORRUPTIONS),
    "severities": [1, 2, 3],
    "test_batch_sizes": [1, 8, 64, 512],
    "mix_batch_sizes": [1, 8],
    "source_samples": [8.0, 64.0],
    "tent_batch_size": 64,
    "tent_learning_rates": [1e-3, 1e-2],
    "depth": 3,
}


def _list_of(kind, ok, expected):
    def parse(text):
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = []
        if (
            not values
            or not all(ok(v) for v in values)
            or len(set(values)) < len(values)
        ):
            raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
        return values

    return parse


def corruption_names(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in data_corruptions.CORRUPTIONS]
    if not names or unknown or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(
            "expected distinct corruptions among "
            f"{', '.join(data_corruptions.CORRUPTIONS)}, comma-separated. "
            f"Received: {text!r}"
        )
    return names


severities = _list_of(
    int,
    lambda v: 1 <= v <= data_corruptions.MAX_SEVERITY,
    f"distinct severities from 1 to {data_corruptions.MAX_SEVERITY}, "
    "comma-separated, such as 1,3",
)
batch_sizes = _list_of(
    int, lambda v: v >= 1, "distinct positive batch sizes, comma-separated"
)
source_samples = _list_of(
    float,
    lambda v: 0 < v < float("inf"),
    "distinct positive numbers (Schneider's N; N = 0 is the test-batch "
    "statistics of --test-batch-sizes), comma-separated",
)
learning_rates = _list_of(
    float,
    lambda v: 0 < v < float("inf"),
    "distinct positive learning rates, comma-separated",
)
models = _list_of(
    str, lambda v: v in TRAINING, "distinct models among convnet, mlp, comma-separated"
)


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--models",
        type=models,
        default=["convnet", "mlp"],
        help="networks to train and test, comma-separated: the study's conv "
        "net (--depth stride-2 3x3 convolutions of 8, 16, 24... filters) and "
        "its ReLU MLP (784-100-100-100-10) (default: convnet,mlp)",
    )
    parser.add_argument(
        "--seeds", type=cli.positive_int, default=3, help="seeds per network"
    )
    parser.add_argument(
        "--convnet-batches",
        type=cli.positive_int,
        default=TRAINING["convnet"][0],
        help="training batches of 60 of the conv net (Adam 0.002)",
    )
    parser.add_argument(
        "--mlp-batches",
        type=cli.positive_int,
        default=TRAINING["mlp"][0],
        help="training batches of 60 of the MLP (SGD 0.1)",
    )
    parser.add_argument(
        "--depth",
        type=cli.positive_int,
        default=DEFAULTS["depth"],
        help="convolutions of the conv net",
    )
    parser.add_argument(
        "--corruptions",
        type=corruption_names,
        default=DEFAULTS["corruptions"],
        help="corruptions of the test digits, comma-separated (default: "
        f"{','.join(DEFAULTS['corruptions'])})",
    )
    parser.add_argument(
        "--severities",
        type=severities,
        default=DEFAULTS["severities"],
        help="severities of each corruption, 1 to 3, comma-separated (default: 1,2,3)",
    )
    parser.add_argument(
        "--test-batch-sizes",
        type=batch_sizes,
        default=DEFAULTS["test_batch_sizes"],
        help="test batch sizes of prediction-time batch norm (default: 1,8,64,512)",
    )
    parser.add_argument(
        "--mix-batch-sizes",
        type=batch_sizes,
        default=DEFAULTS["mix_batch_sizes"],
        help="test batch sizes of the mixed statistics (default: 1,8)",
    )
    parser.add_argument(
        "--source-samples",
        type=source_samples,
        default=DEFAULTS["source_samples"],
        help="Schneider et al.'s N, the source statistics' weight in pseudo "
        "samples, comma-separated (default: 8,64)",
    )
    parser.add_argument(
        "--tent-batch-size",
        type=cli.positive_int,
        default=DEFAULTS["tent_batch_size"],
        help="Tent's test batch size (one pass, one step per batch)",
    )
    parser.add_argument(
        "--tent-learning-rates",
        type=learning_rates,
        default=DEFAULTS["tent_learning_rates"],
        help="Tent's Adam learning rates, comma-separated: 0.001 is the "
        "reference's CIFAR-10-C setting (default: 0.001,0.01)",
    )
    cli.add_log_dir_argument(parser)
    cli.add_data_arguments(parser)
    return cli.parse(parser, argv)


def settings(args):
    """Every setting that changes the results (the data's tag aside)."""
    return {
        "models": args.models,
        "seeds": args.seeds,
        "convnet_batches": args.convnet_batches,
        "mlp_batches": args.mlp_batches,
        "depth": args.depth,
        "corruptions": args.corruptions,
        "severities": args.severities,
        "test_batch_sizes": args.test_batch_sizes,
        "mix_batch_sizes": args.mix_batch_sizes,
        "source_samples": args.source_samples,
        "tent_batch_size": args.tent_batch_size,
        "tent_learning_rates": args.tent_learning_rates,
    }


def run_name(args, data_tag):
    """`corruptions_<models>_seeds<k>_<data>`, and a hash of the other
    settings when they are not the defaults."""
    chosen = settings(args)
    name = f"corruptions_{'-'.join(args.models)}_seeds{args.seeds}"
    defaults = {
        **DEFAULTS,
        "convnet_batches": TRAINING["convnet"][0],
        "mlp_batches": TRAINING["mlp"][0],
    }
    changed = {k: v for k, v in chosen.items() if k in defaults and v != defaults[k]}
    if changed:
        digest = hashlib.sha256(json.dumps(chosen, sort_keys=True).encode())
        name += f"_custom{digest.hexdigest()[:8]}"
    return f"{name}_{data_tag}"


def main(argv=None):
    args = parse_args(argv)
    startup.start(default_backend="jax")
    import functools
    import os
    import time

    import keras
    import pandas as pd

    from kbn_study.studies import corruptions as study
    from kbn_study.training import comparison
    from kbn_study.training import runs

    dataset = cli.load_data(args)
    method_list = study.methods(
        args.test_batch_sizes, args.mix_batch_sizes, args.source_samples,
        args.tent_batch_size, args.tent_learning_rates,
    )  # fmt: skip
    run_dir = os.path.join(args.log_dir, run_name(args, dataset.tag))
    os.makedirs(run_dir, exist_ok=True)
    sets = study.target_sets(
        dataset.test.images, dataset.test.labels, args.corruptions, args.severities
    )
    print(
        f"Backend: {keras.backend.backend()}; run: {run_dir}\n"
        f"{len(args.models) * args.seeds} networks, each tested on {len(sets)} "
        f"target sets (clean, {len(args.corruptions)} corruptions x "
        f"{len(args.severities)} severities) by {len(method_list)} methods"
    )
    start = time.perf_counter()
    rows, training = [], []
    for model_name in args.models:
        shaped = _shaped(dataset, model_name)
        batches = args.convnet_batches if model_name == "convnet" else args.mlp_batches
        for seed in range(args.seeds):
            schedule = runs.Schedule(
                batches=batches, batches_per_sample=max(1, batches // 10), seed=seed
            )
            result_name = f"{model_name}_seed{seed}"
            result = runs.train(
                shaped,
                runs.NetworkRun(
                    name=result_name,
                    build=functools.partial(_build, model_name, seed, args.depth),
                    optimizer=functools.partial(_optimizer, model_name),
                    schedule=schedule,
                    log_dir=os.path.join(run_dir, "training", result_name),
                    batch_norm_statistics=False,
                    verbose=False,
                ),
            )  # fmt: skip
            study.source_statistics(result.model, shaped.train.images, seed)
            evaluation_start = time.perf_counter()
            found = study.evaluate(
                result.model, sets, method_list, reshape=_reshape(model_name)
            )
            for row in found:
                rows.append({"model": model_name, "seed": seed, **row})
            clean = {r["method"]: r["error"] for r in found if r["severity"] == 0}
            training.append(
                {
                    "model": model_name,
                    "seed": seed,
                    "batches": batches,
                    "test_error_moving_averages": 1 - result.test_accuracy,
                    "test_error_source_statistics": clean["source"],
                    "training_seconds": result.wall_time,
                    "evaluation_seconds": time.perf_counter() - evaluation_start,
                }
            )
            print(
                f"{model_name} seed {seed}: trained {batches:,} batches in "
                f"{result.wall_time:.1f} s, clean test error "
                f"{100 * clean['source']:.1f}% (source statistics); {len(found)} "
                "evaluations in "
                f"{time.perf_counter() - evaluation_start:.1f} s"
            )
    results = pd.DataFrame(rows)
    title = (
        f"{', '.join(study.MODEL_LABELS[m] for m in args.models)} on corrupted "
        f"test images ({dataset.tag}), {args.seeds} seeds"
    )
    summary, paths = study.write(
        results, pd.DataFrame(training), run_dir, method_list, args.corruptions,
        args.models, title,
    )  # fmt: skip
    trials_dir = study.write_trials(
        run_dir, results, method_list, dataset.tag, args.severities
    )
    wall = time.perf_counter() - start
    config = {
        "settings": settings(args),
        "methods": [m.name for m in method_list],
        **comparison.circumstances(dataset),
        "load_average_at_end": list(os.getloadavg()),
        "wall_seconds": wall,
        "cpu_seconds": time.process_time(),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"\nTotal {wall:.0f} s ({time.process_time():.0f} s of CPU). {title}\n")
    for model_name in args.models:
        print(
            f"{study.MODEL_LABELS[model_name]}: test error (%), mean ± std over seeds\n"
        )
        print(study.markdown_table(summary, model_name, method_list, args.corruptions))
        print()
    for line in study.claims(results, method_list):
        print(line)
    for name, path in paths.items():
        print(f"{name:>16}: {path}")
    print(f"{'config.json':>16}: {os.path.join(run_dir, 'config.json')}")
    print(f"{'tensorboard':>16}: {trials_dir} (HParams), {run_dir}/training")
    print(f"\nData source: {dataset.source}")
    return summary


def _shaped(dataset, model_name):
    return dataset.with_images(_conv_images) if model_name == "convnet" else dataset


def _reshape(model_name):
    return _conv_images if model_name == "convnet" else None


def _conv_images(images):
    return images.reshape(-1, 28, 28, 1)


def _build(model_name, seed, depth):
    from kbn_study.models import networks

    if model_name == "convnet":
        return networks.build_convnet(
            depth=depth, batch_norm=True, width=8, stride_every=1, seed=seed
        )
    return networks.build_mlp(networks.initial_weights(seed=seed), "relu", True)


def _optimizer(model_name):
    import keras

    _, optimizer, rate = TRAINING[model_name]
    return getattr(keras.optimizers, optimizer)(rate)


if __name__ == "__main__":
    main()
