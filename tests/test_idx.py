import gzip

import numpy as np
import pytest

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
