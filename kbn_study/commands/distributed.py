"""Train the study's batch-norm MLP data-parallel, with the statistics of the global
batch: on tf.distribute (TensorFlow) or on several JAX processes.

The entry point of `recipes/distributed.py` (see its docstring), also
`python -m kbn_study.commands.distributed` and `kbn-distributed`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import contextlib
import io
import os
import re
import sys
import traceback

from kbn_study import cli
from kbn_study import startup

STRATEGIES = ("none", "mirrored", "multiworker", "jax-multiprocess")
JAX = "jax-multiprocess"
_ADDRESS = re.compile(r"^\[?[^\s\]]+\]?:\d{1,5}$")


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="mirrored",
        help="none: one device; mirrored: the local devices; multiworker: the "
        "cluster in TF_CONFIG (these three on TensorFlow); jax-multiprocess: "
        "--num-processes JAX processes, one shard of every global batch each",
    )
    parser.add_argument(
        "--devices",
        type=cli.positive_int,
        default=2,
        help="logical CPU devices to split this machine into (mirrored)",
    )
    parser.add_argument(
        "--unsynchronized",
        action="store_true",
        help="each replica normalizes with its own slice's statistics "
        "(tf.distribute only)",
    )
    parser.add_argument(
        "--num-processes",
        type=cli.positive_int,
        default=2,
        help="jax-multiprocess: processes that train together",
    )
    parser.add_argument(
        "--process-id",
        type=cli.non_negative_int,
        default=None,
        help="jax-multiprocess: this process's index, with --coordinator (one "
        "command per machine); without it, this command starts all "
        "--num-processes processes on this machine (127.0.0.1)",
    )
    parser.add_argument(
        "--coordinator",
        default=None,
        help="jax-multiprocess: HOST:PORT of process 0, reachable from every "
        "process (with --process-id)",
    )
    parser.add_argument(
        "--threads-per-process",
        type=cli.positive_int,
        default=None,
        help="jax-multiprocess: pin process i to CPU cores i*k .. i*k+k-1 of "
        "its machine (for measurements); by default no pinning. Pinned to "
        "one core each, two processes measured slower here than sharing the "
        "cores (docs/multi_process_jax.md)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=cli.positive_int,
        default=30,
        help="jax-multiprocess: seconds without news from a process after "
        "which the others stop",
    )
    parser.add_argument(
        "--initialization-timeout",
        type=cli.positive_int,
        default=60,
        help="jax-multiprocess: seconds to wait for every process to join",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="jax-multiprocess: measure instead of one run: the same run as "
        "1 process x N threads and as N processes x 1 thread (N = "
        "--num-processes), throughput side by side",
    )
    parser.add_argument(
        "--anchor",
        action="store_true",
        help="jax-multiprocess: measure instead of one run: kbn's training step "
        "and a hand-written plain-JAX one (the same MLP, batches and kernels) "
        "in turn in the same processes, --rounds rounds of --batches batches "
        "each; prints batches/s of both and their ratio",
    )
    parser.add_argument(
        "--rounds",
        type=cli.positive_int,
        default=5,
        help="--anchor: rounds of each (their median, min and max are printed)",
    )
    parser.add_argument(
        "--network",
        choices=("mlp", "convnet"),
        default="mlp",
        help="jax-multiprocess: the study's BN MLP (SGD), or its conv net with "
        "batch norm (19 convolutions, Adam at --learning-rate; the conv net "
        "study uses 0.002 and batches of 64)",
    )
    parser.add_argument(
        "--global-batch-size",
        type=cli.positive_int,
        default=60,
        help="images per global batch, split across the replicas",
    )
    parser.add_argument(
        "--batches", type=cli.positive_int, default=2_000, help="training batches"
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=50,
        help="validation sampling interval",
    )
    cli.add_mlp_arguments(parser)
    cli.add_run_arguments(parser)
    args = cli.parse(parser, argv)
    replicas = {"none": 1, "mirrored": args.devices, JAX: args.num_processes}.get(
        args.strategy
    )
    if replicas and args.global_batch_size % replicas:
        parser.error(
            f"argument --global-batch-size: the global batch cannot be split "
            f"evenly across {replicas} replicas. Expected a multiple of "
            f"{replicas}. Received: global_batch_size={args.global_batch_size}"
        )
    jax_only = {
        "--process-id": args.process_id is not None,
        "--coordinator": args.coordinator is not None,
        "--threads-per-process": args.threads_per_process is not None,
        "--scaling": args.scaling,
        "--anchor": args.anchor,
        "--network": args.network != "mlp",
    }
    for flag, given in jax_only.items():
        if given and args.strategy != JAX:
            parser.error(
                f"argument {flag}: only with --strategy {JAX}. Received: "
                f"strategy={args.strategy!r}"
            )
    if args.strategy == JAX:
        _check_jax_arguments(parser, args)
    cli.check_paths(
        parser, outputs={"--log-dir": args.log_dir}, inputs={"--data": args.data}
    )
    return args


def _check_jax_arguments(parser, args):
    if args.unsynchronized:
        parser.error(
            "argument --unsynchronized: on JAX the statistics of a sharded "
            "batch are those of the global batch whatever the layer says. "
            f"Received: strategy={args.strategy!r}"
        )
    if args.process_id is not None:
        if args.process_id >= args.num_processes:
            parser.error(
                f"argument --process-id: expected 0 .. {args.num_processes - 1} "
                f"(--num-processes {args.num_processes}). Received: "
                f"process_id={args.process_id}"
            )
        if args.num_processes > 1 and args.coordinator is None:
            parser.error(
                "argument --coordinator: required with --process-id (HOST:PORT "
                "of process 0). Received: no --coordinator"
            )
        if args.scaling:
            parser.error(
                "argument --scaling: measures on one machine, without "
                f"--process-id. Received: process_id={args.process_id}"
            )
    elif args.coordinator is not None:
        parser.error(
            "argument --coordinator: only with --process-id (without it the "
            "processes run on this machine, coordinated on 127.0.0.1). "
            f"Received: coordinator={args.coordinator!r}"
        )
    if args.coordinator is not None and not _ADDRESS.match(args.coordinator):
        parser.error(
            "argument --coordinator: expected HOST:PORT, such as "
            f"10.0.0.1:12345. Received: coordinator={args.coordinator!r}"
        )
    if args.anchor and (args.scaling or args.network != "mlp"):
        parser.error(
            "argument --anchor: the anchor is the MLP's step, measured on its "
            "own. Received: "
            + ("--scaling" if args.scaling else f"network={args.network!r}")
        )
    if args.scaling and args.num_processes < 2:
        parser.error(
            "argument --scaling: compares 1 process with --num-processes of "
            f"them, at least 2. Received: num_processes={args.num_processes}"
        )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    args = parse_args(argv)
    if args.strategy == JAX:
        if args.scaling:
            from kbn_study.studies.distributed import scaling

            with _process_failures():
                return scaling.measure_scaling(args, argv)
        if args.process_id is None and args.num_processes > 1:
            import os

            from kbn_study.studies.distributed import launcher

            # The processes each check --log-dir as they start; made here,
            # it is not created and removed by one while the other checks.
            os.makedirs(args.log_dir, exist_ok=True)
            with _process_failures():
                return launcher.launch_local_processes(
                    argv, args.num_processes, args.heartbeat_timeout
                )
        return train_jax(args)
    return train_tf_distribute(args)


def train_tf_distribute(args):
    """A run on tf.distribute: this process is one worker (or the only one)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.distribute only
    startup.start(default_backend="tensorflow")
    from kbn import distributed

    if args.strategy == "mirrored" and args.devices > 1:
        distributed.use_logical_cpus(args.devices)
    from kbn_study.studies.distributed import tf_distribute
    from kbn_study.training import comparison

    with cli.bad_input_exits(status=2):
        strategy, per_replica = tf_distribute.strategy_of(args)
    dataset = cli.load_data(args)
    result = tf_distribute.train(args, strategy, per_replica, dataset)
    print()
    print(comparison.summary_text(result))
    return result


def _pin_cpus(index, threads):
    """Pins this process to `threads` cores of its machine, the `index`-th set.

    Before JAX starts: XLA sizes its CPU thread pool to the cores it may run
    on.
    """
    if threads is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    chosen = {cores[(index * threads + j) % len(cores)] for j in range(threads)}
    os.sched_setaffinity(0, chosen)


def train_jax(args):
    """One process of a jax-multiprocess run (or the whole run, with one).

    Joins the other processes, loads the data (process 0 says what it
    loaded), checks that every process loaded the same, and trains. A
    process whose run fails does not exit normally: JAX's exit handler would
    wait at its shutdown barrier for the others, which wait in their next
    collective for it; it prints one line and ends at once (`os._exit`),
    and the others see its connections close.
    """
    index = args.process_id or 0
    count = args.num_processes
    _pin_cpus(index, args.threads_per_process)
    os.environ["KERAS_BACKEND"] = "jax"
    startup.start(default_backend="jax")
    from kbn import distributed

    if count > 1:
        try:
            distributed.initialize_jax_processes(
                args.coordinator,
                count,
                index,
                initialization_timeout=args.initialization_timeout,
                heartbeat_timeout=args.heartbeat_timeout,
            )
        except (TimeoutError, ValueError) as error:
            cli.error(f"process {index} of {count}: {error}")
    import jax

    from kbn_study.studies.distributed import jax_processes

    try:
        if index == 0:
            dataset = cli.load_data(args)
        else:  # the same data, without process 0's lines
            from kbn_study.data import mnist

            with cli.bad_input_exits(), contextlib.redirect_stdout(io.StringIO()):
                dataset = mnist.load_mnist(args.data, name=args.dataset)
        if count > 1:
            try:
                jax_processes.check_same_data(dataset, index, count)
            except jax_processes.DifferentData as error:
                cli.error(str(error))
        if args.anchor:
            from kbn_study.studies.distributed import side_by_side

            return side_by_side.measure(args, dataset, index, count)
        return jax_processes.train(args, dataset, index, count)
    except BaseException as error:
        if count == 1:
            raise
        status = 1
        text = str(error).strip()
        if isinstance(error, SystemExit):  # its error line is printed
            status = error.code if isinstance(error.code, int) else 1
        elif isinstance(error, KeyboardInterrupt):
            status = 130
        elif isinstance(error, jax.errors.JaxRuntimeError) or "Gloo" in text:
            # A failed peer breaks the next collective: an all-reduce of the
            # training step (JaxRuntimeError) or the all-gather with which
            # JAX checks the shapes of every input batch (ValueError), both
            # "Gloo ... failed: ... Connection closed/reset by peer".
            print(
                f"{cli.program_name()}: error: process "
                f"{index} of {count}: training stopped: another process failed "
                f"or cannot be reached ({type(error).__name__}: "
                f"{text.splitlines()[0] if text else ''})",
                file=sys.stderr,
            )
        else:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


@contextlib.contextmanager
def _process_failures():
    """One error line, status 1, when a process of the run failed."""
    from kbn_study.studies.distributed.launcher import ProcessFailed

    try:
        yield
    except ProcessFailed as error:
        cli.error(str(error))


if __name__ == "__main__":
    main()
