"""Scaling of a multi-process JAX run: N processes against one process.

Holds `measure_scaling`, which runs the distributed command three times in
processes of its own (1 process x N threads; N processes pinned to one core
each; N processes sharing the cores) and prints their throughputs side by
side. It must not import JAX or Keras.
"""

import os
import subprocess
import sys

from kbn_study.studies.distributed.launcher import ProcessFailed


def measure_scaling(args, argv):
    """The same run as 1 process x N threads and as N processes, pinned and
    not.

    N processes x 1 thread pins each to its own core (`--threads-per-process
    1`), as N one-core machines; N processes sharing the cores leaves the
    operating system to place their threads (each XLA process sizes its
    thread pool to the N cores). The two differ (on a shared 2-core
    machine, pinned was the slower: docs/multi_process_jax.md), so both
    are printed.

    Args:
        args: The command's parsed arguments (`--num-processes N`, ...).
        argv: Its command line, run again for each configuration.

    Returns:
        `{"1xN": batches/s, "Nx1": batches/s, "N shared": batches/s}`.
    """
    n = args.num_processes
    base = [a for a in argv if a != "--scaling"]
    configurations = [
        (f"1x{n}", 1, ["--threads-per-process", str(n)]),
        (f"{n}x1", n, ["--threads-per-process", "1"]),
        (f"{n} shared", n, []),
    ]
    rates, exchanged = {}, None
    for label, processes, pinning in configurations:
        command = [
            sys.executable, "-m", "kbn_study.commands.distributed", *base,
            "--num-processes", str(processes), *pinning,
            "--log-dir", os.path.join(args.log_dir, "scaling", label.replace(" ", "_")),
        ]  # fmt: skip
        print(f"Running {label} ...", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
            raise ProcessFailed(f"the {label} run failed (status {result.returncode})")
        lines = result.stdout.splitlines()
        line = next(x for x in lines if x.startswith("Throughput:"))
        rates[label] = float(line.split()[1].replace(",", ""))
        if processes > 1:
            exchanged = next(
                (x for x in lines if x.startswith("All-reduced per batch")), None
            )
    one = rates[f"1x{n}"]
    print(
        f"Scaling, {args.network}, global batch {args.global_batch_size}, "
        f"{args.batches:,} batches, {os.cpu_count()} CPUs:",
        f"  1 process x {n} threads:            {one:10,.1f} batches/s",
        f"  {n} processes x 1 core each (pinned): {rates[f'{n}x1']:10,.1f} "
        f"batches/s, efficiency {rates[f'{n}x1'] / one:.3f}",
        f"  {n} processes sharing the {n} cores:  {rates[f'{n} shared']:10,.1f} "
        f"batches/s, efficiency {rates[f'{n} shared'] / one:.3f}",
        f"  {exchanged}",
        sep="\n",
    )
    return rates
