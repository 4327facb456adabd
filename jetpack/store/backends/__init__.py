"""The storage backends (see :mod:`jetpack.store.backend`) and how one is chosen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from jetpack._lazy import lazy_attributes
from jetpack.errors import StoreError
from jetpack.store.backend import Backend

if TYPE_CHECKING:
    from jetpack.config import Config
    from jetpack.store.backends.copy import CopyBackend
    from jetpack.store.backends.overlay import OverlayBackend
    from jetpack.store.backends.zfs import ZFSBackend

__all__ = [
    "Backend",
    "CopyBackend",
    "OverlayBackend",
    "ZFSBackend",
    "default_backend",
    "make_backend",
]

PROC_FILESYSTEMS = Path("/proc/filesystems")


def kernel_has_overlay(filesystems: Path = PROC_FILESYSTEMS) -> bool:
    """Whether the kernel lists ``overlay`` in ``/proc/filesystems``."""
    try:
        text = filesystems.read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())


def default_backend(euid: int | None = None, has_overlay: bool | None = None) -> str:
    """``overlay`` for root on a kernel with overlayfs, else ``copy``."""
    euid = os.geteuid() if euid is None else euid
    has_overlay = kernel_has_overlay() if has_overlay is None else has_overlay
    return "overlay" if euid == 0 and has_overlay else "copy"


def make_backend(config: Config) -> Backend:
    """The backend ``config.storage.backend`` names, or the host's default."""
    name = config.storage.backend or default_backend()
    if name == "copy":
        from jetpack.store.backends.copy import CopyBackend

        return CopyBackend(config.data_dir)
    if name == "overlay":
        from jetpack.store.backends.overlay import OverlayBackend

        return OverlayBackend(config.data_dir)
    if name == "zfs":
        from jetpack.store.backends.zfs import ZFSBackend

        dataset = config.storage.zfs_dataset
        if not dataset:
            raise StoreError(
                "cannot use the zfs storage backend",
                "storage.zfs.dataset is not set",
                'set it in the configuration file, e.g. dataset = "tank/jetpack"',
            )
        mountpoint = config.storage.zfs_mountpoint or config.data_dir / "zfs"
        return ZFSBackend(dataset, mountpoint)
    raise StoreError(f"unknown storage backend {name!r}", hint="use overlay, zfs or copy")


# Each backend module is imported when it is chosen (or named, PEP 562): a pod start needs
# one backend, not the others' modules (the zfs wrapper, the mount table parser).
_MODULES = {
    "CopyBackend": "copy",
    "OverlayBackend": "overlay",
    "ZFSBackend": "zfs",
}

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, _MODULES, globals())
