"""The grid's results as one line per configuration and network.

`summarize` gives the mean and spread of the final accuracies over the
seeds, the success rate (final validation accuracy above 0.5), and the
study's published figures beside them; `summary_markdown` makes that a table
a person reads. Runs shorter than the study's (`--fraction`) are labelled as
not comparable with the published figures.

It must not read or write files (`kbn_study.grid.report` does).
"""

import math

import numpy as np
import pandas as pd

from kbn_study.studies import published

SUCCESS_ACCURACY = 0.5
NETWORK_NAMES = {"without_bn": "without BN", "with_bn": "with BN"}


def summarize(results):
    """One row per configuration and network, with the study's figures.

    Columns: the configuration, `network`, `runs`, the mean, standard
    deviation, minimum and maximum of the final validation accuracy, the
    mean test accuracy, `success_rate` (share of runs above 0.5 final
    validation accuracy), `diverged` (count), the median first step at 0.9,
    the median steps per second, and the study's published final validation
    and test accuracies (several values where the study ran a configuration
    more than once).
    """
    if results.empty:
        return pd.DataFrame()
    order = {c.key: i for i, c in enumerate(published.STUDY_CONFIGURATIONS)}
    keys = results.apply(
        lambda r: published.configuration_key(
            r["activation"], r["learning_rate"], r["weights"], r["study_batches"]
        ),
        axis=1,
    )
    rows = []
    for (key, batches, network), group in results.groupby(
        [keys, results["batches"], results["network"]], sort=False
    ):
        first = group.iloc[0]
        final = group["final_validation_accuracy"].astype(float)
        mine = published.published_runs(
            first["activation"],
            first["learning_rate"],
            first["weights"],
            first["study_batches"],
        )
        mine = mine[mine["network"] == network]
        rows.append(
            {
                "activation": first["activation"],
                "learning_rate": float(first["learning_rate"]),
                "weights": first["weights"],
                "study_batches": int(first["study_batches"]),
                "batches": int(batches),
                "network": network,
                "runs": len(group),
                "final_val_mean": final.mean(),
                "final_val_std": final.std(ddof=0),
                "final_val_min": final.min(),
                "final_val_max": final.max(),
                "test_mean": group["test_accuracy"].astype(float).mean(),
                "success_rate": float((final > SUCCESS_ACCURACY).mean()),
                "diverged": int(group["diverged"].astype(bool).sum()),
                "median_first_step_0.9": _median_or_none(group["first_step_0.9"]),
                "steps_per_second": group["steps_per_second"].astype(float).median(),
                "published_final_val": _join(mine["final_validation_accuracy"]),
                "published_test": _join(mine["test_accuracy"]),
                "_order": (order.get(key, len(order)), network != "without_bn"),
            }
        )
    frame = pd.DataFrame(rows).sort_values("_order", kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def summary_markdown(summary, title=None, notes=()):
    """The summary as a Markdown table a person can read.

    Where a configuration ran shorter than the study's length, the study's
    columns say that its figures are for the full length.
    """
    shortened = bool((summary["batches"] != summary["study_batches"]).any())
    study = "study (full length, not comparable)" if shortened else "study"
    table = pd.DataFrame(
        {
            "activation": summary["activation"],
            "lr": summary["learning_rate"].map("{:g}".format),
            "weights": summary["weights"],
            "batches": [
                f"{b:,}" if b == s else f"{b:,} of {s:,}"
                for b, s in zip(summary["batches"], summary["study_batches"])
            ],
            "network": summary["network"].map(lambda n: NETWORK_NAMES.get(n, n)),
            "runs": summary["runs"],
            "final val. acc.": [_spread(row) for _, row in summary.iterrows()],
            "test acc.": summary["test_mean"].map("{:.4f}".format),
            "success": [
                f"{round(rate * runs)} / {runs}"
                for rate, runs in zip(summary["success_rate"], summary["runs"])
            ],
            "diverged": summary["diverged"],
            "step to 0.9": summary["median_first_step_0.9"].map(
                lambda v: "never" if v is None or _isnan(v) else f"{int(v):,}"
            ),
            "steps/s (with compilation)": summary["steps_per_second"].map(
                "{:,.0f}".format
            ),
            f"{study} val. acc.": summary["published_final_val"],
            f"{study} test acc.": summary["published_test"],
        }
    )
    parts = []
    if title:
        parts.append(f"# {title}\n")
    parts.extend(f"{note}\n" for note in notes)
    parts.append(table.to_markdown(index=False, disable_numparse=True))
    return "\n".join(parts) + "\n"


def summary_text(summary, width=100):
    """The summary in lines of at most `width` characters, for a terminal:
    the configuration, the network, the mean final validation and test
    accuracies over the seeds, and the study's; `summary.md` has every
    column."""
    rows = [
        ("configuration", "batches", "network", "runs", "val.", "test", "study val.")
    ]
    for _, row in summary.iterrows():
        batches = row["batches"]
        rows.append(
            (
                f"{row['activation']} lr {row['learning_rate']:g} {row['weights']}",
                f"{batches:,}"
                if batches == row["study_batches"]
                else f"{batches:,}/{row['study_batches']:,}",
                NETWORK_NAMES.get(row["network"], row["network"]),
                str(row["runs"]),
                f"{row['final_val_mean']:.4f}",
                f"{row['test_mean']:.4f}",
                str(row["published_final_val"] or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if i in (0, 2) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip()[:width])
    return "\n".join(lines)


def _spread(row):
    """`mean ± sd (min – max)` over several runs; the value itself for one."""
    if row["runs"] == 1:
        return f"{row['final_val_mean']:.4f}"
    return (
        f"{row['final_val_mean']:.4f} ± {row['final_val_std']:.4f} "
        f"({row['final_val_min']:.4f} – {row['final_val_max']:.4f})"
    )


def _median_or_none(values):
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(np.median(values)) if len(values) else None


def _join(values):
    return ", ".join(f"{v:.4f}" for v in values)


def _isnan(value):
    return isinstance(value, float) and math.isnan(value)
