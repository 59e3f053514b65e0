"""Scaling of a multi-process JAX run: N processes x 1 thread against 1 x N.

Holds `measure_scaling`, which runs the distributed command twice in
processes of its own and prints their throughputs side by side. It must not
import JAX or Keras.
"""

import os
import subprocess
import sys

from kbn_study.studies.distributed.launcher import ProcessFailed


def measure_scaling(args, argv):
    """The same run as 1 process x N threads and as N processes x 1 thread.

    Args:
        args: The command's parsed arguments (`--num-processes N`, ...).
        argv: Its command line, run again for each configuration.

    Returns:
        `{"1xN": batches per second, "Nx1": batches per second}`.
    """
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
            raise ProcessFailed(f"the {label} run failed (status {result.returncode})")
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
