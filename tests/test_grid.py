"""kbn.study and kbn.grid: the configurations, resumable runs, the summary."""

import pandas as pd
import pytest

from kbn import grid
from kbn import study


def test_the_study_has_fifteen_configurations():
    configs = study.STUDY_CONFIGURATIONS
    assert len(configs) == 15
    assert sum(c.batches == 2_000 for c in configs) == 3
    assert {c.batches_per_sample for c in configs if c.batches == 50_000} == {500}
    assert {c.batches_per_sample for c in configs if c.batches == 2_000} == {50}
    # Every configuration has the study's published figures.
    for c in configs:
        runs = study.published_runs(c.activation, c.learning_rate, c.weights, c.batches)
        assert set(runs["network"]) == {"without_bn", "with_bn"}, c.key


def test_published_repeats_are_kept():
    runs = study.published_runs("relu", 1, "bad", 50_000)
    with_bn = runs[runs["network"] == "with_bn"]["final_validation_accuracy"]
    assert with_bn.round(4).tolist() == [0.9244, 0.0988]


@pytest.mark.parametrize(
    "pattern,keys",
    [
        ("relu:1:bad", ["relu:1:bad:50000"]),
        ("sigmoid:*:good:2000", ["sigmoid:1:good:2000", "sigmoid:2:good:2000"]),
        ("relu:0.01:good", ["relu:0.01:good:50000", "relu:0.01:good:2000"]),
        ("relu:2:bad, relu:1:bad", ["relu:1:bad:50000", "relu:2:bad:50000"]),
    ],
)
def test_configuration_filter(pattern, keys):
    assert [c.key for c in study.select_configurations(pattern)] == keys


@pytest.mark.parametrize("pattern", ["relu:3:good", "tanh", "relu:x:bad", "a:b:c:d:e"])
def test_bad_filters_name_the_pattern(pattern):
    with pytest.raises(ValueError, match="Received: pattern="):
        study.select_configurations(pattern)


def test_capped_runs_keep_the_number_of_samples():
    long, short = study.select_configurations("relu:0.01:good")
    capped = grid.experiment_config(long, seed=1, out_dir="x", max_batches=1_000)
    assert (capped.batches, capped.batches_per_sample) == (1_000, 10)
    assert capped.name == "relu_lr0.01_good_50000_seed1_cap1000"
    full = grid.experiment_config(short, seed=0, out_dir="x")
    assert (full.batches, full.batches_per_sample, full.name) == (
        2_000,
        50,
        "relu_lr0.01_good_2000_seed0",
    )


def test_run_grid_appends_and_resumes(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    first = grid.run_grid(
        tmp_path, mnist_subset, configs, seeds=1, max_batches=20, verbose=False
    )
    assert len(first) == 2 and set(first["network"]) == {"without_bn", "with_bn"}
    # More seeds later: only the new runs are trained.
    second = grid.run_grid(
        tmp_path, mnist_subset, configs, seeds=2, max_batches=20, verbose=False
    )
    assert len(second) == 4
    pd.testing.assert_frame_equal(second.iloc[:2], first)
    curves = grid.read_curves(tmp_path / "results.csv".replace("results", "curves"))
    assert len(curves) == 4 * 20  # a sample every batch when capped to 20
    assert (tmp_path / "sigmoid_lr1_good_2000_seed1_cap20" / "with_bn").is_dir()


def test_a_row_cut_short_by_a_hard_kill_is_not_finished(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    grid.run_grid(tmp_path, mnist_subset, configs, max_batches=10, verbose=False)
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1].rsplit(",", 3)[0]]) + "\n")
    assert len(grid.read_results(path)) == 1
    again = grid.run_grid(
        tmp_path, mnist_subset, configs, max_batches=10, verbose=False
    )
    assert len(again) == 2
    assert len(grid.read_curves(tmp_path / "curves.csv")) == 2 * 10


def test_resuming_with_other_data_is_refused(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    grid.run_grid(tmp_path, mnist_subset, configs, max_batches=5, verbose=False)
    other = type(mnist_subset)(**{**mnist_subset.__dict__, "source": "file: other.npz"})
    with pytest.raises(ValueError, match="Received: data source 'file: other.npz'"):
        grid.run_grid(tmp_path, other, configs, max_batches=5, verbose=False)


def _row(network, seed, final, diverged=False, step=None):
    return {
        "activation": "relu",
        "learning_rate": 1.0,
        "weights": "bad",
        "study_batches": 50_000,
        "batches": 50_000,
        "batches_per_sample": 500,
        "seed": seed,
        "network": network,
        "final_validation_accuracy": final,
        "test_accuracy": final - 0.01,
        "first_step_0.8": step,
        "first_step_0.9": step,
        "diverged": diverged,
        "wall_time_s": 10.0,
        "steps_per_second": 5000.0,
        "data_source": "x",
        "backend": "jax",
        "finished_at": "2026-11-26T00:00:00",
    }


def test_summary_makes_randomness_a_number():
    results = pd.DataFrame(
        [
            _row("without_bn", 0, 0.11, diverged=True),
            _row("without_bn", 1, 0.10, diverged=True),
            _row("with_bn", 0, 0.92, step=3_000),
            _row("with_bn", 1, 0.10),
            _row("with_bn", 2, 0.94, step=5_000),
        ]
    )
    summary = grid.summarize(results).set_index("network")
    assert list(summary.index) == ["without_bn", "with_bn"]
    with_bn = summary.loc["with_bn"]
    assert with_bn["runs"] == 3
    assert with_bn["final_val_mean"] == pytest.approx((0.92 + 0.10 + 0.94) / 3)
    assert with_bn["final_val_std"] == pytest.approx(
        pd.Series([0.92, 0.10, 0.94]).std(ddof=0)
    )
    assert with_bn["success_rate"] == pytest.approx(2 / 3)
    assert with_bn["median_first_step_0.9"] == 4_000
    assert with_bn["published_final_val"] == "0.9244, 0.0988"
    assert summary.loc["without_bn", "diverged"] == 2
    assert summary.loc["without_bn", "success_rate"] == 0.0
    markdown = grid.summary_markdown(grid.summarize(results), title="t")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| relu")
    ]
    assert rows[1][:9] == [
        "relu", "1", "bad", "50,000", "with BN", "3",
        "0.6533 ± 0.3914", "0.1000 – 0.9400", "0.6433",
    ]  # fmt: skip
    assert rows[1][9:] == [
        "67%",
        "0",
        "4,000",
        "5,000",
        "0.9244, 0.0988",
        "0.9208, 0.1010",
    ]
    assert rows[0][9:12] == ["0%", "2", "never"]
