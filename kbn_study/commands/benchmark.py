"""Measure training speed of the study's MLP: kbn vs Keras's layer vs a hand-written
loop, per backend; a BN-LSTM's training step against an LSTM's on 784-step
sequences; and keras.applications networks with Keras's batch norm and kbn's.

The entry point of `recipes/benchmark.py` (see its docstring), also
`python -m kbn_study.commands.benchmark` and `kbn-benchmark`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import argparse
import os

from kbn_study import cli
from kbn_study import startup

BACKENDS = ("jax", "tensorflow")


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--batches",
        type=cli.positive_int,
        default=10_000,
        help="timed training batches per measurement, a multiple of 500",
    )
    parser.add_argument(
        "--repeats",
        type=cli.positive_int,
        default=5,
        help="repeats of every measurement, interleaved",
    )
    parser.add_argument(
        "--suite",
        choices=("all", "mlp", "lstm", "applications"),
        default="all",
        help="measurements to run: the MLP's, the LSTM vs BN-LSTM on 784 "
        "pixel steps, both (all), or ResNet50 and MobileNetV2 (64x64 random "
        "images, batches of 32) with Keras's batch norm and kbn's, --repeats "
        "rounds of 3 steps, interleaved (about 5 minutes per backend here)",
    )
    parser.add_argument(
        "--sequence-batches",
        type=cli.positive_int,
        default=5,
        help="timed training batches of 784 steps per LSTM measurement",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated; backends that are not installed are skipped",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("logs", "benchmark"),
        help="output folder: benchmark.csv, benchmark.md",
    )
    cli.add_data_arguments(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = cli.parse(parser, argv, outputs=["--out"])
    if args.batches % 500:
        parser.error(
            "argument --batches: expected a multiple of 500 (the sampling "
            f"interval). Received: {args.batches}"
        )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(
            f"argument --backends: expected some of {BACKENDS}. "
            f"Received: {args.backends!r}"
        )
    args.backends = backends
    return args


def worker(args):
    """Runs in a child process with KERAS_BACKEND set: prints JSON rows."""
    import json

    print("KBN-ROWS " + json.dumps(measure(args)))


def measure(args):
    """The rows of every measurement of `args.suite`, on this process's backend."""
    from kbn_study.data import mnist
    from kbn_study.studies import benchmark

    if args.suite == "applications":
        from kbn_study.studies import keras_models_speed

        rows = keras_models_speed.measure(repeats=args.repeats)
        for row in rows:
            row["data_source"] = "random images"
        return rows
    dataset = mnist.load_mnist(args.data, name=args.dataset)
    names = {
        "all": list(benchmark.MEASUREMENTS),
        "mlp": benchmark.MLP_MEASUREMENTS,
        "lstm": list(benchmark.SEQUENCE_MEASUREMENTS),
    }[args.suite]
    rows = benchmark.measure(
        dataset, args.batches, args.repeats, names, args.sequence_batches
    )
    for row in rows:
        row["data_source"] = dataset.source
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        startup.start(default_backend=args.worker)
        return worker(args)

    import datetime
    import importlib.util
    import json
    import platform
    import subprocess
    import sys

    startup.start(default_backend="jax")
    import keras
    import pandas as pd

    from kbn_study.studies import benchmark

    rows = []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed, skipped")
            continue
        print(f"{backend}: measuring ({args.repeats} repeats)...", flush=True)
        if backend == keras.backend.backend():
            # This process's backend: measured here, no process of its own.
            rows.extend(measure(args))
            continue
        command = [sys.executable, "-m", "kbn_study.commands.benchmark"]
        command += ["--worker", backend, "--batches", str(args.batches)]
        command += ["--repeats", str(args.repeats), "--dataset", args.dataset]
        command += ["--suite", args.suite]
        command += ["--sequence-batches", str(args.sequence_batches)]
        if args.data:
            command += ["--data", args.data]
        result = subprocess.run(
            command,
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True,
            text=True,
        )
        lines = [
            line for line in result.stdout.splitlines() if line.startswith("KBN-ROWS ")
        ]
        if result.returncode != 0 or not lines:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
            cli.error(f"the {backend} worker failed")
        rows.extend(json.loads(lines[-1][len("KBN-ROWS ") :]))

    frame = pd.DataFrame(rows)
    medians = frame.groupby(["backend", "measurement", "unit"], sort=False)[
        ["steps_per_second"]
    ].median()
    medians = medians.reset_index("unit")
    from kbn_study.studies import keras_models_speed

    ratio_table = pd.DataFrame(
        benchmark.ratios(medians)
        + keras_models_speed.ratios(
            medians["steps_per_second"], sorted(frame["backend"].unique())
        )
    )
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "benchmark.csv")
    md_path = os.path.join(args.out, "benchmark.md")
    frame.to_csv(csv_path, index=False)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    if args.suite == "applications":
        what = (
            f"keras.applications networks, 64x64 images, batches of 32: "
            f"{args.repeats} interleaved rounds of 3 steps after 2 warm-up steps"
        )
    else:
        what = (
            f"MLP: {args.batches:,} timed batches of 60 after a warm-up; LSTMs: "
            f"{args.sequence_batches} timed batches of 64 sequences of 784 "
            f"steps after one warm-up batch; median of {args.repeats}"
        )
    header = (
        f"# kbn benchmark\n\n{datetime.date.today()}, {machine}, load average "
        f"{os.getloadavg()[0]:.1f}; {what}; suite {args.suite}; data: "
        f"{frame['data_source'].iloc[0]}.\n"
    )
    speeds = medians.reset_index().assign(
        per_second=lambda f: f["steps_per_second"].map(
            lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
        )
    )[["backend", "measurement", "per_second", "unit"]]
    ratios_text = ratio_table.assign(value=ratio_table["value"].map("{:.2f}".format))
    markdown = (
        header
        + "\n## Throughput\n\n"
        + speeds.to_markdown(index=False, disable_numparse=True)
        + "\n\n## Ratios\n\n"
        + ratios_text.to_markdown(index=False, disable_numparse=True)
        + "\n"
    )
    with open(md_path, "w") as f:
        f.write(markdown)
    print()
    print(markdown)
    print(f"Every repeat: {csv_path}\nTables: {md_path}")
    return frame


if __name__ == "__main__":
    main()
