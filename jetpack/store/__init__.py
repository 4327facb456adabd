"""The local image store (content-addressed, SQLite-indexed) and its storage backends.

- ``db``: the SQLite index (schema, migrations, WAL settings, SQLite errors as StoreError).
- ``locks``: flock locks named after what they guard; crash recovery probes them.
- ``durable``: ``syncfs`` and directory ``fsync``, so published files survive a power cut.
- ``store``: :class:`Store` — import (one pass: blob + extraction + ID), lookup by ID,
  prefix or name and labels, dependency chains, rendering, removal, export, copy-out,
  verify, GC, crash recovery.
- ``render``: merging layers into a tree (overwrite rules, symlinks replaced, whitelist).
- ``backend`` and ``backends/``: where trees live and how an app gets a rootfs from one
  (``copy``, ``overlay``, ``zfs``); ``zfs`` holds the thin typed wrapper around ``zfs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jetpack.config import Config
    from jetpack.store.store import Store


def open_store(config: Config, *, create: bool = True) -> Store:
    """The store under ``config.data_dir``, with the configured backend.

    ``create=False`` (commands that only use a store): a missing store is a StoreError
    saying so, and no directory is created.
    """
    from jetpack.aci.limits import ExtractLimits
    from jetpack.store.backends import make_backend
    from jetpack.store.store import Store

    limits = ExtractLimits.from_config(config.aci)
    return Store(config.data_dir, make_backend(config), limits=limits, create=create)
