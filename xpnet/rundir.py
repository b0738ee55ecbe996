"""The output directory of a training run: one writer, nothing overwritten silently.

Rules of this module:

* A run takes the directory's lock before anything is written and gives it back
  at the end: an OS lock (``fcntl.flock``) on ``.xpnet.lock``, which holds the
  writer's pid for the message. The kernel releases it when the process ends,
  however it ends: a second run is refused while the first lives, and never
  after. Two runs never write one directory.
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
        if resume and force:
            raise RunDirectoryError(
                "--resume continues the run in --out and --force replaces it: give one"
            )
        self.path = Path(path)
        self.outputs = tuple(outputs)
        self.resume = resume
        self.force = force
        self._lock = self.path / LOCK
        self._fd = None  # the open, locked lock file while the run holds it
        self._created = False  # this run made the directory
        self.replaced = []  # an earlier run's outputs removed because of ``force``

    def __enter__(self) -> RunDirectory:
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is a file, not a directory")
        self._created = not path.exists()
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

    def __exit__(self, kind, *exc) -> None:
        self._release()
        if kind is not None and self._created:
            # a run that failed before writing anything leaves no directory behind
            try:
                self.path.rmdir()  # only if empty
            except OSError:
                pass

    def _take_lock(self) -> None:
        """An OS lock (``flock``) on ``.xpnet.lock``, held for the run: the kernel
        releases it when the process ends however it ends, so there is no stale
        lock to judge by pid (and no pid reuse to be fooled by)."""
        import fcntl  # POSIX: xpnet's run directories need it

        for _ in range(3):
            try:
                fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunDirectoryError(
                    f"--out {self.path} is not writable ({exc.strerror or exc})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                if holder == str(os.getpid()):
                    raise RunDirectoryError(
                        f"--out {self.path} is already open in this process: pass the open "
                        "RunDirectory instead of its path"
                    ) from None
                raise RunDirectoryError(
                    f"--out {self.path} is being written by another xpnet run "
                    f"(pid {holder or '?'}); wait for it or use another --out"
                ) from None
            # its last holder may have removed the file after we opened it: a lock
            # on a file no longer at the path locks nothing
            try:
                current = os.stat(self._lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise RunDirectoryError(f"--out {self.path}: could not take its lock {self._lock}")

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self._lock.unlink()  # while still holding it: the next run starts afresh
        except OSError:
            pass
        os.close(fd)  # releases the lock
