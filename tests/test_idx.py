import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpnet.idx import IdxError, encode_idx, parse_idx, read_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_roundtrip_every_type(dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    out = parse_idx(encode_idx(a))
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)


def test_read_gzip_and_raw(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "raw").write_bytes(encode_idx(a))
    (tmp_path / "z.gz").write_bytes(gzip.compress(encode_idx(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "z.gz"), a)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"\x01" + b[1:], "bad IDX magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "bad IDX magic"),
        (lambda b: b[:6], "truncated header"),
        (lambda b: b[:3], "too short"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    ],
)
def test_corrupt_files_are_rejected(mutate, match):
    good = encode_idx(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(IdxError, match=match):
        parse_idx(mutate(good), "f")


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(encode_idx(np.zeros((5, 5), dtype=np.uint8)))
    (tmp_path / "bad.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


def _gzip_stream(path, header: bytes, zeros: int):
    """A .gz of ``header`` followed by ``zeros`` zero bytes, written in pieces."""
    import gzip

    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header)
        block = bytes(2**20)
        for _ in range(zeros // len(block)):
            handle.write(block)


def test_a_small_gz_that_expands_far_beyond_its_header_is_refused_cheaply(tmp_path):
    """1x28x28 declared, 256 MiB of zeros behind it: read the 784 declared bytes
    and one more, refuse, without decompressing the rest."""
    import struct
    import time
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    _gzip_stream(path, struct.pack(">HBB3I", 0, 8, 3, 1, 28, 28), 256 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(IdxError, match="has trailing bytes"):
            read_idx(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 4 * 2**20, (seconds, peak)


@pytest.mark.parametrize(
    "header, words",
    [
        (struct.pack(">HBB", 0, 8, 100) + bytes(400), "declares 100 dimensions"),
        (struct.pack(">HBB", 0, 8, 0), "declares 0 dimensions"),
        (struct.pack(">HBB4I", 0, 8, 4, *([2**32 - 1] * 4)), "more than the"),
        (struct.pack(">HBB2I", 0, 0x0E, 2, 100_000, 100_000), "more than the"),
    ],
)
def test_headers_that_cannot_be_a_data_set_are_refused_before_reading(header, words):
    with pytest.raises(IdxError, match=words):
        parse_idx(header)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", b"\x00\x00\x08\x01", b"\x00\x00\x0d\x02"]))
def test_any_bytes_are_an_array_or_one_idx_error(data, prefix):
    try:
        array = parse_idx(prefix + data)
    except IdxError:
        return
    assert isinstance(array, np.ndarray)
