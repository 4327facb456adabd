"""The ``zfs`` backend: trees are datasets sealed by ``@seal``, app rootfs are clones.

Datasets, with ``<ds>`` = ``storage.zfs.dataset`` and ``<mp>`` its mountpoint::

    <ds>                  mountpoint=<mp>
    <ds>/tmp/<token>      staging: <mp>/tmp/<token>/ is what staging_tree returns
    <ds>/trees/<key>      a published tree at <mp>/trees/<key>/, readonly, with @seal
    <ds>/rootfs/<hash>    an app's clone of <ds>/trees/<key>@seal; jetpack:app_dir=<app_dir>

A tree's dataset holds the whole tree directory (``rootfs/`` and the store's files beside
it), so a clone of it does too: the clone mounts at ``app_dir/.zfs`` and its ``rootfs/`` is
bind-mounted on ``app_dir/rootfs``. Both steps cost the same whatever the tree's size. The
clone's name is a hash of ``app_dir``, so ``release_rootfs`` finds it without any state.

Publishing unmounts the staging dataset, renames it under ``trees/`` (zfs-fuse cannot
rename a mounted file system), mounts it, snapshots ``@seal`` and sets ``readonly=on``. A
tree without ``@seal`` was interrupted half-way: it does not count as published, and the
next publish of that key replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

from jetpack.errors import CommandError, StoreError
from jetpack.mountinfo import is_mountpoint
from jetpack.store.backend import Backend
from jetpack.store.zfs import Dataset, list_datasets
from jetpack.syscalls import MS_BIND, mount, unmount

SEAL = "seal"
APP_DIR_PROP = "jetpack:app_dir"
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def _component(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise StoreError(f"invalid {kind} {name!r}", "not usable in a ZFS dataset name")
    return name


def _remove_mountpoint(path: Path) -> None:
    """Remove the empty directory a destroyed dataset was mounted on, if it is there."""
    with contextlib.suppress(OSError):  # gone, not empty, or a file: leave it
        path.rmdir()


def _zfs_error(what: str, err: CommandError) -> StoreError:
    why = err.stderr.strip().splitlines()[-1] if err.stderr.strip() else str(err)
    return StoreError(what, why)


class ZFSBackend(Backend):
    """Trees and app rootfs as ZFS datasets under one parent dataset."""

    name = "zfs"

    def __init__(self, dataset: str, mountpoint: Path) -> None:
        self.root = Dataset(dataset)
        self.mountpoint = mountpoint
        self.trees = self.root / "trees"
        self.tmp = self.root / "tmp"
        self.rootfs = self.root / "rootfs"

    # -- setup ------------------------------------------------------------------------

    def init(self) -> None:
        try:
            pool = self.root.pool
            if not pool.exists():
                raise StoreError(
                    f"cannot initialise ZFS storage {self.root.name}",
                    f"pool {pool.name!r} does not exist",
                    "create it with zpool create, or set storage.zfs.dataset",
                )
            if not self.root.exists():
                self.root.create(parents=True, mountpoint=self.mountpoint)
            elif self.root.mountpoint != self.mountpoint:
                raise StoreError(
                    f"cannot use ZFS dataset {self.root.name}",
                    f"it mounts at {self.root.get('mountpoint')}, not {self.mountpoint}",
                    f"set storage.zfs.mountpoint, or zfs set mountpoint={self.mountpoint}",
                )
            for child in (self.trees, self.tmp):
                if not child.exists():
                    child.create()
            if not self.rootfs.exists():
                self.rootfs.create(mountpoint="none")
        except CommandError as err:
            raise _zfs_error(f"cannot initialise ZFS storage {self.root.name}", err) from err

    # -- trees ------------------------------------------------------------------------

    def _staging(self, token: str) -> Dataset:
        return self.tmp / _component("staging token", token)

    def _tree(self, key: str) -> Dataset:
        return self.trees / _component("tree key", key)

    def staging_tree(self, token: str) -> Path:
        staging = self._staging(token)
        try:
            staging.create(mountpoint=self.mountpoint / "tmp" / token)
        except CommandError as err:
            raise _zfs_error(f"cannot create staging dataset {staging.name}", err) from err
        return self.mountpoint / "tmp" / token

    def publish_tree(self, token: str, key: str) -> Path:
        staging, tree = self._staging(token), self._tree(key)
        what = f"cannot publish tree {key}"
        try:
            if tree.exists():
                if SEAL in tree.snapshots():
                    raise StoreError(what, f"dataset {tree.name} exists", "the store is damaged")
                tree.destroy(recursive=True)  # an interrupted publish
            if staging.mounted:
                staging.unmount()
            staging.rename(tree)
            tree.set("mountpoint", self.tree_path(key))
            if not tree.mounted:
                tree.mount()
            tree.snapshot(SEAL)
            tree.set("readonly", True)
        except CommandError as err:
            raise _zfs_error(what, err) from err
        return self.tree_path(key)

    def discard_staging(self, token: str) -> None:
        staging = self._staging(token)
        try:
            if staging.exists():
                staging.destroy(recursive=True)
            _remove_mountpoint(self.mountpoint / "tmp" / token)
        except CommandError as err:
            raise _zfs_error(f"cannot discard staging dataset {staging.name}", err) from err

    def staging_tokens(self) -> list[str]:
        return sorted(d.basename for d in self.tmp.children())

    def tree_path(self, key: str) -> Path:
        return self.mountpoint / "trees" / _component("tree key", key)

    def has_tree(self, key: str) -> bool:
        return Dataset(f"{self._tree(key).name}@{SEAL}").exists()

    def tree_keys(self) -> list[str]:
        rows = list_datasets(self.trees.name, depth=2, kind="snapshot")
        prefix, suffix = self.trees.name + "/", "@" + SEAL
        return sorted(
            row[0][len(prefix) : -len(suffix)]
            for row in rows
            if row[0].startswith(prefix) and row[0].endswith(suffix)
        )

    def _users(self, key: str) -> list[str]:
        """The app directories (or clone names) of the clones of tree ``key``'s seal."""
        seal = f"{self._tree(key).name}@{SEAL}"
        return [
            app if app not in ("", "-") else name
            for name, origin, app in list_datasets(
                self.rootfs.name, ("name", "origin", APP_DIR_PROP), depth=1
            )
            if origin == seal
        ]

    def tree_in_use(self, key: str) -> bool:
        try:
            return bool(self._users(key))
        except CommandError as err:
            raise _zfs_error(f"cannot list the clones of tree {key}", err) from err

    def remove_tree(self, key: str) -> None:
        tree = self._tree(key)
        what = f"cannot remove tree {key}"
        try:
            if not tree.exists():
                _remove_mountpoint(self.tree_path(key))
                return
            users = self._users(key)
            if users:
                raise StoreError(
                    what,
                    f"app rootfs cloned from it still exist: {', '.join(users)}",
                    "release those apps first",
                )
            tree.destroy(recursive=True)
        except CommandError as err:
            raise _zfs_error(what, err) from err
        _remove_mountpoint(self.tree_path(key))

    # -- app rootfs -------------------------------------------------------------------

    def _clone(self, app_dir: Path) -> Dataset:
        digest = hashlib.sha256(str(app_dir.absolute()).encode()).hexdigest()[:32]
        return self.rootfs / digest

    def create_rootfs(self, key: str, app_dir: Path) -> Path:
        tree, clone = self._tree(key), self._clone(app_dir)
        target, clone_dir = app_dir / "rootfs", app_dir / ".zfs"
        what = f"cannot create {target}"
        if not self.has_tree(key):
            raise StoreError(what, f"tree {key} does not exist")
        if clone.exists() or target.exists() or target.is_symlink():
            raise StoreError(what, "it already exists", "release it first")
        try:
            tree.clone(
                SEAL,
                clone,
                mountpoint=clone_dir,
                readonly=False,
                **{APP_DIR_PROP: str(app_dir.absolute())},
            )
            target.mkdir(mode=0o700)
            mount(str(clone_dir / "rootfs"), target, "none", flags=MS_BIND)
        except (OSError, CommandError) as err:
            self.release_rootfs(app_dir)
            if isinstance(err, CommandError):
                raise _zfs_error(what, err) from err
            raise StoreError(what, str(err)) from err
        return target

    def release_rootfs(self, app_dir: Path) -> None:
        target, clone_dir, clone = app_dir / "rootfs", app_dir / ".zfs", self._clone(app_dir)
        try:
            unmount(target)
            if clone.exists():
                clone.destroy()
            if is_mountpoint(clone_dir):  # a clone destroyed behind our back
                unmount(clone_dir)
        except CommandError as err:
            raise _zfs_error(f"cannot release {target}", err) from err
        except OSError as err:
            raise StoreError(f"cannot release {target}", str(err)) from err
        for path in (target, clone_dir):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
