"""Fine-tuning a conv net pretrained on digits 0-4 on digits 5-9, its layers
frozen, in the batch-norm regimes users ran into, over several seeds.

The entry point of `recipes/fine_tuning.py` (see its docstring), also
`python -m kbn_study.commands.fine_tuning` and `kbn-fine-tuning`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import argparse
import hashlib
import json

from kbn_study import cli
from kbn_study import startup

REGIMES = (
    "frozen_inference",
    "frozen_batch_statistics",
    "frozen_batch_statistics_updating",
    "adabn_frozen",
    "full",
)
DEFAULTS = {
    "pretrain_batches": 300,
    "fine_tune_batches": 150,
    "batches_per_sample": 10,
    "learning_rate": 0.002,
    "depth": 3,
    "regimes": list(REGIMES),
}


def regime_names(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if (
        not names
        or any(n not in REGIMES for n in names)
        or len(set(names)) < len(names)
    ):
        raise argparse.ArgumentTypeError(
            f"expected distinct regimes among {', '.join(REGIMES)}, "
            f"comma-separated. Received: {text!r}"
        )
    return names


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--seeds", type=cli.positive_int, default=3, help="seeds per regime"
    )
    parser.add_argument(
        "--pretrain-batches",
        type=cli.positive_int,
        default=DEFAULTS["pretrain_batches"],
        help="pretraining batches of 60 on digits 0-4",
    )
    parser.add_argument(
        "--fine-tune-batches",
        type=cli.positive_int,
        default=DEFAULTS["fine_tune_batches"],
        help="fine-tuning batches of 60 on digits 5-9",
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=DEFAULTS["batches_per_sample"],
        help="validation sampling interval while fine-tuning",
    )
    parser.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        default=DEFAULTS["learning_rate"],
        help="Adam's learning rate, pretraining and fine-tuning",
    )
    parser.add_argument(
        "--depth",
        type=cli.positive_int,
        default=DEFAULTS["depth"],
        help="stride-2 3x3 convolutions of the conv net (8, 16, 24... filters)",
    )
    parser.add_argument(
        "--regimes",
        type=regime_names,
        default=DEFAULTS["regimes"],
        help="fine-tuning regimes, comma-separated (default: all: "
        f"{','.join(REGIMES)})",
    )
    cli.add_log_dir_argument(parser)
    cli.add_data_arguments(parser)
    return cli.parse(parser, argv)


def settings(args):
    return {
        "seeds": args.seeds,
        "pretrain_batches": args.pretrain_batches,
        "fine_tune_batches": args.fine_tune_batches,
        "batches_per_sample": args.batches_per_sample,
        "learning_rate": args.learning_rate,
        "depth": args.depth,
        "regimes": args.regimes,
    }


def run_name(args, data_tag):
    """`fine_tuning_<pretrain>x60-<fine-tune>x60_seeds<k>_<data>`, and a hash
    of the other settings when they are not the defaults."""
    chosen = settings(args)
    name = (
        f"fine_tuning_{args.pretrain_batches}x60-{args.fine_tune_batches}x60_"
        f"seeds{args.seeds}"
    )
    others = ("batches_per_sample", "learning_rate", "depth", "regimes")
    if any(chosen[k] != DEFAULTS[k] for k in others):
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
    import numpy as np
    import pandas as pd

    from kbn.population import recompute_batch_norm_statistics
    from kbn_study.data import subsets
    from kbn_study.studies import fine_tuning as study
    from kbn_study.training import comparison
    from kbn_study.training import runs

    dataset = cli.load_data(args).with_images(lambda x: x.reshape(-1, 28, 28, 1))
    old = subsets.with_classes(dataset, study.OLD_CLASSES)
    new = subsets.with_classes(dataset, study.NEW_CLASSES)
    run_dir = os.path.join(args.log_dir, run_name(args, dataset.tag))
    os.makedirs(run_dir, exist_ok=True)
    optimizer = functools.partial(keras.optimizers.Adam, args.learning_rate)
    print(
        f"Backend: {keras.backend.backend()}; run: {run_dir}\n"
        f"Digits 0-4: {len(old.train):,} training images; digits 5-9: "
        f"{len(new.train):,}. {args.seeds} seeds x (pretraining + "
        f"{len(args.regimes)} fine-tuning regimes)"
    )
    start = time.perf_counter()
    rows, curves = [], []
    for seed in range(args.seeds):
        folder = os.path.join("pretrain", f"seed{seed}")
        pretrained = runs.train(
            old,
            runs.NetworkRun(
                name=f"pretrain_seed{seed}",
                build=functools.partial(study.build_pretraining, args.depth, seed),
                optimizer=optimizer,
                schedule=runs.Schedule(
                    batches=args.pretrain_batches,
                    batches_per_sample=max(1, args.pretrain_batches // 10),
                    seed=seed,
                ),
                log_dir=os.path.join(run_dir, folder),
                batch_norm_statistics=False,
                verbose=False,
            ),
        )
        # The source statistics: those of digits 0-4, recomputed with the
        # final weights (moving averages of a short run still lag).
        order = np.random.default_rng(seed).permutation(len(old.train))
        usable = len(order) // 60 * 60
        recompute_batch_norm_statistics(
            pretrained.model, old.train.images[order[:usable]], batch_size=60
        )
        inference, batch = study.accuracies(pretrained.model, old.test)
        rows.append(
            _row("pretrain", seed, args, folder, args.pretrain_batches, pretrained,
                 inference, batch)
        )  # fmt: skip
        weights = pretrained.model.get_weights()
        print(
            f"seed {seed}: pretrained on digits 0-4 in {pretrained.wall_time:.1f} s, "
            f"test accuracy {inference:.4f}"
        )
        for regime in args.regimes:
            folder = os.path.join(regime, f"seed{seed}")
            result = runs.train(
                new,
                runs.NetworkRun(
                    name=f"{regime}_seed{seed}",
                    build=functools.partial(
                        study.build_fine_tuning, weights, regime, args.depth, seed,
                        new.train.images,
                    ),
                    optimizer=optimizer,
                    schedule=runs.Schedule(
                        batches=args.fine_tune_batches,
                        batches_per_sample=args.batches_per_sample,
                        seed=seed,
                    ),
                    log_dir=os.path.join(run_dir, folder),
                    batch_norm_statistics=False,
                    verbose=False,
                ),
            )  # fmt: skip
            inference, batch = study.accuracies(result.model, new.test)
            rows.append(
                _row(regime, seed, args, folder, args.fine_tune_batches, result,
                     inference, batch)
            )  # fmt: skip
            curves.append(
                pd.DataFrame(
                    {
                        "regime": regime,
                        "seed": seed,
                        "step": result.steps,
                        "validation_accuracy": result.accuracies,
                        "training_loss": result.losses,
                    }
                )
            )
            print(
                f"  {regime:<34} test accuracy {inference:.4f} in inference mode, "
                f"{batch:.4f} with batch statistics; {result.wall_time:.1f} s"
            )
    results = pd.DataFrame(rows)
    title = (
        f"Conv net pretrained on digits 0-4 ({args.pretrain_batches:,} batches), "
        f"fine-tuned on 5-9 ({args.fine_tune_batches:,} batches), {dataset.tag}"
    )
    summary, paths = study.write(
        results, pd.concat(curves, ignore_index=True), run_dir, title
    )
    study.write_trials(run_dir, results, dataset.tag)
    wall = time.perf_counter() - start
    config = {
        "settings": settings(args),
        **comparison.circumstances(dataset),
        "load_average_at_end": list(os.getloadavg()),
        "wall_seconds": wall,
        "cpu_seconds": time.process_time(),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"\nTotal {wall:.0f} s ({time.process_time():.0f} s of CPU). {title}\n")
    print(study.markdown_table(summary, study.checkpoints(pd.concat(curves))))
    print()
    for line in study.claims(results):
        print(f"- {line}")
    print()
    for name, path in paths.items():
        print(f"{name:>16}: {path}")
    print(f"{'config.json':>16}: {os.path.join(run_dir, 'config.json')}")
    print(f"{'tensorboard':>16}: {run_dir}")
    print(f"\nData source: {dataset.source}")
    return summary


def _row(regime, seed, args, folder, batches, result, inference, batch):
    return {
        "regime": regime,
        "seed": seed,
        "pretrain_batches": args.pretrain_batches,
        "fine_tune_batches": args.fine_tune_batches if regime != "pretrain" else 0,
        "batches": batches,
        "test_accuracy": inference,
        "test_accuracy_batch_statistics": batch,
        "gap": batch - inference,
        "final_validation_accuracy": result.final_validation_accuracy,
        "final_training_loss": result.losses[-1] if result.losses else float("nan"),
        "wall_time_s": result.wall_time,
        "folder": folder,
    }


if __name__ == "__main__":
    main()
