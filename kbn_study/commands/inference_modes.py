"""Test a batch-norm network with batch statistics and with population statistics, on
the whole test set and one image at a time.

The entry point of `recipes/inference_modes.py` (see its docstring), also
`python -m kbn_study.commands.inference_modes` and `kbn-inference-modes`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import os
import zipfile

from kbn_study import cli
from kbn_study import startup


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--batches",
        type=cli.positive_int,
        default=2_000,
        help="training batches of 60 (ReLU, learning rate 0.01, good weights)",
    )
    parser.add_argument(
        "--single-examples",
        type=cli.positive_int,
        default=200,
        help="test images fed one at a time",
    )
    parser.add_argument(
        "--save-model-as",
        default=None,
        help="save the trained network to this .keras file (default: not saved)",
    )
    parser.add_argument(
        "--restore-from",
        default=None,
        help="test the network saved in this .keras file instead of training "
        "one (default: train)",
    )
    cli.add_run_arguments(parser)
    args = parser.parse_args(argv)
    for flag in ("save_model_as", "restore_from"):
        path = getattr(args, flag)
        if path is not None and not path.endswith(".keras"):
            parser.error(
                f"argument --{flag.replace('_', '-')}: expected a path ending in "
                f".keras. Received: {path!r}"
            )
    if args.restore_from is not None:
        if not os.path.isfile(args.restore_from):
            parser.error(
                "argument --restore-from: no such file. "
                f"Received: {args.restore_from!r}"
            )
        if not zipfile.is_zipfile(args.restore_from):
            parser.error(
                "argument --restore-from: not a .keras file (a .keras model is "
                f"a zip archive; this file is not). Received: {args.restore_from!r}"
            )
        with zipfile.ZipFile(args.restore_from) as archive:
            names = set(archive.namelist())
        if not {"config.json", "model.weights.h5"} <= names:
            parser.error(
                "argument --restore-from: not a .keras file (a .keras model is "
                "a zip archive holding config.json and model.weights.h5; this "
                f"one holds {sorted(names)[:5]}). Received: {args.restore_from!r}"
            )
    outputs = {"--log-dir": args.log_dir}
    if args.save_model_as is not None:
        outputs["--save-model-as"] = os.path.dirname(args.save_model_as) or "."
    cli.check_paths(parser, outputs=outputs, inputs={"--data": args.data})
    return args


def main(argv=None):
    args = parse_args(argv)
    startup.start(default_backend="jax")
    import dataclasses
    import json

    from kbn_study.studies import experiment
    from kbn_study.studies import inference_modes
    from kbn_study.training import comparison
    from kbn_study.training import runs

    dataset = cli.load_data(args)
    paths = {}
    if args.restore_from:
        model = _load_model(args.restore_from)
        print(f"Restored {args.restore_from}")
        stem = os.path.splitext(os.path.basename(args.restore_from))[0]
        run_dir = os.path.join(args.log_dir, f"inference_modes_{stem}_{dataset.tag}")
    else:
        config = experiment.ExperimentConfig(
            batches=args.batches, seed=args.seed, log_dir=args.log_dir
        )
        name = runs.run_name(
            f"inference_modes_{config.stem}", config.schedule, dataset.tag
        )
        config = dataclasses.replace(config, run_name=name)
        run_dir = config.run_dir(dataset)
        trained = experiment.train_and_test(
            config, dataset=dataset, networks={"with_bn": True}
        )
        model = trained.networks["with_bn"].model
        paths.update(trained.paths)
    if args.save_model_as:
        model.save(args.save_model_as)
        paths["model"] = args.save_model_as

    result, warned = inference_modes.compare_inference_modes(
        model,
        dataset.test.images,
        dataset.test.labels,
        single_examples=args.single_examples,
    )
    print()
    print(inference_modes.table(result, args.single_examples))
    if warned:
        print(
            f"\n(kbn warned, as it should, that {warned} batch-norm layers "
            "normalized a training batch with one value per feature: with "
            "batch statistics a single image is normalized by itself.)"
        )
    print(f"\nWhy: {inference_modes.EXPLANATION}")

    os.makedirs(run_dir, exist_ok=True)
    paths["inference_modes"] = os.path.join(run_dir, "inference_modes.json")
    with open(paths["inference_modes"], "w") as f:
        json.dump(
            {
                **result.summary(),
                "single_predictions_batch_statistics": (
                    result.single_predictions_batch_statistics
                ),
                "single_predictions_population_statistics": (
                    result.single_predictions_population_statistics
                ),
                **comparison.circumstances(dataset),
                "restored_from": args.restore_from,
            },
            f,
            indent=2,
        )
    print()
    for name, path in paths.items():
        print(f"{name:>15}: {path}")
    return result


def _load_model(path):
    import keras

    import kbn  # noqa: F401 - registers kbn's layers for deserialization

    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - any failure is a bad file
        cli.error(
            f"cannot load the model in {path}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        )


if __name__ == "__main__":
    main()
