import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---- property-based: any damage is a correct load or the one library error -------
_FUZZ_BUDGET = 8 * 2**20  # bytes a mutated file may make the reader take


def _network_file(tmp_path_factory):
    import xpnet

    path = tmp_path_factory.mktemp("net") / "net.npz"
    xpnet.MultiLayerNet(6, [4], 3, seed=0).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def network_bytes(tmp_path_factory):
    return _network_file(tmp_path_factory)


def _mutated(data: bytes, draw_ops) -> bytes:
    data = bytearray(data)
    for kind, position, value in draw_ops:
        if not data:
            break
        at = position % len(data)
        if kind == "flip":
            data[at] ^= value or 1
        elif kind == "truncate":
            del data[at:]
        else:  # insert
            data[at:at] = bytes([value]) * (value % 7 + 1)
    return bytes(data)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert"]),
        st.integers(0, 10**6),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_a_mutated_network_file_loads_or_is_one_clear_error(network_bytes, tmp_path, ops):
    import xpnet

    path = tmp_path / "mutated.npz"
    path.write_bytes(_mutated(network_bytes, ops))
    try:
        net = xpnet.MultiLayerNet.load(path, max_bytes=_FUZZ_BUDGET)
    except ValueError:  # DamagedFileError is one, as are the header checks
        return
    assert all(np.isfinite(v).all() for v in net.params.values())


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_a_mutated_npz_is_read_or_is_a_damaged_file(network_bytes, tmp_path, ops):
    path = tmp_path / "mutated.npz"
    path.write_bytes(_mutated(network_bytes, ops))
    try:
        arrays = load_npz(path, max_bytes=_FUZZ_BUDGET)
    except DamagedFileError:
        return
    assert all(isinstance(v, np.ndarray) for v in arrays.values())


@pytest.mark.slow  # a few thousand mutations, each measured
@settings(
    max_examples=2000, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_thousands_of_mutated_files_stay_within_time_and_memory(network_bytes, tmp_path, ops):
    """With the library's default limits: every mutated network file is a load or
    one ValueError, within hypothesis's deadline (3 s) and 64 MiB of traced
    memory (NumPy reports its buffers to tracemalloc)."""
    import tracemalloc

    import xpnet

    path = tmp_path / "mutated.npz"
    path.write_bytes(_mutated(network_bytes, ops))
    tracemalloc.start()
    try:
        try:
            xpnet.MultiLayerNet.load(path)
        except ValueError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak


_CHILD_FUZZ = """
import resource, sys, time
from pathlib import Path

import numpy as np

import xpnet

with open("/proc/self/status") as handle:  # the address space in use after the imports
    in_use = next(int(l.split()[1]) * 1024 for l in handle if l.startswith("VmSize:"))
limit = in_use + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
source, out, count = Path(sys.argv[1]).read_bytes(), Path(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(int(sys.argv[5]))
for i in range(count):
    data = bytearray(source)
    for _ in range(int(rng.integers(1, 4))):
        if not data:
            break
        at = int(rng.integers(0, len(data)))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            data[at] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del data[at:]
        else:
            data[at:at] = bytes(int(rng.integers(1, 8))) * int(rng.integers(1, 64))
    out.write_bytes(bytes(data))
    started = time.perf_counter()
    try:
        xpnet.MultiLayerNet.load(out)
    except ValueError:
        pass
    except BaseException as exc:  # anything else, MemoryError included, is a finding
        print(f"mutation {i}: {type(exc).__name__}: {exc}")
        sys.exit(1)
    if time.perf_counter() - started > 2:
        print(f"mutation {i}: took {time.perf_counter() - started:.1f} s")
        sys.exit(1)
print("ok")
"""


@pytest.mark.slow  # thousands of mutations in a child process
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_mutated_files_in_a_child_with_200_mb_more_address_space(network_bytes, tmp_path):
    """As the audit ran it: a child process whose address space may grow by only
    200 MB loads 3,000 mutated network files with the library's default limits:
    each a load or one ValueError, within 2 s; a MemoryError would fail it."""
    import subprocess
    import sys

    source = tmp_path / "net.npz"
    source.write_bytes(network_bytes)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD_FUZZ, str(source), str(200 * 2**20),
         str(tmp_path / "mutated.npz"), "3000", "7"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        result.stdout[-2000:] + result.stderr[-2000:]
    )


def test_a_zip_that_needs_a_newer_reader_is_a_damaged_file(tmp_path):
    """A central directory asking for zip version 22.0 made zipfile raise
    NotImplementedError out of npz_shapes, load_npz and load alike."""
    import xpnet

    path = tmp_path / "net.npz"
    xpnet.MultiLayerNet(4, [3], 2, seed=0).save(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    data[at + 6 : at + 8] = (220).to_bytes(2, "little")  # version needed: 22.0
    path.write_bytes(bytes(data))
    for read in (npz_shapes, load_npz, xpnet.MultiLayerNet.load):
        with pytest.raises(DamagedFileError, match="is not an xpnet file or is damaged"):
            read(path)


def test_a_member_flagged_as_encrypted_is_a_damaged_file(tmp_path):
    """Found by the property tests: one flipped flag bit made zipfile raise
    RuntimeError ("password required") out of every reader."""
    import xpnet

    path = tmp_path / "net.npz"
    xpnet.MultiLayerNet(4, [3], 2, seed=0).save(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    data[at + 8] |= 0x01  # general purpose flag: encrypted
    path.write_bytes(bytes(data))
    for read in (load_npz, xpnet.MultiLayerNet.load):
        with pytest.raises(DamagedFileError, match="is not an xpnet file or is damaged"):
            read(path)
