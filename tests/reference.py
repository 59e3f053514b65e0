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


# --- A whole batch norm in NumPy, options and pluggable maths included --------


def masked_moments(x, axes, mask=None):
    """Sample mean and (biased) variance over `axes`, masked positions out."""
    weights = _weights(x, mask)
    count = weights.sum(axis=tuple(axes), keepdims=True)
    mean = (weights * x).sum(axis=tuple(axes), keepdims=True) / np.maximum(count, 1)
    variance = (weights * (x - mean) ** 2).sum(axis=tuple(axes), keepdims=True)
    variance = variance / np.maximum(count, 1)
    return mean.squeeze(tuple(axes)), variance.squeeze(tuple(axes))


def l1_moments(x, axes, mask=None):
    """The mean, and `pi / 2 * mean(|x - mean|) ** 2` as the variance."""
    weights = _weights(x, mask)
    count = np.maximum(weights.sum(axis=tuple(axes), keepdims=True), 1)
    mean = (weights * x).sum(axis=tuple(axes), keepdims=True) / count
    deviation = (weights * np.abs(x - mean)).sum(axis=tuple(axes), keepdims=True)
    deviation = deviation / count
    return mean.squeeze(tuple(axes)), (np.pi / 2 * deviation**2).squeeze(tuple(axes))


def standard_normalize(x, mean, variance, gamma, beta, epsilon):
    y = (x - mean) / np.sqrt(variance + epsilon)
    y = y if gamma is None else y * gamma
    return y if beta is None else y + beta


def mean_only_normalize(x, mean, variance, gamma, beta, epsilon):
    y = x - mean
    y = y if gamma is None else y * gamma
    return y if beta is None else y + beta


def ema_update(state, mean, variance, momentum):
    state["moving_mean"] = state["moving_mean"] * momentum + mean * (1 - momentum)
    state["moving_variance"] = state["moving_variance"] * momentum + variance * (
        1 - momentum
    )


def debiased_ema_update(state, mean, variance, momentum):
    """Adam's bias-corrected average, kept divided by `1 - momentum ** n`."""
    state["num_updates"] = state.get("num_updates", 0) + 1
    weight = (1 - momentum) / (1 - momentum ** state["num_updates"])
    for name, value in (("moving_mean", mean), ("moving_variance", variance)):
        state[name] = state[name] + (value - state[name]) * weight


class BatchNormReference:
    """kbn's `BatchNorm` in float64 NumPy, written from its documentation.

    `moments(x, axes, mask)`, `normalize(x, mean, variance, gamma, beta,
    epsilon)` and `update(state, mean, variance, momentum)` stand for the
    layer's hooks; `update=None` is the default update (which, with renorm,
    averages the standard deviation as Keras does).
    """

    def __init__(
        self,
        feature_shape,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        gamma=None,
        beta=None,
        virtual_batch_size=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        unbiased_variance=False,
        track_running_stats=True,
        moments=masked_moments,
        normalize=standard_normalize,
        update=None,
    ):
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.gamma = None if gamma is None else np.asarray(gamma, np.float64)
        self.beta = None if beta is None else np.asarray(beta, np.float64)
        self.virtual_batch_size = virtual_batch_size
        self.renorm = renorm
        clipping = renorm_clipping or {}
        self.rmax = clipping.get("rmax", np.inf)
        self.rmin = clipping.get("rmin", 0.0)
        self.dmax = clipping.get("dmax", np.inf)
        self.renorm_momentum = renorm_momentum
        self.unbiased_variance = unbiased_variance
        self.track_running_stats = track_running_stats
        self.moments = moments
        self.normalize = normalize
        self.update = update
        zeros, ones = np.zeros(feature_shape), np.ones(feature_shape)
        self.state = {"moving_mean": zeros, "moving_variance": ones, "num_batches": 0}
        if renorm:
            self.state.update(moving_stddev=ones, renorm_mean=zeros, renorm_stddev=ones)

    def _feature_axes(self, rank):
        return sorted(a % rank for a in np.atleast_1d(self.axis))

    def infer(self, x):
        x = np.asarray(x, np.float64)
        if not self.track_running_stats:
            return self.train(x, update=False)
        features = self._feature_axes(x.ndim)
        b = lambda s: _expand(s, x.ndim, features)  # noqa: E731
        return self.normalize(
            x,
            b(self.state["moving_mean"]),
            b(self.state["moving_variance"]),
            None if self.gamma is None else b(self.gamma),
            None if self.beta is None else b(self.beta),
            self.epsilon,
        )

    def train(self, x, mask=None, update=True):
        """Training-mode outputs; updates the state like the layer."""
        x = np.asarray(x, np.float64)
        shape, rank = x.shape, x.ndim
        features = self._feature_axes(rank)
        if mask is not None:
            mask = np.asarray(mask, bool)[..., None]
        if self.virtual_batch_size is not None:
            x = x.reshape(-1, self.virtual_batch_size, *shape[1:])
            if mask is not None:
                mask = mask.reshape(-1, self.virtual_batch_size, *mask.shape[1:])
            features = [a + 1 for a in features]
            axes = [a for a in range(1, rank + 1) if a not in features]
            rows = [0]
        else:
            axes = [a for a in range(rank) if a not in features]
            rows = []
        mean, variance = self.moments(x, axes, mask)
        count = _weights(x, mask).sum(axis=tuple(axes))
        b = lambda s: _expand(s, x.ndim, rows + features)  # noqa: E731
        bg = lambda s: None if s is None else _expand(s, x.ndim, features)  # noqa: E731
        gamma, beta = self.gamma, self.beta
        if self.renorm:
            gamma, beta = self._renorm_affine(mean, variance, gamma, beta)
            y = self.normalize(x, b(mean), b(variance), b(gamma), b(beta), self.epsilon)
        else:
            y = self.normalize(
                x, b(mean), b(variance), bg(gamma), bg(beta), self.epsilon
            )
        if update and self.track_running_stats and count.min() > 1:
            self._update(mean, variance, count)
        return y.reshape(shape)

    def _renorm_affine(self, mean, variance, gamma, beta):
        state = self.state
        renorm_stddev = np.maximum(state["renorm_stddev"], np.sqrt(self.epsilon))
        r = np.sqrt(variance + self.epsilon) / renorm_stddev
        r = np.clip(r, self.rmin, self.rmax)
        d = np.clip(
            (mean - state["renorm_mean"]) / renorm_stddev, -self.dmax, self.dmax
        )
        scale = r if gamma is None else r * gamma
        offset = d if gamma is None else d * gamma
        return scale, offset if beta is None else offset + beta

    def _update(self, mean, variance, count):
        state = self.state
        if self.unbiased_variance:
            # count is per virtual batch (and per feature); equal for features.
            count = count.reshape(count.shape + (1,) * (variance.ndim - count.ndim))
            variance = variance * count / (count - 1)
        if self.virtual_batch_size is not None:
            mean, variance = mean.mean(0), variance.mean(0)
        if self.momentum is None:
            state["num_batches"] += 1
            momentum = 1 - 1 / state["num_batches"]
        else:
            momentum = self.momentum
        if self.renorm:
            stddev = np.sqrt(variance + self.epsilon)
            for name, value in (("renorm_mean", mean), ("renorm_stddev", stddev)):
                state[name] = state[name] * self.renorm_momentum + value * (
                    1 - self.renorm_momentum
                )
        if self.update is not None:
            self.update(state, mean, variance, momentum)
            if self.renorm:
                state["moving_stddev"] = np.sqrt(
                    state["moving_variance"] + self.epsilon
                )
        elif self.renorm:
            stddev = np.sqrt(variance + self.epsilon)
            state["moving_mean"] = state["moving_mean"] * momentum + mean * (
                1 - momentum
            )
            state["moving_stddev"] = state["moving_stddev"] * momentum + stddev * (
                1 - momentum
            )
            state["moving_variance"] = np.maximum(
                state["moving_stddev"] ** 2 - self.epsilon, 0
            )
        else:
            ema_update(state, mean, variance, momentum)


def _weights(x, mask):
    if mask is None:
        return np.ones_like(x)
    return np.broadcast_to(mask, x.shape).astype(np.float64)


def _expand(stat, rank, kept):
    """Inserts size-1 axes so that `stat` (sized on `kept` axes) broadcasts."""
    stat = np.asarray(stat, np.float64)
    return np.expand_dims(stat, tuple(a for a in range(rank) if a not in kept))
