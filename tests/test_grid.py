"""kbn_study.studies.published and the grid: configurations, resumable runs, summary."""

import dataclasses

import pandas as pd
import pytest

from kbn_study.grid import files as grid_files
from kbn_study.grid import runner as grid
from kbn_study.grid import summary as grid_summary
from kbn_study.studies import published as study


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


def test_short_runs_keep_configurations_distinct_and_the_sampling_rule():
    long, short = study.select_configurations("relu:0.01:good")
    quick_long = grid.experiment_config(long, seed=1, out_dir="x", fraction=0.01)
    quick_short = grid.experiment_config(short, seed=1, out_dir="x", fraction=0.01)
    assert (quick_long.batches, quick_short.batches) == (500, 20)
    # The study's rule for those lengths: every 50 batches (and the last one).
    assert quick_long.schedule.batches_per_sample == 50
    full = grid.experiment_config(long, seed=0, out_dir="x")
    assert (full.batches, full.schedule.batches_per_sample) == (50_000, 500)
    with pytest.raises(ValueError, match="Received: fraction=1.5"):
        grid.experiment_config(long, seed=0, out_dir="x", fraction=1.5)


def test_run_grid_appends_and_resumes(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    first = grid.run_grid(
        tmp_path, mnist_subset, configs, seeds=1, fraction=0.01, verbose=False
    )
    assert len(first) == 2 and set(first["network"]) == {"without_bn", "with_bn"}
    assert set(first["batches"]) == {20} and set(first["data"]) == {"mnist-subset"}
    # More seeds later: only the new runs are trained.
    second = grid.run_grid(
        tmp_path, mnist_subset, configs, seeds=2, fraction=0.01, verbose=False
    )
    assert len(second) == 4
    pd.testing.assert_frame_equal(second.iloc[:2], first)
    curves = grid_files.read_curves(tmp_path / "curves.csv")
    assert len(curves) == 4  # 20 batches: one sample, after the last batch
    name = "sigmoid_lr1_good_20x60_seed1_mnist-subset"
    assert (tmp_path / name / "with_bn").is_dir()


def test_a_row_cut_short_by_a_hard_kill_is_not_finished(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    grid.run_grid(tmp_path, mnist_subset, configs, fraction=0.005, verbose=False)
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1].rsplit(",", 3)[0]]) + "\n")
    assert len(grid_files.read_results(path)) == 1
    again = grid.run_grid(
        tmp_path, mnist_subset, configs, fraction=0.005, verbose=False
    )
    assert len(again) == 2
    assert len(grid_files.read_curves(tmp_path / "curves.csv")) == 2


def test_runs_on_other_data_are_kept_beside_the_first(mnist_subset, tmp_path):
    configs = study.select_configurations("sigmoid:1:good:2000")
    first = grid.run_grid(
        tmp_path, mnist_subset, configs, fraction=0.005, verbose=False
    )
    shuffled = mnist_subset.with_images(lambda images: images[:, ::-1].copy())
    other = dataclasses.replace(shuffled, tag="mnist-reversed", source="test data")
    second = grid.run_grid(tmp_path, other, configs, fraction=0.005, verbose=False)
    assert set(second["data"]) == {"mnist-reversed"} and len(second) == 2
    everything = grid_files.read_results(tmp_path / "results.csv")
    assert len(everything) == 4
    pd.testing.assert_frame_equal(everything.iloc[:2], first)
    # Running the first again trains nothing: its runs are still there.
    again = grid.run_grid(
        tmp_path, mnist_subset, configs, fraction=0.005, verbose=False
    )
    pd.testing.assert_frame_equal(again, first)


def test_a_results_file_of_an_older_version_is_refused(mnist_subset, tmp_path):
    (tmp_path / "results.csv").write_text("activation,learning_rate,weights\n")
    configs = study.select_configurations("sigmoid:1:good:2000")
    with pytest.raises(ValueError, match="Received: columns=.'activation'"):
        grid.run_grid(tmp_path, mnist_subset, configs, fraction=0.005, verbose=False)


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
        "data": "mnist",
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
    summary = grid_summary.summarize(results).set_index("network")
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
    markdown = grid_summary.summary_markdown(grid_summary.summarize(results), title="t")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| relu")
    ]
    assert rows[1] == [
        "relu", "1", "bad", "50,000", "with BN", "3",
        "0.6533 ± 0.3914 (0.1000 – 0.9400)", "0.6433", "2 / 3", "0", "4,000",
        "5,000", "0.9244, 0.0988", "0.9208, 0.1010",
    ]  # fmt: skip
    assert rows[0][6:11] == [
        "0.1050 ± 0.0050 (0.1000 – 0.1100)",
        "0.0950",
        "0 / 2",
        "2",
        "never",
    ]
    assert "| study val. acc." in markdown  # full-length runs: comparable


def test_summary_of_one_short_run_says_what_it_is():
    row = {**_row("with_bn", 0, 0.9, step=300), "batches": 500}
    markdown = grid_summary.summary_markdown(
        grid_summary.summarize(pd.DataFrame([row]))
    )
    line = next(line for line in markdown.splitlines() if line.startswith("| relu"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[3] == "500 of 50,000" and cells[6] == "0.9000"  # no ± for one run
    assert "study (full length, not comparable) val. acc." in markdown
