import os

import numpy as np
import pytest

from xpnet.io import (
    TEMP_SUFFIX,
    DamagedFileError,
    atomic_write_bytes,
    load_npz,
    npz_shapes,
    remove_stale_temporaries,
    save_json,
    save_npz,
)


def test_npz_roundtrip_without_pickle(tmp_path):
    path = save_npz(tmp_path / "a.npz", {"x": np.arange(3.0), "name": np.asarray("relu")})
    data = load_npz(path)
    np.testing.assert_array_equal(data["x"], [0, 1, 2])
    assert str(data["name"]) == "relu"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DamagedFileError, match=r"obj.npz is not an xpnet file.*pickled objects"):
        load_npz(tmp_path / "obj.npz")


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.json"
    save_json(path, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_text().strip().endswith("}") and '"v": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]  # no temp file left


def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npz(tmp_path / "none.npz")


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am text\n", b"PK\x03\x04garbage", "truncated"],
    ids=["empty", "text", "bad-zip", "truncated"],
)
def test_damaged_npz_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content == "truncated":
        good = save_npz(tmp_path / "good.npz", {"x": np.arange(1000.0)}).read_bytes()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(DamagedFileError, match=r"bad.npz is not an xpnet file or is damaged"):
        load_npz(path)
    with pytest.raises(DamagedFileError, match=r"bad.npz is not an xpnet file or is damaged"):
        npz_shapes(path)


def test_npz_shapes_reads_headers_only(tmp_path):
    path = save_npz(tmp_path / "a.npz", {"W": np.zeros((3, 4)), "s": np.asarray([1, 2])})
    shapes = npz_shapes(path)
    assert shapes["W"][0] == (3, 4) and shapes["s"][0] == (2,)
    assert shapes["W"][1] == np.float64


def test_a_link_in_the_output_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "accuracy.png").symlink_to(outside)
    atomic_write_bytes(out / "accuracy.png", b"new")
    assert outside.read_text() == "precious"
    assert not (out / "accuracy.png").is_symlink() and (out / "accuracy.png").read_bytes() == b"new"


def test_umask_is_never_changed(tmp_path, monkeypatch):
    def forbidden(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", forbidden)
    atomic_write_bytes(tmp_path / "f", b"x")


def test_stale_temporaries_are_removed(tmp_path):
    stale = tmp_path / f".history.json.abc{TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    keep = tmp_path / "history.json"
    keep.write_text("{}")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and keep.exists()
