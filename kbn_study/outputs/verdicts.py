"""A paper's claim judged on per-seed numbers: reproduced, partly, or not.

Holds `verdict`, the one rule the studies' "verdict per claim" lines use,
so that every table says the same thing with the same words. It must not
hold any study's claims (each study writes its own lines).
"""

# A difference of means (over the seeds) smaller than this is no
# difference: half a point of accuracy or error.
THRESHOLD = 0.005

RULE = (
    f"A claim counts as reproduced when the mean (over the seeds) is better by "
    f"{100 * THRESHOLD:g} points or more and better in every seed; partly, when "
    "better by that much on average only; a difference under that is none."
)


def verdict(candidate, baseline, lower_is_better=True, threshold=THRESHOLD):
    """Whether `candidate` beats `baseline`, seed by seed.

    Args:
        candidate, baseline: Per-seed values (pandas Series or arrays of the
            same length), errors or accuracies.
        lower_is_better: `True` for errors, `False` for accuracies.
        threshold: The smallest difference of means that counts.

    Returns:
        `(words, wins)`: `"reproduced"` (better by `threshold` or more on
        average, and in every seed), `"partly reproduced"` (on average
        only), `"not reproduced (no difference)"` (within `threshold`) or
        `"not reproduced"` (worse); and the number of seeds in which
        `candidate` is better.
    """
    import numpy as np

    candidate = np.asarray(candidate, dtype="float64")
    baseline = np.asarray(baseline, dtype="float64")
    sign = 1.0 if lower_is_better else -1.0
    gains = sign * (baseline - candidate)
    wins = int((gains > 0).sum())
    difference = float(gains.mean())
    if abs(difference) < threshold:
        return "not reproduced (no difference)", wins
    if difference < 0:
        return "not reproduced", wins
    if wins == len(gains):
        return "reproduced", wins
    return "partly reproduced", wins
