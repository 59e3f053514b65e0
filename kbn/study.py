"""The published study: its configurations and the figures it printed.

`published_results()` reads `resources/study_results.csv`, every number the
study's notebook printed (TensorFlow 1, full MNIST, no fixed seed, one run per
row). Rows 17 and 18 repeat rows 13 and 15 with new random weights; rows 19
and 20 are the inference-mode demonstration.
"""

import functools
import importlib.resources

import pandas as pd

_WEIGHTS = {"good (sigma 0.05)": "good", "bad (sigma 5.0)": "bad"}


@functools.lru_cache(maxsize=1)
def _published():
    source = importlib.resources.files("kbn") / "resources" / "study_results.csv"
    with source.open() as f:
        frame = pd.read_csv(f)
    frame["weights"] = frame["weights"].map(_WEIGHTS)
    return frame


def published_results():
    """The study's printed figures as a DataFrame, one row per network.

    Columns: `row, experiment, activation, learning_rate, weights` ("good" or
    "bad"), `batches, batches_per_sample, network` ("without_bn" or
    "with_bn"), `final_validation_accuracy, test_accuracy,
    single_example_accuracy_200, batches_per_second, note`.
    """
    return _published().copy()


def published_runs(activation, learning_rate, weights, batches):
    """The study's `train_and_test` rows for one configuration (maybe several)."""
    frame = _published()
    match = frame[
        (frame["experiment"] == "train_and_test")
        & (frame["activation"] == activation)
        & (frame["learning_rate"] == float(learning_rate))
        & (frame["weights"] == weights)
        & (frame["batches"] == int(batches))
    ]
    return match.copy()
