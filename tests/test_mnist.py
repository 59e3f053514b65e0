"""kbn_study.data.mnist: real files in real formats, the offline fallback, batches."""

import gzip
import os

import numpy as np
import pytest

from kbn_study.data import mnist as data


def _write_idx(path, array, compress=True):
    array = np.asarray(array, dtype="uint8")
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def _fake_mnist(rng, n_train=120, n_test=30):
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype="uint8")
    y_train = rng.integers(0, 10, size=n_train, dtype="uint8")
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype="uint8")
    y_test = rng.integers(0, 10, size=n_test, dtype="uint8")
    return x_train, y_train, x_test, y_test


def _write_idx_folder(folder, arrays, compress=True):
    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    os.makedirs(folder, exist_ok=True)
    for name, array in zip(names, arrays):
        _write_idx(
            os.path.join(folder, name + (".gz" if compress else "")), array, compress
        )


@pytest.fixture
def no_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_is_split_as_the_study(rng, tmp_path, compress):
    arrays = _fake_mnist(rng)
    _write_idx_folder(tmp_path / "idx", arrays, compress)
    dataset = data.load_mnist(tmp_path / "idx", validation_size=20)
    x_train, y_train, x_test, y_test = arrays
    # The first `validation_size` training images are the validation set.
    np.testing.assert_array_equal(dataset.validation.labels, y_train[:20])
    np.testing.assert_array_equal(dataset.train.labels, y_train[20:])
    np.testing.assert_allclose(
        dataset.train.images, x_train[20:].reshape(100, 784) / 255.0
    )
    np.testing.assert_array_equal(dataset.test.labels, y_test)
    assert dataset.train.images.dtype == np.float32
    assert dataset.train.images.min() >= 0.0 and dataset.train.images.max() <= 1.0
    assert dataset.full and dataset.source == f"file: {tmp_path / 'idx'}"
    # The tag names the data by content: another file, another tag.
    assert dataset.tag.startswith("mnist-") and len(dataset.tag) == len("mnist-") + 8


def test_npz_file_one_hot_and_unflattened(rng, tmp_path):
    x_train, y_train, x_test, y_test = _fake_mnist(rng)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dataset = data.load_mnist(path, one_hot=True, flatten=False, validation_size=10)
    assert dataset.train.images.shape == (110, 28, 28)
    assert dataset.train.labels.shape == (110, 10)
    np.testing.assert_array_equal(dataset.train.labels.argmax(1), y_train[10:])


def test_keras_cache_is_used(rng, tmp_path, monkeypatch):
    x_train, y_train, x_test, y_test = _fake_mnist(rng)
    os.makedirs(tmp_path / "datasets")
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    dataset = data.load_mnist(validation_size=10, download=False)
    assert dataset.source.startswith("keras cache: ")
    np.testing.assert_array_equal(dataset.test.labels, y_test)


def test_an_empty_fashion_cache_left_by_a_failed_download_is_skipped(
    rng, tmp_path, monkeypatch
):
    """Keras makes ~/.keras/datasets/fashion-mnist before downloading into
    it; offline the folder stays empty, and the loader must go on to
    Debian's files instead of failing on it from then on."""
    os.makedirs(tmp_path / "keras" / "datasets" / "fashion-mnist")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    arrays = _fake_mnist(rng)
    _write_idx_folder(tmp_path / "debian", arrays)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    dataset = data.load_mnist(name="fashion_mnist", validation_size=10, download=False)
    assert dataset.source.startswith("debian dataset-fashion-mnist: ")
    np.testing.assert_array_equal(dataset.test.labels, arrays[3])
    # With no other source, the error says the cache is incomplete.
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        data.load_mnist(name="fashion_mnist", download=False)


def test_truncated_idx_file_names_the_file(rng, tmp_path):
    arrays = _fake_mnist(rng)
    _write_idx_folder(tmp_path, arrays, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        data.load_mnist(tmp_path, validation_size=10)


def test_corrupt_gzip_names_the_file(rng, tmp_path):
    _write_idx_folder(tmp_path, _fake_mnist(rng))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz"):
        data.load_mnist(tmp_path, validation_size=10)


def test_wrong_magic_number_names_the_file(tmp_path, rng):
    _write_idx_folder(tmp_path, _fake_mnist(rng))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"PK\x03\x04not an idx file")
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte.gz.*Received: header"
    ):
        data.load_mnist(tmp_path, validation_size=10)


@pytest.mark.parametrize(
    "content", [b"this is not a zip archive", bytes(range(256)) * 40]
)
def test_corrupt_npz_names_the_file_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "mnist.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="mnist.npz.*not a zip archive") as error:
        data.load_mnist(path)
    assert "allow_pickle" not in str(error.value)


def test_other_files_give_other_tags(rng, tmp_path):
    arrays = _fake_mnist(rng)
    for name, (x_train, y_train, x_test, y_test) in (
        ("a.npz", arrays),
        ("b.npz", (arrays[0][::-1].copy(), *arrays[1:])),
    ):
        np.savez(
            tmp_path / name,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
        )
    same = tmp_path / "same_as_a.npz"
    same.write_bytes((tmp_path / "a.npz").read_bytes())
    tags = [
        data.load_mnist(tmp_path / name, validation_size=10).tag
        for name in ("a.npz", "b.npz", "same_as_a.npz")
    ]
    assert tags[0] != tags[1] and tags[0] == tags[2]


def test_the_shipped_subset_is_accepted_as_a_file_and_named_as_the_subset():
    shipped = data.load_mnist(data.shipped_subset_path())
    fallback = data.load_mnist(download=False)
    assert shipped.tag == fallback.tag == "mnist-subset" and not shipped.full
    np.testing.assert_array_equal(shipped.test.images, fallback.test.images)
    assert data.shipped_subset_path() in shipped.source


def test_missing_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path="):
        data.load_mnist(tmp_path / "nowhere.npz")


def test_offline_fallback_is_real_mnist_and_says_so(no_keras_cache, capsys):
    dataset = data.load_mnist(download=False)
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1  # one line says so
    assert printed == (
        "Using mnist-subset: no MNIST in Keras's cache, download off; --data FILE "
        "reads mnist.npz.\n"
    )
    assert not dataset.full and dataset.tag == "mnist-subset"
    assert dataset.source == "MNIST subset: 5,000 digits shipped with kbn_study"
    sizes = (len(dataset.train), len(dataset.validation), len(dataset.test))
    assert sizes == (3929, 357, 714)  # 55:5:10 of 5,000
    assert dataset.train.images.shape[1] == 784
    # Real digits: all ten classes in every split, pixels in [0, 1].
    for split in (dataset.train, dataset.validation, dataset.test):
        assert set(np.unique(split.labels)) == set(range(10))
    assert 0.05 < dataset.train.images.mean() < 0.25
    # Deterministic: the same split every time, and no image in two splits.
    again = data.load_mnist(download=False)
    np.testing.assert_array_equal(again.test.images, dataset.test.images)
    train_rows = {row.tobytes() for row in dataset.train.images}
    assert not any(row.tobytes() in train_rows for row in dataset.test.images)


def test_the_shipped_subset_is_the_documented_file():
    """The SHA-256 that resources/MNIST_SUBSET.md states for its arrays."""
    import hashlib
    import importlib.resources

    source = importlib.resources.files("kbn_study") / "resources" / "mnist_5k.npz"
    with source.open("rb") as f, np.load(f) as archive:
        images, labels = archive["images"], archive["labels"]
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    notes = (source.parent / "MNIST_SUBSET.md").read_text()
    assert digest in notes and "CC BY-SA 3.0" in notes
    assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10


def test_an_offline_download_attempt_prints_one_line(
    no_keras_cache, monkeypatch, capsys
):
    """Keras's real download, which fails here (no network): its "Downloading
    data from ..." line is kept back, and the reason is given whole in the
    one short line that says what happened."""
    monkeypatch.delenv("KBN_OFFLINE", raising=False)
    dataset = data.load_mnist()
    printed = capsys.readouterr().out
    if dataset.source == "keras download":
        pytest.skip("the network is reachable here: the download succeeded")
    assert printed.count("\n") == 1 and "Downloading" not in printed
    reason = printed.split("download failed (", 1)[1].split(")", 1)[0]
    assert reason in ("Exception", "OSError", "URLError", "ConnectionError")
    assert printed.startswith("Using mnist-subset") and len(printed) < 120
