"""The same sweep timed with two worker counts, side by side.

`time_workers` runs the grid's runs from scratch with A worker processes,
then again with B, one after the other on the same machine, and reports the
wall times, the speed-up and whether every run's accuracies (final
validation, test, and each sampled validation accuracy) are identical, as
they must be: a run's result does not depend on how many workers there are
or which one ran it. `seed_grid.py --time-workers 1,2` prints it.

It must not hold how the grid runs (`kbn_study.grid.runner`).
"""

import os
import shutil
import time

import pandas as pd

from kbn_study.grid import files as grid_files
from kbn_study.grid import runner as grid
from kbn_study.sweeps import executors as sweep
from kbn_study.sweeps import workers

# What must be identical between two executions of the same runs.
RESULT_FIELDS = ["final_validation_accuracy", "test_accuracy", "diverged"]
CURVE_FIELDS = ["step", "validation_accuracy", "training_loss"]


def time_workers(out_dir, dataset, counts, configurations, seeds=1, fraction=1.0):
    """Times the grid with each worker count in `counts`; prints and returns a table.

    Each count's runs go to `<out_dir>/time_workers/<count>/`, emptied first.

    Returns:
        A DataFrame, one row per count: `workers`, `runs`, `wall_time_s`,
        `mean_run_s` (mean training time of a run), `load_before` (the
        1-minute load average before), `speed_up` (over the first count);
        its `attrs["identical"]` says whether every run's accuracies were
        identical.
    """
    frames, curves, rows = {}, {}, []
    for count in counts:
        folder = os.path.join(out_dir, "time_workers", str(count))
        shutil.rmtree(folder, ignore_errors=True)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        frames[count] = grid.run_grid(
            folder,
            dataset,
            configurations,
            seeds=seeds,
            fraction=fraction,
            executor=sweep.Workers(count),
        )
        wall = time.perf_counter() - start
        curves[count] = grid_files.read_curves(os.path.join(folder, "curves.csv"))
        rows.append(
            {
                "workers": count,
                "runs": len(frames[count]),
                "wall_time_s": wall,
                "mean_run_s": frames[count]["wall_time_s"].astype(float).mean(),
                "load_before": load,
            }
        )
    table = pd.DataFrame(rows)
    table["speed_up"] = table["wall_time_s"].iloc[0] / table["wall_time_s"]
    differences = _differences(frames, curves, counts)
    table.attrs["identical"] = not differences
    text = _report(table, differences)
    with open(os.path.join(out_dir, "time_workers", "timing.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    return table


def _differences(frames, curves, counts):
    """The runs whose accuracies differ between the first and the other counts."""
    first, others = counts[0], counts[1:]
    found = []
    for other in others:
        for name, (a, b, fields) in {
            "result": (frames[first], frames[other], RESULT_FIELDS),
            "curve": (curves[first], curves[other], CURVE_FIELDS),
        }.items():
            sort = grid_files.RUN_KEY + (["step"] if name == "curve" else [])
            a = a.sort_values(sort).reset_index(drop=True)
            b = b.sort_values(sort).reset_index(drop=True)
            if len(a) != len(b) or not a[sort].equals(b[sort]):
                found.append(f"{other} workers: other {name} rows than {first}")
                continue
            for field in fields:
                unequal = a[field].astype(str) != b[field].astype(str)
                for index in unequal[unequal].index:
                    key = ", ".join(str(a.loc[index, k]) for k in grid_files.RUN_KEY)
                    found.append(
                        f"{other} workers, {key}: {field} {b.loc[index, field]} "
                        f"against {a.loc[index, field]}"
                    )
    return found


def _report(table, differences):
    shown = pd.DataFrame(
        {
            "workers": table["workers"],
            "runs": table["runs"],
            "wall time": table["wall_time_s"].map("{:.1f} s".format),
            "mean training time of a run": table["mean_run_s"].map("{:.2f} s".format),
            "speed-up": table["speed_up"].map("{:.2f}x".format),
            "load average before": table["load_before"].map("{:.1f}".format),
        }
    )
    lines = [
        "# Sweep timing",
        "",
        f"The same {table['runs'].iloc[0]} runs, from scratch, one count after "
        f"the other; {workers.default_count()} cores available to this process. "
        "A load average above the core count means other processes compete for "
        "the cores: the speed-up is then not the machine's.",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    if differences:
        lines.append("Per-run accuracies DIFFER:")
        lines += [f"- {line}" for line in differences]
    else:
        lines.append(
            "Per-run accuracies (final validation, test, every sampled validation "
            "accuracy and training loss): identical with every worker count."
        )
    return "\n".join(lines) + "\n"
