"""Data sets with the book's ``load_mnist`` return convention.

Rules of this module:

* Every loader returns host NumPy arrays ``(x_train, t_train), (x_test, t_test)``:
  ``x`` float32 in ``[0, 1]`` when ``normalize`` (else uint8/float raw values),
  shape ``(N, D)`` when ``flatten`` else ``(N, 1, H, W)``; ``t`` int64 labels, or
  float32 one-hot ``(N, 10)`` with ``one_hot_label``. The trainer moves them to
  the device once.
* An explicit ``path`` is the only place looked in: files missing there are an
  error, never a silent fall-back to another directory.
* Without ``path``, MNIST files are searched in the cache directory
  (``$XPNET_DATA_DIR``, default ``~/.cache/xpnet/mnist``), then downloaded from a
  mirror into the cache (at most :data:`MAX_DOWNLOAD_BYTES` per file, within
  :data:`DOWNLOAD_DEADLINE` seconds), each verified against its known SHA-256 and
  written atomically. A failed, cut-short or mismatched download leaves nothing
  behind. Gzipped MNIST files found on disk (cache or ``path``) are checked
  against the same SHA-256s; raw (gunzipped) IDX files are checked structurally.
* Fashion-MNIST is searched in ``path``, or the cache and Debian's
  ``dataset-fashion-mnist`` package directory; it is never downloaded.
* Every set is checked on load, naming the file: images are ``(N, H, W)``
  unsigned bytes with ``N > 0``, labels ``(N,)`` integers in ``0..9``.
* The embedded default, ``load_digits``, is scikit-learn's bundled 8x8 digits:
  no file, no network.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np  # host

from .idx import IdxError, read_idx
from .io import atomic_write_bytes

__all__ = [
    "DATASETS",
    "MNIST_FILES",
    "MNIST_MIRROR",
    "DataNotFoundError",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "data_dir",
]

#: The four IDX files and their SHA-256 (the original MNIST distribution).
# fmt: off
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# fmt: on
#: Default download mirror (any URL prefix serving the four files works).
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: Where Debian's dataset-fashion-mnist package installs its files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

DATASETS = ("digits", "mnist", "fashion-mnist")


#: Largest file a download may bring (the largest MNIST file is 9.9 MB).
MAX_DOWNLOAD_BYTES = 64 * 2**20
#: Seconds one file's download may take in all.
DOWNLOAD_DEADLINE = 300.0


class DataNotFoundError(FileNotFoundError):
    """The data set's files are not where they were looked for."""


def data_dir(name: str) -> Path:
    """Cache directory of data set ``name``: ``$XPNET_DATA_DIR/name`` or
    ``~/.cache/xpnet/name``."""
    root = os.environ.get("XPNET_DATA_DIR")
    base = (
        Path(root)
        if root
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xpnet"
    )
    return base / name


def _find(directory: Path, gz_name: str) -> Path | None:
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_capped(response, url: str) -> bytes:
    """The whole body, refusing more than MAX_DOWNLOAD_BYTES or DOWNLOAD_DEADLINE."""
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    promised = response.headers.get("Content-Length")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(2**20)
        if not chunk:
            if promised is not None and promised.isdigit() and int(promised) != size:
                raise OSError(f"the connection closed after {size} of {promised} bytes")
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_DOWNLOAD_BYTES:
            raise OSError(f"more than {MAX_DOWNLOAD_BYTES} bytes: not an MNIST file")
        if time.monotonic() > deadline:
            raise OSError(f"took longer than {DOWNLOAD_DEADLINE:g} s")
        chunks.append(chunk)


def _download(name: str, mirror: str, target: Path, sha256: str) -> Path:
    url = mirror.rstrip("/") + "/" + name
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - http(s) mirror
            data = _read_capped(response, url)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it holds the response's socket
        reason = (
            f"the connection closed after {len(exc.partial)} bytes"
            if isinstance(exc, http.client.IncompleteRead)
            else exc
        )  # read(amt) reports a short body itself (above); a plain read() raises this
        raise DataNotFoundError(
            f"could not download {url} ({reason}); put the MNIST files "
            f"({', '.join(MNIST_FILES)}) in {target.parent} or pass path=/--data-dir"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise IdxError(f"{url}: SHA-256 mismatch (got {digest}, expected {sha256}); not saved")
    return atomic_write_bytes(target, data)


def _check_set(images, labels, image_file, label_file):
    """Images (N, H, W) unsigned bytes, N > 0; labels (N,) integers in 0..9."""
    if images.ndim != 3:
        raise IdxError(f"{image_file}: images must have 3 dimensions (N, H, W), got {images.shape}")
    if images.dtype != np.uint8:
        raise IdxError(
            f"{image_file}: pixels must be unsigned bytes 0-255 (MNIST's format), got {images.dtype}"
        )
    if images.shape[0] == 0:
        raise IdxError(f"{image_file}: holds no images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise IdxError(f"{image_file}: images of {images.shape[1]}x{images.shape[2]} pixels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise IdxError(
            f"{label_file}: labels must be 1-D integers, got {labels.shape} {labels.dtype}"
        )
    if labels.shape[0] != images.shape[0]:
        raise IdxError(f"{label_file}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise IdxError(
            f"{label_file}: labels must lie in 0..9, got values from {labels.min()} to {labels.max()}"
        )


def _convert(images, labels, normalize, flatten, one_hot_label):
    n, height, width = images.shape
    x = images.astype(np.float32) / np.float32(255.0) if normalize else images
    x = x.reshape(n, height * width) if flatten else x.reshape(n, 1, height, width)
    t = labels.astype(np.int64)
    if one_hot_label:
        t = np.eye(10, dtype=np.float32)[t]
    return x, t


def _check_sha(path: Path, known: dict) -> None:
    expected = known.get(path.name)
    if expected is None:  # raw IDX, or a set without published SHA-256s
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise IdxError(
            f"{path}: SHA-256 mismatch (got {digest}, expected {expected}): not the MNIST "
            "file, or damaged; delete it to download it again, or give your own data as "
            "raw (gunzipped) IDX files"
        )


def _load_idx_set(directories, normalize, flatten, one_hot_label, download=None, known=None):
    found = {}
    for name in MNIST_FILES:
        for directory in directories:
            path = _find(Path(directory), name)
            if path is not None:
                found[name] = path
                break
        else:
            if download is None:
                where = ", ".join(str(d) for d in directories)
                raise DataNotFoundError(
                    f"{name} not found in {where}; put the four IDX files there (gzip or raw)"
                )
            try:
                found[name] = download(name)
            except DataNotFoundError as exc:
                where = ", ".join(str(d) for d in directories)
                raise DataNotFoundError(f"{name} not found in {where}; {exc}") from None
    for path in found.values():
        _check_sha(Path(path), known or {})
    arrays = {name: read_idx(path) for name, path in found.items()}
    for images, labels in (
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ):
        _check_set(arrays[images], arrays[labels], found[images], found[labels])
    train_shape = arrays["train-images-idx3-ubyte.gz"].shape[1:]
    test_shape = arrays["t10k-images-idx3-ubyte.gz"].shape[1:]
    if train_shape != test_shape:
        raise IdxError(
            f"{found['t10k-images-idx3-ubyte.gz']}: test images of {test_shape[0]}x{test_shape[1]} "
            f"pixels beside training images of {train_shape[0]}x{train_shape[1]}"
        )
    train = _convert(
        arrays["train-images-idx3-ubyte.gz"],
        arrays["train-labels-idx1-ubyte.gz"],
        normalize,
        flatten,
        one_hot_label,
    )
    test = _convert(
        arrays["t10k-images-idx3-ubyte.gz"],
        arrays["t10k-labels-idx1-ubyte.gz"],
        normalize,
        flatten,
        one_hot_label,
    )
    return train, test


def load_mnist(
    normalize=True, flatten=True, one_hot_label=False, *, path=None, mirror=None, download=True
):
    """MNIST with the book's API: ``(x_train, t_train), (x_test, t_test)``.

    Parameters
    ----------
    normalize : bool
        Scale pixels to float32 in [0, 1] (else uint8 0-255).
    flatten : bool
        Images as (N, 784) rows (else (N, 1, 28, 28)).
    one_hot_label : bool
        Labels as (N, 10) one-hot float32 (else int64 (N,)).
    path : str or Path, optional
        Directory with the four IDX files; searched before the cache.
    mirror : str, optional
        URL prefix to download from (default :data:`MNIST_MIRROR`).
    download : bool
        Download missing files into the cache (default True).

    Raises
    ------
    DataNotFoundError
        Files missing and not downloadable (the message says where to put them).
    IdxError
        A file is corrupt or truncated, or a download fails its checksum.
    """
    cache = data_dir("mnist")
    directories = [Path(path)] if path else [cache]

    def fetch(name):
        return _download(name, mirror or MNIST_MIRROR, cache / name, MNIST_FILES[name])

    return _load_idx_set(
        directories,
        normalize,
        flatten,
        one_hot_label,
        fetch if download and not path else None,
        known=MNIST_FILES,
    )


def load_fashion_mnist(normalize=True, flatten=True, one_hot_label=False, *, path=None):
    """Fashion-MNIST, same API as :func:`load_mnist`.

    Looks in ``path``, the cache (``$XPNET_DATA_DIR/fashion-mnist``), and Debian's
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
    """
    directories = [Path(path)] if path else [data_dir("fashion-mnist"), DEBIAN_FASHION_DIR]
    try:
        return _load_idx_set(directories, normalize, flatten, one_hot_label)
    except DataNotFoundError as exc:
        if path:
            raise
        raise DataNotFoundError(
            f"{exc}; on Debian/Ubuntu: apt-get install dataset-fashion-mnist"
        ) from None


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as float32 images ``(N, 8, 8)`` and int64 labels, read once
    per process (read-only: callers index copies out of them).

    scikit-learn ships them as ``datasets/data/digits.csv.gz`` (64 pixels and the
    label per row); reading that file directly spares the 1-2 s import of
    scikit-learn on every ``xpnet train``. Where the file is not there (another
    layout), scikit-learn's own loader reads it.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = spec.submodule_search_locations if spec is not None else None
    table = None
    for root in roots or ():
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")  # host
            break
    if table is None or table.shape != (1797, 65):
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        table = np.column_stack([bunch.data, bunch.target])  # host
    images = table[:, :64].reshape(-1, 8, 8).astype(np.float32)
    labels = table[:, 64].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_digits(normalize=True, flatten=True, one_hot_label=False, *, test_fraction=0.2, seed=0):
    """scikit-learn's bundled 8x8 digits (1,797 images), split train/test.

    Same return convention as :func:`load_mnist` (8x8 instead of 28x28; pixel values
    0-16, scaled to [0, 1] by ``normalize``). The split is a fixed permutation from
    ``numpy.random.default_rng(seed)``, stratified by nothing: the same for every run.
    """
    images, labels = _digits()
    order = np.random.default_rng(seed).permutation(len(labels))  # host
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]

    def convert(idx):
        x = images[idx] / np.float32(16.0) if normalize else images[idx]
        x = x.reshape(len(idx), 64) if flatten else x.reshape(len(idx), 1, 8, 8)
        t = np.eye(10, dtype=np.float32)[labels[idx]] if one_hot_label else labels[idx]
        return x, t

    return convert(train), convert(test)


def dataset_source(name: str, *, path=None) -> str:
    """Where :func:`load_dataset` takes ``name`` from (what the CLI prints)."""
    if name == "digits":
        return "scikit-learn's embedded 8x8 digits"
    if name == "mnist":
        directories = [Path(path)] if path else [data_dir("mnist")]
    else:
        directories = [Path(path)] if path else [data_dir("fashion-mnist"), DEBIAN_FASHION_DIR]
    for directory in directories:
        if all(_find(directory, file) is not None for file in MNIST_FILES):
            return str(directory)
    return f"{directories[0]} (downloaded there)" if name == "mnist" else str(directories[0])


def load_dataset(name: str, *, path=None, normalize=True, flatten=True, one_hot_label=False):
    """Load ``"digits"``, ``"mnist"`` or ``"fashion-mnist"`` by name."""
    if name == "digits":
        if path is not None:
            raise ValueError("the digits data set is embedded: it takes no data directory")
        return load_digits(normalize, flatten, one_hot_label)
    if name == "mnist":
        return load_mnist(normalize, flatten, one_hot_label, path=path)
    if name == "fashion-mnist":
        return load_fashion_mnist(normalize, flatten, one_hot_label, path=path)
    raise ValueError(f"dataset={name!r} is not known; expected one of {DATASETS}")
