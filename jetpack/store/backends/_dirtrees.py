"""Trees as plain directories, shared by the ``copy`` and ``overlay`` backends.

``<data_dir>/trees/<key>/`` holds a published tree, ``<data_dir>/tmp/render-<token>/`` a
staging area on the same file system, so publishing is one ``rename(2)``: a crash leaves
either the staging area (removed by recovery) or the whole tree, never half of one.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from jetpack.errors import StoreError
from jetpack.store.backend import Backend
from jetpack.store.durable import fsync_dir, syncfs

STAGING_PREFIX = "render-"


def check_name(kind: str, name: str) -> str:
    """``name`` as one safe path component, or StoreError (a caller's bug)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise StoreError(f"invalid {kind} {name!r}", "not a plain file name")
    return name


def remove_tree_dir(path: Path) -> None:
    """``rm -rf path``: never follows symlinks, any depth, read-only directories included."""
    from jetpack.aci.extract import remove_tree  # not at the top: the tar codec comes with it

    remove_tree(path)


class DirectoryTrees(Backend):
    """Tree management for backends whose trees are directories under ``data_dir``."""

    trees_share_layers = True  # rendered by hard links from layers on the same file system

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.trees = data_dir / "trees"
        self.tmp = data_dir / "tmp"

    def init(self) -> None:
        for path in (self.data_dir, self.trees, self.tmp):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _staging(self, token: str) -> Path:
        return self.tmp / (STAGING_PREFIX + check_name("staging token", token))

    def staging_tree(self, token: str) -> Path:
        path = self._staging(token)
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            raise StoreError(
                f"cannot create staging area {path}", "it already exists", "tokens must be unique"
            ) from None
        return path

    def publish_tree(self, token: str, key: str) -> Path:
        staging = self._staging(token)
        target = self.tree_path(key)
        if target.exists() or target.is_symlink():
            raise StoreError(
                f"cannot publish tree {key}", f"{target} already exists", "the store is damaged"
            )
        if not staging.is_dir():
            raise StoreError(f"cannot publish tree {key}", f"no staging area {staging}")
        syncfs(staging)
        try:
            staging.rename(target)
        except OSError as err:
            raise StoreError(
                f"cannot publish tree {key}", f"rename to {target}: {err.strerror}"
            ) from err
        fsync_dir(self.trees)
        return target

    def discard_staging(self, token: str) -> None:
        remove_tree_dir(self._staging(token))

    def staging_tokens(self) -> list[str]:
        if not self.tmp.is_dir():
            return []
        return sorted(
            p.name[len(STAGING_PREFIX) :]
            for p in self.tmp.iterdir()
            if p.name.startswith(STAGING_PREFIX)
        )

    def tree_path(self, key: str) -> Path:
        return self.trees / check_name("tree key", key)

    def has_tree(self, key: str) -> bool:
        return self.tree_path(key).is_dir()

    def tree_keys(self) -> list[str]:
        if not self.trees.is_dir():
            return []
        return sorted(p.name for p in self.trees.iterdir() if p.is_dir())

    def tree_in_use(self, key: str) -> bool:
        return False

    def remove_tree(self, key: str) -> None:
        # Moved aside first, so a crash half-way leaves a staging area, never a
        # half-deleted tree under its key; recovery calls remove_tree again, which sweeps it.
        path = self.tree_path(key)
        try:
            if path.exists() or path.is_symlink():
                doomed = self._staging(f"removed-{key}-{uuid.uuid4().hex}")
                path.rename(doomed)
            for leftover in self.tmp.glob(f"{STAGING_PREFIX}removed-{key}-*"):
                remove_tree_dir(leftover)
        except OSError as err:
            raise StoreError(f"cannot remove tree {key}", err.strerror or str(err)) from err
