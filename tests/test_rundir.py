"""The run directory: one writer, nothing replaced silently, errors up front."""

import os
import subprocess
import sys

import pytest

from xpnet.rundir import LOCK, RunDirectory, RunDirectoryError


def test_a_run_takes_and_gives_back_the_lock(tmp_path):
    with RunDirectory(tmp_path / "run") as run:
        assert (run.path / LOCK).read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run" / LOCK).exists()


_HOLD = """
import sys, time
from xpnet.rundir import RunDirectory
with RunDirectory(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_live_writer_is_refused_and_a_killed_ones_lock_is_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryError, match=f"another xpnet run .pid {holder.pid}"):
            RunDirectory(tmp_path).__enter__()
    finally:
        holder.kill()  # as kill -9: the kernel releases the lock
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / LOCK).exists()  # left behind by the killed run ...
    with RunDirectory(tmp_path):  # ... and free
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())


def test_a_lock_file_with_our_own_pid_but_no_holder_is_free(tmp_path):
    """A pid written by an earlier process may be reused by this one: it means
    nothing without the OS lock."""
    (tmp_path / LOCK).write_text(f"{os.getpid()}\n")
    with RunDirectory(tmp_path):
        pass


_RACE = """
import sys, time
from xpnet.rundir import RunDirectory, RunDirectoryError
start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    with RunDirectory(sys.argv[1], force=True):
        began = time.time()
        time.sleep(0.2)
        print(began, time.time(), flush=True)
except RunDirectoryError:
    print("refused", flush=True)
"""


def test_runs_started_at_once_never_hold_the_directory_together(tmp_path):
    import time

    start = time.time() + 1.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    held = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        if out.strip() != "refused":
            held.append(tuple(float(v) for v in out.split()))
    assert held, "no run got the directory"
    held.sort()
    for (_, end), (begin, _) in zip(held[:-1], held[1:], strict=True):
        assert begin >= end, held  # one after another, never at once


def test_the_same_directory_is_not_opened_twice_in_one_process(tmp_path):
    with RunDirectory(tmp_path):
        with pytest.raises(RunDirectoryError, match="already open in this process"):
            RunDirectory(tmp_path).__enter__()


def test_an_earlier_run_is_kept_unless_resumed_or_replaced(tmp_path):
    (tmp_path / "history.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="already holds a run .*--resume.*--force"):
        RunDirectory(tmp_path).__enter__()
    assert (tmp_path / "history.json").exists()
    with RunDirectory(tmp_path, resume=True) as run:
        assert run.replaced == []
    with RunDirectory(tmp_path, force=True) as run:
        assert run.replaced == ["history.json"]
    assert not (tmp_path / "history.json").exists()


def test_a_bad_out_fails_at_once_naming_it(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a directory"):
        RunDirectory(a_file).__enter__()
    with pytest.raises(RunDirectoryError, match="cannot be created"):
        RunDirectory(a_file / "below").__enter__()


def test_resume_and_force_exclude_each_other(tmp_path):
    with pytest.raises(RunDirectoryError, match="--resume continues .* --force replaces"):
        RunDirectory(tmp_path, resume=True, force=True)
