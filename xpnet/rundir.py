"""The output directory of a training run: one writer, nothing overwritten silently.

Rules of this module:

* A run takes the directory's lock (``.xpnet.lock``, created with ``O_EXCL``,
  holding the writer's pid) before anything is written, and gives it back at the
  end. A lock whose process is gone is stale and is taken over; a live one is
  refused: two runs never write one directory.
* A directory that already holds a run's outputs is refused unless the run
  resumes it (``resume``) or replaces it on purpose (``force``).
* The directory is created and proven writable (the lock file itself) before any
  training, so a bad ``--out`` (a file, under a file, read-only) fails at once
  with one error naming it, not after the first epoch.
* Temporary files left by an interrupted atomic write are removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import remove_stale_temporaries

__all__ = ["RunDirectory", "RunDirectoryError", "OUTPUTS", "LOCK"]

#: Files a finished or interrupted run leaves in its directory.
OUTPUTS = ("checkpoint.npz", "history.json", "params.npz", "accuracy.png", "loss.png")
LOCK = ".xpnet.lock"


class RunDirectoryError(ValueError):
    """The output directory cannot be used for this run (the message says why)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunDirectory:
    """Context manager owning ``path`` for one run.

    Parameters
    ----------
    path : str or Path
    resume : bool
        The run continues the one in ``path`` (its outputs are expected).
    force : bool
        The run may replace an earlier run's outputs.
    outputs : tuple of str
        The files that make a run (default: a training run's :data:`OUTPUTS`).
    """

    def __init__(self, path, *, resume=False, force=False, outputs=OUTPUTS):
        self.path = Path(path)
        self.outputs = tuple(outputs)
        self.resume = resume
        self.force = force
        self._lock = self.path / LOCK
        self.replaced = []  # an earlier run's outputs removed because of ``force``

    def __enter__(self) -> RunDirectory:
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is a file, not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirectoryError(
                f"--out {path} cannot be created ({exc.strerror or exc})"
            ) from None
        self._take_lock()
        try:
            earlier = [name for name in self.outputs if (path / name).exists()]
            if earlier and not self.resume:
                if not self.force:
                    raise RunDirectoryError(
                        f"--out {path} already holds a run ({', '.join(earlier)}): use "
                        "--resume to continue it, --force to replace it, or another --out"
                    )
                for name in earlier:  # replaced on purpose: no stale file mixes in
                    (path / name).unlink()
                self.replaced = earlier
            remove_stale_temporaries(path)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _take_lock(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self._lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self._lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid == os.getpid():
                    raise RunDirectoryError(
                        f"--out {self.path} is already open in this process: pass the open "
                        "RunDirectory instead of its path"
                    ) from None
                if pid and _alive(pid):
                    raise RunDirectoryError(
                        f"--out {self.path} is being written by another xpnet run (pid {pid}); "
                        "wait for it or use another --out"
                    ) from None
                self._lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as exc:
                raise RunDirectoryError(
                    f"--out {self.path} is not writable ({exc.strerror or exc})"
                ) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            return
        raise RunDirectoryError(f"--out {self.path}: could not take its lock {self._lock}")

    def _release(self) -> None:
        try:
            if self._lock.read_text().strip() == str(os.getpid()):
                self._lock.unlink()
        except OSError:
            pass
