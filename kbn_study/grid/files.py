"""The grid's results files: one CSV row per finished run, safe to interrupt.

`results.csv` holds one row per finished run (`RESULT_COLUMNS`), `curves.csv`
its learning curve (`CURVE_COLUMNS`). Rows are appended and flushed to disk
as soon as a run finishes, its result row last, so that the result row marks
the run as finished. A row cut short by a hard kill is dropped when the
files are read or repaired; curves of a run without a result row are dropped
on resume. `RUN_KEY` is a run's identity: every setting that changes its
results, the data included. `failed.csv` lists the runs lost with their
worker (they have no result row, so the next call runs them again).

It must not train or decide which runs to run (`kbn_study.grid.runner`).
"""

import csv
import io
import math
import os

import pandas as pd

RUN_KEY = [
    "activation",
    "learning_rate",
    "weights",
    "study_batches",
    "batches",
    "seed",
    "network",
    "data",
]
RESULT_COLUMNS = [
    *RUN_KEY,
    "batches_per_sample",
    "final_validation_accuracy",
    "test_accuracy",
    "first_step_0.8",
    "first_step_0.9",
    "diverged",
    "wall_time_s",
    "steps_per_second",
    "data_source",
    "backend",
    "finished_at",
]
CURVE_COLUMNS = [*RUN_KEY, "step", "validation_accuracy", "training_loss"]
# `failed.csv`: runs lost with their worker or node (a later call runs them
# again, as they have no result row).
FAILURE_COLUMNS = [*RUN_KEY, "reason", "failed_at"]


def read_results(path):
    """The finished runs recorded in a `results.csv` (empty if none)."""
    return _read_complete_rows(path, RESULT_COLUMNS)


def read_curves(path):
    """The learning curves recorded in a `curves.csv` (empty if none)."""
    return _read_complete_rows(path, CURVE_COLUMNS)


def key_column(frame):
    """Each row's run key, a tuple of strings (as the CSV has them)."""
    return frame[RUN_KEY].astype(str).apply(tuple, axis=1)


def key_of(row):
    """The run key of one row (a mapping), as strings."""
    return tuple(str(row[column]) for column in RUN_KEY)


def prepare(results_path, curves_path):
    """Repairs both files after an interruption; returns the finished keys.

    Raises:
        ValueError: A file was written with other columns (an older kbn).
    """
    for path, columns in ((results_path, RESULT_COLUMNS), (curves_path, CURVE_COLUMNS)):
        _check_header(path, columns)
        _repair(path, columns)
    results = read_results(results_path)
    done = set(key_column(results)) if not results.empty else set()
    curves = read_curves(curves_path)
    if not curves.empty:
        keep = key_column(curves).isin(done)
        if not keep.all():
            curves[keep].to_csv(curves_path, index=False)
    return done


def append_rows(path, columns, rows):
    """Appends `rows` (mappings) to a CSV and flushes them to disk."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        f.flush()
        os.fsync(f.fileno())


def record_failure(path, key, reason):
    """Appends a lost run (its `RUN_KEY` fields and why) to `failed.csv`."""
    import datetime

    when = datetime.datetime.now().isoformat(timespec="seconds")
    append_rows(path, FAILURE_COLUMNS, [{**key, "reason": reason, "failed_at": when}])


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _check_header(path, columns):
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, newline="") as f:
        header = next(csv.reader([f.readline()]), [])
    if header != columns:
        raise ValueError(
            f"{path} has other columns than this version of kbn_study writes "
            f"(expected {columns}). Use another output folder. Received: "
            f"columns={header}"
        )


def _read_complete_rows(path, columns):
    """Rows with every field; a row cut short by a hard kill is dropped."""
    lines = _complete_lines(path, columns)
    if len(lines) <= 1:
        return pd.DataFrame(columns=columns)
    return pd.read_csv(
        io.StringIO("".join(lines)), keep_default_na=False, na_values=[""]
    )


def _complete_lines(path, columns):
    """The header and every complete row of a CSV written by this module."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return []
    # `finished_at`, the last field of a results row, is never empty.
    needs_last = columns[-1] == "finished_at"
    kept = [lines[0]]
    for line in lines[1:]:
        fields = next(csv.reader([line]), [])
        complete = line.endswith("\n") and len(fields) == len(columns)
        if complete and (fields[-1] or not needs_last):
            kept.append(line)
    return kept


def _repair(path, columns):
    """Rewrites a CSV without the rows an interruption cut short."""
    if not os.path.exists(path):
        return
    lines = _complete_lines(path, columns)
    with open(path, newline="") as f:
        original = f.read()
    if "".join(lines) != original:
        with open(path, "w", newline="") as f:
            f.write("".join(lines))
