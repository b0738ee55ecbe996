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


def test_a_live_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(f"{os.getppid()}\n")  # a live process, not this one
    with pytest.raises(RunDirectoryError, match="being written by another xpnet run"):
        RunDirectory(tmp_path).__enter__()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / LOCK).write_text(f"{dead}\n")
    with RunDirectory(tmp_path):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())


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
