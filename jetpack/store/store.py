"""The image store: content-addressed blobs and layers, a SQLite index, rendered trees.

Theory of operation
-------------------
Importing is one pass over the ACI stream: the bytes as received go to a blob file in a
staging directory (``tee``), the uncompressed stream through SHA-512 and the safe extractor
into a layer directory beside it. Only then is the image ID known. The layer is digested
(for ``verify``), the staging directory's file system flushed (``syncfs``), and publishing
takes the image's lock, records the intent (a ``pending`` row), renames blob and layer
into place, flushes the directories that now name them and commits the image row — the
row is the publication. A second importer of the same image waits on the lock, finds the
row, and discards its staging: both succeed, one copy is stored.

A crash (kill -9, power cut) at any point leaves what a ``pending`` row names, each row
guarded by a lock its live owner holds; opening the store finishes or undoes every row
whose lock is free. When nothing crashed the table is empty and recovery costs one query.

============  ======================  ==========================================
kind          written                 recovery (owner dead)
============  ======================  ==========================================
``import``    before extracting       remove ``tmp/import-<token>``
``image``     before the renames      no row: remove blob and layer; else done
              / the row's deletion
``render``    before staging          discard the backend's staging area
``tree``      before publish /        no row: remove the tree (render died after
              removal of a tree       publishing); row but no tree: delete the row
                                      (removal died after removing); both: keep
============  ======================  ==========================================

A row recovery cannot handle (an app rootfs still uses the tree it would remove) is kept,
logged, and tried again on the next open; it never stops the store from opening.

Rendering resolves the dependency chain (post-order, depth-first in list order, each
image once), takes *shared* locks on every image of the chain (sorted by ID) and then the
tree's lock, renders into a backend staging area and publishes it under a key derived
from the chain's image IDs; one tree serves every pod that uses the chain. Removal takes
the image's lock *exclusively* and then the locks of the trees rendering it: the same
order, so the two never deadlock, and an image cannot disappear under a render.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from jetpack.command import run
from jetpack.errors import ACIError, ManifestError, StoreError
from jetpack.log import get_logger
from jetpack.schema import Dependency, ImageManifest, parse_image_manifest
from jetpack.schema.types import short_id, validate_image_id_prefix
from jetpack.store.backend import Backend
from jetpack.store.db import Database, connect
from jetpack.store.durable import fsync_dir, syncfs
from jetpack.store.locks import FileLock

if TYPE_CHECKING:
    from jetpack.aci.options import ACIInfo, ExtractLimits
    from jetpack.store.render import DigestAlgorithm, TreeDigest

# Starting a pod opens the store and finds (or renders) its tree: that path must not load
# what it does not use. Archives (jetpack.aci's tar codec and compressors) are imported by
# the methods that import, remove, export or verify images, and jetpack.store.render by
# those that render or digest a tree.

log = get_logger(__name__)

_PREFIX_HINT = "give more digits of the ID, or the image name"
_VERIFY_HINT = "run 'jetpack image verify'"
# Locks named by a one-time token can be deleted after use. Locks named by an image ID or a
# tree key never are: a waiter would hold the unlinked file while a newcomer locks a new one.
_TOKEN_KINDS = frozenset({"import", "render"})
# A token lock file this old whose lock is free has no live owner: owners lock the file
# right after creating it. GC deletes such files (a crash before the pending row leaks them).
_LOCK_SWEEP_AGE = 60.0
# Layers are digested at import, on its critical path: SHA-256 hashes about three times as
# fast as SHA-512 on CPUs with SHA extensions.
_LAYER_DIGEST: DigestAlgorithm = "sha256"
# How often render re-resolves a chain whose images were removed while it waited.
_RENDER_ATTEMPTS = 3


@dataclass(frozen=True)
class ImageRecord:
    """One stored image, as the index knows it."""

    id: str
    name: str
    labels: tuple[tuple[str, str], ...]
    manifest_bytes: bytes
    compression: str
    compressed_size: int
    uncompressed_size: int
    imported_at: float
    last_used_at: float
    source: str
    latest: bool
    layer_digest: str | None = None  # None: imported before the index recorded it

    @cached_property
    def manifest(self) -> ImageManifest:
        return parse_image_manifest(self.manifest_bytes)

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def short_id(self) -> str:
        return short_id(self.id)


@dataclass(frozen=True)
class TreeRecord:
    """A rendered tree: the chain it renders (in render order) and where it is."""

    key: str
    image_id: str
    chain: tuple[str, ...]
    backend: str
    digest: str
    files: int
    size: int
    created_at: float
    last_used_at: float
    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def short_key(self) -> str:
        return self.key[: len("deps-") + 12]


@dataclass(frozen=True)
class ImportResult:
    """What an import gave: the image, and whether it is new to the store."""

    image: ImageRecord
    new: bool


@dataclass(frozen=True)
class Problem:
    """Damage found by :meth:`Store.verify`: what is damaged and how."""

    subject: str
    problem: str


@dataclass(frozen=True)
class Remote:
    """What a URL gave last time: the image, its validator and how long it stays fresh."""

    url: str
    image_id: str
    etag: str | None
    max_age: int
    no_store: bool
    validated_at: float
    downloaded_at: float

    def fresh(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.validated_at + self.max_age


@dataclass(frozen=True)
class Summary:
    """The store in numbers, for ``jetpack info``."""

    backend: str
    images: int
    trees: int
    # Bytes of blobs and extracted layers, plus rendered trees where the backend stores
    # them as copies (zfs); copy/overlay trees hard-link the layers' files and add nothing.
    size: int


@dataclass
class GCReport:
    """What :meth:`Store.gc` removed, what it had to keep, and which leftovers it swept."""

    trees: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "what: why", one line each
    swept: list[str] = field(default_factory=list)  # leftover files, relative to data_dir


def tree_key(chain: Sequence[str]) -> str:
    """The key of the tree rendering ``chain`` (image IDs in render order)."""
    return "deps-" + hashlib.sha512("\n".join(chain).encode()).hexdigest()[:64]


def _writable_dir(path: Path) -> bool:
    try:
        return os.access(path, os.W_OK) and not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return False


class Store:
    """The image store under one data directory. Not thread-safe; cheap to open.

    Args:
        create: create the data directory and index if missing (``fetch``, ``init``);
            without it a missing store is a :class:`StoreError` and nothing is created.

    A data directory this process cannot write (a read-only file system) is opened
    read-only: lookups work, every change fails with "the image store is read-only".
    """

    def __init__(
        self,
        data_dir: Path,
        backend: Backend,
        *,
        limits: ExtractLimits | None = None,
        create: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.backend = backend
        if limits is None:
            from jetpack.aci.limits import ExtractLimits

            limits = ExtractLimits()
        self.limits = limits
        self.blobs = data_dir / "blobs" / "sha512"
        self.layers = data_dir / "layers"
        self.tmp = data_dir / "tmp"
        self.locks = data_dir / "locks"
        index = data_dir / "store.db"
        if not create and not index.is_file():
            raise StoreError(f"no store at {data_dir}", None, "run jetpack init, or fetch an image")
        self.readonly = data_dir.is_dir() and not _writable_dir(data_dir)
        if not self.readonly:
            try:
                for directory in (self.blobs, self.layers, self.tmp, self.locks):
                    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as err:
                raise StoreError(
                    f"cannot use the data directory {data_dir}",
                    err.strerror or str(err),
                    "run as root, or choose another with --dir",
                ) from err
        self.db: Database = connect(index, readonly=self.readonly)
        try:
            self.recover()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths and locks --------------------------------------------------------------

    def blob_path(self, ident: str) -> Path:
        digest = ident.removeprefix("sha512-")
        return self.blobs / digest[:2] / ident

    def layer_path(self, ident: str) -> Path:
        return self.layers / ident

    def _lock(self, kind: str, key: str, *, shared: bool = False) -> FileLock:
        return FileLock(self.locks / f"{kind}-{key}", shared=shared)

    @contextlib.contextmanager
    def _reading(self, kind: str, key: str) -> Iterator[None]:
        """A shared lock on ``kind-key`` (none on a read-only store: nothing changes there)."""
        if self.readonly:
            yield
            return
        with self._lock(kind, key, shared=True):
            yield

    @contextlib.contextmanager
    def _reading_images(self, ids: Collection[str]) -> Iterator[None]:
        """Shared locks on every image in ``ids``, taken in sorted order."""
        with contextlib.ExitStack() as stack:
            for ident in sorted(set(ids)):
                stack.enter_context(self._reading("image", ident))
            yield

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(
                what,
                f"the image store at {self.data_dir} is read-only",
                "run as a user who may write it, on a writable file system",
            )

    def _tx(self) -> contextlib.AbstractContextManager[Database]:
        return self.db.transaction()

    def _pending(self, kind: str, key: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO pending (kind, key, started_at) VALUES (?, ?, ?)",
            (kind, key, time.time()),
        )

    def _done(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM pending WHERE kind = ? AND key = ?", (kind, key))

    # -- recovery ---------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo what crashed operations left; returns what was cleaned, for the log.

        A row that cannot be handled now (an app rootfs still uses the tree it names) is
        logged and kept for the next open: it never stops the store from opening.
        """
        if self.readonly:
            return []
        cleaned: list[str] = []
        for row in self.db.execute("SELECT kind, key FROM pending").fetchall():
            kind, key = row["kind"], row["key"]
            lock = self._lock(kind, key)
            try:
                if not lock.acquire(blocking=False):
                    continue  # a live operation owns it
            except StoreError as err:
                log.warning("cannot recover %s %s: %s", kind, key, err)
                continue
            try:
                self._recover(kind, key)
                with self._tx():
                    self._done(kind, key)
                cleaned.append(f"{kind} {key}")
                log.debug("recovered %s %s", kind, key)
            except StoreError as err:
                log.warning("cannot recover %s %s yet: %s", kind, key, err)
            finally:
                lock.release()
                if kind in _TOKEN_KINDS:
                    with contextlib.suppress(FileNotFoundError):
                        lock.path.unlink()
        return cleaned

    def _recover(self, kind: str, key: str) -> None:
        if kind == "import":
            _remove(self.tmp / f"import-{key}")
        elif kind == "image":
            if not self._row_exists(key):
                self._remove_image_files(key)
        elif kind == "render":
            self.backend.discard_staging(key)
        elif kind == "tree":
            if self._tree_row(key) is None:
                self.backend.remove_tree(key)  # a render died after publishing it
            elif not self.backend.has_tree(key):
                # A removal died after removing the tree: finish it (and sweep its leftovers).
                self.backend.remove_tree(key)
                self.db.execute("DELETE FROM trees WHERE key = ?", (key,))
            # Row and tree both there: a removal died before it began. Nothing to undo.
        else:
            log.warning("unknown pending operation %s %s: dropped", kind, key)

    # -- import -----------------------------------------------------------------------

    def import_aci(
        self,
        src: BinaryIO,
        *,
        source: str,
        latest: bool = False,
        blob: Path | None = None,
        verify: Callable[[Path, ACIInfo], None] | None = None,
    ) -> ImportResult:
        """Import the ACI read from ``src`` (to its end); ``source`` says where it came from.

        Args:
            blob: a file under :meth:`download_path` that the caller fills with exactly the
                bytes ``src`` yields (a download written as it arrives, so that it can resume);
                it becomes the stored blob. Without it, the bytes are copied as read.
            verify: called with the complete blob and what the archive holds, after
                extraction and before anything is published; whatever it raises (a bad
                signature, an unexpected name) leaves the store unchanged.

        Raises:
            ACIError: the archive is invalid or hostile; nothing was stored.
            StoreError: the store cannot take it (disk full, damaged store).
        """
        import concurrent.futures

        from jetpack.aci.extract import extract_aci, remove_tree
        from jetpack.aci.options import ExtractOptions
        from jetpack.store.render import tree_digest

        self._writable("cannot import image")
        token = uuid.uuid4().hex
        staging = self.tmp / f"import-{token}"
        lock = self._lock("import", token)
        lock.acquire()
        try:
            self._pending("import", token)
            blob_file = blob if blob is not None else staging / "blob"
            try:
                staging.mkdir(mode=0o700)
                with contextlib.ExitStack() as stack:
                    tee = None if blob is not None else stack.enter_context(open(blob_file, "wb"))
                    info = extract_aci(
                        src, staging / "layer", options=ExtractOptions(limits=self.limits), tee=tee
                    )
            except OSError as err:
                raise StoreError(
                    "cannot import image", f"writing {blob_file}: {err.strerror or err}"
                ) from err
            # The layer's digest is computed while the signature is checked and the disk
            # flushed (both wait on other things than this process's CPU). Blob and layer
            # reach the disk before they are renamed into place and the row commits: after
            # a power cut, a published image is a whole image.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                rootfs = staging / "layer" / "rootfs"
                digesting = pool.submit(tree_digest, rootfs, algorithm=_LAYER_DIGEST)
                if verify is not None:
                    verify(blob_file, info)
                syncfs(staging)
                digest = digesting.result().digest
            return self._publish(
                info, staging, blob_file, source=source, latest=latest, layer_digest=digest
            )
        finally:
            with contextlib.suppress(OSError):  # never mask the import's own outcome
                remove_tree(staging)
            with contextlib.suppress(StoreError):  # else recovery drops the row later
                self._done("import", token)
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                lock.path.unlink()

    def download_path(self, key: str) -> Path:
        """Where a download named ``key`` (a hash of its URL) is kept until it completes.

        ``gc`` deletes such files (and ``<path>.json`` beside them) once they are older
        than its grace period and no process holds ``locks/download-<key>``.
        """
        return self.tmp / f"download-{key}"

    def _publish(
        self,
        info: ACIInfo,
        staging: Path,
        blob_file: Path,
        *,
        source: str,
        latest: bool,
        layer_digest: str,
    ) -> ImportResult:
        ident = info.image_id
        with self._lock("image", ident):
            existing = self.get(ident)
            if existing is not None:
                return ImportResult(existing, new=False)
            self._pending("image", ident)
            try:
                # Leftovers of a crashed import of this very image: no row, and we hold its lock.
                self._remove_image_files(ident)
                blob = self.blob_path(ident)
                try:
                    new_dir = not blob.parent.is_dir()
                    blob.parent.mkdir(exist_ok=True, mode=0o700)
                    blob_file.rename(blob)
                    (staging / "layer").rename(self.layer_path(ident))
                except OSError as err:
                    raise StoreError(
                        f"cannot publish image {short_id(ident)}", err.strerror or str(err)
                    ) from err
                fsync_dir(blob.parent)
                if new_dir:
                    fsync_dir(self.blobs)
                fsync_dir(self.layers)
                self._insert_image(info, source=source, latest=latest, layer_digest=layer_digest)
            except BaseException:
                with contextlib.suppress(StoreError):  # else recovery finishes the job
                    if not self._row_exists(ident):
                        self._remove_image_files(ident)
                    self._done("image", ident)
                raise
        record = self.get(ident)
        assert record is not None
        return ImportResult(record, new=True)

    def _insert_image(self, info: ACIInfo, *, source: str, latest: bool, layer_digest: str) -> None:
        ident = info.image_id
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO images (id, name, manifest, compression, compressed_size,"
                " uncompressed_size, imported_at, last_used_at, source, latest, layer_digest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    str(info.manifest.name),
                    info.manifest_bytes,
                    info.compression.value,
                    info.compressed_size,
                    info.uncompressed_size,
                    now,
                    now,
                    source,
                    int(latest),
                    layer_digest,
                ),
            )
            db.executemany(
                "INSERT INTO labels (image_id, name, value) VALUES (?, ?, ?)",
                [(ident, k, v) for k, v in info.manifest.labels.items()],
            )
            self._done("image", ident)

    # -- lookup -----------------------------------------------------------------------

    def _row_exists(self, ident: str) -> bool:
        return self.db.execute("SELECT 1 FROM images WHERE id = ?", (ident,)).fetchone() is not None

    def _record(self, row: sqlite3.Row) -> ImageRecord:
        labels = self.db.execute(
            "SELECT name, value FROM labels WHERE image_id = ? ORDER BY rowid", (row["id"],)
        ).fetchall()
        return ImageRecord(
            id=row["id"],
            name=row["name"],
            labels=tuple((lab["name"], lab["value"]) for lab in labels),
            manifest_bytes=bytes(row["manifest"]),
            compression=row["compression"],
            compressed_size=row["compressed_size"],
            uncompressed_size=row["uncompressed_size"],
            imported_at=row["imported_at"],
            last_used_at=row["last_used_at"],
            source=row["source"],
            latest=bool(row["latest"]),
            layer_digest=row["layer_digest"],
        )

    def get(self, ident: str) -> ImageRecord | None:
        row = self.db.execute("SELECT * FROM images WHERE id = ?", (ident,)).fetchone()
        return None if row is None else self._record(row)

    def images(self) -> list[ImageRecord]:
        rows = self.db.execute("SELECT * FROM images ORDER BY name, imported_at").fetchall()
        return [self._record(r) for r in rows]

    def by_prefix(self, prefix: str) -> ImageRecord:
        """The one image whose ID starts with ``prefix`` (``sha512-`` + at least 2 hex).

        Raises:
            StoreError: the prefix is too short or not hex, matches nothing, or several.
        """
        digits = prefix.removeprefix("sha512-")
        if len(digits) < 2 and all(c in "0123456789abcdef" for c in digits):
            raise StoreError(
                f"image ID {prefix!r} is too short",
                "give sha512- and at least 2 hex digits",
                _PREFIX_HINT,
            )
        try:
            validate_image_id_prefix(prefix)
        except ManifestError as err:
            raise StoreError(f"invalid image ID {prefix!r}", err.rule, _PREFIX_HINT) from None
        rows = self.db.execute(
            "SELECT * FROM images WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 6",
            (len(prefix), prefix),
        ).fetchall()
        if not rows:
            raise StoreError(
                f"no image {prefix}", "no stored image has this ID", "see jetpack image list"
            )
        if len(rows) > 1:
            shown = ", ".join(short_id(r["id"]) for r in rows[:5]) + (
                " ..." if len(rows) > 5 else ""
            )
            raise StoreError(f"ambiguous image ID {prefix}", f"it matches {shown}", _PREFIX_HINT)
        return self._record(rows[0])

    def resolve(self, ref: str) -> ImageRecord:
        """The image ``ref`` names: an ID, an ID prefix, or ``name[:version][,label=value]``.

        ``name:latest`` asks for no particular version (the image marked latest, else the
        newest import), as ``name`` does.

        Raises:
            StoreError: nothing or several images match.
            DiscoveryError: ``ref`` is not a valid app string.
        """
        if ref.startswith("sha512-"):
            return self.by_prefix(ref)
        # jetpack.discovery.appstring is pure (strings in, values out; no I/O, no HTTP), so
        # the store may use it although discovery sits beside fetch in the layering.
        from jetpack.discovery.appstring import host_labels, parse_app_string

        app = parse_app_string(ref)
        labels = dict(app.label_map)
        if labels.get("version") == "latest":
            del labels["version"]
        found = self.find(str(app.name), labels, defaults=host_labels())
        if found is None:
            raise StoreError(
                f"no image {ref} in the store", None, f"fetch it first: jetpack fetch {ref}"
            )
        return found

    def find(
        self, name: str, labels: Mapping[str, str], *, defaults: Mapping[str, str] | None = None
    ) -> ImageRecord | None:
        """The best image named ``name`` with every label in ``labels``.

        ``defaults`` (the host's os/arch) must match where the image has that label; an image
        without it is taken as fitting any. Without a requested ``version``, the image marked
        latest wins, else the newest import.
        """
        rows = self.db.execute(
            "SELECT * FROM images WHERE name = ? ORDER BY latest DESC, imported_at DESC", (name,)
        ).fetchall()
        for row in rows:
            record = self._record(row)
            have = dict(record.labels)
            if all(have.get(k) == v for k, v in labels.items()) and all(
                have.get(k, v) == v for k, v in (defaults or {}).items() if k not in labels
            ):
                return record
        return None

    # -- remote cache -----------------------------------------------------------------

    def remote(self, url: str) -> Remote | None:
        """The cache entry for ``url``, if its image is still stored."""
        row = self.db.execute(
            "SELECT r.* FROM remotes r JOIN images i ON i.id = r.image_id WHERE r.url = ?", (url,)
        ).fetchone()
        if row is None:
            return None
        return Remote(
            url=row["url"],
            image_id=row["image_id"],
            etag=row["etag"],
            max_age=row["max_age"],
            no_store=bool(row["no_store"]),
            validated_at=row["validated_at"],
            downloaded_at=row["downloaded_at"],
        )

    def record_remote(
        self,
        url: str,
        image_id: str,
        *,
        etag: str | None,
        max_age: int,
        no_store: bool,
        downloaded: bool,
    ) -> None:
        """Remember what ``url`` served (after a download, or a 304 that revalidated it)."""
        now = time.time()
        with self._tx() as db:
            previous = db.execute(
                "SELECT downloaded_at FROM remotes WHERE url = ?", (url,)
            ).fetchone()
            downloaded_at = now if downloaded or previous is None else previous[0]
            db.execute(
                "INSERT OR REPLACE INTO remotes (url, image_id, etag, max_age, no_store,"
                " validated_at, downloaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    url,
                    image_id,
                    None if no_store else etag,
                    max_age,
                    int(no_store),
                    now,
                    downloaded_at,
                ),
            )

    def mark_latest(self, image_id: str) -> None:
        """Mark ``image_id`` as the latest of its name (fetched without a version)."""
        with self._tx() as db:
            row = db.execute("SELECT name FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise StoreError(
                    f"cannot mark {short_id(image_id)} latest", "it is not in the store"
                )
            db.execute("UPDATE images SET latest = 0 WHERE name = ? AND latest = 1", (row[0],))
            db.execute("UPDATE images SET latest = 1 WHERE id = ?", (image_id,))

    def summary(self) -> Summary:
        images, size = self.db.execute(
            "SELECT count(*), coalesce(sum(compressed_size + uncompressed_size), 0) FROM images"
        ).fetchone()  # type: ignore[misc]
        trees, tree_size = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM trees"
        ).fetchone()  # type: ignore[misc]
        if not self.backend.trees_share_layers:
            size += tree_size
        return Summary(self.backend.name, images, trees, size)

    # -- dependencies and rendering ---------------------------------------------------

    def chain(self, ident: str) -> list[ImageRecord]:
        """The images to render for ``ident``, in order: dependencies depth-first, then it.

        Post-order over the dependency graph in list order, each image once, at its first
        place: A→[B, C], B→[D], C→[D] gives D, B, C, A (D is not rendered again over B).

        Raises:
            StoreError: dependencies are missing (each one named), mismatch their imageID,
                or form a cycle.
        """
        top = self.get(ident)
        if top is None:
            raise StoreError(f"no image {ident}", "it is not in the store")
        order: list[ImageRecord] = []
        placed: set[str] = set()
        missing: list[str] = []

        def visit(record: ImageRecord, path: tuple[str, ...]) -> None:
            for dep in record.manifest.dependencies:
                found = self._dependency(record, dep)
                if found is None:
                    if _describe_dep(dep) not in missing:
                        missing.append(_describe_dep(dep))
                    continue
                if found.id in path:
                    raise StoreError(
                        f"cannot render {top.name}",
                        f"dependency cycle through {found.name} ({found.short_id})",
                        "fix the image manifests",
                    )
                if found.id not in placed:
                    visit(found, (*path, found.id))
            placed.add(record.id)
            order.append(record)

        visit(top, (top.id,))
        if missing:
            raise StoreError(
                f"cannot render {top.name}",
                f"missing dependenc{'y' if len(missing) == 1 else 'ies'}: {', '.join(missing)}",
                "fetch them first",
            )
        return order

    def _dependency(self, parent: ImageRecord, dep: Dependency) -> ImageRecord | None:
        if dep.image_id is not None:
            found = self.get(str(dep.image_id))
            if found is not None and found.name != str(dep.image_name):
                raise StoreError(
                    f"cannot render {parent.name}",
                    f"dependency {dep.image_name} has imageID {found.short_id}"
                    f", which is {found.name}",
                    "fix the image manifest",
                )
            return found
        from jetpack.discovery.appstring import host_labels  # pure: see resolve()

        labels = dict(dep.labels.items()) if dep.labels else {}
        return self.find(str(dep.image_name), labels, defaults=host_labels())

    def _tree_row(self, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM trees WHERE key = ?", (key,)).fetchone()

    def _tree_record(self, row: sqlite3.Row) -> TreeRecord:
        return TreeRecord(
            key=row["key"],
            image_id=row["image_id"],
            chain=tuple(json.loads(row["chain"])),
            backend=row["backend"],
            digest=row["digest"],
            files=row["files"],
            size=row["size"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            path=self.backend.tree_path(row["key"]),
        )

    def trees(self) -> list[TreeRecord]:
        rows = self.db.execute("SELECT * FROM trees ORDER BY created_at").fetchall()
        return [self._tree_record(r) for r in rows]

    def render(self, ident: str) -> TreeRecord:
        """The rendered tree of image ``ident`` and its dependencies, rendering it once.

        Holds shared locks on the chain's images throughout, so none can be removed while
        the tree is rendered; an image removed before they were taken makes the chain be
        resolved again (and a missing one an error).
        """
        self._writable(f"cannot render {short_id(ident)}")
        for _ in range(_RENDER_ATTEMPTS):
            chain = self.chain(ident)
            ids = [r.id for r in chain]
            with self._reading_images(ids):
                if self._count_images(ids) != len(set(ids)):
                    continue  # removed before we locked it: resolve again
                return self._render_locked(ident, chain)
        raise StoreError(
            f"cannot render {short_id(ident)}",
            "its images were removed while it was being rendered",
            "try again",
        )

    def _count_images(self, ids: Collection[str]) -> int:
        unique = sorted(set(ids))
        row = self.db.execute(
            f"SELECT count(*) FROM images WHERE id IN ({_marks(unique)})", unique
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def _render_locked(self, ident: str, chain: Sequence[ImageRecord]) -> TreeRecord:
        ids = [r.id for r in chain]
        key = tree_key(ids)
        with self._lock("tree", key):
            row = self._tree_row(key)
            if row is not None and self.backend.has_tree(key):
                with self._tx() as db:
                    db.execute(
                        "UPDATE trees SET last_used_at = ? WHERE key = ?", (time.time(), key)
                    )
                    self._touch(ids)
            else:
                if row is not None or self.backend.has_tree(key):
                    # The index and the backend disagree (damage or a crash): render afresh.
                    self._drop_tree(key)
                self._render_staged(key, ident, chain)
            row = self._tree_row(key)
        assert row is not None
        return self._tree_record(row)

    def _touch(self, ids: Sequence[str]) -> None:
        """Mark images used now (inside the caller's transaction)."""
        self.db.execute(
            f"UPDATE images SET last_used_at = ? WHERE id IN ({_marks(ids)})", (time.time(), *ids)
        )

    def _render_staged(self, key: str, ident: str, chain: Sequence[ImageRecord]) -> None:
        """Render ``chain`` in staging, publish it as tree ``key`` and commit its row.

        The caller holds the tree's lock and shared locks on the chain's images. On any
        failure (KeyboardInterrupt included) the staging area and, if it was published
        but has no row, the tree are removed; what cannot be removed is left to recovery
        with its pending row.
        """
        token = uuid.uuid4().hex
        lock = self._lock("render", token)
        lock.acquire()
        published = False
        try:
            with self._tx():
                self._pending("render", token)
            self.backend.init()  # idempotent; a fresh data directory has no trees/ yet
            staging = self.backend.staging_tree(token)
            top = chain[-1]
            rootfs = staging / "rootfs"
            try:
                rootfs.mkdir(mode=0o755)
                digest = render_layers(
                    [self.layer_path(r.id) / "rootfs" for r in chain],
                    rootfs,
                    [str(p) for p in top.manifest.path_whitelist],
                )
                (staging / "manifest").write_bytes(top.manifest_bytes)
            except OSError as err:
                raise StoreError(f"cannot render {top.name}", err.strerror or str(err)) from err
            with self._tx():
                self._pending("tree", key)
            published = True  # from here on the tree may exist under its key
            self.backend.publish_tree(token, key)
            ids = [r.id for r in chain]
            now = time.time()
            with self._tx() as db:
                if self._count_images(ids) != len(set(ids)):  # the locks make this a backstop
                    raise StoreError(
                        f"cannot render {top.name}",
                        "an image of its chain was removed while it was rendered",
                        "try again",
                    )
                db.execute(
                    "INSERT INTO trees (key, image_id, chain, backend, digest, files, size,"
                    " created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        ident,
                        json.dumps(ids),
                        self.backend.name,
                        digest.digest,
                        digest.files,
                        digest.size,
                        now,
                        now,
                    ),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO tree_images (key, image_id) VALUES (?, ?)",
                    [(key, i) for i in ids],
                )
                self._touch(ids)
                self._done("tree", key)
                self._done("render", token)
        except BaseException:
            self._undo_render(token, key, published=published)
            raise
        finally:
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                lock.path.unlink()

    def _undo_render(self, token: str, key: str, *, published: bool) -> None:
        try:
            self.backend.discard_staging(token)
            with self._tx():
                self._done("render", token)
            if published and self._tree_row(key) is None:
                self.backend.remove_tree(key)
            if published:
                with self._tx():
                    self._done("tree", key)
        except StoreError as err:  # the pending rows stay: recovery finishes on next open
            log.warning("cannot undo the render of tree %s: %s", key, err)

    # -- removal ----------------------------------------------------------------------

    def _remove_image_files(self, ident: str) -> None:
        from jetpack.aci.extract import remove_tree

        try:
            with contextlib.suppress(FileNotFoundError):
                self.blob_path(ident).unlink()
            remove_tree(self.layer_path(ident))
        except OSError as err:
            raise StoreError(
                f"cannot remove the files of image {short_id(ident)}", err.strerror or str(err)
            ) from err

    def _busy(self, key: str) -> StoreError:
        return StoreError(
            f"cannot remove tree {key[:17]}",
            "an app rootfs made from it still exists",
            "remove the pods using it first",
        )

    def _drop_tree(self, key: str) -> None:
        """Remove tree ``key`` and then its row; the caller holds the tree's lock.

        The backend removes the tree *before* the row goes, so a tree it refuses to remove
        (in use) or fails to remove keeps its row and the index stays true.
        """
        if self.backend.tree_in_use(key):
            raise self._busy(key)
        with self._tx():
            self._pending("tree", key)
        try:
            self.backend.remove_tree(key)
        except BaseException:
            with contextlib.suppress(StoreError):  # else recovery reconciles on next open
                gone = not self.backend.has_tree(key)
                with self._tx() as db:
                    if gone:
                        db.execute("DELETE FROM trees WHERE key = ?", (key,))
                    self._done("tree", key)
            raise
        with self._tx() as db:
            db.execute("DELETE FROM trees WHERE key = ?", (key,))
            self._done("tree", key)

    def _remove_tree(self, key: str) -> bool:
        """Remove tree ``key`` under its lock; False if it was gone already."""
        with self._lock("tree", key):
            if self._tree_row(key) is None and not self.backend.has_tree(key):
                return False
            self._drop_tree(key)
            return True

    def remove(self, ident: str) -> None:
        """Remove image ``ident``, its blob, its layer and every tree rendering it.

        Raises:
            StoreError: it is not in the store, or a tree rendering it is in use by an app
                (nothing is removed then).
        """
        self._writable(f"cannot remove image {short_id(ident)}")
        with self._lock("image", ident):
            if not self._row_exists(ident):
                raise StoreError(f"no image {ident}", "it is not in the store")
            self._remove_locked(ident)

    def remove_if_unused(self, ident: str, cutoff: float) -> bool:
        """Remove image ``ident`` if it exists and was last used at or before ``cutoff``.

        Decided under the image's lock, on the row as it is then: an image another process
        removed, or used since the caller looked, is left alone. Returns whether it removed
        the image ("already gone" is no error).

        Raises:
            StoreError: a tree rendering it is in use by an app, or removal failed.
        """
        self._writable(f"cannot remove image {short_id(ident)}")
        with self._lock("image", ident):
            row = self.db.execute(
                "SELECT last_used_at FROM images WHERE id = ?", (ident,)
            ).fetchone()
            if row is None or row["last_used_at"] > cutoff:
                return False
            self._remove_locked(ident)
            return True

    def _remove_locked(self, ident: str) -> None:
        """Remove image ``ident`` (its row exists); the caller holds its lock exclusively."""
        keys = [
            r["key"]
            for r in self.db.execute("SELECT key FROM tree_images WHERE image_id = ?", (ident,))
        ]
        busy = [key for key in keys if self.backend.tree_in_use(key)]
        if busy:
            raise StoreError(
                f"cannot remove image {short_id(ident)}",
                f"its rendered tree {busy[0][:17]} is in use by an app rootfs",
                "remove the pods using it first",
            )
        for key in keys:
            self._remove_tree(key)
        with self._tx() as db:
            self._pending("image", ident)
            db.execute("DELETE FROM images WHERE id = ?", (ident,))
            db.execute("DELETE FROM remotes WHERE image_id = ?", (ident,))
        self._remove_image_files(ident)
        with self._tx():
            self._done("image", ident)

    # -- export, copy-out, verification ------------------------------------------------

    def export(self, ident: str, out: Path, *, overwrite: bool = False) -> None:
        """Write the stored ACI, byte for byte as imported, to ``out`` (atomically)."""
        import shutil

        if (out.exists() or out.is_symlink()) and not overwrite:
            raise StoreError(f"cannot export to {out}", "it already exists", "add --overwrite")
        with self._reading("image", ident):
            if not self._row_exists(ident):
                raise StoreError(f"no image {ident}", "it is not in the store")
            blob = self.blob_path(ident)
            if not blob.is_file():
                raise StoreError(
                    f"cannot export image {short_id(ident)}",
                    f"its blob {blob} is missing",
                    _VERIFY_HINT,
                )
            tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                shutil.copyfile(blob, tmp)
                tmp.replace(out)
            except OSError as err:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise StoreError(f"cannot export to {out}", err.strerror or str(err)) from err

    def copy_out(
        self, ident: str, dest: Path, *, rendered: bool, rootfs_only: bool, overwrite: bool
    ) -> Path:
        """Copy image ``ident`` out of the store into the new directory ``dest``.

        ``rendered``: the tree of its whole chain (rendered if need be), else only its own
        extracted layer. ``dest`` gets ``manifest`` and ``rootfs/``, or with
        ``rootfs_only`` is the rootfs. The copy is made beside ``dest`` and renamed into
        place, so ``dest`` is either absent (or, with ``overwrite``, as it was) or complete;
        an old ``dest`` is removed only after the new one is in place. The source is read
        under a shared lock, so it cannot be removed meanwhile.

        Raises:
            StoreError: ``dest`` exists (without ``overwrite``), its parent is missing, or
                the copy failed.
        """
        what = f"cannot write {dest}"
        if (dest.exists() or dest.is_symlink()) and not overwrite:
            raise StoreError(what, "it already exists", "add --overwrite")
        if not dest.absolute().parent.is_dir():
            raise StoreError(what, "its parent directory does not exist")
        for _ in range(_RENDER_ATTEMPTS):
            if rendered:
                tree = self.render(ident)
                with self._reading("tree", tree.key):
                    if self._tree_row(tree.key) is None or not self.backend.has_tree(tree.key):
                        continue  # removed between rendering and locking: render again
                    _copy_tree(tree.path, dest, rootfs_only=rootfs_only)
                    return dest
            with self._reading("image", ident):
                if not self._row_exists(ident):
                    raise StoreError(f"no image {ident}", "it is not in the store")
                _copy_tree(self.layer_path(ident), dest, rootfs_only=rootfs_only)
                return dest
        raise StoreError(what, "its tree was removed each time it was rendered", "try again")

    def verify(self, idents: Collection[str] = ()) -> list[Problem]:
        """Re-hash blobs, re-digest layers and rendered trees; return what is damaged."""
        problems: list[Problem] = []
        records = [self.get(i) for i in idents] if idents else self.images()
        for record in records:
            if record is not None:
                with self._reading("image", record.id):
                    if self._row_exists(record.id):
                        problems += self._verify_image(record)
        wanted = {r.id for r in records if r is not None}
        for tree in self.trees():
            if wanted & set(tree.chain):
                with self._reading("tree", tree.key):
                    if self._tree_row(tree.key) is not None:
                        problems += self._verify_tree(tree)
        return problems

    def _verify_image(self, record: ImageRecord) -> list[Problem]:
        from jetpack.aci.stream import image_id
        from jetpack.store.render import tree_digest

        subject = record.short_id
        problems: list[Problem] = []
        blob = self.blob_path(record.id)
        try:
            with open(blob, "rb") as f:
                got = image_id(f)
            if got != record.id:
                problems.append(Problem(subject, f"blob hashes to {short_id(got)}, not its ID"))
        except FileNotFoundError:
            problems.append(Problem(subject, f"blob {blob} is missing"))
        except (ACIError, OSError) as err:
            problems.append(Problem(subject, f"blob is damaged: {err}"))
        layer = self.layer_path(record.id)
        problems += _check_manifest(subject, "extracted layer", layer, record.manifest_bytes)
        if not (layer / "rootfs").is_dir():
            problems.append(Problem(subject, "extracted layer is missing"))
        elif record.layer_digest is not None:
            algorithm: DigestAlgorithm = (
                "sha512" if record.layer_digest.startswith("sha512-") else "sha256"
            )
            try:
                digest = tree_digest(layer / "rootfs", algorithm=algorithm).digest
            except StoreError as err:
                problems.append(Problem(subject, f"extracted layer cannot be read: {err}"))
            else:
                if digest != record.layer_digest:
                    problems.append(Problem(subject, "extracted layer was modified"))
        return problems

    def _verify_tree(self, tree: TreeRecord) -> list[Problem]:
        from jetpack.store.render import tree_digest

        subject = f"tree {tree.short_key}"
        if not self.backend.has_tree(tree.key):
            return [Problem(subject, "rendered tree is missing")]
        top = self.get(tree.image_id)
        problems: list[Problem] = []
        if top is not None:
            problems += _check_manifest(subject, "rendered tree", tree.path, top.manifest_bytes)
        if not tree.rootfs.is_dir():
            return [*problems, Problem(subject, "rendered tree's rootfs is missing")]
        try:
            digest = tree_digest(tree.rootfs).digest
        except StoreError as err:
            return [*problems, Problem(subject, f"rendered tree cannot be read: {err}")]
        if digest != tree.digest:
            problems.append(Problem(subject, "rendered tree was modified"))
        return problems

    # -- garbage collection -----------------------------------------------------------

    def gc(
        self,
        *,
        grace_seconds: float,
        in_use: Callable[[], Collection[str]] = lambda: (),
        now: float | None = None,
    ) -> GCReport:
        """Remove trees no pod uses, then images unused for ``grace_seconds``, then leftovers.

        ``in_use`` returns the image IDs and tree keys held by pods (the runtime's hook);
        those, the images their trees render, and trees an app rootfs still uses are never
        collected (the last are reported in ``kept``). Every removal is decided again under
        the lock of what it removes, so concurrent imports, renders and removals are safe.
        Leftovers: token lock files a crash leaked, and partial downloads older than the
        grace period that no fetch is resuming.
        """
        self._writable("cannot collect garbage")
        self.recover()
        held = set(in_use())
        report = GCReport()
        for tree in self.trees():
            if tree.key in held or tree.image_id in held:
                held.update(tree.chain)
                continue
            try:
                if self.backend.tree_in_use(tree.key):
                    raise self._busy(tree.key)
                if self._remove_tree(tree.key):
                    report.trees.append(tree.key)
            except StoreError as err:
                held.update(tree.chain)
                report.kept.append(f"tree {tree.short_key}: {_reason(err)}")
        cutoff = (time.time() if now is None else now) - grace_seconds
        for record in self.images():
            if record.id in held or record.last_used_at > cutoff:
                continue
            try:
                if self.remove_if_unused(record.id, cutoff):
                    report.images.append(record.id)
            except StoreError as err:
                report.kept.append(f"image {record.short_id}: {_reason(err)}")
        report.swept = self._sweep(cutoff)
        return report

    def _sweep(self, cutoff: float) -> list[str]:
        """Delete leaked token lock files and stale partial downloads; return their names."""
        swept: list[str] = []
        pending = {
            f"{r['kind']}-{r['key']}" for r in self.db.execute("SELECT kind, key FROM pending")
        }
        young = time.time() - _LOCK_SWEEP_AGE
        for path in sorted(self.locks.iterdir()):
            kind = path.name.partition("-")[0]
            if (
                kind in _TOKEN_KINDS
                and path.name not in pending
                and _mtime(path) < young
                and _unlink_if_free(path, path)
            ):
                swept.append(f"locks/{path.name}")
        for path in sorted(self.tmp.glob("download-*")):
            key = path.name.removeprefix("download-").removesuffix(".json")
            if _mtime(path) < cutoff and _unlink_if_free(self.locks / f"download-{key}", path):
                swept.append(f"tmp/{path.name}")
        return swept


def render_layers(
    layers: Sequence[Path], dest: Path, whitelist: Sequence[str] = (), *, hardlink: bool = True
) -> TreeDigest:
    """:func:`jetpack.store.render.render_layers`, its module imported on first use."""
    from jetpack.store import render

    return render.render_layers(layers, dest, whitelist, hardlink=hardlink)


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _describe_dep(dep: Dependency) -> str:
    text = str(dep.image_name)
    if dep.labels:
        text += "".join(f",{k}={v}" for k, v in dep.labels.items())
    if dep.image_id is not None:
        text += f" ({short_id(str(dep.image_id))})"
    return text


def _reason(err: StoreError) -> str:
    """``err`` without its "what failed" part: why, and what to do."""
    text = err.why or err.what
    return f"{text} ({err.hint})" if err.hint else text


def _remove(path: Path) -> None:
    from jetpack.aci.extract import remove_tree

    try:
        remove_tree(path)
    except OSError as err:
        raise StoreError(f"cannot remove {path}", err.strerror or str(err)) from err


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: never "old"


def _unlink_if_free(lock_path: Path, target: Path) -> bool:
    """Delete ``target`` if nobody holds ``lock_path``'s lock; whether it was deleted."""
    lock = FileLock(lock_path)
    if not lock.acquire(blocking=False):
        return False
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    finally:
        lock.release()
    return True


def _check_manifest(subject: str, where: str, directory: Path, expected: bytes) -> list[Problem]:
    try:
        if (directory / "manifest").read_bytes() == expected:
            return []
        return [Problem(subject, f"{where}'s manifest was modified")]
    except FileNotFoundError:
        return [Problem(subject, f"{where}'s manifest is missing")]
    except OSError as err:
        return [Problem(subject, f"{where}'s manifest cannot be read: {err.strerror or err}")]


def _copy_tree(source: Path, dest: Path, *, rootfs_only: bool) -> None:
    """Copy ``source``'s ``manifest`` and ``rootfs/`` (or its rootfs only) to ``dest``.

    Staged in a hidden directory beside ``dest`` (same file system) and renamed into
    place; an existing ``dest`` is moved into the staging directory first and deleted
    with it only once the new one is in place (or moved back if that rename fails).
    """
    from jetpack.aci.extract import remove_tree

    what = f"cannot write {dest}"
    staging = dest.absolute().parent / f".{dest.name}.jetpack-{uuid.uuid4().hex[:12]}"
    out, old = staging / "new", staging / "old"
    try:
        staging.mkdir(mode=0o700)
        cp = ["cp", "-a", "--reflink=auto"]
        if rootfs_only:
            run([*cp, "--no-target-directory", "--", str(source / "rootfs"), str(out)])
        else:
            out.mkdir(mode=0o755)
            run([*cp, "--", str(source / "manifest"), str(source / "rootfs"), str(out)])
        if dest.exists() or dest.is_symlink():
            dest.rename(old)
            try:
                out.rename(dest)
            except BaseException:
                old.rename(dest)
                raise
        else:
            out.rename(dest)
    except OSError as err:  # CommandError included
        why = getattr(err, "why", None) or err.strerror or str(err)
        raise StoreError(what, why) from err
    finally:
        with contextlib.suppress(OSError):
            remove_tree(staging)
