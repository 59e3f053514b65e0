"""The study's commands: one module per recipe, each with `main(argv=None)`.

Run them as `python recipes/<name>.py` (from a checkout), `python -m
kbn_study.commands.<name>`, or the console scripts that installing kbn puts
on the PATH (the functions below, named in pyproject.toml's
`[project.scripts]`). Importing this package or a command module is cheap: a
command parses its arguments before it imports Keras.

They must not hold training logic: each parses, starts the process and calls
the study (`kbn_study.studies`, `kbn_study.training`).
"""

import importlib
import importlib.util

import kbn_study

# What the study imports beyond the library: the `study` extra, by import
# name. An install of the library alone has the console scripts too.
STUDY_NEEDS = ("jax", "matplotlib", "pandas", "tabulate", "tensorboard", "tensorflow")


def _run(command):
    module = importlib.import_module(f"{__name__}.{command}")
    missing = [name for name in STUDY_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        import sys

        from kbn_study import cli

        # The command line is checked first: --help and a bad flag need
        # nothing of the study.
        module.parse_args(sys.argv[1:])
        cli.error(
            f"the study needs {', '.join(missing)}, not installed here. Install "
            f"them with: {kbn_study.install_hint('study')}"
        )
    # A console script exits with its function's return value, and `main`
    # returns its results to Python callers: returned from here, a result
    # would be printed to stderr and end the command with status 1.
    module.main()


def kbn_compare():
    """`kbn-compare`: `python -m kbn_study.commands.compare`."""
    _run("compare")


def kbn_grid():
    """`kbn-grid`: `python -m kbn_study.commands.seed_grid`."""
    _run("seed_grid")


def kbn_inference_modes():
    """`kbn-inference-modes`: `python -m kbn_study.commands.inference_modes`."""
    _run("inference_modes")


def kbn_convnet():
    """`kbn-convnet`: `python -m kbn_study.commands.convnet`."""
    _run("convnet")


def kbn_sequential_mnist():
    """`kbn-sequential-mnist`: `python -m kbn_study.commands.sequential_mnist`."""
    _run("sequential_mnist")


def kbn_distributed():
    """`kbn-distributed`: `python -m kbn_study.commands.distributed`."""
    _run("distributed")


def kbn_benchmark():
    """`kbn-benchmark`: `python -m kbn_study.commands.benchmark`."""
    _run("benchmark")


def kbn_covariate_shift():
    """`kbn-covariate-shift`: `python -m kbn_study.commands.covariate_shift`."""
    _run("covariate_shift")


def kbn_small_batches():
    """`kbn-small-batches`: `python -m kbn_study.commands.small_batches`."""
    _run("small_batches")


def kbn_corruptions():
    """`kbn-corruptions`: `python -m kbn_study.commands.corruptions`."""
    _run("corruptions")


def kbn_fine_tuning():
    """`kbn-fine-tuning`: `python -m kbn_study.commands.fine_tuning`."""
    _run("fine_tuning")


def kbn_keras_models():
    """`kbn-keras-models`: `python -m kbn_study.commands.keras_models`."""
    _run("keras_models")
