"""MNIST-format files read with NumPy alone: Keras's `mnist.npz`, the four IDX
files, and the 5,000-digit subset shipped with kbn_study.

Holds the readers and `check`, which the commands call on `--data` before
they import Keras, so that a bad file fails in a fraction of a second. It
must not import Keras or kbn (importing `kbn` imports Keras), nor know how
the study splits the data (`kbn_study.data.mnist`).

A corrupt or truncated file raises `ValueError` naming the file and what is
wrong with it.
"""

import functools
import gzip
import os
import zipfile

import numpy as np

IMAGE_SHAPE = (28, 28)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def check(path):
    """Raises the `ValueError` (or `FileNotFoundError`) that reading `path`
    would raise; reads it once (the result is kept for `read_local`)."""
    read_local(path)


def read_local(path):
    """`((x_train, y_train), (x_test, y_test))` of an `.npz` file or an IDX
    folder, as stored (uint8 images of 28 x 28, integer labels)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    stat = os.stat(path)
    return _read_local(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_local(path, mtime_ns, size):
    # Cached by path, time and size: `check` and the loader read it once.
    if os.path.isdir(path):
        arrays = {
            key: read_idx(find_idx(path, filename))
            for key, filename in IDX_FILES.items()
        }
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if len(images) != len(labels):
                raise ValueError(
                    f"The IDX files in {path} disagree: {len(images)} {split} "
                    f"images but {len(labels)} {split} labels."
                )
        return (
            (arrays["train_images"], arrays["train_labels"]),
            (arrays["test_images"], arrays["test_labels"]),
        )
    return _read_npz(path)


def find_idx(folder, filename):
    for candidate in (filename + ".gz", filename):
        full = os.path.join(folder, candidate)
        if os.path.exists(full):
            return full
    raise FileNotFoundError(
        f"Missing IDX file in {folder}. Expected {filename}.gz or {filename}. "
        f"Received: folder contents={sorted(os.listdir(folder))}"
    )


def is_subset_format(path):
    """Whether `path` is an `.npz` of the shipped subset's form (`images`,
    `labels`: one set of digits, cut into splits by `split_subset`)."""
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return {"images.npy", "labels.npy"} <= set(archive.namelist())


def split_subset(images, labels):
    """`((x_train, y_train), (x_test, y_test))` of one set of digits, cut as
    the shipped subset is: shuffled once with a fixed seed (the file is
    sorted by class), then split in the proportions of the full set
    (60,000 train / 10,000 test)."""
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    n_test = round(len(images) * 10_000 / 70_000)
    return (images[n_test:], labels[n_test:]), (images[:n_test], labels[:n_test])


# The arrays of Keras's mnist.npz, and of the shipped subset's form.
_KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
_SUBSET_KEYS = ("images", "labels")


def _read_npz(path):
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Corrupt MNIST file {path}: expected an .npz archive (Keras's "
            "mnist.npz), but the file is not a zip archive."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = list(archive.files)
            keys = _SUBSET_KEYS if set(_SUBSET_KEYS) <= set(found) else _KERAS_KEYS
            arrays = {k: archive[k] for k in keys if k in found}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, AttributeError) as error:
        raise ValueError(
            f"Corrupt or truncated MNIST file {path}: expected an .npz archive "
            f"(Keras's mnist.npz). Received: {type(error).__name__}: {error}"
        ) from error
    if len(arrays) != len(keys):
        raise ValueError(
            f"Corrupt MNIST file {path}: expected arrays {_KERAS_KEYS} (Keras's "
            f"mnist.npz) or {_SUBSET_KEYS} (the form of the subset shipped with "
            f"kbn_study). Received: arrays={found}"
        )
    splits = (
        [(arrays["images"], arrays["labels"], "")]
        if keys == _SUBSET_KEYS
        else [
            (arrays["x_train"], arrays["y_train"], "train "),
            (arrays["x_test"], arrays["y_test"], "test "),
        ]
    )
    for images, labels, split in splits:
        if images.shape[1:] != IMAGE_SHAPE or len(images) != len(labels):
            raise ValueError(
                f"Corrupt MNIST file {path}: expected {split}images of shape "
                f"(n, 28, 28) and n labels. Received: images.shape="
                f"{images.shape}, labels.shape={labels.shape}"
            )
    if keys == _SUBSET_KEYS:
        return split_subset(arrays["images"], arrays["labels"])
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def read_idx(path):
    """Reads an IDX file (gzip-compressed or not) into a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Corrupt or truncated IDX file {path}: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"Corrupt IDX file {path}: expected the magic number 0x0000080N "
            f"of unsigned-byte data. Received: header={data[:4].hex()}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"Truncated or corrupt IDX file {path}: the header announces shape "
            f"{shape} ({expected} bytes) but the file has {len(data)} bytes."
        )
    return np.frombuffer(data, dtype="uint8", offset=header).reshape(shape)
