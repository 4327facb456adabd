"""The ``overlay`` backend: each app rootfs is an overlayfs mount over the tree.

``app_dir/rootfs`` = overlay(lower = ``tree/rootfs``, upper = ``app_dir/upper``, work =
``app_dir/work``). Creation is one mount(2), whatever the tree's size; the app's writes and
deletions (whiteouts) land in ``upper`` and never touch the shared tree.

The kernel forbids changing a lower layer under a live overlay (the result is undefined),
so ``remove_tree`` refuses while an app rootfs uses the tree, as ZFS does for clones.
Paths must not contain ``,`` or ``:`` (the overlay option syntax).
"""

from __future__ import annotations

import os
from pathlib import Path

from jetpack.errors import StoreError
from jetpack.store.backends._dirtrees import DirectoryTrees, remove_tree_dir
from jetpack.syscalls import mount, unmount


def _option_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:\\\n"):
        raise StoreError(
            f"cannot use {text} in an overlay mount",
            "the path contains ',', ':' or '\\'",
            "choose a data directory without them",
        )
    return text


class OverlayBackend(DirectoryTrees):
    """Trees under ``<data_dir>/trees``; app rootfs = an overlay mount with the tree below."""

    name = "overlay"

    def create_rootfs(self, key: str, app_dir: Path) -> Path:
        lower = self.tree_path(key) / "rootfs"
        target = app_dir / "rootfs"
        upper, work = app_dir / "upper", app_dir / "work"
        if not lower.is_dir():
            raise StoreError(f"cannot create {target}", f"tree {key} does not exist")
        for path in (target, upper, work):
            if path.exists() or path.is_symlink():
                raise StoreError(f"cannot create {target}", f"{path} exists", "release it first")
        options = ",".join(
            [
                f"lowerdir={_option_path(lower)}",
                f"upperdir={_option_path(upper)}",
                f"workdir={_option_path(work)}",
            ]
        )
        try:
            # The merged root takes the upper directory's owner and mode: give it the tree's.
            st = lower.stat()
            for path in (target, upper, work):
                path.mkdir(mode=0o700)
            os.chown(upper, st.st_uid, st.st_gid)
            upper.chmod(st.st_mode & 0o7777)
            os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
            mount(f"jetpack-{key}", target, "overlay", options)
        except OSError as err:
            self.release_rootfs(app_dir)
            raise StoreError(f"cannot mount an overlay on {target}", str(err)) from err
        return target

    def release_rootfs(self, app_dir: Path) -> None:
        target = app_dir / "rootfs"
        try:
            unmount(target)
        except OSError as err:
            raise StoreError(f"cannot unmount {target}", str(err)) from err
        for path in (target, app_dir / "upper", app_dir / "work"):
            remove_tree_dir(path)

    def _users(self, key: str) -> list[str]:
        from jetpack.mountinfo import mounts  # only removal looks: not on the pod start path

        lower = str(self.tree_path(key) / "rootfs")
        return [
            str(m.target)
            for m in mounts()
            if m.fstype == "overlay" and lower in m.options.get("lowerdir", "").split(":")
        ]

    def tree_in_use(self, key: str) -> bool:
        return bool(self._users(key))

    def remove_tree(self, key: str) -> None:
        users = self._users(key)
        if users:
            raise StoreError(
                f"cannot remove tree {key}",
                f"app rootfs still mounted over it: {', '.join(users)}",
                "release those apps first",
            )
        super().remove_tree(key)
