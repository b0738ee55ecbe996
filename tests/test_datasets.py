import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from xpnet import datasets
from xpnet.datasets import (
    DataNotFoundError,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
)
from xpnet.idx import IdxError, encode_idx

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _write_set(directory: Path, n_train=6, n_test=4, compress=True, side=28):
    """Four small IDX files with MNIST's names; returns the arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        data = encode_idx(a)
        if compress:
            (directory / name).write_bytes(gzip.compress(data))
        else:
            (directory / name.removesuffix(".gz")).write_bytes(data)
    return arrays


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_path_book_api(tmp_path, compress):
    arrays = _write_set(tmp_path / "d", compress=compress)
    (x, t), (xt, tt) = load_mnist(path=tmp_path / "d", download=False)
    assert x.shape == (6, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_allclose(
        x[0], arrays["train-images-idx3-ubyte.gz"][0].ravel() / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(t, arrays["train-labels-idx1-ubyte.gz"])
    assert t.dtype == np.int64 and xt.shape == (4, 784) and tt.shape == (4,)
    (x, t), _ = load_mnist(
        normalize=False, flatten=False, one_hot_label=True, path=tmp_path / "d", download=False
    )
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.uint8
    assert t.shape == (6, 10) and np.all(t.sum(1) == 1)


def test_missing_files_say_where(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found in .*put the four IDX files"):
        load_mnist(path=tmp_path / "nowhere", download=False)


def test_truncated_file_is_an_error(tmp_path):
    _write_set(tmp_path / "d", compress=False)
    f = tmp_path / "d" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(IdxError, match="truncated"):
        load_mnist(path=tmp_path / "d", download=False)


def test_label_count_mismatch(tmp_path):
    _write_set(tmp_path / "d", compress=False)
    (tmp_path / "d" / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(5, np.uint8)))
    with pytest.raises(IdxError, match="6 images but labels"):
        load_mnist(path=tmp_path / "d", download=False)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server (127.0.0.1 only) serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_checksums_into_cache(tmp_path, server, monkeypatch):
    root, url = server
    _write_set(root)
    sums = {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in datasets.MNIST_FILES}
    monkeypatch.setattr(datasets, "MNIST_FILES", sums)
    (x, t), _ = load_mnist(mirror=url)
    assert x.shape == (6, 784)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)
    # second call: from the cache, no server needed
    (x2, _), _ = load_mnist(mirror="http://127.0.0.1:9/")
    np.testing.assert_array_equal(x, x2)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server):
    root, url = server
    _write_set(root)  # real MNIST checksums will not match these files
    with pytest.raises(IdxError, match="SHA-256 mismatch"):
        load_mnist(mirror=url)
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_failure_says_where_to_put_files(tmp_path, server):
    _, url = server  # serves an empty directory: 404
    with pytest.raises(DataNotFoundError, match="could not download .* put the MNIST files"):
        load_mnist(mirror=url)


def test_digits_embedded_split_is_fixed():
    (x, t), (xt, tt) = load_digits()
    assert x.shape == (1438, 64) and xt.shape == (359, 64)
    assert x.dtype == np.float32 and x.max() == 1.0 and x.min() == 0.0
    assert set(np.unique(t)) == set(range(10))
    (x2, t2), _ = load_digits()
    np.testing.assert_array_equal(t, t2)
    (x3, t3), _ = load_digits(flatten=False, one_hot_label=True)
    assert x3.shape == (1438, 1, 8, 8) and t3.shape == (1438, 10)


def test_load_dataset_by_name(tmp_path):
    with pytest.raises(ValueError, match="dataset='cifar' is not known"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="embedded"):
        load_dataset("digits", path=tmp_path)


def test_fashion_missing_mentions_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "none")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(path=tmp_path / "none2")


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian():
    (x, t), (xt, tt) = load_fashion_mnist()
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert np.bincount(t).tolist() == [6000] * 10
    assert 0.45 < float((x == 0).mean()) < 0.55  # about half the pixels are exactly 0
