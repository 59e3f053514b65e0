"""What the study's commands share: argument types and checks, start-up.

Every command parses and checks all of its arguments, its output folder and
its input files before it imports Keras (so `--help` and argument errors take
a fraction of a second) and before it loads data or trains. A bad value
exits with status 2 and one `<command>: error: ...` line naming it; a file
that turns out to be corrupt when it is read exits with status 1 and one
line naming the file. Nothing here imports Keras.
"""

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with the recipes' conventions.

    The description is the first paragraph of the command's docstring; every
    flag's help ends with its default (unless the help speaks of the default
    itself); an error is one line, `<command>: error: <message>`, status 2.
    """

    def __init__(self, doc, **kwargs):
        kwargs.setdefault("prog", program_name())
        super().__init__(
            description=doc.strip().split("\n\n")[0],
            formatter_class=_DefaultsHelpFormatter,
            **kwargs,
        )

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def program_name():
    """The command as a user types it: `compare.py` (a recipe), `kbn-compare`
    (a console script) or `python -m kbn_study.commands.compare`."""
    parts = os.path.normpath(sys.argv[0]).split(os.sep)
    if len(parts) >= 3 and parts[-3:-1] == ["kbn_study", "commands"]:
        return f"python -m kbn_study.commands.{parts[-1].removesuffix('.py')}"
    return parts[-1] or "kbn"


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text
            or action.default is argparse.SUPPRESS
            or isinstance(action, argparse._StoreConstAction)  # store_true/false
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def positive_float(text):
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def fraction(text):
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def momentum(text):
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _number(text, kind, ok, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
    return value


def add_data_arguments(parser):
    parser.add_argument(
        "--data",
        default=None,
        help="an mnist.npz file or a folder of the four IDX files; by default "
        "Keras's cache, then Keras's download, then the 5,000 digits shipped "
        "with kbn_study",
    )
    parser.add_argument(
        "--dataset",
        choices=["mnist", "fashion_mnist"],
        default="mnist",
        help="fashion_mnist also reads Debian's dataset-fashion-mnist files",
    )


def add_mlp_arguments(parser):
    """`--activation`, `--learning-rate`, `--weights`: a study configuration."""
    parser.add_argument(
        "--activation",
        choices=["relu", "sigmoid"],
        default="relu",
        help="hidden activation",
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=0.01,
        help="plain SGD learning rate (the study: 0.01, 1 or 2)",
    )
    parser.add_argument(
        "--weights",
        choices=["good", "bad"],
        default="good",
        help="initial kernels: good N(0, 0.05), bad N(0, 5.0)",
    )


def add_schedule_arguments(parser, batches, batch_size, batches_per_sample):
    """`--batches`, `--batch-size`, `--batches-per-sample` with these defaults."""
    parser.add_argument(
        "--batches", type=positive_int, default=batches, help="training batches"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="images per batch"
    )
    parser.add_argument(
        "--batches-per-sample",
        type=positive_int,
        default=batches_per_sample,
        help="validation sampling interval",
    )


def add_run_arguments(parser):
    """`--seed`, `--log-dir`, `--data`, `--dataset`: what every training recipe has."""
    add_seed_argument(parser)
    add_log_dir_argument(parser)
    add_data_arguments(parser)


def parse(parser, argv, outputs=("--log-dir",)):
    """Parses `argv`, then checks the output folders and `--data` (if any)."""
    args = parser.parse_args(argv)
    check_paths(
        parser,
        outputs={flag: getattr(args, _dest(flag)) for flag in outputs},
        inputs={"--data": getattr(args, "data", None)},
    )
    return args


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def schedule(args):
    """The `kbn_study.training.runs.Schedule` of `add_schedule_arguments`' flags."""
    from kbn_study.training import runs

    return runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=args.batch_size,
        seed=args.seed,
    )


def start_comparison(args, default_backend="jax"):
    """Starts a command that compares the study's MLP with and without batch
    norm: the process (`kbn_study.startup.start`), its configuration from
    the flags, and its data (one line says which).

    Returns:
        `(config, dataset)`: a `kbn_study.studies.experiment.ExperimentConfig`
        and a `kbn_study.data.mnist.Dataset`.
    """
    from kbn_study import startup

    startup.start(default_backend=default_backend)
    from kbn_study.studies import experiment

    config = experiment.ExperimentConfig.from_args(args)
    return config, load_data(args)


def load_data(args, **kwargs):
    """`--data`/`--dataset` loaded (one error line if a file is corrupt), and
    a line saying what was loaded (and a second with where from, unless it
    is the shipped subset, which the loader has named)."""
    from kbn_study.data import mnist

    with bad_input_exits():
        dataset = mnist.load_mnist(args.data, name=args.dataset, **kwargs)
    print(f"Data: {dataset.describe(source=False)}")
    if dataset.source != mnist.SUBSET_SOURCE:
        print(f"Data source: {dataset.source}")
    return dataset


def add_sweep_arguments(parser, ray=True):
    """`--workers N` or `--ray [ADDRESS]`: where a sweep's independent runs
    execute (`--workers` alone with `ray=False`)."""
    from kbn_study.sweeps import workers

    cores = workers.default_count()
    where = parser.add_mutually_exclusive_group() if ray else parser
    where.add_argument(
        "--workers",
        type=non_negative_int,
        # None, not `cores`: argparse sees an explicit value equal to the
        # default as absent, and would allow `--ray --workers 2`.
        default=None,
        metavar="N",
        help="run the runs in N worker processes, one thread each; 0 runs them "
        "one after the other in this process, threads unlimited, as PyTorch's "
        "DataLoader does with num_workers=0 (default: one per core available "
        f"to this process, here {cores})",
    )
    if not ray:
        return
    where.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the runs as Ray tasks of one CPU each: on a new local Ray "
        "instance (no ADDRESS) or a running cluster ('auto', "
        "'ray://host:port'); needs Ray (default: no Ray)",
    )


def check_sweep_arguments(parser, args):
    """Exits with one line if `--ray` is asked for and Ray is not installed."""
    if getattr(args, "ray", None) is not None and not importlib.util.find_spec("ray"):
        import kbn_study

        parser.error(
            "argument --ray: Ray is not installed here. Install it with: "
            + kbn_study.install_hint("ray")
        )


def sweep_executor(args):
    """The `kbn_study.sweeps.executors` executor of `add_sweep_arguments`' flags."""
    from kbn_study.sweeps import executors as sweep

    if getattr(args, "ray", None) is not None:
        return sweep.Ray(None if args.ray == "local" else args.ray)
    if args.workers == 0:
        return sweep.InProcess()
    return sweep.Workers(args.workers)  # None: one per core


def add_seed_argument(parser):
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the initial weights and of the batch order",
    )


def add_log_dir_argument(parser, default="logs"):
    parser.add_argument(
        "--log-dir",
        default=default,
        help="folder of the results and TensorBoard logs",
    )


def check_paths(parser, outputs=None, inputs=None):
    """Exits through `parser.error` unless the paths are usable.

    Args:
        parser: The command's parser.
        outputs: `{flag: folder}`, folders to write into: each must exist or
            be creatable, and be writable. The check leaves nothing behind.
        inputs: `{flag: path}`, files or folders to read (None is allowed):
            each must exist; `--data` must also read as MNIST-format data
            (else one line, status 1).
    """
    for flag, folder in (outputs or {}).items():
        problem = writable_folder_problem(folder)
        if problem:
            parser.error(f"argument {flag}: {problem}")
    for flag, path in (inputs or {}).items():
        if path is not None and not os.path.exists(path):
            parser.error(f"argument {flag}: no such file or folder. Received: {path!r}")
    data = (inputs or {}).get("--data")
    if data is not None:
        # Read now, with NumPy alone: a corrupt file fails before Keras is
        # imported (the loader reuses what was read).
        from kbn_study.data import files as data_files

        with bad_input_exits():
            data_files.check(data)


def writable_folder_problem(path):
    """Why `path` cannot be a folder to write into, or None if it can.

    Tries for real: creates the missing folders and a temporary file, then
    removes everything it created.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        return f"expected a folder, but it is a file. Received: {path!r}"
    missing = []
    probe = path
    while not os.path.exists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    try:
        if missing:
            os.makedirs(path)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        return f"cannot write there ({error.strerror}). Received: {path!r}"
    finally:
        for folder in missing:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    return None


def error(message, status=1):
    """Ends the command with `<command>: error: <message>`."""
    program = program_name()
    print(f"{program}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


@contextlib.contextmanager
def bad_input_exits(status=1):
    """Ends the command with one `error:` line on a `ValueError` or `OSError`.

    For what can only be checked by reading it (a corrupt data or model
    file): the library's messages name the file and what is wrong with it;
    a user of a script needs that line, not a traceback.
    """
    try:
        yield
    except (OSError, ValueError) as exc:
        error(str(exc), status)
