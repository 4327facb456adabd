"""The image store: content-addressed blobs and layers, a SQLite index, rendered trees.

Theory of operation
-------------------
Importing is one pass over the ACI stream: the bytes as received go to a blob file in a
staging directory (``tee``), the uncompressed stream through SHA-512 and the safe extractor
into a layer directory beside it. Only then is the image ID known. Publishing takes the
image's lock, records the intent (a ``pending`` row), renames blob and layer into place,
and commits the image row — the row is the publication. A second importer of the same
image waits on the lock, finds the row, and discards its staging: both succeed, one copy
is stored.

A crash (kill -9, power cut) at any point leaves one of: a staging directory (pending
``import``), renamed files without a row (pending ``image``), a tree staging area (pending
``render``), or a published tree without a row (pending ``tree``). Each pending row is
guarded by a lock its live owner holds; opening the store removes what every pending row
with a free lock names. When nothing crashed the table is empty and recovery costs one
query.

Rendering resolves the dependency chain (depth-first in list order, then the image),
renders it into a backend staging area and publishes it under a key derived from the
chain's image IDs; one tree serves every pod that uses the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from jetpack.aci import (
    ACIInfo,
    ExtractLimits,
    ExtractOptions,
    extract_aci,
    image_id,
    remove_tree,
)
from jetpack.errors import ACIError, ManifestError, StoreError
from jetpack.schema import Dependency, ImageManifest, parse_image_manifest
from jetpack.schema.types import validate_image_id_prefix
from jetpack.store.backend import Backend
from jetpack.store.db import connect
from jetpack.store.locks import FileLock
from jetpack.store.render import TreeDigest, render_layers, tree_digest

_PREFIX_HINT = "give more digits of the ID, or the image name"
# Locks named by a one-time token can be deleted after use. Locks named by an image ID or a
# tree key never are: a waiter would hold the unlinked file while a newcomer locks a new one.
_TOKEN_KINDS = frozenset({"import", "render"})


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

    @cached_property
    def manifest(self) -> ImageManifest:
        return parse_image_manifest(self.manifest_bytes)

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def short_id(self) -> str:
        return self.id[: len("sha512-") + 12]


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


@dataclass(frozen=True)
class ImportResult:
    image: ImageRecord
    new: bool


@dataclass(frozen=True)
class Problem:
    """Damage found by :meth:`Store.verify`: what is damaged and how."""

    subject: str
    problem: str


@dataclass(frozen=True)
class Summary:
    backend: str
    images: int
    trees: int
    size: int  # bytes of blobs and extracted layers (trees share the layers' files)


@dataclass
class GCReport:
    trees: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def tree_key(chain: Sequence[str]) -> str:
    """The key of the tree rendering ``chain`` (image IDs in render order)."""
    return "deps-" + hashlib.sha512("\n".join(chain).encode()).hexdigest()[:64]


class Store:
    """The image store under one data directory. Not thread-safe; cheap to open."""

    def __init__(self, data_dir: Path, backend: Backend, *, limits: ExtractLimits | None = None):
        self.data_dir = data_dir
        self.backend = backend
        self.limits = limits or ExtractLimits()
        self.blobs = data_dir / "blobs" / "sha512"
        self.layers = data_dir / "layers"
        self.tmp = data_dir / "tmp"
        self.locks = data_dir / "locks"
        try:
            for directory in (self.blobs, self.layers, self.tmp, self.locks):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise StoreError(
                f"cannot use the data directory {data_dir}",
                err.strerror or str(err),
                "run as root, or choose another with --dir",
            ) from err
        self.db = connect(data_dir / "store.db")
        self.recover()

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

    def _lock(self, kind: str, key: str) -> FileLock:
        return FileLock(self.locks / f"{kind}-{key}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _pending(self, kind: str, key: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO pending (kind, key, started_at) VALUES (?, ?, ?)",
            (kind, key, time.time()),
        )

    def _done(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM pending WHERE kind = ? AND key = ?", (kind, key))

    # -- recovery ---------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Undo what crashed operations left; returns what was cleaned, for the log."""
        cleaned: list[str] = []
        for row in self.db.execute("SELECT kind, key FROM pending").fetchall():
            kind, key = row["kind"], row["key"]
            lock = self._lock(kind, key)
            if not lock.acquire(blocking=False):
                continue  # a live operation owns it
            try:
                if kind == "import":
                    remove_tree(self.tmp / f"import-{key}")
                elif kind == "image" and not self._row_exists(key):
                    self._remove_image_files(key)
                elif kind == "render":
                    self.backend.discard_staging(key)
                elif kind == "tree" and not self._tree_row(key):
                    self.backend.remove_tree(key)
                self._done(kind, key)
                cleaned.append(f"{kind} {key}")
            finally:
                lock.release()
                if kind in _TOKEN_KINDS:
                    with contextlib.suppress(FileNotFoundError):
                        lock.path.unlink()
        return cleaned

    # -- import -----------------------------------------------------------------------

    def import_aci(self, src: BinaryIO, *, source: str, latest: bool = False) -> ImportResult:
        """Import the ACI read from ``src`` (to its end); ``source`` says where it came from.

        Raises:
            ACIError: the archive is invalid or hostile; nothing was stored.
            StoreError: the store cannot take it (disk full, damaged store).
        """
        token = uuid.uuid4().hex
        staging = self.tmp / f"import-{token}"
        lock = self._lock("import", token)
        lock.acquire()
        try:
            self._pending("import", token)
            staging.mkdir(mode=0o700)
            blob_tmp = staging / "blob"
            try:
                with open(blob_tmp, "wb") as blob:
                    info = extract_aci(
                        src, staging / "layer", options=ExtractOptions(limits=self.limits), tee=blob
                    )
                    blob.flush()
                    os.fsync(blob.fileno())
            except OSError as err:
                raise StoreError(
                    "cannot import image", f"writing {blob_tmp}: {err.strerror or err}"
                ) from err
            return self._publish(info, staging, source=source, latest=latest)
        finally:
            with contextlib.suppress(OSError):  # never mask the import's own outcome
                remove_tree(staging)
            self._done("import", token)
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                lock.path.unlink()

    def _publish(self, info: ACIInfo, staging: Path, *, source: str, latest: bool) -> ImportResult:
        ident = info.image_id
        with self._lock("image", ident):
            existing = self.get(ident)
            if existing is not None:
                return ImportResult(existing, new=False)
            layer = staging / "layer"
            self._pending("image", ident)
            # Leftovers of a crashed import of this very image: no row, and we hold its lock.
            self._remove_image_files(ident)
            blob = self.blob_path(ident)
            blob.parent.mkdir(exist_ok=True, mode=0o700)
            (staging / "blob").rename(blob)
            layer.rename(self.layer_path(ident))
            now = time.time()
            with self._tx() as db:
                db.execute(
                    "INSERT INTO images (id, name, manifest, compression, compressed_size,"
                    " uncompressed_size, imported_at, last_used_at, source, latest)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    ),
                )
                db.executemany(
                    "INSERT INTO labels (image_id, name, value) VALUES (?, ?, ?)",
                    [(ident, k, v) for k, v in info.manifest.labels.items()],
                )
                self._done("image", ident)
        record = self.get(ident)
        assert record is not None
        return ImportResult(record, new=True)

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
            shown = ", ".join(r["id"][:19] for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
            raise StoreError(f"ambiguous image ID {prefix}", f"it matches {shown}", _PREFIX_HINT)
        return self._record(rows[0])

    def resolve(self, ref: str) -> ImageRecord:
        """The image ``ref`` names: an ID, an ID prefix, or ``name[:version][,label=value]``.

        Raises:
            StoreError: nothing or several images match.
            DiscoveryError: ``ref`` is not a valid app string.
        """
        if ref.startswith("sha512-"):
            return self.by_prefix(ref)
        from jetpack.discovery.appstring import host_labels, parse_app_string

        app = parse_app_string(ref)
        found = self.find(str(app.name), app.label_map, defaults=host_labels())
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

    def summary(self) -> Summary:
        images, size = self.db.execute(
            "SELECT count(*), coalesce(sum(compressed_size + uncompressed_size), 0) FROM images"
        ).fetchone()
        (trees,) = self.db.execute("SELECT count(*) FROM trees").fetchone()
        return Summary(self.backend.name, images, trees, size)

    # -- dependencies and rendering ---------------------------------------------------

    def chain(self, ident: str) -> list[ImageRecord]:
        """The images to render for ``ident``, in order: dependencies depth-first, then it.

        Raises:
            StoreError: dependencies are missing (each one named), mismatch their imageID,
                or form a cycle.
        """
        top = self.get(ident)
        if top is None:
            raise StoreError(f"no image {ident}", "it is not in the store")
        order: list[ImageRecord] = []
        missing: list[str] = []

        def visit(record: ImageRecord, path: tuple[str, ...]) -> None:
            for dep in record.manifest.dependencies:
                found = self._dependency(record, dep)
                if found is None:
                    missing.append(_describe_dep(dep))
                    continue
                if found.id in path:
                    raise StoreError(
                        f"cannot render {top.name}",
                        f"dependency cycle through {found.name} ({found.short_id})",
                        "fix the image manifests",
                    )
                visit(found, (*path, found.id))
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
        labels = dict(dep.labels.items()) if dep.labels else {}
        return self.find(str(dep.image_name), labels)

    def _tree_row(self, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM trees WHERE key = ?", (key,)
        ).fetchone()
        return row

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
        """The rendered tree of image ``ident`` and its dependencies, rendering it once."""
        chain = self.chain(ident)
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
                return self._tree_record(self._tree_row(key))  # type: ignore[arg-type]
            if row is not None or self.backend.has_tree(key):
                # The index and the backend disagree (damage or a crash): render afresh.
                self._drop_tree(key)
            digest = self._render_staged(key, chain)
            now = time.time()
            with self._tx() as db:
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
        row = self._tree_row(key)
        assert row is not None
        return self._tree_record(row)

    def _touch(self, ids: Sequence[str]) -> None:
        """Mark images used now (inside the caller's transaction)."""
        self.db.execute(
            f"UPDATE images SET last_used_at = ? WHERE id IN ({_marks(ids)})", (time.time(), *ids)
        )

    def _render_staged(self, key: str, chain: Sequence[ImageRecord]) -> TreeDigest:
        """Render ``chain`` in staging and publish it as tree ``key`` (left pending 'tree')."""
        token = uuid.uuid4().hex
        lock = self._lock("render", token)
        lock.acquire()
        try:
            with self._tx():
                self._pending("render", token)
            self.backend.init()  # idempotent; a fresh data directory has no trees/ yet
            staging = self.backend.staging_tree(token)
            top = chain[-1]
            rootfs = staging / "rootfs"
            rootfs.mkdir(mode=0o755)
            digest = render_layers(
                [self.layer_path(r.id) / "rootfs" for r in chain],
                rootfs,
                [str(p) for p in top.manifest.path_whitelist],
            )
            (staging / "manifest").write_bytes(top.manifest_bytes)
            with self._tx():
                self._pending("tree", key)
            self.backend.publish_tree(token, key)
            with self._tx():
                self._done("render", token)
            return digest
        except BaseException:
            self.backend.discard_staging(token)
            with self._tx():
                self._done("render", token)
                self._done("tree", key)
            raise
        finally:
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                lock.path.unlink()

    # -- removal, export, verification, GC ---------------------------------------------

    def _remove_image_files(self, ident: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(ident).unlink()
        remove_tree(self.layer_path(ident))

    def _drop_tree(self, key: str) -> None:
        """Unpublish tree ``key`` and remove it; the caller holds the tree's lock."""
        with self._tx():
            self._pending("tree", key)
            self.db.execute("DELETE FROM trees WHERE key = ?", (key,))
        self.backend.remove_tree(key)
        with self._tx():
            self._done("tree", key)

    def _remove_tree(self, key: str) -> None:
        with self._lock("tree", key):
            self._drop_tree(key)

    def remove(self, ident: str) -> None:
        """Remove image ``ident``, its blob, its layer and every tree rendering it."""
        with self._lock("image", ident):
            if not self._row_exists(ident):
                raise StoreError(f"no image {ident}", "it is not in the store")
            keys = [
                r["key"]
                for r in self.db.execute("SELECT key FROM tree_images WHERE image_id = ?", (ident,))
            ]
            for key in keys:
                self._remove_tree(key)
            with self._tx() as db:
                self._pending("image", ident)
                db.execute("DELETE FROM images WHERE id = ?", (ident,))
            self._remove_image_files(ident)
            with self._tx():
                self._done("image", ident)

    def export(self, ident: str, out: Path, *, overwrite: bool = False) -> None:
        """Write the stored ACI, byte for byte as imported, to ``out`` (atomically)."""
        if out.exists() and not overwrite:
            raise StoreError(f"cannot export to {out}", "it already exists", "add --overwrite")
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(self.blob_path(ident), tmp)
            tmp.replace(out)
        except OSError as err:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise StoreError(f"cannot export to {out}", err.strerror or str(err)) from err

    def verify(self, idents: Collection[str] = ()) -> list[Problem]:
        """Re-hash blobs and re-digest rendered trees; return what is damaged."""
        problems: list[Problem] = []
        records = [self.get(i) for i in idents] if idents else self.images()
        for record in records:
            if record is None:
                continue
            blob = self.blob_path(record.id)
            try:
                with open(blob, "rb") as f:
                    got = image_id(f)
            except FileNotFoundError:
                problems.append(Problem(record.short_id, f"blob {blob} is missing"))
                continue
            except ACIError as err:
                problems.append(Problem(record.short_id, f"blob is damaged: {err}"))
                continue
            if got != record.id:
                problems.append(Problem(record.short_id, f"blob hashes to {got[:19]}, not its ID"))
            if not (self.layer_path(record.id) / "rootfs").is_dir():
                problems.append(Problem(record.short_id, "extracted layer is missing"))
        wanted = {r.id for r in records if r is not None}
        for tree in self.trees():
            if not wanted & set(tree.chain):
                continue
            if not self.backend.has_tree(tree.key):
                problems.append(Problem(f"tree {tree.key[:17]}", "rendered tree is missing"))
                continue
            digest = tree_digest(tree.rootfs)
            if digest.digest != tree.digest:
                problems.append(Problem(f"tree {tree.key[:17]}", "rendered tree was modified"))
        return problems

    def gc(
        self,
        *,
        grace_seconds: float,
        in_use: Callable[[], Collection[str]] = lambda: (),
        now: float | None = None,
    ) -> GCReport:
        """Remove trees no pod uses, then images unused for ``grace_seconds``.

        ``in_use`` returns the image IDs and tree keys held by pods (the runtime's hook);
        those, and images their trees render, are never collected.
        """
        held = set(in_use())
        report = GCReport()
        for tree in self.trees():
            if tree.key in held or tree.image_id in held:
                held.update(tree.chain)
                continue
            self._remove_tree(tree.key)
            report.trees.append(tree.key)
        cutoff = (time.time() if now is None else now) - grace_seconds
        for record in self.images():
            if record.id in held or record.last_used_at > cutoff:
                continue
            self.remove(record.id)
            report.images.append(record.id)
        return report


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _describe_dep(dep: Dependency) -> str:
    text = str(dep.image_name)
    if dep.labels:
        text += "".join(f",{k}={v}" for k, v in dep.labels.items())
    if dep.image_id is not None:
        text += f" ({str(dep.image_id)[:19]})"
    return text
