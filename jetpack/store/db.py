"""The store's SQLite index: schema, migrations and connection settings.

WAL journal, so readers never wait for a writer; ``synchronous=NORMAL``, durable against a
process crash (a power cut may lose the last commits, never corrupt the file); foreign
keys on; a busy timeout so concurrent importers queue instead of failing. The schema
version lives in ``PRAGMA user_version``; each migration is one transaction.

Tables:
- ``images``: one row per published image; the row *is* the publication — blob and
  layer are renamed into place first, and without a row they are leftovers.
- ``labels``: an image's labels, for lookups by name and labels.
- ``trees``: rendered trees: the chain of image IDs they render and their digest.
- ``pending``: publications in progress (kind ``image`` or ``tree``). Written before the
  renames, deleted in the publishing transaction: a row left behind whose lock no live
  process holds marks a crash, and recovery removes what it names.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jetpack.errors import StoreError

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        manifest BLOB NOT NULL,
        compression TEXT NOT NULL,
        compressed_size INTEGER NOT NULL,
        uncompressed_size INTEGER NOT NULL,
        imported_at REAL NOT NULL,
        last_used_at REAL NOT NULL,
        source TEXT NOT NULL,
        latest INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX images_by_name ON images (name);
    CREATE TABLE labels (
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (image_id, name)
    );
    CREATE TABLE trees (
        key TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        chain TEXT NOT NULL,
        backend TEXT NOT NULL,
        digest TEXT NOT NULL,
        files INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL NOT NULL
    );
    CREATE INDEX trees_by_image ON trees (image_id);
    CREATE TABLE tree_images (
        key TEXT NOT NULL REFERENCES trees (key) ON DELETE CASCADE,
        image_id TEXT NOT NULL,
        PRIMARY KEY (key, image_id)
    );
    CREATE INDEX tree_images_by_image ON tree_images (image_id);
    CREATE TABLE pending (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (kind, key)
    );
    """,
}


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the index at ``path``.

    Raises:
        StoreError: the file is not a usable SQLite database, or is newer than this Jetpack.
    """
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn)
    except sqlite3.DatabaseError as err:
        raise StoreError(
            f"cannot open the image index {path}",
            str(err),
            "restore it from a backup, or move it away to start an empty store",
        ) from err
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            "cannot use the image index",
            f"its schema version {version} is newer than this Jetpack's ({SCHEMA_VERSION})",
            "upgrade Jetpack",
        )
    while version < SCHEMA_VERSION:
        version += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                conn.execute("ROLLBACK")
                continue
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
