"""Sweeps in worker processes and on Ray: same results, nothing lost, nothing left."""

import contextlib
import importlib.util
import io
import multiprocessing.resource_tracker
import os

import pandas as pd
import pytest

from kbn_study import cli
from kbn_study.commands import seed_grid
from kbn_study.grid import files as grid_files
from kbn_study.grid import runner as grid
from kbn_study.studies import published as study
from kbn_study.sweeps import executors as sweep
from kbn_study.sweeps import progress as sweep_progress
from kbn_study.sweeps import workers
from tests import helpers


def test_a_pool_runs_every_task_and_leaves_no_process():
    with workers.WorkerPool(2) as pool:
        outcomes = list(pool.run(helpers.square, range(6)))
        pids = pool.pids
        assert len(pids) == 2
    assert sorted((o.index, o.value) for o in outcomes) == [
        (i, i * i) for i in range(6)
    ]
    assert not any(helpers.alive(pid) for pid in pids)


def test_a_task_whose_worker_dies_is_run_again_once_then_reported_lost():
    with workers.WorkerPool(2) as pool:
        outcomes = {o.index: o for o in pool.run(helpers.exit_on_three, range(5))}
    assert sorted(outcomes) == [0, 1, 2, 3, 4]  # none dropped
    assert [outcomes[i].value for i in (0, 1, 2, 4)] == [0, 1, 2, 4]
    assert outcomes[3].value is None
    assert "died (exit code 9) 2 times" in outcomes[3].lost


def test_a_task_that_raises_stops_the_sweep_with_the_workers_traceback():
    # multiprocessing's resource tracker, started with this process's first
    # "spawn" child, lives as long as this process: started before counting.
    multiprocessing.resource_tracker.ensure_running()
    before = set(helpers.children_of(os.getpid()))
    pool = workers.WorkerPool(2)
    with pytest.raises(workers.TaskError, match="ArithmeticError: two is not allowed"):
        list(pool.run(helpers.raise_on_two, range(4)))
    started = set(helpers.children_of(os.getpid())) - before
    assert pool.pids == [] and not any(helpers.alive(pid) for pid in started)


def test_stop_ends_the_workers_and_their_tasks():
    calls, pids = [], []

    def stop():
        calls.append(1)
        pids.extend(pool.pids)
        return len(calls) > 3  # after about 0.6 s of 30-s tasks

    with workers.WorkerPool(2) as pool:
        outcomes = list(pool.run(helpers.sleep_then_return, [30, 30], stop=stop))
        assert outcomes == [] and pool.pids == []
    assert len(set(pids)) == 2 and not any(helpers.alive(pid) for pid in pids)


def test_workers_are_limited_to_one_thread():
    environment = workers.one_thread_environment({"XLA_FLAGS": "--xla_dump_to=x"})
    assert environment["XLA_FLAGS"] == (
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
        "--xla_dump_to=x"
    )  # the user's flag comes last, so it wins
    assert environment["TF_NUM_INTRAOP_THREADS"] == "1"
    assert environment["OMP_NUM_THREADS"] == "1"


def test_progress_estimates_the_time_left_from_measured_work_only():
    stream = io.StringIO()
    progress = sweep_progress.SweepProgress(
        total=4, batches=400, stream=stream, lengths=[50, 50, 100, 200], parallel=2
    )
    progress.start -= 100  # a slow start-up must not count
    assert progress.seconds_left() is None
    progress.run_finished("a with_bn", 50, "val. 0.9000", seconds=7.0)
    # Only 50-batch runs measured: 100 and 200 remain, not estimated yet.
    assert progress.seconds_left() is None
    assert "left" not in stream.getvalue()
    progress.run_finished("b with_bn", 100, "val. 0.9100", seconds=12.0)
    # 7 s for 50, 12 s for 100: 2 s fixed + 0.1 s a batch; 50 and 200 left
    # on two workers: (7 + 22) / 2.
    assert progress.seconds_left() == pytest.approx(14.5)
    progress.run_failed("c with_bn", 50, "its worker died")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/4] a with_bn: val. 0.9000 | [##")
    assert lines[1].endswith("2/4 runs, 1 min 40 s, about 14 s left")
    assert lines[2].endswith("about 22 s left")  # 200 batches, one at a time
    assert lines[2].startswith("[3/4] c with_bn: FAILED, its worker died | ")
    assert sweep_progress.duration(3725) == "1 h 02 min"


def test_progress_estimates_runs_of_a_measured_length():
    progress = sweep_progress.SweepProgress(
        total=3, batches=30, stream=io.StringIO(), lengths=[10, 10, 10]
    )
    progress.run_finished("a", 10, "ok", seconds=4.0)
    assert progress.seconds_left() == pytest.approx(8.0)


def test_ray_missing_is_one_line_saying_how_to_install(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real(name, *a),
    )
    with pytest.raises(SystemExit) as exit_info:
        seed_grid.parse_args(["--ray", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    expected = "argument --ray: Ray is not installed here. Install it with: "
    assert expected + 'pip install -e ".[ray]" in a checkout of kbn' in lines[0]
    assert 'pip install "kbn[' not in lines[0]


def test_sweep_flags_choose_the_executor(tmp_path):
    args = seed_grid.parse_args(["--out", str(tmp_path)])
    assert cli.sweep_executor(args).count == len(os.sched_getaffinity(0))
    args = seed_grid.parse_args(["--workers", "3", "--out", str(tmp_path)])
    assert cli.sweep_executor(args).count == 3
    if sweep.ray_installed():
        args = seed_grid.parse_args(["--ray", "--out", str(tmp_path)])
        assert cli.sweep_executor(args).address is None
        args = seed_grid.parse_args(["--ray", "auto", "--out", str(tmp_path)])
        assert cli.sweep_executor(args).address == "auto"


def _identity(frame, columns):
    key = grid_files.RUN_KEY + (["step"] if "step" in frame else [])
    return frame.sort_values(key).reset_index(drop=True)[key + columns]


@pytest.mark.slow
def test_workers_and_ray_give_identical_runs(mnist_subset, tmp_path):
    """Same seed, same accuracies to the last digit, whoever ran the run: one
    worker process running the four runs one after the other, or Ray running
    them two at a time in processes of its own."""
    if not sweep.ray_installed():
        pytest.skip('Ray is not installed (pip install -e ".[ray]")')
    configs = study.select_configurations("sigmoid:1:good:2000")
    executors = {"one": sweep.Workers(1), "ray": sweep.Ray(num_cpus=2)}
    results, curves = {}, {}
    for name, executor in executors.items():
        rows = grid.run_grid(
            tmp_path / name,
            mnist_subset,
            configs,
            seeds=2,
            fraction=0.01,
            verbose=False,
            executor=executor,
        )
        assert len(rows) == 4 and rows.attrs["lost"] == 0
        results[name] = _identity(
            rows, ["final_validation_accuracy", "test_accuracy", "diverged"]
        )
        curves[name] = _identity(
            grid_files.read_curves(tmp_path / name / "curves.csv"),
            ["validation_accuracy", "training_loss"],
        )
    for name in ("ray",):
        pd.testing.assert_frame_equal(results[name], results["one"], check_exact=True)
        pd.testing.assert_frame_equal(curves[name], curves["one"], check_exact=True)
    # Training did happen: the runs with batch norm differ from each other.
    assert results["one"]["final_validation_accuracy"].nunique() > 1


class _LosesTheFirstRun:
    """An executor that runs in this process but loses the first task, as if
    its worker had died twice."""

    description = "a test executor"

    @contextlib.contextmanager
    def start(self, dataset):
        yield self

    def run(self, function, items, stop=lambda: False):
        for index, item in enumerate(items):
            if index == 0:
                yield workers.Outcome(index, lost="its worker process died 2 times")
            else:
                yield workers.Outcome(index, function(self.mnist, item, None))


def test_a_lost_run_is_listed_as_failed_and_runs_again_later(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    executor = _LosesTheFirstRun()
    executor.mnist = mnist_subset
    rows = grid.run_grid(
        tmp_path, mnist_subset, configs, fraction=0.005, verbose=False,
        executor=executor,
    )  # fmt: skip
    assert rows.attrs["lost"] == 1 and rows["network"].tolist() == ["with_bn"]
    failed = pd.read_csv(tmp_path / "failed.csv")
    assert failed["network"].tolist() == ["without_bn"]
    assert failed["reason"].tolist() == ["its worker process died 2 times"]
    again = grid.run_grid(
        tmp_path, mnist_subset, configs, fraction=0.005, verbose=False
    )
    assert again.attrs["lost"] == 0
    assert again["network"].tolist() == ["without_bn", "with_bn"]  # grid order
