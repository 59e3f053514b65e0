"""NumPy batch normalization written from Ioffe & Szegedy (2015), Algorithm 1.

Computed in float64, so it is the reference the float32 layers are held to.
"""

import numpy as np


def reduction_axes(rank, feature_axes):
    feature_axes = {a % rank for a in np.atleast_1d(feature_axes)}
    return tuple(i for i in range(rank) if i not in feature_axes)


def moments(x, feature_axes=-1):
    x = np.asarray(x, dtype=np.float64)
    axes = reduction_axes(x.ndim, feature_axes)
    mean = x.mean(axis=axes)
    variance = ((x - x.mean(axis=axes, keepdims=True)) ** 2).mean(axis=axes)
    return mean, variance


def broadcast(stat, rank, feature_axes):
    feature_axes = sorted(a % rank for a in np.atleast_1d(feature_axes))
    shape = [1] * rank
    for axis, size in zip(feature_axes, np.shape(stat)):
        shape[axis] = size
    return np.reshape(stat, shape)


def batch_norm(x, mean, variance, gamma, beta, epsilon, feature_axes=-1):
    """`(x - mean) / sqrt(var + eps) * gamma + beta`, the paper's formula."""
    x = np.asarray(x, dtype=np.float64)
    b = lambda s: broadcast(np.asarray(s, np.float64), x.ndim, feature_axes)  # noqa: E731
    return (x - b(mean)) / np.sqrt(b(variance) + epsilon) * b(gamma) + b(beta)


def assert_close(actual, expected, data_scale=1.0):
    """Equal to 1e-5 relative to the scale of the data."""
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=1e-5,
        atol=1e-5 * data_scale,
    )
