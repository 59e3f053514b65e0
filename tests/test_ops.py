"""The pure maths of kbn.ops against NumPy and closed forms."""

import numpy as np
import pytest
from keras import ops

from kbn import ops as bn_ops
from tests import reference


@pytest.mark.parametrize("shape,axes", [((32, 5), [0]), ((4, 6, 6, 3), [0, 1, 2])])
def test_moments_match_numpy(rng, shape, axes):
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    mean, variance = bn_ops.moments(x, axes)
    np.testing.assert_allclose(
        ops.convert_to_numpy(mean), x.mean(axis=tuple(axes)), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(variance), x.var(axis=tuple(axes)), rtol=1e-5, atol=1e-4
    )


def test_masked_moments_count_only_unmasked_positions(rng):
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    mask = rng.uniform(size=(3, 5, 1)) > 0.4
    mean, variance = bn_ops.moments(x, [0, 1], mask=mask)
    kept = x[np.broadcast_to(mask, x.shape)].reshape(-1, 2)
    np.testing.assert_allclose(ops.convert_to_numpy(mean), kept.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(variance), kept.var(axis=0), atol=1e-6
    )


def test_fully_masked_moments_are_zero():
    x = np.ones((2, 3, 4), "float32")
    mean, variance = bn_ops.moments(x, [0, 1], mask=np.zeros((2, 3, 1), bool))
    np.testing.assert_array_equal(ops.convert_to_numpy(mean), 0.0)
    np.testing.assert_array_equal(ops.convert_to_numpy(variance), 0.0)


def test_normalize_is_the_papers_formula(rng):
    x = rng.normal(1.0, 4.0, size=(16, 3)).astype("float32")
    mean, var = x.mean(0), x.var(0)
    gamma, beta = (
        np.array([0.5, 2.0, -1.0], "float32"),
        np.array([0.1, 0.0, 3.0], "float32"),
    )
    got = bn_ops.normalize(x, mean, var, gamma, beta, epsilon=1e-3)
    expected = reference.batch_norm(x, mean, var, gamma, beta, 1e-3)
    reference.assert_close(got, expected, 10.0)
    # gamma=None means 1, beta=None means 0.
    plain = bn_ops.normalize(x, mean, var, epsilon=1e-3)
    reference.assert_close(
        plain, reference.batch_norm(x, mean, var, 1.0, 0.0, 1e-3), 10.0
    )


def test_moving_average_closed_form(rng):
    x = rng.normal(size=(8, 4)).astype("float32")
    # After one update from zero with momentum 0.9 the moving mean is
    # 0.1 * the batch mean.
    moving = bn_ops.moving_average(np.zeros(4, "float32"), x.mean(0), 0.9)
    np.testing.assert_allclose(ops.convert_to_numpy(moving), 0.1 * x.mean(0), rtol=1e-6)


def test_fold_into_affine_equals_normalize(rng):
    x = rng.normal(size=(10, 3)).astype("float32")
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    scale, offset = bn_ops.fold_into_affine(mean, var, gamma, beta, 1e-3)
    reference.assert_close(
        x * ops.convert_to_numpy(scale) + ops.convert_to_numpy(offset),
        reference.batch_norm(x, mean, var, gamma, beta, 1e-3),
        10.0,
    )


def test_masked_mean_and_count(rng):
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    mask = rng.uniform(size=(3, 5, 1)) > 0.4
    mask[0, 0] = True
    kept = x[np.broadcast_to(mask, x.shape)].reshape(-1, 2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(bn_ops.masked_mean(x, [0, 1], mask)),
        kept.mean(axis=0),
        atol=1e-6,
    )
    counted = ops.convert_to_numpy(bn_ops.count(x, [0, 1], mask))
    np.testing.assert_array_equal(counted, [len(kept)])
    # The mask broadcasts along axis 2 of a (3, 5, 1) mask over (3, 5, 4).
    wide = np.ones((3, 5, 4), "float32")
    assert float(ops.convert_to_numpy(bn_ops.count(wide, [1, 2], mask))[0]) == (
        4 * mask[0].sum()
    )
    assert bn_ops.count(x, [0, 1]) == 15
    assert bn_ops.masked_mean(x, [0], keepdims=True).shape == (1, 5, 2)


def _part_moments(x, parts, axes):
    """Each part's shift, mean about it and variance, as BatchNorm takes
    them before the exchange (`axes`: the reduction axes within a part)."""
    split = bn_ops.split_batch(x, parts)
    shift = bn_ops.feature_shift(split, axes)
    mean, variance = bn_ops.two_pass_moments(split - shift, axes)
    return ops.squeeze(shift, axis=axes), mean, variance


@pytest.mark.parametrize("shape,parts", [((60, 7), 2), ((12, 4, 4, 3), 4)])
def test_combined_part_moments_are_the_batch_moments(rng, shape, parts):
    # A mean far from 0 against the spread: the combination keeps the
    # float32 error of the one-device moments (about the data, two passes).
    x = rng.normal(1000.0, 0.5, size=shape).astype("float32")
    x[shape[0] // parts :] += 1.0  # parts with different means
    axes = [1, *range(2, len(shape))]
    shift, mean, variance = _part_moments(x, parts, axes)
    every = bn_ops.gather_parts(ops.stack([shift, mean, variance], axis=1))
    batch_mean, batch_variance, part_means = bn_ops.combine_part_moments(every, shift)
    exact = x.astype("float64")
    reduce = tuple([0, *range(1, len(shape) - 1)])
    np.testing.assert_allclose(
        ops.convert_to_numpy(batch_mean), exact.mean(axis=reduce), rtol=0, atol=1e-4
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(batch_variance), exact.var(axis=reduce), rtol=1e-5
    )
    # Each part's mean about its own shift, to normalize its shifted values.
    np.testing.assert_allclose(
        ops.convert_to_numpy(part_means),
        exact.mean(axis=reduce) - ops.convert_to_numpy(shift),
        rtol=0,
        atol=1e-4,
    )


def test_gather_parts_is_exact():
    values = np.array([[1.5, -0.0, 3e38], [np.pi, 1e-30, -7.0]], "float32")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(bn_ops.gather_parts(values)), values
    )


def test_split_batch_keeps_the_order():
    x = np.arange(24.0).reshape(6, 4)
    split = ops.convert_to_numpy(bn_ops.split_batch(x, 3))
    np.testing.assert_array_equal(split.reshape(6, 4), x)
    np.testing.assert_array_equal(split[1], x[2:4])
