"""Checks and resolution of `kbn.layers.BatchNorm`'s arguments.

Plain functions of the constructor's arguments and of the input shape; the
layer calls them in `__init__` and `build`. Each raises with the house
message of `kbn.checks`.

It must not hold the layer's state or maths.
"""

import math

import keras
from keras import initializers

from kbn import checks

# The limits of batch renormalization's corrections, in `renorm_clipping`.
RENORM_KEYS = ("rmax", "rmin", "dmax")


def computation_dtype(dtype):
    """The wider of `dtype` and float32: float64 stays float64, and half
    precision (whose statistics overflow easily) computes in float32."""
    if keras.backend.standardize_dtype(dtype) == "float64":
        return "float64"
    return "float32"


def clone_initializer(initializer):
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


def check_axis(axis):
    if checks.is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(checks.is_int(a) for a in axis):
        return [int(a) for a in axis]
    checks.fail("axis", axis, "an int or a non-empty list of ints", TypeError)


def check_renorm_clipping(clipping, renorm):
    received = clipping
    clipping = {} if clipping is None else clipping
    if not isinstance(clipping, dict) or set(clipping) - set(RENORM_KEYS):
        checks.fail(
            "renorm_clipping", received, f"a dict with keys among {RENORM_KEYS}"
        )
    if clipping and not renorm:
        checks.fail(
            "renorm_clipping",
            received,
            "None with renorm=False (the limits apply to batch renormalization only)",
        )
    if not all(checks.is_real(v) and not math.isnan(v) for v in clipping.values()):
        checks.fail("renorm_clipping", received, "numbers as values")
    clipping = {k: float(v) for k, v in clipping.items()}
    rmax, rmin, dmax = (clipping.get(k) for k in RENORM_KEYS)
    if rmin is not None and rmin < 0:
        checks.fail("renorm_clipping", received, "rmin >= 0")
    if rmax is not None and rmin is not None and rmax < rmin:
        checks.fail("renorm_clipping", received, "rmax >= rmin")
    if dmax is not None and dmax < 0:
        checks.fail("renorm_clipping", received, "dmax >= 0")
    return clipping


def resolve_axes(axis, rank, input_shape):
    """Sorted non-negative feature axes; raises if one is out of range."""
    axes = [axis] if checks.is_int(axis) else list(axis)
    for a in axes:
        if not -rank <= a < rank:
            checks.fail(
                "axis",
                axis,
                f"axes in [{-rank}, {rank}) for an input of rank {rank} (shape "
                f"{tuple(input_shape)})",
            )
    resolved = sorted(a % rank for a in axes)
    if len(set(resolved)) != len(resolved):
        checks.fail("axis", axis, f"distinct axes for an input of rank {rank}")
    for a in resolved:
        if input_shape[a] is None:
            checks.fail(
                "axis",
                axis,
                f"feature axes of known size (input shape {tuple(input_shape)})",
            )
    return resolved
