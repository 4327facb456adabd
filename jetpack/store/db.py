"""The store's SQLite index: schema, migrations, connection settings and error mapping.

WAL journal, so readers never wait for a writer; ``synchronous=NORMAL``, durable against a
process crash (a power cut may lose the last commits, never corrupt the file); foreign
keys on; a busy timeout so concurrent importers queue instead of failing. The schema
version lives in ``PRAGMA user_version``; each migration is one transaction.

Tables:
- ``images``: one row per published image; the row *is* the publication — blob and
  layer are renamed into place first, and without a row they are leftovers.
  ``layer_digest`` (v3) is the :func:`~jetpack.store.render.tree_digest` of the extracted
  layer's ``rootfs``, for ``verify``; NULL for images imported before v3.
- ``labels``: an image's labels, for lookups by name and labels.
- ``trees``: rendered trees: the chain of image IDs they render and their digest.
- ``remotes`` (v2): what was fetched from each URL and how fresh it is (ETag, max-age), for
  HTTP caching like rkt's: a fresh entry needs no request, a stale one a conditional GET.
- ``pending``: operations in progress (kinds ``import``, ``image``, ``render``, ``tree``).
  Written before the renames, deleted once the change is committed or undone: a row left
  behind whose lock no live process holds marks a crash, and recovery finishes or undoes
  what it names.

Every SQLite error goes through :class:`Database`, which turns it into a
:class:`~jetpack.errors.StoreError` saying what really happened: only a damaged file
(``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) gets "restore it from a backup"; a full disk, an
I/O error, a read-only or unopenable file each get their own message.

A data directory on a read-only file system (or one this user cannot write) is opened
read-only: ``mode=ro``, and ``immutable=1`` when SQLite's shared-memory file cannot be
created — only on a read-only file system, where nothing can change the index under us.
Listing and showing images work; anything that writes fails with "the image store is
read-only".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from jetpack.errors import StoreError

SCHEMA_VERSION = 3

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
    2: """
    CREATE TABLE remotes (
        url TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        etag TEXT,
        max_age INTEGER NOT NULL DEFAULT 0,
        no_store INTEGER NOT NULL DEFAULT 0,
        validated_at REAL NOT NULL,
        downloaded_at REAL NOT NULL
    );
    CREATE INDEX remotes_by_image ON remotes (image_id);
    """,
    3: """
    ALTER TABLE images ADD COLUMN layer_digest TEXT;
    """,
}


_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def store_error(err: sqlite3.Error, what: str, path: Path) -> StoreError:
    """The :class:`StoreError` for SQLite error ``err`` while doing ``what`` with ``path``."""
    name = getattr(err, "sqlite_errorname", "") or ""
    base = name.split("_", 2)[:2]
    kind = "_".join(base)  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if name in _DAMAGED or kind in _DAMAGED:
        return StoreError(
            what,
            f"the index is damaged ({err})",
            "restore it from a backup, or move it away to start an empty store",
        )
    if kind == "SQLITE_FULL":
        return StoreError(what, "the disk is full", f"free space on the file system of {path}")
    if kind == "SQLITE_IOERR":
        return StoreError(what, f"I/O error ({name})", "check the disk and the kernel log")
    if kind == "SQLITE_READONLY":
        return StoreError(
            what,
            "the image store is read-only",
            f"run as a user who may write {path.parent}, on a writable file system",
        )
    if kind in ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"):
        return StoreError(what, f"cannot open {path} ({err})", f"check the permissions of {path}")
    if kind in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return StoreError(what, "the index stayed locked by another process", "try again")
    return StoreError(what, f"{name or type(err).__name__}: {err}")


class Rows:
    """The rows a statement returned, fetched before :class:`Database` returns them."""

    def __init__(self, rows: list[sqlite3.Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[sqlite3.Row]:
        return list(self._rows)

    def __iter__(self) -> Iterator[sqlite3.Row]:
        return iter(self._rows)


Params = Sequence[object]


class Database:
    """The index's connection; every SQLite error leaves it as a :class:`StoreError`.

    Statements run in autocommit mode unless inside :meth:`transaction`. Not thread-safe.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = _connect(path, readonly=readonly)

    def execute(self, sql: str, params: Params = ()) -> Rows:
        try:
            cursor = self._conn.execute(sql, params)
            return Rows(cursor.fetchall(), cursor.rowcount)
        except sqlite3.Error as err:
            raise store_error(err, "cannot use the image index", self.path) from err

    def executemany(self, sql: str, params: Iterable[Params]) -> None:
        try:
            self._conn.executemany(sql, params)
        except sqlite3.Error as err:
            raise store_error(err, "cannot use the image index", self.path) from err

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any exception."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            with contextlib.suppress(StoreError):  # never mask the original error
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = None
    try:
        if readonly:
            conn = _connect_readonly(path)
        else:
            conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        if readonly:
            _migrate(conn, readonly=True)
        else:
            # Switching a new file to WAL returns SQLITE_BUSY at once, without the busy
            # handler, when another process is switching it too: set-up takes turns.
            with _setup_lock(path):
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                _migrate(conn, readonly=False)
    except BaseException as err:
        if conn is not None:
            conn.close()
        if isinstance(err, sqlite3.Error):
            raise store_error(err, f"cannot open the image index {path}", path) from err
        raise
    return conn


@contextlib.contextmanager
def _setup_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``<index>.setup-lock`` (never the index itself: closing any
    descriptor of the index would drop SQLite's own POSIX locks on it)."""
    lock = path.with_name(path.name + ".setup-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise StoreError(
            f"cannot open the image index {path}",
            f"cannot create {lock}: {err.strerror}",
            f"check the permissions of {path.parent}",
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = path.absolute().as_uri()
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA user_version")  # WAL needs its -shm file: fails here if absent
        return conn
    except sqlite3.OperationalError:
        if conn is not None:
            conn.close()
        if not os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            raise
    # A read-only file system without the -shm file: only an immutable open is left, and
    # it is safe there — nothing can write through a read-only file system. (A directory
    # we merely may not write is not: its owner may be writing the index right now.)
    return sqlite3.connect(
        f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False
    )


def connect(path: Path, *, readonly: bool = False) -> Database:
    """Open (creating and migrating as needed, unless ``readonly``) the index at ``path``.

    Raises:
        StoreError: the file is not a usable SQLite database, is newer than this Jetpack,
            or (read-only) older than it; the message says which.
    """
    return Database(path, readonly=readonly)


def _migrate(conn: sqlite3.Connection, *, readonly: bool) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            "cannot use the image index",
            f"its schema version {version} is newer than this Jetpack's ({SCHEMA_VERSION})",
            "upgrade Jetpack",
        )
    if readonly and version < SCHEMA_VERSION:
        raise StoreError(
            "cannot use the image index",
            f"its schema version {version} needs an upgrade, and the store is read-only",
            "run a jetpack command that may write it (e.g. jetpack init) once",
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
