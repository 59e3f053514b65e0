"""Starting the processes of a multi-process JAX run on this machine.

Holds `launch_local_processes`; it must not import JAX or Keras (it only
starts and watches processes).
"""

import socket
import subprocess
import sys
import time


class ProcessFailed(RuntimeError):
    """One of the processes of a run exited with an error."""


def launch_local_processes(argv, num_processes, heartbeat_timeout):
    """Starts the run's `--num-processes` processes on this machine.

    Each is `python -m kbn_study.commands.distributed ARGV --process-id i
    --coordinator 127.0.0.1:PORT` (a free port); their output goes to this
    terminal (process 0 prints the run's lines; the others only errors). If
    one fails, the others stop by themselves (see `kbn.distributed`); any
    still running `heartbeat_timeout` seconds later are ended.

    Raises:
        ProcessFailed: A process exited with a status other than 0.
    """
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
        for i in range(num_processes)
    ]
    failed = None
    try:
        while any(p.poll() is None for p in processes):
            for i, p in enumerate(processes):
                if failed is None and p.returncode not in (None, 0):
                    failed = (i, p.returncode, time.monotonic())
            if failed and time.monotonic() - failed[2] > heartbeat_timeout:
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
        raise ProcessFailed(
            f"process {failed[0]} of {num_processes} exited with status "
            f"{failed[1]}; exit statuses of all: {codes}"
        )
