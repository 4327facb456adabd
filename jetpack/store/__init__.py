"""The local image store (content-addressed, SQLite-indexed) and its storage backends.

- ``db``: the SQLite index (schema, migrations, WAL settings).
- ``locks``: flock locks named after what they guard; crash recovery probes them.
- ``store``: :class:`Store` — import (one pass: blob + extraction + ID), lookup by ID,
  prefix or name and labels, dependency chains, rendering, removal, export, verify, GC.
- ``render``: merging layers into a tree (overwrite rules, symlinks replaced, whitelist).
- ``backend`` and ``backends/``: where trees live and how an app gets a rootfs from one
  (``copy``, ``overlay``, ``zfs``); ``zfs`` holds the thin typed wrapper around ``zfs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jetpack.config import Config
    from jetpack.store.store import Store


def open_store(config: Config) -> Store:
    """The store under ``config.data_dir``, with the configured backend."""
    from jetpack.aci import ExtractLimits
    from jetpack.store.backends import make_backend
    from jetpack.store.store import Store

    limits = ExtractLimits.from_config(config.aci)
    return Store(config.data_dir, make_backend(config), limits=limits)
