"""Where rendered trees live and how a pod's app gets its own rootfs from one.

A *tree* is the rendered filesystem of one dependency chain: ``tree_path(key)/rootfs/``.
Trees are immutable once published and shared by every pod using the chain. A backend
hands each app of a pod a private, writable rootfs made from a tree, and takes it back:

- ``copy``: trees are directories; an app rootfs is a full copy (reflinks where the file
  system has them). Works anywhere.
- ``overlay``: trees are directories; an app rootfs is an overlay mount with the tree as
  its read-only lower layer and upper/work directories beside it. O(1) per app.
- ``zfs``: each tree is a dataset sealed by an ``@seal`` snapshot and set read-only; an app
  rootfs is a clone of that snapshot. O(1) per app.

Publishing is atomic: a tree is rendered into a *staging* area (``staging_tree``) and only
``publish_tree`` makes it visible under its key — a rename, or for ZFS a dataset rename
plus the seal snapshot. The backend keeps no record of its own: the store writes a
``pending`` row naming the staging token before ``staging_tree`` and the key before
``publish_tree`` or ``remove_tree``, and its recovery (on open) calls ``discard_staging``
or ``remove_tree`` for each row a crash left. Both must therefore be idempotent and cope
with whatever half-state a crash inside them leaves.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar


class Backend(abc.ABC):
    """The storage backend interface shared by ``copy``, ``overlay`` and ``zfs``."""

    name: ClassVar[str]
    # Whether published trees share their files with the store's extracted layers (hard
    # links: ``copy`` and ``overlay``) or hold copies of them (``zfs``), for store sizes.
    trees_share_layers: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self) -> None:
        """Create what the backend needs (directories, datasets). Idempotent."""

    @abc.abstractmethod
    def staging_tree(self, token: str) -> Path:
        """Create an empty staging directory for a tree being rendered; return its path.

        ``token`` is unique per render (the caller holds a lock named after it).
        """

    @abc.abstractmethod
    def publish_tree(self, token: str, key: str) -> Path:
        """Atomically turn staging ``token`` into the tree ``key``; return ``tree_path(key)``.

        Raises:
            StoreError: a tree ``key`` already exists (the caller holds the key's lock and
                checks first, so this means the store is damaged).
        """

    @abc.abstractmethod
    def discard_staging(self, token: str) -> None:
        """Remove staging ``token`` and everything in it; no error if it is gone."""

    @abc.abstractmethod
    def staging_tokens(self) -> list[str]:
        """Tokens of every staging area present (for crash recovery)."""

    @abc.abstractmethod
    def tree_path(self, key: str) -> Path:
        """The directory holding the tree's ``rootfs/`` (it may not exist)."""

    @abc.abstractmethod
    def has_tree(self, key: str) -> bool:
        """Whether tree ``key`` is published."""

    @abc.abstractmethod
    def tree_keys(self) -> list[str]:
        """Keys of every published tree."""

    @abc.abstractmethod
    def tree_in_use(self, key: str) -> bool:
        """Whether an app rootfs made from tree ``key`` still exists, so it cannot be removed.

        ``copy`` rootfs are independent copies (always False); an overlay mount keeps its
        lower layer, a ZFS clone its origin.
        """

    @abc.abstractmethod
    def remove_tree(self, key: str) -> None:
        """Remove tree ``key``; no error if it is gone.

        Raises:
            StoreError: an app rootfs made from it still exists (``tree_in_use``), or the
                removal failed; the tree is then still published, or entirely gone.
        """

    @abc.abstractmethod
    def create_rootfs(self, key: str, app_dir: Path) -> Path:
        """Give an app its own writable rootfs made from tree ``key``: ``app_dir/rootfs``.

        ``app_dir`` exists and is private to the app (inside the pod's directory).
        """

    @abc.abstractmethod
    def release_rootfs(self, app_dir: Path) -> None:
        """Undo ``create_rootfs(…, app_dir)``: unmount / destroy / delete. Idempotent."""
