"""Training speed of the study's MLP: kbn vs Keras's layer vs a hand-written loop.

Measures, in one run on one machine and the same data, for each installed
backend (TensorFlow, JAX), training steps per second (batches of 60) of:

- the kbn path (`kbn.experiment`: `MultiStepTrainer` + `model.fit`, with the
  validation recorder sampling the whole validation set every 500 batches),
  with and without batch norm, and without the recorder;
- the same path with `keras.layers.BatchNormalization` in place of kbn's;
- plain `model.fit` with `steps_per_execution=50`, what a Keras user writes;
- a hand-written loop with every step inside one compiled loop: the ceiling;
- inference of the BN model and of its folded copy (`kbn.fold_batch_norm`).

Each measurement is repeated `--repeats` times, interleaved, and the median
is reported with the ratios the project aims at. Each backend runs in its own
process (Keras picks its backend once per process).

    python recipes/benchmark.py                     # about 7 minutes here
    python recipes/benchmark.py --batches 2000 --repeats 1 --backends jax

Writes `<out>/benchmark.csv` (every repeat), `<out>/benchmark.md` (medians
and ratios). Timings are not tests: a shared machine is noisy; compare the
ratios of one run.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import datetime
import importlib.util
import json
import platform
import subprocess
import sys

from kbn import cli

BACKENDS = ("jax", "tensorflow")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batches", type=cli.positive_int, default=10_000)
    parser.add_argument("--repeats", type=cli.positive_int, default=5)
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated; backends that are not installed are skipped",
    )
    parser.add_argument("--out", default=os.path.join("logs", "benchmark"))
    parser.add_argument("--data", default=None, help="mnist.npz or IDX folder")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batches % 500:
        parser.error(
            "argument --batches: expected a multiple of 500 (the sampling "
            f"interval). Received: {args.batches}"
        )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(
            f"argument --backends: expected some of {BACKENDS}. Received: {unknown}"
        )
    args.backends = backends
    return args


def worker(args):
    """Runs in a child process with KERAS_BACKEND set: prints JSON rows."""
    import kbn
    from kbn import benchmarking

    dataset = kbn.load_mnist(args.data)
    rows = benchmarking.measure(dataset, args.batches, args.repeats)
    for row in rows:
        row["data_source"] = dataset.source
    print("KBN-ROWS " + json.dumps(rows))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)

    import pandas as pd

    from kbn import benchmarking

    rows = []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed, skipped")
            continue
        print(f"{backend}: measuring ({args.repeats} repeats)...", flush=True)
        command = [sys.executable, os.path.abspath(__file__), "--worker", backend]
        command += ["--batches", str(args.batches), "--repeats", str(args.repeats)]
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
            raise SystemExit(f"benchmark.py: error: the {backend} worker failed")
        rows.extend(json.loads(lines[-1][len("KBN-ROWS ") :]))

    frame = pd.DataFrame(rows)
    medians = frame.groupby(["backend", "measurement", "unit"], sort=False)[
        ["steps_per_second"]
    ].median()
    medians = medians.reset_index("unit")
    ratio_table = pd.DataFrame(benchmarking.ratios(medians))
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "benchmark.csv")
    md_path = os.path.join(args.out, "benchmark.md")
    frame.to_csv(csv_path, index=False)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    header = (
        f"# kbn benchmark\n\n{datetime.date.today()}, {machine}; "
        f"{args.batches:,} timed batches of 60 after a warm-up, median of "
        f"{args.repeats}; data: {frame['data_source'].iloc[0]}.\n"
    )
    speeds = medians.reset_index().assign(
        per_second=lambda f: f["steps_per_second"].map("{:,.0f}".format)
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
