"""Batch-normalization maths as pure functions.

Everything here takes tensors (or NumPy arrays) and returns tensors; nothing
reads or writes layer state. `kbn.layers.BatchNorm`, the recurrent cell, the
folding code and subclasses call these functions, and the tests call them
directly.

The formulas are those of Ioffe & Szegedy (2015), Algorithm 1:

- `mean = sum(x) / m` and `variance = sum((x - mean) ** 2) / m` over the
  reduction axes (every axis but the feature axes);
- `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`.

Masks follow one convention throughout: a boolean tensor of the rank of `x`
that broadcasts against it (for example `(batch, time, 1)` for a
`(batch, time, features)` sequence); only positions where it is `True`
count.

It must not hold state (variables, layers) or anything that depends on the
backend.
"""

import functools
import math

import keras
from keras import ops


def count(x, axes, mask=None, keepdims=False):
    """The number of values behind each statistic of `x` over `axes`.

    Args:
        x: Tensor.
        axes: Sequence of ints, the axes to reduce.
        mask: Optional boolean tensor of the rank of `x` that broadcasts
            against it.
        keepdims: Whether to keep the reduced axes with size 1 (with a
            mask).

    Returns:
        Without a mask, the product of the sizes of `axes`: a Python int
        when they are known, else a scalar tensor. With a mask, a tensor of
        `x`'s dtype: the number of `True` positions per statistic.
    """
    axes = list(axes)
    if mask is None:
        sizes = [x.shape[a] for a in axes]
        if all(size is not None for size in sizes):
            return math.prod(sizes)
        shape = ops.shape(x)
        return functools.reduce(
            lambda a, b: a * b, [ops.cast(shape[a], x.dtype) for a in axes]
        )
    counted = ops.sum(ops.cast(mask, x.dtype), axis=axes, keepdims=keepdims)
    for axis in axes:
        if mask.shape[axis] == 1 and x.shape[axis] != 1:
            # The mask broadcasts along this axis: each of its values
            # stands for the whole axis.
            counted = counted * ops.cast(ops.shape(x)[axis], x.dtype)
    return counted


def masked_mean(x, axes, mask=None, keepdims=False):
    """Mean of `x` over `axes`, counting only positions where `mask` is True.

    Args:
        x: Tensor.
        axes: Sequence of ints, the axes to reduce.
        mask: Optional boolean tensor of the rank of `x` that broadcasts
            against it. With no position counted, the mean is 0.
        keepdims: Whether to keep the reduced axes with size 1.
    """
    axes = list(axes)
    if mask is None:
        if keras.backend.standardize_dtype(x.dtype) == "float64":
            # `keras.ops.mean` computes float64 in float32 on JAX.
            return ops.sum(x, axis=axes, keepdims=keepdims) / count(x, axes)
        return ops.mean(x, axis=axes, keepdims=keepdims)
    total = ops.sum(ops.where(mask, x, 0.0), axis=axes, keepdims=keepdims)
    return total / ops.maximum(count(x, axes, mask, keepdims=keepdims), 1.0)


def feature_shift(x, axes, mask=None):
    """A value per feature near the data, to subtract before the moments.

    The first value of each feature along `axes` (with a mask, the masked
    mean, as the first value may be padding), without gradient, with the
    reduced axes kept (size 1). Subtracting it is exact in floating point for
    values within a factor 2 of it, and leaves data whose mean is of the
    order of its spread, so that the float32 error of the moments computed
    afterwards does not grow with |mean| / spread.
    """
    axes = list(axes)
    if mask is not None:
        return ops.stop_gradient(masked_mean(x, axes, mask, keepdims=True))
    # `ops.slice` keeps a static size of 1 where indexing with `0:1` may not.
    sizes = [
        1 if axis in axes else (-1 if size is None else size)
        for axis, size in enumerate(x.shape)
    ]
    return ops.stop_gradient(ops.slice(x, [0] * len(sizes), sizes))


def two_pass_moments(x, axes, mask=None, keepdims=False):
    """Mean, then variance about it: `mean((x - mean) ** 2)`.

    Accurate to float32 rounding when |mean| is not large against the spread
    (`moments` shifts the data first so that it is not). Arguments as
    `moments`.
    """
    axes = list(axes)
    mean = masked_mean(x, axes, mask, keepdims=True)
    # No gradient through this mean: d variance / d mean = -2 * mean(x - mean)
    # is 0 (as in tf.nn.moments).
    deviations = ops.square(x - ops.stop_gradient(mean))
    variance = masked_mean(deviations, axes, mask, keepdims=keepdims)
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
    return mean, variance


def moments(x, axes, mask=None, keepdims=False):
    """Mean and (biased) variance of `x` over `axes`.

    Computed about a per-feature shift (`feature_shift`), by two passes
    (`two_pass_moments`): `mean = shift + mean(x - shift)`, `variance =
    mean((x - mean) ** 2)`, so that the float32 error does not grow with
    |mean| / spread.

    Args:
        x: Tensor.
        axes: Sequence of ints, the axes to reduce.
        mask: Optional boolean tensor of the rank of `x` that broadcasts
            against it; only positions where it is `True` count. With no
            position counted, the moments are 0.
        keepdims: Whether to keep the reduced axes with size 1.

    Returns:
        A tuple `(mean, variance)`.
    """
    axes = list(axes)
    shift = feature_shift(x, axes, mask)
    mean, variance = two_pass_moments(x - shift, axes, mask, keepdims=True)
    mean = mean + shift
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
        variance = ops.squeeze(variance, axis=axes)
    return mean, variance


def normalize(x, mean, variance, gamma=None, beta=None, epsilon=1e-3):
    """Returns `(x - mean) / sqrt(variance + epsilon) * gamma + beta`.

    `mean`, `variance`, `gamma` and `beta` must broadcast against `x`;
    `gamma=None` means 1 and `beta=None` means 0. Computed as
    `x * scale + offset` (see `fold_into_affine`), the same arrangement as
    `keras.ops.batch_normalization`: its float32 error grows with |mean| /
    spread, so `kbn.layers.BatchNorm` passes it inputs and mean shifted by a
    value near the data (`feature_shift`).
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


def renorm_affine(
    mean, variance, gamma, beta, renorm_mean, renorm_stddev, limits, epsilon=1e-3
):
    """Batch renormalization's corrections folded into `gamma` and `beta`.

    Ioffe (2017), Algorithm 1: with the batch's `stddev = sqrt(variance +
    epsilon)`, `r = stddev / renorm_stddev` and `d = (mean - renorm_mean) /
    renorm_stddev`, clipped to `[rmin, rmax]` and `[-dmax, dmax]` and held
    constant in the gradient; the normalized batch `x_hat * r + d` then
    scales by `gamma` and shifts by `beta`, that is
    `x_hat * (r * gamma) + (d * gamma + beta)`. As in Keras, `renorm_stddev`
    is at least `sqrt(epsilon)`.

    Args:
        mean, variance: The batch moments, one value per feature.
        gamma, beta: The scale and offset, or `None`.
        renorm_mean, renorm_stddev: The moving statistics renorm corrects
            towards.
        limits: `(rmax, rmin, dmax)`, scalars.
        epsilon: Small float added to the variance.

    Returns:
        `(gamma, beta)` with the corrections folded in (`r` and `d` when
        `gamma` and `beta` are `None`).
    """
    rmax, rmin, dmax = limits
    stddev = ops.sqrt(variance + epsilon)
    renorm_stddev = ops.maximum(
        renorm_stddev, ops.sqrt(ops.cast(epsilon, renorm_stddev.dtype))
    )
    r = ops.stop_gradient(ops.clip(stddev / renorm_stddev, rmin, rmax))
    d = ops.stop_gradient(ops.clip((mean - renorm_mean) / renorm_stddev, -dmax, dmax))
    if gamma is None:
        return r, d if beta is None else d + beta
    return r * gamma, d * gamma if beta is None else d * gamma + beta


# --- A batch split across devices (data parallelism) ---------------------


def split_batch(x, parts):
    """`x` with its batch axis 0 cut into `parts` equal parts, in order:
    shape `(parts, batch // parts, ...)`. Under a data-parallel layout that
    splits the batch across `parts` devices, each part is one device's."""
    return ops.reshape(x, (parts, -1, *x.shape[1:]))


def gather_parts(values):
    """Every part's row of `values` (leading axis: the parts), on every part.

    An all-gather written as a sum: row `q` of the result is the sum over
    the parts `p` of `values[p]` where `p == q`, else 0, which is exactly
    `values[q]`. Under a layout that splits axis 0 across devices, XLA makes
    it one all-reduce, and every device gets the same rows, bit for bit.
    """
    parts = values.shape[0]
    eye = ops.reshape(
        ops.eye(parts, dtype="bool"), (parts, parts) + (1,) * (len(values.shape) - 1)
    )
    return ops.sum(ops.where(eye, ops.expand_dims(values, 1), 0.0), axis=0)


def combine_part_moments(every, shifts):
    """The moments of a batch from those of its equal parts.

    Each part's moments are taken about its own shift (`feature_shift` of
    the part: its first value), on its device; the parts exchange them once
    (`gather_parts`, or a collective) and every device combines them alike,
    about the shift of part 0 (Chan et al.'s pairwise formula, for equal
    parts): `mean = shift_0 + mean_p(a_p)` and `variance =
    mean_p(variance_p) + mean_p((a_p - mean_p(a_p)) ** 2)`, with `a_p =
    (shift_p - shift_0) + mean_p` each part's mean about part 0's shift.

    Every difference is between values near the data, so the float32 error
    stays that of `moments`, independent of |mean| / spread, and the
    variance is two-pass at both levels.

    Args:
        every: `(parts, 3, features...)`: every part's shift, mean about its
            shift and (biased) variance, the same on every device.
        shifts: `(own parts, features...)`, the shifts of the parts this
            device normalizes.

    Returns:
        A tuple `(mean, variance, part_means)`: the batch mean and variance
        (`features...`), and the batch mean about each own part's shift
        (`(own parts, features...)`, to normalize its shifted values).
    """
    parts = every.shape[0]
    every_shift, every_mean, every_variance = (every[:, i] for i in range(3))
    reference = every_shift[0]
    about_reference = (every_shift - reference) + every_mean
    mean = ops.sum(about_reference, axis=0) / parts
    spread = ops.square(about_reference - mean)
    variance = ops.sum(every_variance + spread, axis=0) / parts
    return reference + mean, variance, (reference - shifts) + mean


# --- Recurrent batch norm (kbn.layers.BNLSTM) ---------------------------


def fold_into_affine_keeping_constants(mean, variance, gamma, beta, epsilon):
    """The inference batch norm as `x * scale + offset`, a feature of zero
    variance mapped to `beta`.

    A feature that was constant over every training batch of its step (the
    state during the blank first rows or pixels of an image, identical for
    every example) normalizes to exactly `beta` in training, whatever its
    value; its moving mean lags that value while the weights move, and
    `(value - moving_mean) / sqrt(epsilon)` would turn the lag into a large
    spurious signal. Zero variance here means: constant in training,
    constant in inference.
    """
    scale, offset = fold_into_affine(mean, variance, gamma, beta, epsilon)
    constant = variance <= 0.0
    scale = ops.where(constant, 0.0, scale)
    beta = 0.0 if beta is None else ops.convert_to_tensor(beta, offset.dtype)
    offset = ops.where(constant, beta, offset)
    return scale, offset


def step_batch_norm(x, gamma, beta, epsilon):
    """Batch norm of one step's `(batch, features)` values, and its moments.

    The moments are taken about the first example's value, as
    `kbn.ops.moments` does: a feature constant over the batch has exactly
    zero variance and normalizes to exactly `beta`. Unlike `kbn.ops.moments`
    (two passes), the variance is `mean(d**2) - mean(d)**2` of the shifted
    values `d`, one pass, whose float32 error grows with |mean - first
    value| / spread rather than |mean| / spread. The gradient with respect
    to `x` and `gamma` is written out:

    ```
    s = gamma / sqrt(variance + epsilon)
    dgamma = sum(dy * x_hat)
    dx = dy * s - mean(dy) * s - x_hat * s * dgamma / batch
    ```

    (the usual `(g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(variance +
    epsilon)` with `g = dy * gamma`, in fewer operations: a loop of hundreds
    of steps pays for each of them on every step, and on TensorFlow the
    count of operations, not their size, sets the time at this scale). No
    gradient flows through the moments, which are statistics.

    Args:
        x: `(batch, features)` values.
        gamma, beta: `(features,)` scale and offset (`beta` may be None),
            already in `x`'s dtype.

    Returns:
        `(y, (mean, variance))`.
    """

    @ops.custom_gradient
    def normalized(x, gamma):
        first = x[:1]
        shifted = x - first
        mean = ops.mean(shifted, axis=0)
        variance = ops.mean(ops.square(shifted), axis=0) - ops.square(mean)
        variance = ops.maximum(variance, 0.0)
        inverse = ops.rsqrt(variance + epsilon)
        x_hat = (shifted - mean) * inverse
        outputs = (x_hat * gamma, mean + first[0], variance)

        def grad(*upstream, **kwargs):
            # JAX passes the cotangents of all outputs as one tuple,
            # TensorFlow one argument per output.
            dy = upstream[0][0] if isinstance(upstream[0], tuple) else upstream[0]
            scale = gamma * inverse
            dgamma = ops.sum(dy * x_hat, axis=0)
            count = ops.cast(ops.shape(x)[0], x.dtype)
            dx = dy * scale - (
                ops.mean(dy, axis=0) * scale + x_hat * (scale * dgamma / count)
            )
            return dx, dgamma

        return outputs, grad

    y, mean, variance = normalized(x, gamma)
    if beta is not None:
        y = y + beta
    return y, (ops.stop_gradient(mean), ops.stop_gradient(variance))


def sequence_input_moments(inputs):
    """Mean `(T, F)` and biased covariance `(T, F, F)` over the batch of
    time-major `(T, B, F)` inputs (two passes, about a shift)."""
    mean, _ = moments(inputs, [1])
    centered = inputs - mean[:, None, :]
    count = ops.cast(ops.shape(inputs)[1], inputs.dtype)
    return mean, ops.einsum("tbf,tbg->tfg", centered, centered) / count


def project_moments(mean, covariance, kernel):
    """Mean and variance of `x @ kernel` from those of `x`, per step:
    `mean @ kernel` and `diag(kernel^T covariance kernel)`."""
    kernel = ops.cast(kernel, mean.dtype)
    projected = ops.einsum("tfg,gk->tfk", covariance, kernel)
    variance = ops.sum(projected * kernel[None], axis=1)
    return ops.matmul(mean, kernel), ops.maximum(variance, 0.0)
