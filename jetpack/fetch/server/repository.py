"""Where the served images come from: a repository directory, or the local store.

The repository (``--root``)::

    <root>/index.json                                  what is published (the only truth)
    <root>/images/<name>/<version>/<os>-<arch>.aci     the ACI as pushed
    <root>/images/<name>/<version>/<os>-<arch>.aci.asc its detached armored signature
    <root>/keys/<fingerprint>.asc                      public keys of the signers
    <root>/trustedkeys/                                keys trusted to sign uploads (default)
    <root>/tmp/                                        uploads being received and checked
    <root>/.lock                                       flock held by a publisher

``index.json`` is ``{"format": 1, "images": [{name, version, os, arch, id, size, etag,
aci, asc, asc_etag, signer, signer_uid, signed_by_server, pushed_at, pushed_by,
compression}, ...]}`` with paths relative to the root. It is rewritten whole (a temporary
file, ``fsync``, ``rename``) by a publisher holding ``.lock``, after the image files are
in place: a reader sees the old index or the new one, and never an entry without its
files. Files not in the index are never served, whatever lies in the directory.

The store (``--from-store``) is read-only: each stored image is served by its labels, its
signature from ``<blob>.asc`` when the store kept one, else signed with the server's key on
first request and kept in memory.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jetpack.errors import JetpackError
from jetpack.fetch.server.catalog import Catalog, Entry, Key, etag_of, quote_etag
from jetpack.store.durable import fsync_dir
from jetpack.store.locks import FileLock

log = logging.getLogger("jetpack.serve")

INDEX_FORMAT = 1
_FINGERPRINT_LEN = 40


class RepositoryError(JetpackError):
    """The repository directory is unusable (unreadable index, unwritable directory)."""


def inside(root: Path, path: Path) -> Path | None:
    """``path`` with symlinks resolved if it is a regular file under ``root``, else None.

    Every file the server sends goes through here: a name in the index, a symlink, or
    ``..`` that leads outside the root is refused, not followed.
    """
    try:
        real = Path(os.path.realpath(path))
        base = Path(os.path.realpath(root))
        if not real.is_relative_to(base) or real == base:
            return None
        if not stat.S_ISREG(real.stat().st_mode):
            return None
    except (OSError, ValueError):
        return None
    return real


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def _from_rfc3339(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


class RootRepository:
    """The repository directory: reading the index, and publishing under the lock."""

    writable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = root / "index.json"
        self.tmp = root / "tmp"
        try:
            for sub in ("images", "keys", "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RepositoryError(
                f"cannot use repository {root}", err.strerror or str(err), "check --root"
            ) from err
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._catalog: Catalog | None = None
        self._generation = 0

    # -- reading ---------------------------------------------------------------------

    def read_entries(self) -> list[Entry]:
        try:
            raw = json.loads(self.index.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise RepositoryError(f"cannot read {self.index}", str(err)) from err
        entries: list[Entry] = []
        for item in raw.get("images", []):
            try:
                entries.append(
                    Entry(
                        name=item["name"],
                        version=item["version"],
                        os=item["os"],
                        arch=item["arch"],
                        id=item["id"],
                        size=int(item["size"]),
                        etag=item["etag"],
                        aci=self.root / item["aci"],
                        asc=self.root / item["asc"] if item.get("asc") else None,
                        asc_etag=item.get("asc_etag"),
                        signer=item.get("signer"),
                        signer_uid=item.get("signer_uid"),
                        signed_by_server=bool(item.get("signed_by_server")),
                        pushed_at=_from_rfc3339(item["pushed_at"]),
                        pushed_by=item.get("pushed_by"),
                        compression=item.get("compression", ""),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                log.warning("%s: skipping a damaged entry (%s)", self.index, err)
        return entries

    def read_keys(self) -> dict[str, Key]:
        keys: dict[str, Key] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in sorted((self.root / "keys").iterdir()):
                fp = path.name.removesuffix(".asc")
                if len(fp) != _FINGERPRINT_LEN or not path.name.endswith(".asc"):
                    continue
                real = inside(self.root, path)
                if real is None:
                    continue
                data = real.read_bytes()
                keys[fp] = Key(fp, data, etag=etag_of(data))
        return keys

    def _index_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.index.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def catalog(self, base_url: str, *, max_age: float = 0.5) -> Catalog:
        """The current snapshot; the index is looked at (one ``stat``) at most every
        ``max_age`` seconds, and re-read only when it changed."""
        now = time.monotonic()
        if self._catalog is not None and now - self._checked < max_age:
            return self._catalog
        self._checked = now
        stamp = self._index_stamp()
        if self._catalog is None or stamp != self._stamp:
            self._generation += 1
            self._catalog = Catalog.build(
                self.read_entries(), self.read_keys(), base_url, self._generation
            )
            self._stamp = stamp
        return self._catalog

    def invalidate(self) -> None:
        self._checked = 0.0

    # -- writing ---------------------------------------------------------------------

    def staging(self) -> Path:
        """A fresh directory in ``tmp/`` (same file system as the images) for one upload."""
        path = self.tmp / f"upload-{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        return path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with FileLock(self.root / ".lock"):
            yield

    def relative(self, name: str, version: str, os_: str, arch: str) -> str:
        return f"images/{name}/{version}/{os_}-{arch}.aci"

    def publish(
        self,
        entry: Entry,
        *,
        staged_aci: Path,
        staged_asc: Path,
        key: Key | None,
        allow_overwrite: bool,
        conflict: Callable[[Entry], Exception],
    ) -> Entry:
        """Move a checked upload into place and add it to the index, under the lock.

        ``entry.aci``/``entry.asc`` are ignored: the places are derived from the labels.

        Raises:
            the exception ``conflict(existing)`` makes, when that name/version/os/arch is
            already published and overwriting is off (nothing is changed then).
        """
        assert entry.version and entry.os and entry.arch
        rel = self.relative(entry.name, entry.version, entry.os, entry.arch)
        target = self.root / rel
        with self.locked():
            entries = self.read_entries()
            same = [
                e
                for e in entries
                if (e.name, e.version, e.os, e.arch)
                == (entry.name, entry.version, entry.os, entry.arch)
            ]
            if same and not allow_overwrite:
                raise conflict(same[0])
            target.parent.mkdir(parents=True, exist_ok=True)
            if key is not None:
                key_file = self.root / "keys" / f"{key.fingerprint}.asc"
                if not key_file.exists():
                    self._write_atomic(key_file, key.armored)
            asc_target = target.with_name(target.name + ".asc")
            staged_asc.replace(asc_target)
            staged_aci.replace(target)
            fsync_dir(target.parent)
            published = Entry(
                **{
                    **asdict(entry),
                    "aci": target,
                    "asc": asc_target,
                }
            )
            rest = [e for e in entries if e not in same]
            self._write_index([*rest, published])
        self.invalidate()
        return published

    def _write_index(self, entries: list[Entry]) -> None:
        items: list[dict[str, Any]] = []
        for e in sorted(entries, key=lambda e: (e.name, e.version or "", e.platform)):
            item = asdict(e)
            item["aci"] = e.aci.relative_to(self.root).as_posix()
            item["asc"] = e.asc.relative_to(self.root).as_posix() if e.asc else None
            item["pushed_at"] = _rfc3339(e.pushed_at)
            items.append(item)
        data = json.dumps({"format": INDEX_FORMAT, "images": items}, indent=1).encode() + b"\n"
        self._write_atomic(self.index, data)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self.tmp / f".{path.name}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)

    def sweep(self, older_than: float = 3600.0) -> None:
        """Remove uploads a crashed server left in ``tmp/`` (older than an hour)."""
        import shutil

        cutoff = time.time() - older_than
        with contextlib.suppress(FileNotFoundError):
            for path in self.tmp.iterdir():
                with contextlib.suppress(OSError):
                    if path.lstat().st_mtime < cutoff:
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            path.unlink()


def store_entry(record: Any, blob: Path) -> Entry:
    """The entry for a store :class:`~jetpack.store.store.ImageRecord` whose blob is ``blob``."""
    asc = Path(str(blob) + ".asc")
    asc_etag = None
    has_asc = False
    with contextlib.suppress(OSError):
        data = asc.read_bytes()
        asc_etag, has_asc = etag_of(data), True
    return Entry(
        name=record.name,
        version=record.label("version"),
        os=record.label("os"),
        arch=record.label("arch"),
        id=record.id,
        size=record.compressed_size,
        etag=quote_etag(record.id),
        aci=blob,
        asc=asc if has_asc else None,
        asc_etag=asc_etag,
        pushed_at=record.imported_at,
        compression=record.compression,
    )


@dataclass
class StoreRepository:
    """The local store, read-only. ``open_store`` is a callable so tests can inject one."""

    store: Any  # jetpack.store.store.Store
    keys: dict[str, Key]
    signer: str | None = None  # the server key's fingerprint: it signs what has no .asc
    refresh: float = 5.0
    writable = False

    def __post_init__(self) -> None:
        self._catalog: Catalog | None = None
        self._checked = 0.0
        self._generation = 0
        self._signatures: dict[str, tuple[bytes, str]] = {}

    @property
    def root(self) -> Path:
        return Path(self.store.blobs)

    def catalog(self, base_url: str) -> Catalog:
        now = time.monotonic()
        if self._catalog is not None and now - self._checked < self.refresh:
            return self._catalog
        self._checked = now
        newest: dict[tuple[str, str | None, str | None, str | None], Entry] = {}
        for record in self.store.images():
            entry = store_entry(record, self.store.blob_path(record.id))
            if entry.asc is None and self.signer is not None:
                entry = replace(entry, signer=self.signer, signed_by_server=True)
            key = (entry.name, entry.version, entry.os, entry.arch)
            if key not in newest or newest[key].pushed_at < entry.pushed_at:
                newest[key] = entry
        self._generation += 1
        self._catalog = Catalog.build(newest.values(), self.keys, base_url, self._generation)
        return self._catalog

    def cached_signature(self, image_id: str) -> tuple[bytes, str] | None:
        return self._signatures.get(image_id)

    def keep_signature(self, image_id: str, data: bytes) -> tuple[bytes, str]:
        got = (data, etag_of(data))
        self._signatures[image_id] = got
        return got
