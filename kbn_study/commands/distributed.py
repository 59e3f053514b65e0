"""Train the study's batch-norm MLP data-parallel, with the statistics of the global
batch: on tf.distribute (TensorFlow) or on several JAX processes.

The entry point of `recipes/distributed.py` (see its docstring), also
`python -m kbn_study.commands.distributed` and `kbn-distributed`.
"""

import os
import re
import subprocess
import sys
import time
import traceback

from kbn_study import cli

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
        "its machine (for measurements); by default no pinning",
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
            return measure_scaling(args, argv)
        if args.process_id is None and args.num_processes > 1:
            return launch_local_processes(args, argv)
        return train_jax(args)
    return train_tf_distribute(args)


def train_tf_distribute(args):
    os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.distribute only
    cli.start(default_backend="tensorflow")
    from kbn import distributed

    if args.strategy == "mirrored" and args.devices > 1:
        distributed.use_logical_cpus(args.devices)

    import functools

    import keras
    import tensorflow as tf

    import kbn
    from kbn_study import comparison
    from kbn_study import experiment
    from kbn_study import mnist
    from kbn_study import networks
    from kbn_study import runs

    with cli.bad_input_exits(status=2):
        strategy = distributed.make_strategy(args.strategy)
        per_replica = distributed.replica_batch_size(args.global_batch_size, strategy)
    schedule = runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=args.global_batch_size,
        seed=args.seed,
    )
    dataset = cli.load_data(args)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    print(
        f"Strategy: {args.strategy}, {replicas} replica(s), global batch "
        f"{args.global_batch_size} = {replicas} x {per_replica}, batch norm "
        f"{'un' if args.unsynchronized else ''}synchronized"
    )

    kernels = networks.initial_weights(
        scale=experiment.WEIGHT_SCALES[args.weights], seed=args.seed
    )
    norm = functools.partial(kbn.layers.BatchNorm, synchronized=not args.unsynchronized)
    strategy = strategy or tf.distribute.get_strategy()  # "none": one device
    with strategy.scope():
        model = networks.build_mlp(kernels, args.activation, batch_norm=norm)
    step = distributed.sgd_train_step(
        strategy, model, args.learning_rate, args.global_batch_size
    )
    batches = distributed.distribute_global_batches(
        strategy,
        lambda: mnist.training_batches(
            dataset.train.images,
            dataset.train.labels,
            args.global_batch_size,
            args.seed,
        ),
        args.global_batch_size,
        image_shape=(784,),
    )

    stem = (
        f"distributed_{args.strategy}"
        f"{'_unsynchronized' if args.unsynchronized else ''}_{args.activation}_"
        f"lr{args.learning_rate:g}_{args.weights}"
    )
    chief = distributed.is_chief()
    run_dir = (
        os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
        if chief
        else None
    )
    recorder = kbn.callbacks.ValidationAccuracyRecorder(
        (dataset.validation.images, dataset.validation.labels),
        every_n_batches=args.batches_per_sample,
        log_dir=None if run_dir is None else os.path.join(run_dir, "with_bn"),
    )
    callbacks = [recorder]
    if chief:
        callbacks.append(kbn.callbacks.TrainingProgress(args.batches, label="with_bn:"))
    # kbn's callbacks, driven by a custom loop: Keras 3's fit cannot run under
    # MultiWorkerMirroredStrategy (see kbn.distributed).
    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    iterator = iter(batches)
    start = time.perf_counter()
    callbacks.on_train_begin()
    for batch in range(args.batches):
        callbacks.on_train_batch_begin(batch)
        loss = step(iterator)
        callbacks.on_train_batch_end(batch, {"loss": loss})
    callbacks.on_train_end({"loss": loss})
    wall = time.perf_counter() - start

    network = runs.network_result("with_bn", recorder, model, dataset, wall)
    result = comparison.ComparisonResult(
        {"with_bn": network},
        dataset.source,
        title=f"BN MLP, {args.strategy}, {replicas} replica(s)",
    )
    if chief:
        metadata = {
            "args": vars(args),
            "replicas": replicas,
            **comparison.circumstances(dataset),
        }
        result.paths = comparison.write_comparison(result, run_dir, metadata)
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
    """One process of a jax-multiprocess run (or the whole run, with one)."""
    index = args.process_id or 0
    count = args.num_processes
    _pin_cpus(index, args.threads_per_process)
    os.environ["KERAS_BACKEND"] = "jax"
    cli.start(default_backend="jax")
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

    try:
        return _train_jax(args, index, count)
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
                f"{os.path.basename(sys.argv[0]) or 'kbn'}: error: process "
                f"{index} of {count}: training stopped: another process failed "
                f"or cannot be reached ({type(error).__name__}: "
                f"{text.splitlines()[0] if text else ''})",
                file=sys.stderr,
            )
        else:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        # Not a normal exit: JAX's exit handler would wait at its shutdown
        # barrier for the other processes, which wait in their next
        # collective for this one. They see this process's connections
        # close and stop at once.
        os._exit(status)


def _train_jax(args, index, count):
    import keras

    import kbn
    from kbn import distributed
    from kbn_study import comparison
    from kbn_study import experiment
    from kbn_study import networks
    from kbn_study import runs

    chief = index == 0

    def say(*lines):
        if chief:
            print(*lines, sep="\n", flush=True)

    if count > 1:
        keras.distribution.set_distribution(distributed.BlockDataParallel())
    schedule = runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=args.global_batch_size,
        seed=args.seed,
    )
    if chief:
        dataset = cli.load_data(args)
    else:  # the same data, without process 0's lines
        import contextlib
        import io

        from kbn_study import mnist

        with cli.bad_input_exits(), contextlib.redirect_stdout(io.StringIO()):
            dataset = mnist.load_mnist(args.data, name=args.dataset)
    if count > 1:
        _check_same_data(dataset, index, count)
    devices = keras.distribution.list_devices()
    say(
        f"Strategy: {JAX}, {count} process(es), {len(devices)} device(s), "
        f"global batch {args.global_batch_size} = {count} x "
        f"{args.global_batch_size // count}, batch norm on the global batch"
    )
    kbn.set_random_seed(args.seed)  # the same on every process
    kernels = networks.initial_weights(
        scale=experiment.WEIGHT_SCALES[args.weights], seed=args.seed
    )
    model = networks.build_mlp(
        kernels, args.activation, batch_norm=kbn.layers.BatchNorm
    )
    stem = (
        f"distributed_jax{count}proc_{args.activation}_lr{args.learning_rate:g}_"
        f"{args.weights}"
    )
    run_dir = os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
    if chief:
        comparison.clear_event_files(run_dir)  # a rerun replaces the run
    throughput = _Throughput(schedule.sample_interval, report=chief)
    # Every process runs every callback (their passes are collective); only
    # process 0 writes (kbn.distributed.is_writer).
    network = runs.train_network(
        model,
        dataset,
        keras.optimizers.SGD(args.learning_rate),
        schedule,
        "with_bn",
        log_dir=os.path.join(run_dir, "with_bn"),
        callbacks=[throughput],
    )
    result = comparison.ComparisonResult(
        {"with_bn": network},
        dataset.source,
        title=f"BN MLP, {JAX}, {count} process(es)",
    )
    communication = all_reduced_per_batch(model, args.global_batch_size)
    if chief:
        metadata = {
            "args": vars(args),
            "processes": count,
            "devices": len(devices),
            "throughput_batches_per_s": throughput.rate,
            "all_reduced_per_batch": communication,
            **comparison.circumstances(dataset),
        }
        result.paths = comparison.write_comparison(result, run_dir, metadata)
    say(
        f"Throughput: {throughput.rate:,.1f} batches/s after the first "
        f"{throughput.first:,} batches (compilation excluded)",
        f"All-reduced per batch: {communication['all_reduces']} all-reduce(s), "
        f"{communication['bytes']:,} bytes",
        "",
        comparison.summary_text(result),
    )
    # Process 0 writes while the others wait here: nobody exits first.
    distributed.barrier("kbn-distributed-end")
    return result


def _check_same_data(dataset, index, count):
    """Exits unless every process loaded the same data (same tag).

    A machine without Keras's MNIST cache falls back to the shipped subset:
    the processes would then feed shards of different datasets.
    """
    import hashlib

    import numpy as np
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(dataset.tag.encode()).digest()[:8]
    mine = np.frombuffer(digest, dtype="uint8")
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not (every == every[0]).all():
        cli.error(
            f"process {index} of {count}: the processes loaded different data "
            f"(this one: {dataset.tag}). Expected the same data everywhere: "
            "pass the same --data file to every process"
        )


class _Throughput:
    """Batches per second after the first sampling interval (compilation)."""

    def __new__(cls, first, report):
        from kbn.callbacks.global_step import GlobalStepCallback

        class Throughput(GlobalStepCallback):
            def on_train_begin(self, logs=None):
                super().on_train_begin(logs)
                self.first, self.rate, self._start = first, float("nan"), None
                self._t0 = time.perf_counter()

            def on_steps_end(self, logs=None):
                if self._start is None and self.global_step >= self.first:
                    self.first = self.global_step
                    self._start = time.perf_counter()
                    if report:
                        print(
                            f"Trained the first {self.first:,} batches (with "
                            f"compilation) in {self._start - self._t0:.1f} s",
                            flush=True,
                        )

            def on_train_end(self, logs=None):
                if self._start is not None and self.global_step > self.first:
                    elapsed = time.perf_counter() - self._start
                    self.rate = (self.global_step - self.first) / elapsed

        return Throughput()


_HLO_SHAPE = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}


def all_reduced_per_batch(model, global_batch_size):
    """What one training batch all-reduces across the processes.

    Compiles (without running) one batch's forward pass, backward pass and
    SGD update of `model` on a global batch split over every device, and
    reads the all-reduces in XLA's optimized program: their count and the
    bytes of their operands. (Keras's training step adds a few scalars for
    its loss tracker.) `{"all_reduces": n, "bytes": b}`; zero with one
    device.
    """
    import jax
    import keras
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("batch"))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(trainable, non_trainable, images, labels):
        def loss(trainable):
            logits, updated = model.stateless_call(
                trainable, non_trainable, images, training=True
            )
            return loss_fn(labels, logits), updated

        grads, updated = jax.grad(loss, has_aux=True)(trainable)
        return [w - 0.01 * g for w, g in zip(trainable, grads)], updated

    images = jax.ShapeDtypeStruct(
        (global_batch_size, *model.inputs[0].shape[1:]), "float32", sharding=split
    )
    labels = jax.ShapeDtypeStruct((global_batch_size,), "int32", sharding=split)
    compiled = (
        jax.jit(step, in_shardings=(replicated, replicated, split, split))
        .lower(trainable, non_trainable, images, labels)
        .compile()
    )
    count, total = 0, 0
    for line in compiled.as_text().splitlines():
        if " all-reduce(" not in line and " all-reduce-start(" not in line:
            continue
        count += 1
        result_type = line.split("=", 1)[1].split("all-reduce", 1)[0]
        for dtype, dims in _HLO_SHAPE.findall(result_type):
            size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
            total += size * _BYTES.get(dtype, int(re.sub(r"\D", "", dtype)) // 8)
    return {"all_reduces": count, "bytes": total}


def launch_local_processes(args, argv):
    """Starts the run's `--num-processes` processes on this machine.

    Each is this command with `--process-id i --coordinator 127.0.0.1:PORT`
    (a free port); their output goes to this terminal (process 0 prints the
    run's lines; the others only errors). If one fails, the others stop by
    themselves (see `kbn.distributed`); any still running
    `--heartbeat-timeout` seconds later are ended. Exits with status 1 if
    a process failed.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "kbn_study.commands.distributed", *argv]
    processes = [
        subprocess.Popen(
            [
                *command,
                "--process-id",
                str(i),
                "--coordinator",
                f"127.0.0.1:{port}",
            ]
        )
        for i in range(args.num_processes)
    ]
    failed = None
    try:
        while any(p.poll() is None for p in processes):
            for i, p in enumerate(processes):
                if failed is None and p.returncode not in (None, 0):
                    failed = (i, p.returncode, time.monotonic())
            if failed and time.monotonic() - failed[2] > args.heartbeat_timeout:
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
    codes = [p.returncode for p in processes]
    if failed is None and any(codes):
        failed = next((i, c, 0) for i, c in enumerate(codes) if c)
    if failed is not None:
        cli.error(
            f"process {failed[0]} of {args.num_processes} exited with status "
            f"{failed[1]}; exit statuses of all: {codes}"
        )
    return None


def measure_scaling(args, argv):
    """The same run as 1 process x N threads and as N processes x 1 thread."""
    n = args.num_processes
    base = [a for a in argv if a != "--scaling"]
    configurations = [(1, n), (n, 1)]
    rates = {}
    for processes, threads in configurations:
        label = f"{processes}x{threads}"
        command = [
            sys.executable, "-m", "kbn_study.commands.distributed", *base,
            "--num-processes", str(processes),
            "--threads-per-process", str(threads),
            "--log-dir", os.path.join(args.log_dir, "scaling", label),
        ]  # fmt: skip
        print(f"Running {processes} process(es) x {threads} thread(s) ...", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
            cli.error(f"the {label} run failed (status {result.returncode})")
        line = next(
            x for x in result.stdout.splitlines() if x.startswith("Throughput:")
        )
        rates[label] = float(line.split()[1].replace(",", ""))
        for x in result.stdout.splitlines():
            if x.startswith("All-reduced per batch") and processes > 1:
                print(f"  {x}")
    one, many = rates[f"1x{n}"], rates[f"{n}x1"]
    print(
        f"Scaling, global batch {args.global_batch_size}, {args.batches:,} "
        f"batches, {os.cpu_count()} CPUs:",
        f"  1 process x {n} threads:  {one:10,.1f} batches/s",
        f"  {n} processes x 1 thread: {many:10,.1f} batches/s",
        f"  efficiency ({n}x1 / 1x{n}): {many / one:.3f}",
        sep="\n",
    )
    return rates


if __name__ == "__main__":
    main()
