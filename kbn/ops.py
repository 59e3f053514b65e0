"""Batch-normalization maths as pure functions.

Everything here takes tensors (or NumPy arrays) and returns tensors; nothing
reads or writes layer state. `kbn.layers.BatchNorm`, the recurrent cell and
the folding code all call these functions, and the tests call them directly.

The formulas are those of Ioffe & Szegedy (2015), Algorithm 1:

- `mean = sum(x) / m` and `variance = sum((x - mean) ** 2) / m` over the
  reduction axes (every axis but the feature axes);
- `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`.
"""

from keras import ops


def moments(x, axes, mask=None, keepdims=False):
    """Mean and (biased) variance of `x` over `axes`.

    Args:
        x: Tensor.
        axes: Sequence of ints, the axes to reduce.
        mask: Optional boolean tensor broadcastable to `x`; only positions
            where it is `True` count. With no position counted, the moments
            are 0.
        keepdims: Whether to keep the reduced axes with size 1.

    Returns:
        A tuple `(mean, variance)`.
    """
    axes = list(axes)
    if mask is None:
        return ops.moments(x, axes=axes, keepdims=keepdims)
    mask = ops.broadcast_to(ops.cast(mask, "bool"), ops.shape(x))
    weights = ops.cast(mask, x.dtype)
    count = ops.maximum(ops.sum(weights, axis=axes, keepdims=True), 1.0)
    mean = ops.sum(ops.where(mask, x, 0.0), axis=axes, keepdims=True) / count
    squared = ops.where(mask, ops.square(x - mean), 0.0)
    variance = ops.sum(squared, axis=axes, keepdims=True) / count
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
        variance = ops.squeeze(variance, axis=axes)
    return mean, variance


def normalize(x, mean, variance, gamma=None, beta=None, epsilon=1e-3):
    """Returns `(x - mean) / sqrt(variance + epsilon) * gamma + beta`.

    `mean`, `variance`, `gamma` and `beta` must broadcast against `x`;
    `gamma=None` means 1 and `beta=None` means 0. Computed as
    `x * scale + offset` (see `fold_into_affine`), the same arrangement as
    `keras.ops.batch_normalization`.
    """
    scale, offset = fold_into_affine(mean, variance, gamma, beta, epsilon)
    return x * scale + offset


def moving_average(moving, value, momentum):
    """Returns `moving * momentum + value * (1 - momentum)`."""
    return moving * momentum + value * (1.0 - momentum)


def fold_into_affine(mean, variance, gamma=None, beta=None, epsilon=1e-3):
    """The inference-mode batch norm as `y = x * scale + offset`.

    Returns:
        A tuple `(scale, offset)` with `scale = gamma / sqrt(variance +
        epsilon)` and `offset = beta - mean * scale`.
    """
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    offset = -mean * scale
    if beta is not None:
        offset = offset + beta
    return scale, offset
