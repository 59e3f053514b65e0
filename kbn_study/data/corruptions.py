"""Corrupted copies of digit images, in the spirit of MNIST-C, reproducibly.

Mu & Gilmer (2019), "MNIST-C: a robustness benchmark for computer vision"
(arXiv:1906.02337), corrupt MNIST's test set in 15 ways to measure how a
model trained on clean digits fares on shifted ones; ImageNet-C (Hendrycks
& Dietterich, 2019) does the same at 5 severities. MNIST-C's files are not
offline here, so this module makes its own from whatever images the study
loaded (the shipped 5,000 digits, full MNIST, Fashion-MNIST), with NumPy
alone, at 3 severities each:

- `gaussian_noise`: adds N(0, sigma) to every pixel; sigma 0.2, 0.4, 0.6;
- `blur`: a Gaussian blur of std sigma pixels; sigma 1.0, 1.5, 2.0;
- `contrast`: `(x - m) * c + m`, `m` each image's mean; c 0.4, 0.2, 0.1;
- `brightness`: adds b; b 0.3, 0.5, 0.7;
- `fog`: adds `a` times a smooth random haze in [0, 1] (a plasma-like sum
  of upsampled noise, as MNIST-C's and ImageNet-C's fog), then divides by
  `1 + a`; a 0.5, 1.0, 2.0;
- `rotation`: rotates by +-angle degrees (the sign drawn per image),
  bilinear; 15, 30, 45 degrees;
- `inversion`: `s * (1 - x) + (1 - s) * x`: 1 inverts fully, less also
  lowers the contrast; s 0.7, 0.85, 1.0.

Every result is clipped to [0, 1].

The random ones (noise, fog, rotation's signs) draw from a generator seeded
by the corruption, the severity and `seed`, so the same call gives the same
images on every machine.

It must not hold anything about models or training, nor import Keras when
it is imported: the command line reads `CORRUPTIONS` before it chooses the
backend (kbn's argument checks are imported inside `corrupt`).
"""

import zlib

import numpy as np

# name: (what the severity sets, its values at severities 1, 2, 3).
SEVERITIES = {
    "gaussian_noise": ("noise std", (0.2, 0.4, 0.6)),
    "blur": ("blur std (pixels)", (1.0, 1.5, 2.0)),
    "contrast": ("contrast factor", (0.4, 0.2, 0.1)),
    "brightness": ("brightness offset", (0.3, 0.5, 0.7)),
    "fog": ("haze strength", (0.5, 1.0, 2.0)),
    "rotation": ("angle (degrees)", (15.0, 30.0, 45.0)),
    "inversion": ("inverted fraction", (0.7, 0.85, 1.0)),
}
CORRUPTIONS = tuple(SEVERITIES)
MAX_SEVERITY = 3


def corrupt(images, corruption, severity, seed=0):
    """A corrupted copy of `images`.

    Args:
        images: float images in [0, 1], `(n, 784)`, `(n, 28, 28)` or
            `(n, 28, 28, 1)` (any square size).
        corruption: One of `CORRUPTIONS`.
        severity: 1, 2 or 3.
        seed: Seed of the random parts (noise, haze, rotation signs).

    Returns:
        float32 images of the same shape, in [0, 1].
    """
    from kbn import checks

    checks.check_choice(corruption, "corruption", CORRUPTIONS)
    checks.check_int(severity, "severity", 1, MAX_SEVERITY)
    checks.check_int(seed, "seed", minimum=0)
    images = np.asarray(images, dtype="float32")
    shape = images.shape
    side = int(round(np.sqrt(np.prod(shape[1:]))))
    if side * side != int(np.prod(shape[1:])):
        checks.fail("images", shape, "square images, (n, 784) or (n, 28, 28[, 1])")
    square = images.reshape(len(images), side, side).astype("float64")
    value = SEVERITIES[corruption][1][severity - 1]
    rng = np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity])
    corrupted = _CORRUPTIONS[corruption](square, value, rng)
    return np.clip(corrupted, 0.0, 1.0).astype("float32").reshape(shape)


def describe(corruption, severity):
    """`"blur std (pixels) 1.5"`: what a corruption's severity means."""
    what, values = SEVERITIES[corruption]
    return f"{what} {values[severity - 1]:g}"


def _gaussian_noise(x, sigma, rng):
    return x + rng.normal(0.0, sigma, size=x.shape)


def _blur(x, sigma, rng):
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    for axis in (1, 2):
        x = _convolve_along(x, kernel, axis)
    return x


def _convolve_along(x, kernel, axis):
    """Convolution along `axis` with zero padding ('same' size)."""
    radius = len(kernel) // 2
    padding = [(0, 0)] * x.ndim
    padding[axis] = (radius, radius)
    padded = np.pad(x, padding)
    size = x.shape[axis]
    return sum(
        weight * np.take(padded, np.arange(i, i + size), axis=axis)
        for i, weight in enumerate(kernel)
    )


def _contrast(x, factor, rng):
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * factor + mean


def _brightness(x, offset, rng):
    return x + offset


def _fog(x, strength, rng):
    side = x.shape[1]
    haze = np.zeros_like(x)
    # Noise at 2x2, 4x4, ... cells, upsampled bilinearly, each octave half
    # as strong: a smooth field with detail at every scale.
    cells, amplitude = 2, 1.0
    while cells <= side // 2:
        coarse = rng.uniform(0.0, 1.0, size=(len(x), cells + 1, cells + 1))
        haze += amplitude * _upsample(coarse, side)
        cells, amplitude = cells * 2, amplitude / 2
    low = haze.min(axis=(1, 2), keepdims=True)
    high = haze.max(axis=(1, 2), keepdims=True)
    haze = (haze - low) / np.maximum(high - low, 1e-12)
    return (x + strength * haze) / (1.0 + strength)


def _upsample(grid, side):
    """Bilinear interpolation of `(n, k, k)` grid values onto `side` pixels."""
    k = grid.shape[1] - 1
    position = np.linspace(0.0, k, side)
    low = np.minimum(np.floor(position).astype(int), k - 1)
    frac = position - low
    rows = (
        grid[:, low, :] * (1 - frac)[None, :, None]
        + grid[:, low + 1, :] * frac[None, :, None]
    )
    return (
        rows[:, :, low] * (1 - frac)[None, None, :]
        + rows[:, :, low + 1] * frac[None, None, :]
    )


def _rotation(x, degrees, rng):
    signs = rng.choice([-1.0, 1.0], size=len(x))
    return np.stack(
        [_rotate(image, np.deg2rad(sign * degrees)) for image, sign in zip(x, signs)]
    )


def _rotate(image, angle):
    """Rotates about the centre, bilinear, zeros outside."""
    side = image.shape[0]
    centre = (side - 1) / 2
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    # The source pixel of each output pixel: the inverse rotation.
    cos, sin = np.cos(angle), np.sin(angle)
    y = cos * (rows - centre) - sin * (cols - centre) + centre
    x = sin * (rows - centre) + cos * (cols - centre) + centre
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    dy, dx = y - y0, x - x0
    padded = np.pad(image, 1)

    def at(r, c):
        inside = (r >= -1) & (r <= side) & (c >= -1) & (c <= side)
        return np.where(
            inside, padded[np.clip(r + 1, 0, side + 1), np.clip(c + 1, 0, side + 1)], 0
        )

    return (
        at(y0, x0) * (1 - dy) * (1 - dx)
        + at(y0, x0 + 1) * (1 - dy) * dx
        + at(y0 + 1, x0) * dy * (1 - dx)
        + at(y0 + 1, x0 + 1) * dy * dx
    )


def _inversion(x, fraction, rng):
    return fraction * (1.0 - x) + (1.0 - fraction) * x


_CORRUPTIONS = {
    "gaussian_noise": _gaussian_noise,
    "blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "fog": _fog,
    "rotation": _rotation,
    "inversion": _inversion,
}
