"""Where a sweep's independent runs execute: here, in worker processes, on Ray.

A sweep (the grid, the networks of a comparison) is a list of independent tasks,
each `function(dataset, item, stop)` returning a picklable result (`stop`: None,
or in this process a function saying whether to stop the run at its next batch;
`function` is module-level, as it is pickled by name). An executor runs them and
yields `kbn_study.sweeps.workers.Outcome`s as they finish; the caller alone writes the
results, so that resuming, Ctrl-C and run identity do not depend on where the
runs executed:

- `InProcess()`: one after the other in this process (the Python API's
  default; a Ctrl-C stops the run in progress at its next batch);
- `Workers(count)`: `count` single-threaded worker processes on this
  machine (`kbn_study.sweeps.workers`; default one per core);
- `Ray(address)`: Ray tasks of one CPU each, on a local Ray instance
  (`address=None`) or a cluster (`"auto"`, `"ray://host:port"`); a task lost
  with its node is retried once, then reported as lost.

Every executor runs a task in a process limited to one thread
(`kbn_study.sweeps.workers.ONE_THREAD`), except `InProcess`, which runs in the
caller's process as it is, so a run's results are the same on `Workers`
with any count and on `Ray`.

It must not know what a task trains nor write results (the caller does).
"""

import contextlib
import importlib.util
import os
import pickle

import kbn_study
from kbn_study.sweeps import workers

RAY_INSTALL = kbn_study.install_hint("ray")

# The dataset of this worker process (`Workers`), set once by `_keep_dataset`.
_DATASET = None


def ray_installed():
    return importlib.util.find_spec("ray") is not None


class InProcess:
    """Runs the tasks one after the other in this process."""

    description = "this process"
    # How many runs execute at once.
    parallel = 1

    @contextlib.contextmanager
    def start(self, dataset):
        yield _InProcessSession(dataset)


class Workers:
    """Runs the tasks in `count` single-threaded processes (default: one per core)."""

    def __init__(self, count=None):
        self.count = workers.default_count() if count is None else count

    @property
    def parallel(self):
        """How many runs execute at once."""
        return self.count

    @property
    def description(self):
        plural = "" if self.count == 1 else "es"
        return f"{self.count} worker process{plural}, one thread each"

    @contextlib.contextmanager
    def start(self, dataset):
        import keras

        pool = workers.WorkerPool(
            self.count,
            environment={"KERAS_BACKEND": keras.backend.backend()},
            # Pickled here, unpickled in the worker after its start-up (the
            # dataset's classes import Keras).
            setup=(_keep_dataset, (pickle.dumps(dataset, protocol=5),)),
        )
        with pool:
            yield _WorkersSession(pool)


class Ray:
    """Runs the tasks as Ray tasks of one CPU each.

    Args:
        address: None for a new local Ray instance; `"auto"` or
            `"ray://host:port"` for an existing cluster.
        num_cpus: CPUs of a new local instance (default: every core).
        retries: How many times a task lost with its worker or node is run
            again before it is reported as lost.
    """

    def __init__(self, address=None, num_cpus=None, retries=1):
        self.address = address
        self.num_cpus = num_cpus
        self.retries = retries

    @property
    def parallel(self):
        """How many runs execute at once: a local instance's CPUs (a
        cluster's are not known here: 1, so the estimate is an upper
        bound)."""
        if self.address is None:
            return self.num_cpus or workers.default_count()
        return 1

    @property
    def description(self):
        where = self.address or "a local Ray instance"
        return f"Ray tasks of one CPU each on {where}"

    @contextlib.contextmanager
    def start(self, dataset):
        if not ray_installed():
            raise ImportError(f"Ray is not installed. Install it with: {RAY_INSTALL}")
        import keras
        import ray

        environment = workers.one_thread_environment({})
        environment = {key: environment[key] for key in workers.ONE_THREAD}
        environment["KERAS_BACKEND"] = keras.backend.backend()
        options = {
            "runtime_env": {"env_vars": environment},
            "include_dashboard": False,
            "log_to_driver": False,
        }
        if self.address is None:
            options["num_cpus"] = self.num_cpus
        ray.init(address=self.address, **options)
        try:
            yield _RaySession(ray, ray.put(dataset), self.retries)
        finally:
            ray.shutdown()


class _InProcessSession:
    def __init__(self, dataset):
        self.dataset = dataset

    def run(self, function, items, stop=lambda: False):
        for index, item in enumerate(items):
            if stop():
                return
            value = function(self.dataset, item, stop)
            if stop():
                return  # the run was cut short: not a result
            yield workers.Outcome(index, value)


class _WorkersSession:
    def __init__(self, pool):
        self.pool = pool

    def run(self, function, items, stop=lambda: False):
        tasks = [(function, item) for item in items]
        yield from self.pool.run(_with_dataset, tasks, stop=stop)


class _RaySession:
    def __init__(self, ray, dataset_ref, retries):
        self.ray = ray
        self.dataset_ref = dataset_ref
        self.retries = retries

    def run(self, function, items, stop=lambda: False, poll_interval=0.2):
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=self.retries)(_ray_task)
        refs = {
            remote.remote(function, self.dataset_ref, item): index
            for index, item in enumerate(items)
        }
        try:
            while refs:
                if stop():
                    return
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=poll_interval)
                for ref in ready:
                    index = refs.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:
                        raise workers.TaskError(str(error)) from None
                    except ray.exceptions.RayError as error:
                        first = str(error).strip().splitlines()[:1]
                        reason = "lost with its Ray worker or node after "
                        reason += f"{self.retries + 1} attempts ({''.join(first)})"
                        yield workers.Outcome(index, lost=reason)
                        continue
                    yield workers.Outcome(index, value)
        finally:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _keep_dataset(pickled_dataset):
    """A worker's set-up: imports Keras (TensorFlow's start-up log lines
    filtered out, as in the parent), then keeps the dataset."""
    global _DATASET
    from kbn_study import startup

    startup.start(default_backend=os.environ.get("KERAS_BACKEND", "jax"))
    import keras  # noqa: F401

    _DATASET = pickle.loads(pickled_dataset)


def _with_dataset(task):
    function, item = task
    return function(_DATASET, item, None)


def _ray_task(function, dataset, item):
    # The runtime environment sets the threads and the backend; a worker
    # process of a cluster started without them still gets them here, as
    # long as it has not imported JAX yet.
    for key, value in workers.one_thread_environment({}).items():
        if key in workers.ONE_THREAD:
            os.environ.setdefault(key, value)
    return function(dataset, item, None)
