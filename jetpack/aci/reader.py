"""Reading an archive: the one pass shared by validation, extraction and patching.

:func:`scan` drives :class:`~jetpack.aci.stream.ArchiveStream` (bytes, hash, limits) and
:class:`~jetpack.aci.tarformat.TarReader` (entries), checks every entry with
:class:`LayoutChecker`, and hands the accepted ones to a visitor — nothing for a validation,
file creation for an extraction. The checker works on names alone, so ``jetpack aci
validate`` rejects exactly what extraction would; extraction adds the kernel's own
``O_NOFOLLOW`` checks as a second line of defence.

Names are canonicalised before anything else: a leading ``./`` (what ``tar -C dir .``
writes) is stripped, because ``actool`` and Go's ``filepath.Clean`` accept it, and ``./``
itself (the archive root) is accepted as a directory entry and otherwise ignored. Every
other non-canonical form — absolute names, ``..``, ``.`` or empty components — is
rejected, so that one path has exactly one spelling and duplicates cannot hide.

What no file system call could take is refused here too, never left for extraction to trip
over: names with a NUL byte, out-of-range owners, sizes and mtimes (in the tar codec), path
components over 255 bytes and symlink targets over 4095 bytes (here). Hard links may point
at any earlier non-directory entry under ``rootfs/`` (a file, symlink, FIFO, device or
another hard link), as GNU tar, Go's ``archive/tar`` and ``actool`` allow; the link is made
to the entry itself, never followed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import BinaryIO

from jetpack.aci.compression import Compression
from jetpack.aci.options import ACIInfo, ExtractLimits
from jetpack.aci.stream import ArchiveStream, SourceReadError, archive_label, prefetch
from jetpack.aci.tarformat import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    LINK_MAX,
    NAME_MAX,
    REGULAR,
    SYMLINK,
    Header,
    TarReader,
)
from jetpack.errors import ACIError, ManifestError
from jetpack.schema import ImageManifest, parse_image_manifest

MANIFEST = "manifest"
ROOTFS = "rootfs"

_KNOWN_TYPES = frozenset({REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO})
_TYPE_NAMES = {
    REGULAR: "a regular file",
    HARDLINK: "a hard link",
    SYMLINK: "a symlink",
    CHARDEV: "a character device",
    BLOCKDEV: "a block device",
    DIRECTORY: "a directory",
    FIFO: "a FIFO",
}
# Checking a path keeps every directory it implies. Each deep path costs the sum of its
# ancestors' lengths (quadratic in depth), so a small archive of many distinct, very deep
# paths could exhaust memory. Real images stay far below this (100,000 files of 100-byte
# paths imply a few MiB); past it the archive is refused instead of the host swapping.
MAX_PATH_BYTES = 256 << 20
_DEFAULT_LIMITS = ExtractLimits()  # frozen, so one shared default is safe
_HOSTILE = "the archive may be hostile; do not use it"
_INVALID = "rebuild the image with a valid layout (manifest + rootfs/)"


def type_name(typeflag: bytes) -> str:
    """``"a symlink"`` and the like, for messages."""
    return _TYPE_NAMES.get(typeflag, f"an entry of unknown type {typeflag!r}")


def canonical(name: str) -> str:
    """The canonical form of an archive member name ("" for the archive root).

    Raises:
        ACIError: the name is absolute, has ``..``, ``.`` or empty components.
    """
    path = name
    while path.startswith("./"):
        path = path[2:]
    if path in ("", "."):
        return ""
    if path.startswith("/"):
        raise ACIError("unsafe entry", f"{name!r} is an absolute path", _HOSTILE)
    path = path.rstrip("/")
    for part in path.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise ACIError(
                "invalid entry",
                f"{name!r} has a component longer than {NAME_MAX} bytes",
                "no Linux file system can hold it; " + _INVALID,
            )
        if part == "..":
            raise ACIError("unsafe entry", f"{name!r} has a '..' component", _HOSTILE)
        if part in ("", "."):
            raise ACIError(
                "invalid entry", f"{name!r} is not a canonical path (empty or '.' part)", _INVALID
            )
    return path


@dataclasses.dataclass(slots=True)
class Member:
    """An accepted entry: its canonical path and, for a hard link, its canonical target."""

    path: str
    header: Header
    link: str = ""


class LayoutChecker:
    """Checks each entry against the ACI layout and the entries seen before it.

    It remembers the type of every explicit entry and every directory implied by a deeper
    one, which is enough to refuse duplicates, entries reached through a symlink or a
    non-directory, non-directories replacing implied directories, and hard links to
    anything but an earlier non-directory entry (of any other type) under ``rootfs/``.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, bytes] = {}
        self._implied: set[str] = set()
        self._path_bytes = 0  # characters held in _implied: bounded, see MAX_PATH_BYTES
        self._checked_parent = ""  # the last parent found sound: entries come grouped by dir
        self.has_manifest = False
        self.has_rootfs = False

    def check(self, header: Header) -> Member:
        """The entry as a :class:`Member`; the archive root (``./``) has path ``""``."""
        path = canonical(header.name)
        kind = header.typeflag
        if kind not in _KNOWN_TYPES:
            raise ACIError(
                "unsupported entry", f"{header.name!r} has unknown type {kind!r}", _INVALID
            )
        if not path:
            if kind != DIRECTORY:
                raise ACIError(
                    "invalid entry", "the archive root './' is not a directory", _INVALID
                )
            if "" in self._kinds:
                raise ACIError("invalid archive", "duplicate entry './'", _INVALID)
            self._kinds[""] = kind
            return Member("", header)
        top, _, rest = path.partition("/")
        if top == MANIFEST:
            if rest:
                raise ACIError("invalid layout", f"{header.name!r} is under manifest", _INVALID)
            if kind != REGULAR:
                raise ACIError(
                    "invalid layout", f"manifest is {type_name(kind)}, not a regular file", _INVALID
                )
        elif top == ROOTFS:
            if not rest and kind != DIRECTORY:
                raise ACIError(
                    "invalid layout", f"rootfs is {type_name(kind)}, not a directory", _INVALID
                )
        else:
            raise ACIError(
                "invalid layout",
                f"unexpected entry {header.name!r} outside rootfs/",
                "an ACI holds only 'manifest' and 'rootfs/' at its top level",
            )
        if path in self._kinds:
            raise ACIError("invalid archive", f"duplicate entry {path!r}", _INVALID)
        if kind != DIRECTORY and path in self._implied:
            raise ACIError(
                "invalid archive",
                f"{path!r} is {type_name(kind)} but earlier entries use it as a directory",
                _INVALID,
            )
        self._check_parents(path)
        member = Member(path, header)
        if kind == HARDLINK:
            member.link = self._check_link(path, header.linkname)
        elif kind == SYMLINK:
            if not header.linkname:
                raise ACIError("invalid entry", f"symlink {path!r} has an empty target", _INVALID)
            if len(header.linkname.encode("utf-8", "surrogateescape")) > LINK_MAX:
                raise ACIError(
                    "invalid entry",
                    f"symlink {path!r} has a target longer than {LINK_MAX} bytes",
                    _INVALID,
                )
        self._kinds[path] = kind
        if path == MANIFEST:
            self.has_manifest = True
        elif path == ROOTFS:
            self.has_rootfs = True
        return member

    def _check_parents(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        if not parent or parent == self._checked_parent:
            return
        # Deepest first, stopping at the first ancestor already known as a directory: its
        # own ancestors were checked when it was, and an implied directory can never be
        # replaced by anything else later. So a deep path costs its new components only.
        new: list[str] = []
        end = len(parent)
        while end > 0:
            ancestor = parent[:end]
            if ancestor in self._implied:
                break
            kind = self._kinds.get(ancestor, DIRECTORY)
            if kind == SYMLINK:
                raise ACIError(
                    "unsafe entry", f"{path!r} is reached through symlink {ancestor!r}", _HOSTILE
                )
            if kind != DIRECTORY:
                raise ACIError(
                    "invalid archive",
                    f"{path!r} is under {ancestor!r}, which is {type_name(kind)}",
                    _INVALID,
                )
            new.append(ancestor)
            self._path_bytes += len(ancestor)
            end = parent.rfind("/", 0, end)
        if self._path_bytes > MAX_PATH_BYTES:
            raise ACIError(
                "archive refused",
                f"its paths need more than {MAX_PATH_BYTES >> 20} MiB of memory to check "
                "(too many entries, or very deep ones)",
                _HOSTILE,
            )
        self._implied.update(new)
        self._checked_parent = parent

    def _check_link(self, path: str, target_name: str) -> str:
        target = canonical(target_name)
        if not target.startswith(ROOTFS + "/"):
            raise ACIError(
                "unsafe entry",
                f"hard link {path!r} points outside rootfs: {target_name!r}",
                _HOSTILE,
            )
        kind = self._kinds.get(target)
        if kind is None:
            raise ACIError(
                "unsafe entry",
                f"hard link {path!r} points to {target_name!r}, which is not an earlier entry",
                _HOSTILE,
            )
        if kind == DIRECTORY:
            raise ACIError("invalid entry", f"hard link {path!r} points to a directory", _INVALID)
        return target

    def finish(self) -> None:
        """Check that the mandatory entries were present."""
        if not self.has_manifest:
            raise ACIError("invalid layout", "no manifest entry", _INVALID)
        if not self.has_rootfs:
            raise ACIError("invalid layout", "no rootfs directory entry", _INVALID)


def parse_manifest(data: bytes) -> ImageManifest:
    """The manifest, with schema errors turned into archive errors."""
    try:
        return parse_image_manifest(data)
    except ManifestError as err:
        why = f"{err.path}: {err.rule}" if err.path else err.rule
        raise ACIError("invalid manifest", why, err.hint or "fix the manifest and rebuild") from err


def relabel(err: ACIError, label: str) -> ACIError:
    """``err`` with the archive's name in front of its message."""
    new = ACIError(f"{label}: {err.what}", err.why, err.hint)
    new.__cause__ = err.__cause__
    return new


#: Called for each accepted entry with the reader positioned at its data (for the manifest,
#: already read: it is in ``ACIInfo.manifest_bytes``), including the archive root ``./``
#: (path ``""``) when the archive has one.
Visitor = Callable[[Member, TarReader], None]


def scan(
    src: BinaryIO,
    *,
    limits: ExtractLimits,
    visit: Visitor | None = None,
    tee: BinaryIO | None = None,
    capture: bool = False,
    on_end: Callable[[TarReader], None] | None = None,
) -> ACIInfo:
    """Read and check a whole archive once; see the module docstring.

    Args:
        visit: gets every accepted entry, in archive order.
        capture: keep each entry's raw header blocks (for byte-exact copies).
        on_end: called at the end-of-archive marker instead of draining it, so a copier
            can take the trailer; it must consume the rest of the stream.

    Raises:
        ACIError: prefixed with the archive's name.
    """
    label = archive_label(src)
    try:
        return _scan(src, limits, visit, tee, capture, on_end)
    except SourceReadError:
        raise  # already names the archive
    except ACIError as err:
        raise relabel(err, label) from err.__cause__


def _scan(
    src: BinaryIO,
    limits: ExtractLimits,
    visit: Visitor | None,
    tee: BinaryIO | None,
    capture: bool,
    on_end: Callable[[TarReader], None] | None,
) -> ACIInfo:
    stream = ArchiveStream(src, limits=limits, tee=tee)
    chunks: Iterator[bytes] = stream.chunks()
    if stream.compression is not Compression.NONE:
        chunks = prefetch(chunks)
    reader = TarReader(chunks, capture=capture)
    checker = LayoutChecker()
    manifest_bytes = b""
    entries = 0
    try:
        while (header := reader.next()) is not None:
            entries += 1
            member = checker.check(header)
            if member.path == MANIFEST:
                if header.size > limits.max_manifest_size:
                    raise ACIError(
                        "manifest too large",
                        f"{header.size} bytes, the limit is {limits.max_manifest_size}",
                        "a manifest is a small JSON document; this archive is broken or hostile",
                    )
                manifest_bytes = reader.read_data()
                if visit is not None:
                    visit(member, reader)
            elif visit is not None:
                visit(member, reader)
        checker.finish()
        manifest = parse_manifest(manifest_bytes)
        if on_end is not None:
            on_end(reader)
        else:
            reader.drain()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return ACIInfo(
        image_id=stream.image_id,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        compression=stream.compression,
        compressed_size=stream.compressed_size,
        uncompressed_size=stream.uncompressed_size,
        entries=entries,
    )


def read_aci(src: BinaryIO, *, limits: ExtractLimits = _DEFAULT_LIMITS) -> ACIInfo:
    """Validate a whole archive without extracting it.

    Checks compression, tar structure, layout, names (no traversal, no duplicates, hard
    links only to earlier entries), limits and the manifest, and computes the image ID.

    Raises:
        ACIError: the archive is unreadable, invalid or hostile; the message names it.
    """
    return scan(src, limits=limits)
