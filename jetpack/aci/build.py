"""Building an archive from an image layout directory (``manifest`` + ``rootfs/``).

The output is reproducible: entries in a fixed order (manifest, then rootfs depth-first
with each directory's names sorted bytewise), whole-second mtimes, pax headers only where
ustar falls short, a deterministic gzip header, and owner names derived from the ids.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import stat
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import BinaryIO

from jetpack.aci.compression import Compression
from jetpack.aci.options import ACIInfo
from jetpack.aci.output import TarSink, atomic_output
from jetpack.aci.reader import MANIFEST, ROOTFS, parse_manifest, relabel
from jetpack.aci.tarformat import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    encode_header,
    padding,
)
from jetpack.errors import ACIError
from jetpack.schema import ImageManifest

_READ = 1 << 20
_MAX_MANIFEST = 16 << 20
_LAYOUT_HINT = "a layout holds only 'manifest' (a file) and 'rootfs/' (a directory)"


@contextlib.contextmanager
def _reading(path: object) -> Iterator[None]:
    """Turn an :class:`OSError` (from reading the layout) into ``cannot read <path>``."""
    try:
        yield
    except OSError as err:
        raise ACIError(f"cannot read {path}", err.strerror or str(err)) from err


def _load_layout(layout: Path) -> tuple[ImageManifest, bytes]:
    with _reading(layout):
        return _load_layout_unchecked(layout)


def _load_layout_unchecked(layout: Path) -> tuple[ImageManifest, bytes]:
    try:
        st = layout.stat()
    except FileNotFoundError:
        raise ACIError(f"invalid layout {layout}", "it does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ACIError(f"invalid layout {layout}", "it is not a directory", _LAYOUT_HINT)
    names = {p.name for p in layout.iterdir()}
    extra = sorted(names - {MANIFEST, ROOTFS})
    if extra and not names & {MANIFEST, ROOTFS}:
        raise ACIError(
            f"invalid layout {layout}",
            "no manifest and no rootfs/: not an image layout",
            _LAYOUT_HINT,
        )
    if extra:
        shown = ", ".join(map(repr, extra[:5])) + (
            f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        )
        raise ACIError(
            f"invalid layout {layout}", f"unexpected {shown} at the top level", _LAYOUT_HINT
        )
    for name, test, what in (
        (MANIFEST, stat.S_ISREG, "a regular file"),
        (ROOTFS, stat.S_ISDIR, "a directory"),
    ):
        try:
            mode = os.lstat(layout / name).st_mode
        except FileNotFoundError:
            raise ACIError(f"invalid layout {layout}", f"no {name}", _LAYOUT_HINT) from None
        if not test(mode):
            raise ACIError(f"invalid layout {layout}", f"{name} is not {what}", _LAYOUT_HINT)
    with _reading(layout / MANIFEST), open(layout / MANIFEST, "rb") as f:
        data = f.read(_MAX_MANIFEST + 1)
    if len(data) > _MAX_MANIFEST:
        raise ACIError(f"invalid layout {layout}", f"manifest is over {_MAX_MANIFEST} bytes")
    try:
        return parse_manifest(data), data
    except ACIError as err:
        raise relabel(err, str(layout / MANIFEST)) from err.__cause__


def validate_layout(layout: Path) -> ImageManifest:
    """Check an image layout directory and return its manifest.

    Raises:
        ACIError: anything but ``manifest`` (a regular file) and ``rootfs`` (a directory) at
            the top level, or an invalid manifest.
    """
    return _load_layout(layout)[0]


@cache
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def _walk(directory: str, prefix: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(archive name, file path, lstat) depth-first, names sorted bytewise."""
    with _reading(directory), os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        with _reading(entry.path):
            st = entry.stat(follow_symlinks=False)
        yield f"{prefix}/{entry.name}", entry.path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(entry.path, f"{prefix}/{entry.name}")


class _Builder:
    def __init__(self, sink: TarSink, owner_root: bool) -> None:
        self._sink = sink
        self._owner_root = owner_root
        self._inodes: dict[tuple[int, int], str] = {}

    def add(self, name: str, path: str, st: os.stat_result, data: bytes | None = None) -> None:
        with _reading(path):
            self._add(name, path, st, data)

    def _add(self, name: str, path: str, st: os.stat_result, data: bytes | None) -> None:
        mode = st.st_mode
        fields: dict[str, object] = {}
        size = 0
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            # Only entries under rootfs/ are link targets: a hard link to the manifest is
            # what the reader refuses as pointing outside rootfs.
            linkable = st.st_nlink > 1 and name.startswith(ROOTFS + "/")
            first = self._inodes.get(key) if linkable else None
            if first is not None:
                typeflag, fields["linkname"] = HARDLINK, first
            else:
                typeflag, size = REGULAR, st.st_size if data is None else len(data)
                if linkable:
                    self._inodes[key] = name
        elif stat.S_ISDIR(mode):
            typeflag, name = DIRECTORY, name + "/"
        elif stat.S_ISLNK(mode):
            typeflag, fields["linkname"] = SYMLINK, str(Path(path).readlink())
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            typeflag = CHARDEV if stat.S_ISCHR(mode) else BLOCKDEV
            fields["devmajor"] = os.major(st.st_rdev)
            fields["devminor"] = os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            typeflag = FIFO
        else:
            raise ACIError(
                f"cannot archive {path}", "it is a socket or other special file", "remove it"
            )
        uid, gid = (0, 0) if self._owner_root else (st.st_uid, st.st_gid)
        self._sink.write(
            encode_header(
                name=name,
                typeflag=typeflag,
                mode=stat.S_IMODE(mode),
                uid=uid,
                gid=gid,
                size=size,
                mtime=st.st_mtime_ns // 1_000_000_000,
                uname=_user_name(uid),
                gname=_group_name(gid),
                xattrs=_xattrs(path),
                **fields,  # type: ignore[arg-type]
            )
        )
        self._sink.entries += 1
        if typeflag != REGULAR:
            return
        if data is not None:
            self._sink.write(data)
        else:
            self._copy(path, size)
        self._sink.write(b"\0" * padding(size))

    def _copy(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            left = size
            while left:
                chunk = os.read(fd, min(_READ, left))
                if not chunk:
                    break
                self._sink.write(chunk)
                left -= len(chunk)
            if left or os.read(fd, 1):
                raise ACIError(f"cannot archive {path}", "it changed size while being read")
        finally:
            os.close(fd)


def write_aci(
    layout: Path,
    dst: BinaryIO,
    *,
    compression: Compression = Compression.GZIP,
    owner_root: bool = False,
) -> ACIInfo:
    """Write the archive of image layout ``layout`` to ``dst``.

    Args:
        owner_root: record every entry as owned by uid/gid 0 (``root``), as an image built
            without root privileges usually wants.

    Raises:
        ACIError: the layout or its manifest is invalid, or a file cannot be archived.
    """
    manifest, manifest_bytes = _load_layout(layout)
    sink = TarSink(dst, compression)
    builder = _Builder(sink, owner_root)
    manifest_path = layout / MANIFEST
    rootfs = layout / ROOTFS
    with _reading(layout):
        manifest_st, rootfs_st = manifest_path.lstat(), rootfs.lstat()
    builder.add(MANIFEST, str(manifest_path), manifest_st, manifest_bytes)
    builder.add(ROOTFS, str(rootfs), rootfs_st)
    for name, path, st in _walk(str(rootfs), ROOTFS):
        builder.add(name, path, st)
    sink.close()
    return ACIInfo(
        image_id=sink.image_id,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        compression=compression,
        compressed_size=sink.compressed_size,
        uncompressed_size=sink.uncompressed_size,
        entries=sink.entries,
    )


def build_aci(
    layout: Path,
    out: Path,
    *,
    compression: Compression = Compression.GZIP,
    owner_root: bool = False,
    overwrite: bool = False,
) -> ACIInfo:
    """Build the archive ``out`` from image layout ``layout``, atomically.

    The layout (and its manifest) is validated before anything is written; ``out`` appears
    complete or not at all.

    Raises:
        ACIError: invalid layout, or ``out`` exists and ``overwrite`` is false.
    """
    validate_layout(layout)
    with atomic_output(out, overwrite=overwrite) as dst:
        return write_aci(layout, dst, compression=compression, owner_root=owner_root)
