"""Advisory file locks (flock) naming what they guard: ``locks/image-<id>``, ``locks/tree-<key>``.

flock locks die with their process, so a crash never leaves one held: recovery tells a live
operation from a dead one by trying the same lock without blocking. Readers (rendering
reads its chain's images, copying out reads a tree) take them shared, writers (import,
removal) exclusive; several locks are always taken in one order — image locks (sorted by
ID) before tree locks — so two processes never wait on each other.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from jetpack.errors import StoreError


class FileLock:
    """An exclusive (or shared) flock on one file, as a context manager."""

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = path
        self._shared = shared
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; False if ``blocking`` is off and someone else holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        op = fcntl.LOCK_SH if self._shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, op if blocking else op | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}", err.strerror or str(err)) from err
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def held_elsewhere(path: Path) -> bool:
    """Whether some other open file holds an flock on ``path`` (a file or directory):
    the liveness probe of whoever holds it. Never blocks; False when ``path`` is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # which also drops the shared lock, if we took it
    return False
