"""Safe extraction of an archive into a new directory.

Theory of operation. The destination is created empty (mode 0700 until the end, so nobody
walks a half-written tree) and held open as a directory descriptor. Every entry is created
relative to its parent's descriptor, and parents are opened one component at a time with
``O_NOFOLLOW | O_DIRECTORY``: a symlink or a non-directory anywhere on the way fails in the
kernel, whatever the names say. Files are created with ``O_EXCL`` (and directories, links
and nodes fail on ``EEXIST``), so nothing is ever overwritten or followed; nothing is ever
deleted either, so a directory opened once stays the directory it was. The name-level
:class:`~jetpack.aci.reader.LayoutChecker` has already refused all of that with clearer
messages; the kernel checks are the second line.

Directory descriptors are cached in a bounded LRU (at most 256, and a quarter of
RLIMIT_NOFILE), so any number of directories extracts under any open-file limit, and paths
of any depth are walked iteratively.

Metadata goes on through the open descriptor (owner, then mode — chown clears setuid —
then xattrs, then mtime). Without preserved owners, setuid/setgid bits are dropped and so
is the ``security.capability`` xattr (file capabilities grant privileges just like
setuid), with a warning in the result. Directories get theirs last, deepest first, because creating
their children would change their mtime and a read-only mode would stop us writing them.
The manifest is written after the whole archive was read and its manifest validated.

On any failure, KeyboardInterrupt included, the destination is removed entirely.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import resource
import stat
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from jetpack.aci.options import ACIInfo, ExtractOptions
from jetpack.aci.reader import MANIFEST, Member, scan, type_name
from jetpack.aci.stream import archive_label
from jetpack.aci.tarformat import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Header,
    TarReader,
)
from jetpack.errors import ACIError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_OPEN_DIRS = 256  # cached directory descriptors, at most (and a quarter of RLIMIT_NOFILE)
_DEFAULT_OPTIONS = ExtractOptions()  # frozen, so one shared default is safe
_HOSTILE = "the archive may be hostile; do not use it"
# Errors meaning "the file system does not take this attribute", not "the archive is bad".
_XATTR_UNSUPPORTED = {
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.EPERM,
    errno.EACCES,
    errno.ERANGE,
    errno.E2BIG,
    errno.EINVAL,
}
# File capabilities grant privileges like setuid does: only kept with the owners.
_CAPABILITY = "security.capability"


def _max_open_dirs() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _MAX_OPEN_DIRS
    return max(4, min(_MAX_OPEN_DIRS, soft // 4))


class _Extractor:
    """The visitor that turns accepted entries into files under ``dest``."""

    def __init__(self, root_fd: int, options: ExtractOptions) -> None:
        self._root_fd = root_fd
        self._dirs: OrderedDict[str, int] = OrderedDict()
        self._max_dirs = _max_open_dirs()
        self._owners = (
            os.geteuid() == 0 if options.preserve_owners is None else options.preserve_owners
        )
        self._devices = options.allow_devices and os.geteuid() == 0
        self._late_dirs: list[tuple[str, Header]] = []
        self._xattr_failures: dict[tuple[str, str], list[str]] = {}
        self._caps_dropped: list[str] = []
        self.manifest: Header | None = None

    # -- directory descriptors ----------------------------------------------------------

    def _dir(self, rel: str) -> int:
        """A descriptor for directory ``rel`` (relative to dest), created 0755 if missing.

        Descriptors are cached, least recently used first out, so at most ``_max_dirs`` are
        open whatever the archive's shape. The one returned stays open until the next call
        that misses the cache — and a miss never closes the two most recent, so a caller
        may hold two (a hard link's source and destination directories). Walks down from
        the deepest cached ancestor one component at a time, iteratively: no depth limit.
        """
        if not rel:
            return self._root_fd
        dirs = self._dirs
        fd = dirs.get(rel)
        if fd is not None:
            dirs.move_to_end(rel)
            return fd
        start = len(rel)
        base = self._root_fd
        while True:
            start = rel.rfind("/", 0, start)
            if start < 0:
                break
            cached = dirs.get(rel[:start])
            if cached is not None:
                dirs.move_to_end(rel[:start])
                base = cached
                break
        pos = start + 1  # the first component to open (0 when nothing was cached)
        fd = base
        try:
            while True:
                end = rel.find("/", pos)
                child = self._open_child(fd, rel, rel[pos:] if end < 0 else rel[pos:end])
                if fd != base:
                    os.close(fd)  # intermediate directories are not cached
                fd = child
                if end < 0:
                    break
                pos = end + 1
        except BaseException:
            if fd != base:
                os.close(fd)
            raise
        dirs[rel] = fd
        if len(dirs) > self._max_dirs:
            os.close(dirs.popitem(last=False)[1])
        return fd

    @staticmethod
    def _open_child(parent: int, rel: str, name: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            # A parent the archive never listed: tar creates those 0755 too.
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, 0o755)
            return fd
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ACIError(
                    "unsafe entry", f"{rel!r} is not a directory (a symlink?)", _HOSTILE
                ) from err
            raise

    def _parent(self, path: str) -> tuple[int, str]:
        up, _, leaf = path.rpartition("/")
        return self._dir(up), leaf

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    # -- entries ------------------------------------------------------------------------

    def visit(self, member: Member, reader: TarReader) -> None:
        header = member.header
        kind = header.typeflag
        if member.path == MANIFEST:
            self.manifest = header  # written by finish(), once the manifest is known valid
            return
        if not member.path:
            return  # the archive root './': dest is ours, its metadata is not the image's
        try:
            if kind == REGULAR:
                self._file(member.path, header, reader)
            elif kind == DIRECTORY:
                self._directory(member.path, header)
            elif kind == SYMLINK:
                parent, leaf = self._parent(member.path)
                os.symlink(header.linkname, leaf, dir_fd=parent)
                self._finish_path(parent, leaf, member.path, header, symlink=True)
            elif kind == HARDLINK:
                target_dir, target = self._parent(member.link)
                parent, leaf = self._parent(member.path)
                os.link(
                    target,
                    leaf,
                    src_dir_fd=target_dir,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
            elif kind in (CHARDEV, BLOCKDEV, FIFO):
                self._node(member.path, header)
        except FileExistsError as err:
            raise ACIError(
                "invalid archive", f"{member.path!r} conflicts with an earlier entry", _HOSTILE
            ) from err

    def _file(self, path: str, header: Header, reader: TarReader) -> None:
        parent, leaf = self._parent(path)
        fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:

            def sink(view: memoryview) -> None:
                while view:
                    view = view[os.write(fd, view) :]

            reader.copy_data(sink)
            self._finish_fd(fd, path, header)
        finally:
            os.close(fd)

    def _directory(self, path: str, header: Header) -> None:
        parent, leaf = self._parent(path)
        # It exists if implied by an earlier, deeper entry; the checker guarantees it is a
        # directory and the O_NOFOLLOW open in _dir() below makes sure of it.
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o700, dir_fd=parent)
        self._dir(path)
        self._late_dirs.append((path, header))

    def _node(self, path: str, header: Header) -> None:
        parent, leaf = self._parent(path)
        if header.typeflag == FIFO:
            os.mkfifo(leaf, 0o600, dir_fd=parent)
        elif not self._devices:
            raise ACIError(
                "device node refused",
                f"{path!r} is {type_name(header.typeflag)}",
                "extract as root with devices allowed, or remove it from the image",
            )
        else:
            kind = stat.S_IFCHR if header.typeflag == CHARDEV else stat.S_IFBLK
            device = os.makedev(header.devmajor, header.devminor)
            os.mknod(leaf, kind | 0o600, device, dir_fd=parent)
        self._finish_path(parent, leaf, path, header, symlink=False)

    # -- metadata -----------------------------------------------------------------------

    def _mode(self, header: Header) -> int:
        # Without our chown the file belongs to the caller: setuid/setgid would be theirs.
        return header.mode if self._owners else header.mode & ~(stat.S_ISUID | stat.S_ISGID)

    def _finish_fd(self, fd: int, path: str, header: Header) -> None:
        if self._owners:
            os.fchown(fd, header.uid, header.gid)
        os.fchmod(fd, self._mode(header))
        for key, value in self._xattrs(header, path):
            try:
                os.setxattr(fd, key, value)
            except OSError as err:
                self._xattr_failed(key, err, path)
        os.utime(fd, ns=(header.mtime_ns, header.mtime_ns))

    def _finish_path(
        self, parent: int, leaf: str, path: str, header: Header, *, symlink: bool
    ) -> None:
        """Metadata for what cannot be opened safely: symlinks, devices, FIFOs."""
        if self._owners:
            os.chown(leaf, header.uid, header.gid, dir_fd=parent, follow_symlinks=False)
        if not symlink:
            # The node was just created by us under a directory we hold: no swap possible.
            os.chmod(leaf, self._mode(header), dir_fd=parent)
        # No *xattrat(); /proc/self/fd pins the parent, follow_symlinks=False the leaf.
        proc_path = f"/proc/self/fd/{parent}/{leaf}"
        for key, value in self._xattrs(header, path):
            try:
                os.setxattr(proc_path, key, value, follow_symlinks=False)
            except OSError as err:
                self._xattr_failed(key, err, path)
        os.utime(
            leaf,
            ns=(header.mtime_ns, header.mtime_ns),
            dir_fd=parent,
            follow_symlinks=False,
        )

    def _xattrs(self, header: Header, path: str) -> list[tuple[str, bytes]]:
        """The xattrs to set: all of them, but file capabilities only with the owners."""
        items = list(header.xattrs.items())
        if self._owners or _CAPABILITY not in header.xattrs:
            return items
        self._caps_dropped.append(path)
        return [(key, value) for key, value in items if key != _CAPABILITY]

    def _xattr_failed(self, key: str, err: OSError, path: str) -> None:
        if err.errno not in _XATTR_UNSUPPORTED:
            raise err
        reason = os.strerror(err.errno or 0)
        self._xattr_failures.setdefault((key, reason), []).append(path)

    def finish(self, manifest_bytes: bytes) -> None:
        """Write the manifest, then directory metadata, deepest first."""
        header = self.manifest
        assert header is not None  # scan() guarantees a manifest entry
        fd = os.open(MANIFEST, _FILE_FLAGS, 0o600, dir_fd=self._root_fd)
        try:
            view = memoryview(manifest_bytes)
            while view:
                view = view[os.write(fd, view) :]
            self._finish_fd(fd, MANIFEST, header)
        finally:
            os.close(fd)
        for path, dir_header in sorted(self._late_dirs, key=lambda d: -d[0].count("/")):
            self._finish_fd(self._dir(path), path, dir_header)

    def warnings(self) -> tuple[str, ...]:
        out = []
        if self._caps_dropped:
            paths = self._caps_dropped
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            out.append(
                f"xattr {_CAPABILITY} dropped from {paths[0]!r}{more}: file capabilities are"
                " kept only when preserving owners, like setuid/setgid bits"
            )
        for (key, reason), paths in sorted(self._xattr_failures.items()):
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            out.append(f"xattr {key} not set on {paths[0]!r}{more}: {reason}")
        return tuple(out)


def extract_aci(
    src: BinaryIO,
    dest: Path,
    *,
    options: ExtractOptions = _DEFAULT_OPTIONS,
    tee: BinaryIO | None = None,
) -> ACIInfo:
    """Validate and extract the archive in ``src`` into the new directory ``dest``.

    Creates ``dest/manifest`` and ``dest/rootfs``, preserving modes, owners (see
    :class:`ExtractOptions`), mtimes, symlinks, hard links and xattrs, in one pass that
    also computes the image ID.

    Args:
        src: the archive, read to its end.
        dest: must not exist; its parent must.
        tee: receives every byte read from ``src``, as read (to store the blob in the same pass).

    Raises:
        ACIError: the archive is unreadable, invalid or hostile, or ``dest`` is unusable.
            ``dest`` does not exist afterwards.
    """
    try:
        dest.mkdir(0o700)
    except FileExistsError:
        raise ACIError(
            f"cannot extract into {dest}", "it already exists", "remove it or pick a new path"
        ) from None
    except FileNotFoundError:
        raise ACIError(
            f"cannot extract into {dest}", "its parent directory does not exist"
        ) from None
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
        try:
            extractor = _Extractor(root_fd, options)
            try:
                info = scan(src, limits=options.limits, visit=extractor.visit, tee=tee)
                extractor.finish(info.manifest_bytes)
            finally:
                extractor.close()
            os.fchmod(root_fd, 0o755)
        finally:
            os.close(root_fd)
    except ACIError:
        remove_tree(dest)
        raise
    except OSError as err:
        # Not the archive's fault (a full disk, a read-only or odd file system): say where.
        remove_tree(dest)
        raise ACIError(
            f"cannot extract into {dest}", err.strerror or str(err), _os_error_hint(err)
        ) from err
    except (OverflowError, ValueError, RecursionError) as err:
        # Backstop: the codec refuses what the OS cannot take, so this is a gap in it.
        remove_tree(dest)
        raise ACIError(f"cannot extract {archive_label(src)}", f"{err}", _HOSTILE) from err
    except BaseException:
        remove_tree(dest)
        raise
    warnings = extractor.warnings()
    if warnings:
        info = dataclasses.replace(info, warnings=warnings)
    return info


def _os_error_hint(err: OSError) -> str | None:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "check the file system's free space"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the destination's permissions"
    return None


def remove_tree(path: Path) -> None:
    """Remove ``path`` completely, even directories whose mode forbids writing into them.

    Iterative and descriptor-relative, holding one directory open at a time, so a tree of
    any depth goes (``shutil.rmtree`` recurses, and path names would outgrow PATH_MAX). The
    way back up is ``..``, which is safe: nothing else writes in a tree we are removing.
    """
    try:
        fd = _open_for_removal(str(path), None)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        path.unlink()  # a file, or a symlink (never followed)
        return
    names: list[str] = []
    try:
        pending = [_clear_files(fd)]
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                child = _open_for_removal(name, fd)
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_clear_files(fd))
                continue
            pending.pop()
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    path.rmdir()


def _open_for_removal(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        # Only without root: a directory extracted with mode 0 (it is a directory: we just
        # listed it, or the caller named it, and nothing else writes here).
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in ``fd``; the names of its subdirectories."""
    if os.geteuid() != 0:
        os.fchmod(fd, 0o700)  # so its entries can be removed whatever its mode
    subdirs: list[str] = []
    others: list[str] = []
    with os.scandir(fd) as it:
        for entry in it:
            (subdirs if entry.is_dir(follow_symlinks=False) else others).append(entry.name)
    for name in others:
        os.unlink(name, dir_fd=fd)
    return subdirs
