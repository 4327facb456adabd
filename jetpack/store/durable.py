"""Making renames and new files survive a power cut: ``syncfs`` and directory ``fsync``.

Publishing something is "write it in staging, flush it, rename it into place, flush the
directory that now names it, then commit the row". Flushing a staging directory holding
thousands of files is one ``syncfs(2)`` of its file system (one call, whatever the count;
it also flushes unrelated dirty data on that file system, which on a busy disk costs more
than the files themselves). Python has no ``os.syncfs``, so it is called through libc.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from jetpack.errors import StoreError

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the whole file system holding ``path`` to stable storage.

    Raises:
        StoreError: the flush failed (an I/O error: what was written may be lost).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise StoreError(f"cannot flush {path}", err.strerror or str(err)) from err
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise StoreError(f"cannot flush {path}", os.strerror(code), "check the disk")
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush directory ``path``'s entries (so a rename into it survives a power cut).

    Raises:
        StoreError: the directory cannot be opened or flushed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StoreError(f"cannot flush {path}", err.strerror or str(err)) from err
