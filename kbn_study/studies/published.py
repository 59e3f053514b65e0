"""The published study: its configurations and the figures it printed.

`published_results()` reads `resources/study_results.csv`, every number the
study's notebook printed (TensorFlow 1, full MNIST, no fixed seed, one run per
row). Rows 17 and 18 repeat rows 13 and 15 with new random weights; rows 19
and 20 are the inference-mode demonstration.

It must not train or import Keras (the commands read it while parsing).
"""

import dataclasses
import functools
import importlib.resources

import pandas as pd

from kbn_study.training import sampling

_WEIGHTS = {"good (sigma 0.05)": "good", "bad (sigma 5.0)": "bad"}
# The study's rules, which its runs follow.
STUDY_BATCH_SIZE = sampling.STUDY_BATCH_SIZE
study_sampling_interval = sampling.study_sampling_interval


@functools.lru_cache(maxsize=1)
def _published():
    source = importlib.resources.files("kbn_study") / "resources" / "study_results.csv"
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


def configuration_key(activation, learning_rate, weights, batches):
    """`activation:learning_rate:weights:batches`, e.g. `relu:0.01:good:50000`."""
    return f"{activation}:{float(learning_rate):g}:{weights}:{int(batches)}"


@dataclasses.dataclass(frozen=True)
class StudyConfiguration:
    """One `train_and_test` configuration of the study."""

    activation: str
    learning_rate: float
    weights: str
    batches: int

    @property
    def batches_per_sample(self):
        return study_sampling_interval(self.batches)

    @property
    def key(self):
        return configuration_key(
            self.activation, self.learning_rate, self.weights, self.batches
        )

    def matches(self, pattern):
        """Whether `activation:learning_rate:weights[:batches]` matches.

        Any field may be `*`; missing trailing fields match anything.
        """
        fields = pattern.split(":")
        if not 1 <= len(fields) <= 4 or any(not f for f in fields):
            raise ValueError(
                "Invalid configuration pattern. Expected "
                "activation:learning_rate:weights[:batches], any field may be "
                f"'*'. Received: pattern={pattern!r}"
            )
        mine = self.key.split(":")
        for index, field in enumerate(fields):
            if field == "*":
                continue
            if index in (1, 3):
                try:
                    if float(field) != float(mine[index]):
                        return False
                except ValueError:
                    raise ValueError(
                        "Invalid configuration pattern: the learning rate and "
                        "batches must be numbers or '*'. "
                        f"Received: pattern={pattern!r}"
                    ) from None
            elif field != mine[index]:
                return False
        return True


# The study's 15 train_and_test configurations, in its order (rows 1-16 of
# the published table, without the repeats).
STUDY_CONFIGURATIONS = tuple(
    StudyConfiguration(*fields)
    for fields in [
        ("relu", 0.01, "good", 50_000),
        ("relu", 0.01, "good", 2_000),
        ("sigmoid", 0.01, "good", 50_000),
        ("relu", 1.0, "good", 50_000),
        ("sigmoid", 1.0, "good", 50_000),
        ("sigmoid", 1.0, "good", 2_000),
        ("relu", 2.0, "good", 50_000),
        ("sigmoid", 2.0, "good", 50_000),
        ("sigmoid", 2.0, "good", 2_000),
        ("relu", 0.01, "bad", 50_000),
        ("sigmoid", 0.01, "bad", 50_000),
        ("relu", 1.0, "bad", 50_000),
        ("sigmoid", 1.0, "bad", 50_000),
        ("relu", 2.0, "bad", 50_000),
        ("sigmoid", 2.0, "bad", 50_000),
    ]
)


def select_configurations(patterns=None):
    """The study configurations matching any of `patterns` (all if None).

    Args:
        patterns: Iterable of `activation:learning_rate:weights[:batches]`
            strings, `*` as a wildcard, or a comma-separated string of them.

    Raises:
        ValueError: A pattern is malformed or matches no configuration.
    """
    if patterns is None:
        return list(STUDY_CONFIGURATIONS)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    selected = []
    for pattern in patterns:
        matched = [c for c in STUDY_CONFIGURATIONS if c.matches(pattern)]
        if not matched:
            raise ValueError(
                "No study configuration matches the pattern. Expected "
                "activation:learning_rate:weights[:batches] with one of "
                f"{[c.key for c in STUDY_CONFIGURATIONS]}. "
                f"Received: pattern={pattern!r}"
            )
        selected.extend(c for c in matched if c not in selected)
    return [c for c in STUDY_CONFIGURATIONS if c in selected]
