"""Rendering a dependency chain of extracted images into one tree, and digesting trees.

Theory of operation. The store hands :func:`render_layers` the ``rootfs`` directories of a
chain's images in render order (dependencies depth-first in list order, then the image) and
an empty destination. Each layer is merged over the result of the previous ones, then the
top image's ``pathWhitelist`` is applied, then directory metadata is set and the tree is
digested, in one last walk.

*Later layers win.* A directory merges into a directory already there; anything else
(a file, symlink, device, FIFO, or a directory over a non-directory) first removes what was
at the path — a whole subtree if need be — then takes its place. A directory's metadata
(owner, mode, xattrs, mtime) is the one of the last layer that had it; it is applied in
the final walk, deepest first, because adding children changes a directory's mtime and a
read-only mode would stop us adding them.

*Hard links, not copies.* Layers and rendered trees are both immutable, so a tree may share
inodes with its layers: every non-directory is ``link(2)``-ed from the layer, which costs
one system call per file whatever its size, keeps owners, modes, mtimes and xattrs for free
(they live in the inode), and keeps hard links within a layer as hard links. When linking
is impossible (``EXDEV``: the tree is on another file system, e.g. a ZFS dataset;
``EMLINK``: the inode has too many links; ``EPERM``: protected hard links) the entry is
recreated — a reflink or ``copy_file_range`` for file contents — with all its metadata, and
hard links within the layer are recreated between the copies. Nothing ever writes into an
existing inode of the tree: an overwritten path is unlinked first, so the layer's inode
behind it is untouched. The flip side: whoever changes a tree entry in place changes the
layer. Trees are never modified; output meant to be modified (``jetpack image render``
into a user's directory, a writable rootfs) is rendered with ``hardlink=False``.

*Never follow a symlink in the tree.* The tree is built from untrusted images: an earlier
layer may hold ``lib -> /usr/lib`` or ``etc -> ../../..``. Everything is done relative to
directory descriptors opened with ``O_NOFOLLOW | O_DIRECTORY`` and decided on ``lstat``,
so a symlink is only ever a name: a later layer's directory ``lib/`` *replaces* the
symlink (the result is a real directory holding that layer's files) instead of writing
through it into ``usr/lib`` or out of the tree.

*The whitelist* (absolute paths, the top image's ``pathWhitelist``; empty means "keep
everything") is "a complete and absolute set": after merging, exactly the listed paths are
kept, plus the directories needed to reach them. A listed directory is kept without its
unlisted children; a listed path that is absent is ignored. Paths are matched as names,
never resolved: a listed symlink is kept as the symlink, and a symlink standing where a
listed path's ancestor directory should be is not a directory, so it is dropped.

*The digest* (:func:`tree_digest`) is SHA-512 (or SHA-256: the result's prefix names it) over
a canonical listing: one record per entry, the root included, in path order (components
compared as bytes), giving path, type, permission bits, owner, mtime in nanoseconds,
size, the content's hash or the symlink target or the device numbers, the first path
sharing the inode (hard links within the tree), and the xattrs. Nanoseconds are safe
because the digest is always computed from what the file system stored (render digests
the tree it wrote, after the fact), never from the layers' values, so a file system with
coarser timestamps only ever sees its own values; and every file system a tree lives on
(ext4, xfs, btrfs, tmpfs, ZFS) keeps nanoseconds through hard links, ``utime`` and ``zfs
clone``. Link counts, ctimes, atimes and directory sizes are left out: they change when a
tree is linked, read or copied.
Contents are hashed by a small thread pool (``hashlib`` releases the GIL), once per inode.

On failure, :class:`~jetpack.errors.StoreError` is raised naming the path, and the
destination is left as it is: the caller (the store, rendering into a staging directory)
removes it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import posixpath
import shutil
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from jetpack.errors import StoreError

__all__ = ["DigestAlgorithm", "TreeDigest", "render_layers", "tree_digest"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FICLONE = 0x40049409  # _IOW(0x94, 9, int), from linux/fs.h
_COPY_CHUNK = 1 << 30
_READ_CHUNK = 1 << 20
_HASH_THREADS = 2
_MAX_PENDING = 64  # files held open while waiting for a hashing thread
# Walks recurse and hold two descriptors per level: bound them well below the recursion
# limit and RLIMIT_NOFILE. PATH_MAX allows 2048 levels; real images use a few dozen.
_MAX_DEPTH = 256
_NO_LINK = {errno.EXDEV, errno.EMLINK, errno.EPERM}
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP}
_NO_REFLINK = {errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOTSUP, errno.EOPNOTSUPP}
_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
_DAMAGED = "the image store may be damaged; run 'jetpack image verify'"
_DIGEST_HEADER = b"jetpack-tree-digest-v1\n"
_EXTRA = 7  # index, in a record's fields, of the content hash / symlink target / device

_Xattrs = tuple[tuple[str, bytes], ...]
DigestAlgorithm = Literal["sha512", "sha256"]


@dataclasses.dataclass(frozen=True)
class TreeDigest:
    """What :func:`tree_digest` computes and ``jetpack image verify`` compares.

    Attributes:
        digest: ``sha512-`` + hex SHA-512 of the tree's canonical listing.
        files: entries in the tree, of every type, the root directory excluded.
        size: bytes of regular-file content, each hard-linked inode counted once.
    """

    digest: str
    files: int
    size: int


def render_layers(
    layers: Sequence[Path],
    dest: Path,
    whitelist: Sequence[str] = (),
    *,
    hardlink: bool = True,
) -> TreeDigest:
    """Merge the ``layers`` into ``dest``, later layers winning; return the tree's digest.

    Args:
        layers: ``rootfs`` directories of extracted images, in render order. They must not
            change while, or after, the tree is rendered: the tree shares their inodes.
        dest: an existing, empty directory; it receives the last layer's root metadata.
        whitelist: the top image's ``pathWhitelist`` (absolute paths); empty keeps all.
        hardlink: share inodes with the layers where possible. Pass False when ``dest``
            may be modified afterwards (a directory handed to a user, a writable rootfs):
            a change to a shared inode would change the stored image too.

    Raises:
        StoreError: a layer is missing, ``dest`` is unusable or not empty, the whitelist
            holds a relative path, or a file system operation failed. ``dest`` is left
            half-written: removing it is the caller's job.
    """
    keep = _parse_whitelist(whitelist)
    root_fd = _open_root(dest, "render into", empty=True)
    try:
        merger = _Merger(root_fd, hardlink=hardlink)
        for layer in layers:
            layer_fd = _open_root(layer, "render layer", empty=False)
            try:
                merger.merge_layer(layer, layer_fd)
            finally:
                os.close(layer_fd)
        finisher = _Finisher(dest, root_fd, keep=keep, dir_meta=merger.dir_meta)
        return finisher.run()
    finally:
        os.close(root_fd)


def tree_digest(root: Path, *, algorithm: DigestAlgorithm = "sha512") -> TreeDigest:
    """The digest of the tree at ``root``, as :func:`render_layers` returned it.

    Args:
        algorithm: the hash for contents and listing, named by the result's prefix.
            SHA-256 is about three times faster where the CPU has SHA extensions (the
            store digests every imported layer with it); pass the prefix of a stored
            digest to check it.

    Raises:
        StoreError: ``root`` is missing or not a directory, or the tree cannot be read.
    """
    root_fd = _open_root(root, "digest tree", empty=False)
    try:
        return _Finisher(root, root_fd, keep=None, dir_meta={}, algorithm=algorithm).run()
    finally:
        os.close(root_fd)


# -- helpers --------------------------------------------------------------------------------


def _parse_whitelist(whitelist: Sequence[str]) -> frozenset[str] | None:
    """The whitelist as a set of paths relative to the root ("" is the root), or None."""
    if not whitelist:
        return None
    keep = set()
    for path in whitelist:
        if not path.startswith("/"):
            raise StoreError(
                f"cannot apply path whitelist entry {path!r}",
                "it is not an absolute path",
                "fix the image's pathWhitelist",
            )
        keep.add(posixpath.normpath("/" + path.lstrip("/")).lstrip("/"))
    return frozenset(keep)


def _open_root(path: Path, action: str, *, empty: bool) -> int:
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        hint = None if empty else _DAMAGED
        raise StoreError(f"cannot {action} {path}", "it does not exist", hint) from None
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            raise StoreError(f"cannot {action} {path}", "it is not a directory") from None
        raise StoreError(f"cannot {action} {path}", err.strerror) from err
    if empty:
        try:
            with os.scandir(fd) as it:
                names = [entry.name for entry in it]
        except OSError as err:
            os.close(fd)
            raise StoreError(f"cannot {action} {path}", err.strerror) from err
        if names:
            os.close(fd)
            raise StoreError(
                f"cannot {action} {path}", "it is not empty", "render into a new directory"
            )
    return fd


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _proc(dir_fd: int, name: str) -> str:
    """A path naming ``name`` in ``dir_fd`` for the calls without an ``*at`` variant."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _read_xattrs(target: int | str) -> _Xattrs:
    """The xattrs of an open descriptor, or of a /proc path (never followed)."""
    follow = isinstance(target, int)
    try:
        keys = os.listxattr(target, follow_symlinks=follow)
        return tuple(
            (key, os.getxattr(target, key, follow_symlinks=follow)) for key in sorted(keys)
        )
    except OSError as err:
        if err.errno in _NO_XATTRS:
            return ()
        raise


def _write_xattrs(target: int | str, xattrs: _Xattrs) -> None:
    follow = isinstance(target, int)
    for key, value in xattrs:
        os.setxattr(target, key, value, follow_symlinks=follow)


def _set_fd_metadata(fd: int, st: os.stat_result, xattrs: _Xattrs) -> None:
    """Owner, then mode (chown clears setuid), xattrs, mtime — of an open file or dir."""
    now = os.fstat(fd)
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    _write_xattrs(fd, xattrs)
    os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))


def _check_depth(rel: str, where: Path) -> None:
    if rel.count("/") >= _MAX_DEPTH:
        raise StoreError(
            f"cannot walk /{rel} in {where}",
            f"directories nested deeper than {_MAX_DEPTH} levels",
            "the image is broken or hostile",
        )


def _copy_data(src: int, dst: int) -> None:
    """File contents from ``src`` to ``dst``: a reflink, else in-kernel, else read/write."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return
    except OSError as err:
        if err.errno not in _NO_REFLINK:
            raise
    try:
        while os.copy_file_range(src, dst, _COPY_CHUNK):
            pass
        return
    except OSError as err:
        if err.errno not in _NO_COPY_RANGE:
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    while chunk := os.read(src, _READ_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


@contextlib.contextmanager
def _opened(name: str, flags: int, dir_fd: int, mode: int = 0o777) -> Iterator[int]:
    fd = os.open(name, flags, mode, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


# -- merging --------------------------------------------------------------------------------


class _Merger:
    """Merges layers one after the other into the tree held open as ``root_fd``."""

    def __init__(self, root_fd: int, *, hardlink: bool) -> None:
        self._root_fd = root_fd
        self._hardlink = hardlink
        # Directory path -> metadata of the last layer that had it; applied by _Finisher.
        # Entries for directories removed later are harmless: a directory there at the end
        # was recorded again by the layer that made it.
        self.dir_meta: dict[str, tuple[os.stat_result, _Xattrs]] = {}
        self._layer = Path()
        self._can_link = True
        self._copies: dict[tuple[int, int], str] = {}  # layer inode -> path of its copy

    def merge_layer(self, layer: Path, layer_fd: int) -> None:
        self._layer = layer
        self._can_link = self._hardlink
        self._copies.clear()
        try:
            self.dir_meta[""] = (os.fstat(layer_fd), _read_xattrs(layer_fd))
        except OSError as err:
            raise StoreError(f"cannot render layer {layer}", err.strerror) from err
        self._merge_dir(layer_fd, self._root_fd, "")

    def _merge_dir(self, src_fd: int, dst_fd: int, rel: str) -> None:
        _check_depth(rel, self._layer)
        try:
            with os.scandir(src_fd) as it:
                entries = list(it)
        except OSError as err:
            raise self._error(rel, err) from err
        for entry in entries:
            path = _join(rel, entry.name)
            try:
                self._merge_entry(entry, src_fd, dst_fd, path)
            except OSError as err:
                raise self._error(path, err) from err

    def _merge_entry(self, entry: os.DirEntry[str], src_fd: int, dst_fd: int, path: str) -> None:
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        try:
            old: int | None = os.stat(name, dir_fd=dst_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            old = None
        if stat.S_ISDIR(st.st_mode):
            if old is not None and not stat.S_ISDIR(old):
                os.unlink(name, dir_fd=dst_fd)  # a symlink to a directory included
                old = None
            if old is None:
                os.mkdir(name, 0o700, dir_fd=dst_fd)
            with (
                _opened(name, _DIR_FLAGS, src_fd) as sub_src,
                _opened(name, _DIR_FLAGS, dst_fd) as sub_dst,
            ):
                self.dir_meta[path] = (st, _read_xattrs(sub_src))
                self._merge_dir(sub_src, sub_dst, path)
            return
        if old is not None:
            if stat.S_ISDIR(old):
                shutil.rmtree(name, dir_fd=dst_fd)
            else:
                os.unlink(name, dir_fd=dst_fd)
        if self._can_link:
            try:
                os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                return
            except OSError as err:
                if err.errno not in _NO_LINK:
                    raise
                if err.errno == errno.EXDEV:
                    self._can_link = False  # the whole layer is on another file system
        self._copy(src_fd, dst_fd, name, path, st)

    def _copy(self, src_fd: int, dst_fd: int, name: str, path: str, st: os.stat_result) -> None:
        """Recreate a non-directory with its metadata, or link it to its earlier copy."""
        inode = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            first = self._copies.get(inode)
            if first is not None:
                self._link_copy(first, dst_fd, name)
                return
            self._copies[inode] = path
        mode = st.st_mode
        if stat.S_ISREG(mode):
            with (
                _opened(name, _READ_FLAGS, src_fd) as src,
                _opened(name, _CREATE_FLAGS, dst_fd, 0o600) as dst,
            ):
                _copy_data(src, dst)
                _set_fd_metadata(dst, st, _read_xattrs(src))
            return
        xattrs = _read_xattrs(_proc(src_fd, name))
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(name, 0o600, dir_fd=dst_fd)
        else:  # character and block devices, sockets
            os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_fd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            # Just created by us in a directory we hold open: it cannot be a symlink.
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_fd)
        _write_xattrs(_proc(dst_fd, name), xattrs)
        os.utime(name, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False)

    def _link_copy(self, first: str, dst_fd: int, name: str) -> None:
        """Hard-link ``name`` to the copy at ``first``, opening its parents without following."""
        fds: list[int] = []
        parent = self._root_fd
        try:
            *dirs, leaf = first.split("/")
            for part in dirs:
                parent = os.open(part, _DIR_FLAGS, dir_fd=parent)
                fds.append(parent)
            os.link(leaf, name, src_dir_fd=parent, dst_dir_fd=dst_fd, follow_symlinks=False)
        finally:
            for fd in fds:
                os.close(fd)

    def _error(self, path: str, err: OSError) -> StoreError:
        why = err.strerror or str(err)
        return StoreError(f"cannot render /{path} from layer {self._layer}", why)


# -- the final walk: whitelist, directory metadata, digest ----------------------------------


@dataclasses.dataclass
class _Record:
    """One entry of the canonical listing; ``content`` resolves to the file's SHA-512."""

    fields: list[bytes]
    content: concurrent.futures.Future[str] | None = None

    def encode(self) -> bytes:
        fields = list(self.fields)
        if self.content is not None:
            fields[_EXTRA] = self.content.result().encode()
        return b"".join(field + b"\0" for field in fields) + b"\n"


class _Finisher:
    """Walks a tree once: prunes it to the whitelist, sets directory metadata, digests it.

    With ``keep=None`` and no ``dir_meta`` it only reads (that is :func:`tree_digest`).
    """

    def __init__(
        self,
        root: Path,
        root_fd: int,
        *,
        keep: frozenset[str] | None,
        dir_meta: dict[str, tuple[os.stat_result, _Xattrs]],
        algorithm: DigestAlgorithm = "sha512",
    ) -> None:
        self._root = root
        self._algorithm = algorithm
        self._root_fd = root_fd
        self._keep = keep
        self._ancestors: set[str] = set()
        for path in keep or ():
            while path:
                path = path.rpartition("/")[0]
                self._ancestors.add(path)
        self._dir_meta = dir_meta
        self._records: list[_Record | None] = []
        self._hashes: dict[tuple[int, int], concurrent.futures.Future[str]] = {}
        self._first_path: dict[tuple[int, int], bytes] = {}
        self._size = 0
        self._pending = threading.BoundedSemaphore(_MAX_PENDING)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def run(self) -> TreeDigest:
        with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:
            self._pool = pool
            try:
                self._walk_dir(self._root_fd, "")
                digest = hashlib.new(self._algorithm, _DIGEST_HEADER)
                for record in self._records:
                    assert record is not None  # every reserved slot is filled by _walk_dir
                    digest.update(record.encode())
            except OSError as err:  # from a hashing thread
                raise StoreError(f"cannot digest tree {self._root}", err.strerror) from err
        return TreeDigest(
            f"{self._algorithm}-{digest.hexdigest()}", len(self._records) - 1, self._size
        )

    def _walk_dir(self, fd: int, rel: str) -> None:
        _check_depth(rel, self._root)
        slot = len(self._records)
        self._records.append(None)  # directories come before their children
        try:
            with os.scandir(fd) as it:
                names = sorted((entry.name for entry in it), key=os.fsencode)
        except OSError as err:
            raise self._error(rel, err) from err
        for name in names:
            path = _join(rel, name)
            try:
                self._walk_entry(fd, name, path)
            except OSError as err:
                raise self._error(path, err) from err
        try:
            meta = self._dir_meta.get(rel)
            if meta is not None:
                _set_fd_metadata(fd, *meta)
            st = os.fstat(fd)
            self._records[slot] = self._record(rel, st, b"", _read_xattrs(fd))
        except OSError as err:
            raise self._error(rel, err) from err

    def _walk_entry(self, dir_fd: int, name: str, path: str) -> None:
        listed = self._keep is None or path in self._keep
        if not listed and path not in self._ancestors:
            self._remove(dir_fd, name)
            return
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            with _opened(name, _DIR_FLAGS, dir_fd) as sub:
                self._walk_dir(sub, path)
            return
        if not listed:  # stands where a directory leading to a listed path should be
            self._remove(dir_fd, name)
            return
        extra = b""
        if stat.S_ISREG(mode):
            self._file(dir_fd, name, path, st)
            return
        if stat.S_ISLNK(mode):
            extra = os.fsencode(os.readlink(name, dir_fd=dir_fd))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            extra = b"%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        self._records.append(self._record(path, st, extra, _read_xattrs(_proc(dir_fd, name))))

    def _file(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> None:
        inode = (st.st_dev, st.st_ino)
        future = self._hashes.get(inode)
        if future is None:
            assert self._pool is not None
            self._pending.acquire()
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except BaseException:
                self._pending.release()
                raise
            try:
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) != inode:
                    raise OSError(errno.EAGAIN, "the file changed while being read")
                xattrs = _read_xattrs(fd)
            except BaseException:
                os.close(fd)
                self._pending.release()
                raise
            future = self._pool.submit(self._hash, fd)
            self._hashes[inode] = future
            self._size += st.st_size
        else:
            xattrs = _read_xattrs(_proc(dir_fd, name))
        record = self._record(path, st, b"", xattrs)
        record.content = future
        self._records.append(record)

    def _hash(self, fd: int) -> str:
        try:
            with open(fd, "rb", buffering=0) as file:
                return hashlib.file_digest(file, self._algorithm).hexdigest()
        finally:
            self._pending.release()

    def _record(self, path: str, st: os.stat_result, extra: bytes, xattrs: _Xattrs) -> _Record:
        mode = st.st_mode
        encoded = os.fsencode("/" + path)
        first = b""
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            first = self._first_path.setdefault((st.st_dev, st.st_ino), encoded)
            if first == encoded:
                first = b""
        size = st.st_size if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else 0
        fields = [  # keep _EXTRA pointing at `extra`
            encoded,
            _type_letter(mode),
            b"%o" % stat.S_IMODE(mode),
            b"%d" % st.st_uid,
            b"%d" % st.st_gid,
            b"%d" % st.st_mtime_ns,
            b"%d" % size,
            extra,
            first,
            b",".join(os.fsencode(key) + b"=" + value.hex().encode() for key, value in xattrs),
        ]
        return _Record(fields)

    def _remove(self, dir_fd: int, name: str) -> None:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _error(self, path: str, err: OSError) -> StoreError:
        action = "finish" if self._keep is not None or self._dir_meta else "digest"
        return StoreError(f"cannot {action} tree {self._root / path}", err.strerror or str(err))


def _type_letter(mode: int) -> bytes:
    for test, letter in _TYPES:
        if test(mode):
            return letter
    return b"?"


_TYPES = (
    (stat.S_ISREG, b"f"),
    (stat.S_ISDIR, b"d"),
    (stat.S_ISLNK, b"l"),
    (stat.S_ISCHR, b"c"),
    (stat.S_ISBLK, b"b"),
    (stat.S_ISFIFO, b"p"),
    (stat.S_ISSOCK, b"s"),
)
