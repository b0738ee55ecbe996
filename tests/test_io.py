import os

import numpy as np
import pytest

from xpnet.io import atomic_write_bytes, load_npz, save_json, save_npz


def test_npz_roundtrip_without_pickle(tmp_path):
    path = save_npz(tmp_path / "a.npz", {"x": np.arange(3.0), "name": np.asarray("relu")})
    data = load_npz(path)
    np.testing.assert_array_equal(data["x"], [0, 1, 2])
    assert str(data["name"]) == "relu"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_npz(tmp_path / "obj.npz")["o"]


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
