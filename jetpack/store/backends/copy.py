"""The ``copy`` backend: each app rootfs is a full copy of the tree.

Works on any file system and without root. The copy is ``cp -a --reflink=auto``: owners,
modes (setuid included), timestamps, extended attributes, hard links, symlinks, device
nodes and FIFOs are kept, and on file systems with reflinks (btrfs, XFS) data blocks are
shared until written. Cost is proportional to the tree's size.
"""

from __future__ import annotations

from pathlib import Path

from jetpack.command import run
from jetpack.errors import CommandError, StoreError
from jetpack.store.backends._dirtrees import DirectoryTrees, remove_tree_dir


class CopyBackend(DirectoryTrees):
    """Trees under ``<data_dir>/trees``; app rootfs = ``cp -a`` of the tree's ``rootfs``."""

    name = "copy"

    def create_rootfs(self, key: str, app_dir: Path) -> Path:
        source = self.tree_path(key) / "rootfs"
        target = app_dir / "rootfs"
        if not source.is_dir():
            raise StoreError(f"cannot create {target}", f"tree {key} does not exist")
        if target.exists() or target.is_symlink():
            raise StoreError(f"cannot create {target}", "it already exists", "release it first")
        try:
            run(["cp", "-a", "--reflink=auto", "--no-target-directory", str(source), str(target)])
        except CommandError as err:
            remove_tree_dir(target)
            raise StoreError(f"cannot create {target}", str(err)) from err
        return target

    def release_rootfs(self, app_dir: Path) -> None:
        remove_tree_dir(app_dir / "rootfs")
