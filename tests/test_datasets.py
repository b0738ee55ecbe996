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


def _as_official(directory, monkeypatch):
    """Make gzipped test files pass the SHA-256 check, as the real files do."""
    sums = {
        n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in datasets.MNIST_FILES
    }
    monkeypatch.setattr(datasets, "MNIST_FILES", sums)


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_path_book_api(tmp_path, compress, monkeypatch):
    arrays = _write_set(tmp_path / "d", compress=compress)
    if compress:
        _as_official(tmp_path / "d", monkeypatch)
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
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.01), daemon=True)
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
        load_fashion_mnist()  # no path: the cache and Debian's directory are searched


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian():
    (x, t), (xt, tt) = load_fashion_mnist()
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert np.bincount(t).tolist() == [6000] * 10
    assert 0.45 < float((x == 0).mean()) < 0.55  # about half the pixels are exactly 0


# ---- data a user can get wrong: one error naming the file ----------------------
def test_gzipped_files_that_are_not_mnist_are_refused_by_sha(tmp_path):
    _write_set(tmp_path / "d")  # gzipped, but not the real MNIST bytes
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte.gz: SHA-256 mismatch.*raw"):
        load_mnist(path=tmp_path / "d", download=False)


def test_a_damaged_cached_file_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "mnist"
    _write_set(cache)
    _as_official(cache, monkeypatch)
    load_mnist(download=False)
    path = cache / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(IdxError, match="t10k-labels-idx1-ubyte.gz: SHA-256 mismatch.*delete it"):
        load_mnist(download=False)


def test_an_explicit_directory_never_falls_back(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "mnist"
    _write_set(cache, compress=False)
    load_mnist(download=False)  # the cache works ...
    with pytest.raises(DataNotFoundError, match="not found in .*empty"):
        load_mnist(path=tmp_path / "empty")  # ... but is not used when a path is given
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", cache)
    with pytest.raises(DataNotFoundError, match="not found in .*empty"):
        load_fashion_mnist(path=tmp_path / "empty")


def _write(directory, name, array):
    (directory / name.removesuffix(".gz")).write_bytes(encode_idx(array))


@pytest.mark.parametrize(
    "name, array, match",
    [
        (
            "train-labels-idx1-ubyte.gz",
            np.array([0, 1, 2, 200, 4, 5], np.uint8),
            r"labels must lie in 0..9.*200",
        ),
        ("train-images-idx3-ubyte.gz", np.zeros((6, 784), np.uint8), "must have 3 dimensions"),
        ("train-images-idx3-ubyte.gz", -np.ones((6, 28, 28), np.int16), "unsigned bytes"),
        ("train-images-idx3-ubyte.gz", np.full((6, 28, 28), 2.0, np.float32), "unsigned bytes"),
        ("t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8), "holds no images"),
        ("train-images-idx3-ubyte.gz", np.zeros((6, 0, 0), np.uint8), "images of 0x0 pixels"),
        ("t10k-images-idx3-ubyte.gz", np.zeros((4, 10, 10), np.uint8), "test images of 10x10"),
    ],
    ids=["label-range", "rank", "negative", "float-pixels", "empty", "no-pixels", "other-size"],
)
def test_bad_idx_content_is_refused_naming_the_file(tmp_path, name, array, match):
    directory = tmp_path / "d"
    _write_set(directory, compress=False)
    _write(directory, name, array)
    with pytest.raises(IdxError, match=f"{name.removesuffix('.gz')}: .*{match}"):
        load_mnist(path=directory, download=False)


class _Cut(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10, and hangs up."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()

    def log_message(self, *args):
        pass


def test_a_download_cut_short_is_one_clear_error(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cut)
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.01), daemon=True)
    thread.start()
    try:
        with pytest.raises(DataNotFoundError, match="connection closed after 10 of 1000 bytes"):
            load_mnist(mirror=f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "cache" / "mnist").exists() or not list(
        (tmp_path / "cache" / "mnist").iterdir()
    )


def test_downloads_have_a_size_cap_and_a_deadline(tmp_path, server, monkeypatch):
    root, url = server
    _write_set(root)
    monkeypatch.setattr(datasets, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(DataNotFoundError, match="more than 100 bytes"):
        load_mnist(mirror=url)
    monkeypatch.setattr(datasets, "MAX_DOWNLOAD_BYTES", 2**30)
    monkeypatch.setattr(datasets, "DOWNLOAD_DEADLINE", -1.0)
    with pytest.raises(DataNotFoundError, match="took longer than"):
        load_mnist(mirror=url)


def test_cli_prints_where_the_data_came_from(tmp_path, capsys, monkeypatch):
    from xpnet.cli import main

    _write_set(tmp_path / "d", compress=False)
    assert (
        main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--dry-run"]) == 0
    )
    assert f"data from       {tmp_path / 'd'}" in capsys.readouterr().out
    assert main(["train", "--dry-run"]) == 0
    assert "data from       scikit-learn's embedded 8x8 digits" in capsys.readouterr().out
