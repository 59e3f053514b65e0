"""What `seed_grid` writes at the end: summary table, Markdown, overview plot.

It must not train or read anything but the grid's files.
"""

import dataclasses
import os

import keras

from kbn_study.grid import files as grid_files
from kbn_study.grid import summary as grid_summary
from kbn_study.outputs import plots


@dataclasses.dataclass
class Report:
    summary: object
    markdown: str
    paths: dict


def write_report(out_dir, results, dataset, seeds, fraction):
    """Writes `summary.md`, `summary.csv` and `overview.png` for `results`.

    Args:
        out_dir: The grid's folder.
        results: The grid's rows (`kbn_study.grid.runner.run_grid`'s return value).
        dataset: The `Dataset` they were trained on.
        seeds: Number of seeds.
        fraction: Share of the study's length each run trained.

    Returns:
        A `Report`: the summary DataFrame, its Markdown, the paths written.
    """
    summary = grid_summary.summarize(results)
    if fraction == 1:
        length = "full length"
    else:
        length = (
            f"{fraction:g} of the study's length: not comparable with the "
            "study's full-length figures"
        )
    notes = [
        f"Data: {dataset.describe()}. Backend: {keras.backend.backend()}. "
        f"Runs at {length}; {plural(seeds, 'seed')}. Success: final "
        "validation accuracy above 0.5. Study: the published run(s), full "
        "MNIST.",
    ]
    markdown = grid_summary.summary_markdown(
        summary, title="kbn seed grid", notes=notes
    )
    paths = {
        "summary_md": os.path.join(out_dir, "summary.md"),
        "summary_csv": os.path.join(out_dir, "summary.csv"),
        "overview": os.path.join(out_dir, "overview.png"),
        "results": os.path.join(out_dir, "results.csv"),
        "curves": os.path.join(out_dir, "curves.csv"),
    }
    with open(paths["summary_md"], "w") as f:
        f.write(markdown)
    summary.to_csv(paths["summary_csv"], index=False)
    curves = grid_files.read_curves(paths["curves"])
    curves = curves[
        grid_files.key_column(curves).isin(set(grid_files.key_column(results)))
    ]
    short = "full length" if fraction == 1 else f"{fraction:g} of the study's length"
    figure = plots.plot_grid_overview(
        curves, title=f"Validation accuracy, {short}, {plural(seeds, 'seed')}"
    )
    figure.savefig(paths["overview"], dpi=110)
    plots.close(figure)
    return Report(summary, markdown, paths)


def plural(count, noun):
    """`1 seed`, `2 seeds`, `1,000 runs`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
