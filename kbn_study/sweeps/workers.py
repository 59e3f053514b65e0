"""Worker processes, one thread each, that run many independent tasks.

The study's runs are small: one run's matrix products are too small to share
among cores, so a sweep is fastest with one single-threaded process per core
(issue 17's measurement: two single-threaded processes train 2.0 times the
steps per second of one process using both cores). `WorkerPool` starts
`count` such processes with the "spawn" method (JAX is not fork-safe); each
imports Keras once and then runs task after task sent by the parent:

- `ONE_THREAD` limits XLA, TensorFlow and the BLAS libraries to one thread;
  it is set in a worker before anything is imported;
- a worker ignores SIGINT (a Ctrl-C in a terminal reaches the whole process
  group): the parent decides what an interruption means, and `close` ends
  every worker, whatever it is doing; a worker also dies with the parent
  (Linux: `PR_SET_PDEATHSIG`), so none is ever left behind;
- a task whose worker died (killed, out of memory) is run again once in a
  new worker, then reported as lost (`Outcome.lost`), never dropped;
- an exception raised by a task is a bug: it comes back as `TaskError` with
  the worker's traceback.

Nothing here imports Keras; the tasks do, in the workers.
"""

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback

# Environment of a process limited to one thread.
ONE_THREAD = {
    # XLA (JAX on a CPU): no Eigen thread pool for the matrix products, one
    # intra-op thread.
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    # TensorFlow (the TensorBoard writers; the backend if chosen).
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    # NumPy's BLAS.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def one_thread_environment(environ=None):
    """`environ` (default `os.environ`) with `ONE_THREAD` applied.

    The user's own XLA flags are kept, after the one-thread flags (so a flag
    the user sets on purpose wins).
    """
    environ = dict(os.environ if environ is None else environ)
    extra = environ.get("XLA_FLAGS", "")
    environ.update(ONE_THREAD)
    if extra and extra != ONE_THREAD["XLA_FLAGS"]:
        environ["XLA_FLAGS"] = f"{ONE_THREAD['XLA_FLAGS']} {extra}"
    return environ


def default_count():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TaskError(RuntimeError):
    """A task raised in its worker; the message holds the worker's traceback."""


@dataclasses.dataclass
class Outcome:
    """What became of one task: its value, or why it was lost."""

    index: int
    value: object = None
    lost: str | None = None


class WorkerPool:
    """`count` single-threaded worker processes; use as a context manager.

    Args:
        count: Number of processes.
        environment: Extra environment variables of the workers (besides
            `ONE_THREAD`), e.g. `{"KERAS_BACKEND": "jax"}`.
        setup: Optional `(function, args)` every worker calls once before its
            first task (a module-level function: it is pickled by name),
            e.g. to import Keras and keep the data.
        retries: How many times a task whose worker died is run again.
    """

    def __init__(self, count, environment=None, setup=None, retries=1):
        if not (isinstance(count, int) and count >= 1):
            raise ValueError(
                "Invalid value for argument count: expected a positive int. "
                f"Received: count={count!r}"
            )
        self.count = count
        self.environment = dict(environment or {})
        self.setup = setup
        self.retries = retries
        self._context = multiprocessing.get_context("spawn")
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def pids(self):
        """Process ids of the workers alive now."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def run(self, function, items, stop=lambda: False, poll_interval=0.2):
        """Runs `function(item)` for every item; yields `Outcome`s as they finish.

        Outcomes come in the order the tasks finish. Every `poll_interval`
        seconds without news, `stop()` is asked; when it says True, every
        worker is ended at once (the tasks in progress are dropped) and the
        iteration ends. The workers stay up for another `run` until `close`.

        Raises:
            TaskError: A task raised; every worker has been ended.
        """
        pending = list(enumerate(items))[::-1]  # popped from the end
        attempts = {}
        busy = {}  # worker -> (index, item)
        try:
            while pending or busy:
                if stop():
                    self.close()
                    return
                while pending and len(busy) < self.count:
                    worker = self._idle_worker(busy)
                    index, item = pending.pop()
                    attempts[index] = attempts.get(index, 0) + 1
                    busy[worker] = (index, item)
                    try:
                        worker.connection.send((function, item))
                    except OSError:  # it died: seen below through its sentinel
                        pass
                ready = multiprocessing.connection.wait(
                    [w.connection for w in busy] + [w.process.sentinel for w in busy],
                    timeout=poll_interval,
                )
                for worker in list(busy):
                    if worker.connection in ready:
                        try:
                            ok, value = worker.connection.recv()
                        except (EOFError, OSError):
                            ok, value = None, None  # died while answering
                        if ok is not None:
                            index, _ = busy.pop(worker)
                            if not ok:
                                raise TaskError(value)
                            yield Outcome(index, value)
                            continue
                    if worker in busy and not worker.process.is_alive():
                        index, item = busy.pop(worker)
                        self._forget(worker)
                        if attempts[index] <= self.retries:
                            pending.append((index, item))
                        else:
                            code = worker.process.exitcode
                            yield Outcome(
                                index,
                                lost=f"its worker process died (exit code {code}) "
                                f"{attempts[index]} times",
                            )
        except BaseException:
            self.close()
            raise

    def close(self):
        """Ends every worker now (a task in progress is dropped) and waits."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()

    def _idle_worker(self, busy):
        for worker in self._workers:
            if worker not in busy and worker.process.is_alive():
                return worker
        worker = self._start_worker()
        self._workers.append(worker)
        return worker

    def _forget(self, worker):
        self._workers.remove(worker)
        worker.process.join(timeout=1)
        worker.connection.close()

    def _start_worker(self):
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child_end, self.environment),
            daemon=True,
            name="kbn-worker",
        )
        process.start()
        child_end.close()
        try:
            parent_end.send(self.setup)
        except OSError:  # it died at once: seen through its sentinel
            pass
        return _Worker(process, parent_end)


@dataclasses.dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: multiprocessing.connection.Connection


def _serve(connection, environment):
    """A worker's life: one thread, then tasks until the parent hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    os.environ.update(one_thread_environment({**os.environ, **environment}))
    # The set-up comes through the pipe, not as an argument of the process:
    # unpickling it may import Keras, which must come after the environment.
    try:
        setup = connection.recv()
    except (EOFError, OSError):
        return
    if setup is not None:
        function, args = setup
        function(*args)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        function, item = message
        try:
            reply = (True, function(item))
        except BaseException:
            reply = (False, traceback.format_exc())
        try:
            connection.send(reply)
        except (BrokenPipeError, OSError):
            return


def _die_with_parent():
    """Linux: the kernel ends this process when its parent ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
