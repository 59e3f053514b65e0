"""The README's measured figures, generated: run the commands, record, rewrite.

Runs the commands whose figures the README quotes, on this machine, and
records what they printed and wrote in `docs/figures.json` (the one place
these numbers live), keyed by the machine's CPU model and the versions of
JAX and Keras (XLA's CPU code, and so the last digits of a 50,000-batch
run, differ between CPUs and versions). Then it rewrites each README table
between its markers,

    <!-- figures:NAME -->
    ...
    <!-- /figures:NAME -->

from the record of this machine, with the commit, date, CPU, backend and
wall time beside it. The suite's test of the README's main job
(tests/test_readme_figures.py) compares what `recipes/compare.py` prints
with the record of the CPU and versions it runs on.

    python docs/readme_figures.py                 # every figure (about 4 minutes idle)
    python docs/readme_figures.py --only compare  # the main job alone
    python docs/readme_figures.py --rewrite-only  # tables from docs/figures.json

Figures: `compare` (`recipes/compare.py`), `compare_full` (`--full`),
`inference_modes` (`recipes/inference_modes.py`), `quick_grid`
(`recipes/seed_grid.py --fraction 0.1`). Timings carry their machine and
load (`os.getloadavg()` when the command started); run it on an idle
machine for times worth quoting.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "docs", "figures.json")
README = os.path.join(ROOT, "README.md")
COMPARE_RUN = "relu_lr0.01_good_2000x60_seed0_mnist-subset"
FULL_RUN = "relu_lr0.01_good_50000x60_seed0_mnist-subset"


def cpu_model():
    """The CPU's model name, as /proc/cpuinfo gives it (or the platform's)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key():
    """`<cpu model> | jax <version> | keras <version>`: what a record is for."""
    versions = [
        f"{name} {importlib.metadata.version(name)}" for name in ("jax", "keras")
    ]
    return " | ".join([cpu_model(), *versions])


def read_figures(path=FIGURES):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _run(arguments, shown):
    """Runs `python recipes/...` as a user does (JAX, offline subset);
    `shown` is the command as the README shows it (without the temporary
    output folder)."""
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    environment.setdefault("KBN_OFFLINE", "1")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"readme_figures.py: error: {' '.join(arguments)} failed")
    return {
        "command": shown,
        "seconds": round(seconds, 1),
        "load_at_start": round(load, 2),
    }


def _networks(run_dir):
    import pandas as pd

    frame = pd.read_csv(os.path.join(run_dir, "results.csv")).set_index("network")
    return {
        name: {
            "final_validation_accuracy": round(float(row.final_validation_accuracy), 4),
            "test_accuracy": round(float(row.test_accuracy), 4),
        }
        for name, row in frame.iterrows()
    }


def measure_compare(log_dir, full=False):
    extra = ["--full"] if full else []
    record = _run(
        ["recipes/compare.py", *extra, "--log-dir", log_dir],
        " ".join(["python recipes/compare.py", *extra]),
    )
    record["networks"] = _networks(
        os.path.join(log_dir, FULL_RUN if full else COMPARE_RUN)
    )
    return record


def measure_inference_modes(log_dir):
    record = _run(
        ["recipes/inference_modes.py", "--log-dir", log_dir],
        "python recipes/inference_modes.py",
    )
    (path,) = [
        os.path.join(base, name)
        for base, _, names in os.walk(log_dir)
        for name in names
        if name == "inference_modes.json"
    ]
    with open(path) as f:
        summary = json.load(f)
    record["results"] = {
        key: round(summary[key], 4) if isinstance(summary[key], float) else summary[key]
        for key in (
            "test_accuracy_batch_statistics",
            "test_accuracy_population_statistics",
            "single_accuracy_batch_statistics",
            "single_accuracy_population_statistics",
            "distinct_single_predictions_batch_statistics",
        )
    }
    return record


def measure_quick_grid(log_dir):
    return _measure_grid(log_dir, ["--fraction", "0.1"])


def measure_full_grid(log_dir):
    """The whole study at full length; its summary.md becomes
    docs/seed_grid_summary.md."""
    import shutil

    record = _measure_grid(log_dir, [])
    shutil.copy(
        os.path.join(log_dir, "summary.md"),
        os.path.join(ROOT, "docs", "seed_grid_summary.md"),
    )
    return record


def _measure_grid(log_dir, extra):
    import pandas as pd

    record = _run(
        ["recipes/seed_grid.py", *extra, "--out", log_dir],
        " ".join(["python recipes/seed_grid.py", *extra]),
    )
    summary = pd.read_csv(os.path.join(log_dir, "summary.csv"))
    record["rows"] = [
        {
            "activation": row.activation,
            "learning_rate": float(row.learning_rate),
            "weights": row.weights,
            "batches": int(row.batches),
            "study_batches": int(row.study_batches),
            "network": row.network,
            "final_validation_accuracy": round(float(row.final_val_mean), 4),
            "test_accuracy": round(float(row.test_mean), 4),
            "study_final_validation_accuracy": str(row.published_final_val),
        }
        for row in summary.itertuples()
    ]
    return record


MEASUREMENTS = {
    "compare": measure_compare,
    "compare_full": lambda log_dir: measure_compare(log_dir, full=True),
    "inference_modes": measure_inference_modes,
    "quick_grid": measure_quick_grid,
    # 1.2 million steps: measured only when asked for (--only full_grid).
    "full_grid": measure_full_grid,
}
DEFAULT = ["compare", "compare_full", "inference_modes", "quick_grid"]


def circumstances():
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "commit": commit or "unknown",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "backend": "jax",
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("jax", "jaxlib", "keras")
        },
    }


# --- The README's tables ----------------------------------------------------


def _stamp(record):
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    return (
        f"Generated by `python docs/readme_figures.py` from commit {record['commit']}, "
        f"{record['date']}, on a {record['cores']}-core {record['cpu']} "
        f"({record['backend']} backend; {versions}); the offline 5,000-digit "
        "subset. Wall time of each command, start-up included, with the "
        "load average when it started:"
    )


def _time(figure):
    seconds, load = figure["seconds"], figure["load_at_start"]
    return f"`{figure['command']}` {seconds:.0f} s (load {load:g})"


def compare_table(record):
    rows = [
        "| run | network | final validation accuracy | test accuracy |",
        "|---|---|---|---|",
    ]
    times = []
    for name, label in (
        ("compare", "2,000 batches"),
        ("compare_full", "50,000 batches"),
    ):
        figure = record["figures"].get(name)
        if figure is None:
            continue
        for network in ("without_bn", "with_bn"):
            values = figure["networks"][network]
            rows.append(
                f"| {label} | {network.replace('_', ' ').replace('bn', 'BN')} | "
                f"{values['final_validation_accuracy']:.4f} | "
                f"{values['test_accuracy']:.4f} |"
            )
        times.append(_time(figure))
    return "\n".join([_stamp(record), "; ".join(times) + ".", "", *rows])


def inference_table(record):
    figure = record["figures"]["inference_modes"]
    r = figure["results"]
    rows = [
        "| statistics | whole test set | 200 single images |",
        "|---|---|---|",
        f"| batch | {r['test_accuracy_batch_statistics']:.4f} | "
        f"{r['single_accuracy_batch_statistics']:.4f} "
        f"({r['distinct_single_predictions_batch_statistics']} class(es) predicted) |",
        f"| population | {r['test_accuracy_population_statistics']:.4f} | "
        f"{r['single_accuracy_population_statistics']:.4f} |",
    ]
    return "\n".join([_stamp(record), _time(figure) + ".", "", *rows])


def quick_grid_table(record, name="quick_grid"):
    figure = record["figures"][name]
    by_configuration = {}
    for row in figure["rows"]:
        key = (
            row["activation"],
            row["learning_rate"],
            row["weights"],
            row["batches"],
            row["study_batches"],
        )
        by_configuration.setdefault(key, {})[row["network"]] = row
    full = name == "full_grid"
    rows = [
        "| activation | lr | weights | batches | without BN: val / test "
        "| with BN: val / test |"
        + (" study val, without | study val, with |" if full else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if full else ""),
    ]
    for (
        activation,
        rate,
        weights,
        batches,
        study,
    ), networks in by_configuration.items():
        cells = [
            "-"
            if n not in networks
            else f"{networks[n]['final_validation_accuracy']:.4f} / "
            f"{networks[n]['test_accuracy']:.4f}"
            for n in ("without_bn", "with_bn")
        ]
        length = f"{batches:,}" if batches == study else f"{batches:,} of {study:,}"
        study_cells = [
            networks[n].get("study_final_validation_accuracy", "-")
            if n in networks
            else "-"
            for n in ("without_bn", "with_bn")
        ]
        rows.append(
            f"| {activation} | {rate:g} | {weights} | {length} | "
            f"{cells[0]} | {cells[1]} |"
            + (f" {study_cells[0]} | {study_cells[1]} |" if full else "")
        )
    return "\n".join([_stamp(record), _time(figure) + ".", "", *rows])


TABLES = {
    "compare": compare_table,
    "inference_modes": inference_table,
    "quick_grid": quick_grid_table,
    "full_grid": lambda record: quick_grid_table(record, "full_grid"),
}


def rewrite(text, name, table):
    """`text` with the block between `name`'s markers replaced by `table`."""
    pattern = re.compile(
        rf"(<!-- figures:{name} -->\n).*?(<!-- /figures:{name} -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"readme_figures.py: error: README.md has no {name!r} markers")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated figures to measure, of {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--rewrite-only",
        action="store_true",
        help="measure nothing: rewrite the README from docs/figures.json",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MEASUREMENTS))
    if unknown:
        parser.error(
            f"argument --only: expected some of {list(MEASUREMENTS)}. "
            f"Received: {unknown}"
        )
    figures = read_figures()
    key = machine_key()
    record = figures.setdefault(key, {**circumstances(), "figures": {}})
    if not args.rewrite_only:
        record.update(circumstances())
        for name in names:
            print(f"{name}: running ...", flush=True)
            with tempfile.TemporaryDirectory() as log_dir:
                record["figures"][name] = MEASUREMENTS[name](log_dir)
            print(f"{name}: {json.dumps(record['figures'][name])[:300]}")
        with open(FIGURES, "w") as f:
            json.dump(figures, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(README) as f:
        text = f.read()
    for name, table in TABLES.items():
        if name in record["figures"] or (
            name == "compare" and "compare_full" in record["figures"]
        ):
            text = rewrite(text, name, table(record))
    with open(README, "w") as f:
        f.write(text)
    print(f"Rewrote the README's tables from {FIGURES} ({key}).")


if __name__ == "__main__":
    main()
