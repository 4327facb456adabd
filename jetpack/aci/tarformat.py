"""A small, strict tar codec: ustar, GNU and pax headers in; ustar (+ pax when needed) out.

Why not :mod:`tarfile`: its stream mode copies every member through 10 KiB buffers and
hides the raw header blocks, while extraction wants zero-copy file writes and patching
wants to copy entries byte for byte. The format is small; what is supported:

- reading: v7, ustar (``prefix`` field), GNU (base-256 numbers, ``L``/``K`` long names)
  and pax (``x`` and ``g`` headers: path, linkpath, size, uid, gid, uname, gname, mtime with
  fractions, ``SCHILY.xattr.*``). Header checksums are verified. Sparse files, multi-volume
  and other exotic GNU types are reported as unknown types, never guessed at.
  Strictness, so that what passes here is what the file system will take: numbers are
  ASCII digits only (octal fields, pax values and record lengths), base-256 is decoded as Go
  does (sign bit 0x40), uids/gids fit 32 bits, mtimes fit signed 64-bit nanoseconds (years
  1677 to 2262), names, link targets and xattr names have no NUL byte, an extension header
  must be followed by an entry, and one zero block may only be followed by a second one
  (or the end of the stream).
- writing: one ustar header per entry, preceded by a pax header only for what ustar
  cannot hold (long or non-ASCII names, big numbers, xattrs) — what Go's ``archive/tar``
  (and therefore ``actool``) writes too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from jetpack.errors import ACIError

BLOCK = 512

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
_CONTIGUOUS = b"7"  # a regular file, as every tar reader treats it
_PAX = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"

# Types whose data area is empty whatever the size field says (as tarfile and Go agree).
_HEADER_ONLY = frozenset({HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO})
_MAX_META = 8 << 20  # pax or long-name data held in memory

_CORRUPT = "the archive is damaged or not a tar; rebuild it"


def _corrupt(why: str) -> ACIError:
    return ACIError("malformed tar archive", why, _CORRUPT)


@dataclasses.dataclass(slots=True)
class Header:
    """One tar entry, with pax and GNU extensions already applied."""

    name: str
    typeflag: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    #: every raw block read for this entry (extension headers included), when captured
    raw: bytes = b""

    @property
    def data_size(self) -> int:
        """Bytes of data that follow the header (not counting padding)."""
        return 0 if self.typeflag in _HEADER_ONLY else self.size


def padding(size: int) -> int:
    """Zero bytes that follow ``size`` bytes of data to fill the last block."""
    return -size % BLOCK


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 (may be negative).

    Base-256 is decoded as Go's ``archive/tar`` does: the 0x80 flag bit is dropped and the
    remaining bits are a big-endian two's complement number whose sign bit is 0x40 of the
    first byte. Octal must be ASCII octal digits only (padded with spaces or NULs): no
    signs, underscores or ``0o`` prefixes, which :func:`int` would accept.
    """
    if field[:1] and field[0] & 0x80:
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        if field[0] & 0x40:
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.translate(None, b"01234567"):
        raise _corrupt(f"{what} field {field!r} is not an octal number")
    return int(text, 8)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    # Some old tars summed signed chars.
    signed = unsigned - 256 * sum(1 for b in block if b > 127)
    signed += 256 * sum(1 for b in block[148:156] if b > 127)
    return stored == signed


def _ascii_digits(text: str | bytes) -> bool:
    """Only ``0``-``9``: :meth:`str.isdigit` also takes ``²`` and other Unicode digits."""
    return bool(text) and text.isascii() and text.isdigit()


# Keys whose values are names: a NUL in them cannot reach the file system (Go refuses too).
_PAX_NAME_KEYS = frozenset({"path", "linkpath", "uname", "gname"})
_XATTR_PREFIX = "SCHILY.xattr."


def parse_pax(data: bytes) -> dict[str, str | bytes]:
    """Parse pax extended-header records (``"<len> <key>=<value>\\n"``).

    ``SCHILY.xattr.*`` values stay bytes (they are binary); the rest are UTF-8 text.
    Like Go's ``archive/tar``, refuses empty keys, NUL bytes in keys and in name values
    (``path``, ``linkpath``, ``uname``, ``gname``), and an empty xattr name.
    """
    out: dict[str, str | bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise _corrupt("pax record without a length")
        length_text = data[pos:space]
        if not _ascii_digits(length_text):
            raise _corrupt("pax record length is not a number")
        length = int(length_text)
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _corrupt("pax record length does not match its content")
        key_b, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _corrupt("pax record without '='")
        if not key_b or b"\0" in key_b:
            raise _corrupt(f"pax record key {key_b!r} is empty or has a NUL byte")
        key = key_b.decode("utf-8", "surrogateescape")
        if key.startswith(_XATTR_PREFIX):
            if key == _XATTR_PREFIX:
                raise _corrupt("pax xattr record with an empty attribute name")
            out[key] = value
            pos = end
            continue
        if key in _PAX_NAME_KEYS and b"\0" in value:
            raise _corrupt(f"pax {key} {value!r} has a NUL byte")
        out[key] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


#: Modification times must fit in signed 64-bit nanoseconds since the epoch (years 1677 to
#: 2262): what ``st_mtime_ns`` and Go's ``UnixNano`` hold, and well inside what ``time_t``
#: and ``utimensat`` take, so validation and extraction agree on every platform.
MIN_MTIME_NS = -(1 << 63)
MAX_MTIME_NS = (1 << 63) - 1
#: uid_t and gid_t are 32-bit. (2**32 - 1 is ``(uid_t) -1``, which chown reads as "leave
#: unchanged": such an entry stays owned by the extracting user, which is harmless.)
MAX_ID = (1 << 32) - 1
#: Linux's NAME_MAX (one path component) and PATH_MAX - 1 (a symlink target).
NAME_MAX = 255
LINK_MAX = 4095


def _pax_time_ns(value: str) -> int:
    sign = -1 if value.startswith("-") else 1
    whole, _, frac = value.removeprefix("-").partition(".")
    if not _ascii_digits(whole) or (frac and not _ascii_digits(frac)):
        raise _corrupt(f"pax mtime {value!r} is not a number")
    if len(whole) > 20:  # far outside the range below; do not build huge ints
        raise _corrupt(f"pax mtime {value!r} is out of range")
    return sign * (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))


def _pax_int(value: str, key: str) -> int:
    if not _ascii_digits(value):
        raise _corrupt(f"pax {key} {value!r} is not a non-negative integer")
    if len(value) > 20:  # over 2**64: out of range for every field
        raise _corrupt(f"pax {key} {value!r} is out of range")
    return int(value)


def _check_ranges(header: Header) -> None:
    """Refuse values no file system call could take, so validation sees what extraction would."""
    for what, value, top in (
        ("uid", header.uid, MAX_ID),
        ("gid", header.gid, MAX_ID),
        ("size", header.size, (1 << 63) - 1),
        ("device major", header.devmajor, (1 << 32) - 1),
        ("device minor", header.devminor, (1 << 32) - 1),
    ):
        if not 0 <= value <= top:
            raise _corrupt(f"{header.name!r} has {what} {value}, out of range 0..{top}")
    if not MIN_MTIME_NS <= header.mtime_ns <= MAX_MTIME_NS:
        raise _corrupt(
            f"{header.name!r} has mtime {header.mtime_ns // 1_000_000_000} s, out of range"
            " (years 1677 to 2262)"
        )
    for what, text in (("name", header.name), ("link target", header.linkname)):
        if "\0" in text:
            raise _corrupt(f"the {what} {text!r} has a NUL byte")
    for key in header.xattrs:
        if "\0" in key:
            raise _corrupt(f"xattr name {key!r} has a NUL byte")


class TarReader:
    """Reads tar entries from a stream of byte chunks, one entry at a time.

    After :meth:`next` returns a header, the entry's data is available through
    :meth:`read_data` or :meth:`copy_data`; whatever the caller does not consume is skipped
    by the next call to :meth:`next`.
    """

    def __init__(self, chunks: Iterator[bytes], *, capture: bool = False) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current entry not yet consumed
        self._pad = 0  # padding after them
        self._capture = capture
        self._globals: dict[str, str | bytes] = {}
        self._end = b""

    # -- byte-level access ------------------------------------------------------------

    def _fill(self) -> bool:
        """Make sure the buffer holds at least one unread byte; False at end of stream."""
        while self._pos >= len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._buf = chunk
            self._pos = 0
        return True

    def _read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None if the stream ends before the first one."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        parts: list[bytes] = []
        need = n
        while need:
            if not self._fill():
                if not parts:
                    return None
                raise _corrupt("the archive is truncated")
            take = self._buf[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            parts.append(take)
        return b"".join(parts)

    def _stream(self, n: int, sink: Callable[[memoryview], object] | None) -> None:
        while n:
            if not self._fill():
                raise _corrupt("the archive is truncated in the middle of an entry")
            end = min(len(self._buf), self._pos + n)
            if sink is not None:
                sink(memoryview(self._buf)[self._pos : end])
            n -= end - self._pos
            self._pos = end

    # -- entries ------------------------------------------------------------------------

    def next(self) -> Header | None:
        """The next entry's header, or None at the end-of-archive marker (or stream end)."""
        self._stream(self._left + self._pad, None)
        self._left = self._pad = 0
        raw: list[bytes] = []
        pax: dict[str, str | bytes] = {}
        longname: str | None = None
        longlink: str | None = None
        pending = False  # an extension header was read: an entry must follow
        while True:
            block = self._read(BLOCK)
            if block is None:
                if pending:
                    raise _corrupt("the archive ends after an extension header")
                return None
            if block.count(0) == BLOCK:
                if pending:
                    raise _corrupt("an extension header is followed by the end of the archive")
                # Two zero blocks end the archive (anything after them is ignored, as by
                # every tar); one zero block then the end of the stream is accepted too.
                # One zero block then anything else is damage (Go and actool agree).
                try:
                    second = self._read(BLOCK)
                except ACIError:
                    second = b"partial"  # a partial block is more data, not a second zero one
                if second is not None and second.count(0) != BLOCK:
                    raise _corrupt("a single zero block is followed by more data")
                self._end = block + (second or b"")  # for drain(): byte-exact patches
                return None
            if not _checksum_ok(block):
                raise _corrupt("a header checksum does not match")
            if self._capture:
                raw.append(block)
            typeflag = block[156:157]
            if typeflag in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
                pending = True
                size = _number(block[124:136], "size")
                if not 0 <= size <= _MAX_META:
                    raise _corrupt(f"an extension header of {size} bytes is out of range")
                data = self._read(size + padding(size)) if size else b""
                if data is None:
                    raise _corrupt("the archive is truncated")
                if self._capture:
                    raw.append(data)
                data = data[:size]
                if typeflag == _PAX:
                    pax.update(parse_pax(data))
                elif typeflag == _PAX_GLOBAL:
                    self._globals.update(parse_pax(data))
                elif typeflag == _GNU_LONGNAME:
                    longname = _text(data)
                else:
                    longlink = _text(data)
                continue
            header = self._decode(block, {**self._globals, **pax}, longname, longlink)
            header.raw = b"".join(raw)
            self._left = header.data_size
            self._pad = padding(self._left)
            return header

    def _decode(
        self,
        block: bytes,
        pax: Mapping[str, str | bytes],
        longname: str | None,
        longlink: str | None,
    ) -> Header:
        magic = block[257:263]
        name = _text(block[0:100])
        if magic == b"ustar\0":
            prefix = _text(block[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        typeflag = block[156:157]
        if typeflag == _CONTIGUOUS:
            typeflag = REGULAR
        header = Header(
            name=longname if longname is not None else name,
            typeflag=typeflag,
            mode=_number(block[100:108], "mode"),
            uid=_number(block[108:116], "uid"),
            gid=_number(block[116:124], "gid"),
            size=_number(block[124:136], "size"),
            mtime_ns=_number(block[136:148], "mtime") * 1_000_000_000,
            linkname=longlink if longlink is not None else _text(block[157:257]),
            uname=_text(block[265:297]),
            gname=_text(block[297:329]),
        )
        if header.mode < 0:
            raise _corrupt(f"{header.name!r} has a negative mode")
        header.mode &= 0o7777
        if typeflag in (CHARDEV, BLOCKDEV):
            header.devmajor = _number(block[329:337], "devmajor")
            header.devminor = _number(block[337:345], "devminor")
        for key, value in pax.items():
            if isinstance(value, bytes):
                header.xattrs[key.removeprefix(_XATTR_PREFIX)] = value
            elif value == "":
                continue  # an empty pax value cancels the key
            elif key == "path":
                header.name = value
            elif key == "linkpath":
                header.linkname = value
            elif key == "size":
                header.size = _pax_int(value, key)
            elif key in ("uid", "gid"):
                setattr(header, key, _pax_int(value, key))
            elif key in ("uname", "gname"):
                setattr(header, key, value)
            elif key == "mtime":
                header.mtime_ns = _pax_time_ns(value)
            elif key.startswith("GNU.sparse."):
                raise ACIError(
                    "unsupported tar entry",
                    f"{header.name!r} is a GNU sparse file",
                    "build the archive without --sparse",
                )
        if typeflag == b"\0":
            # Pre-POSIX tars mark directories only by a trailing slash, on the final name
            # (after pax and GNU long-name overrides), as Go decides it.
            header.typeflag = DIRECTORY if header.name.endswith("/") else REGULAR
        _check_ranges(header)
        return header

    def read_data(self) -> bytes:
        """The rest of the current entry's data, in memory."""
        data = self._read(self._left) if self._left else b""
        if data is None:
            raise _corrupt("the archive is truncated in the middle of an entry")
        self._left = 0
        return data

    def copy_data(
        self, sink: Callable[[memoryview], object], *, with_padding: bool = False
    ) -> None:
        """Pass the rest of the current entry's data to ``sink`` in zero-copy slices.

        ``with_padding`` includes the block padding as read, for byte-exact copies.
        """
        n = self._left + (self._pad if with_padding else 0)
        self._stream(n, sink)
        self._left = 0
        if with_padding:
            self._pad = 0

    def drain(self, sink: Callable[[memoryview], object] | None = None) -> None:
        """Consume everything after the last entry (end marker and whatever follows)."""
        self._stream(self._left + self._pad, None)
        self._left = self._pad = 0
        if sink is not None and self._end:
            sink(memoryview(self._end))
        self._end = b""
        while self._fill():
            if sink is not None:
                sink(memoryview(self._buf)[self._pos :])
            self._pos = len(self._buf)


# -- writing ---------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fitting ustar's 155 + 100 byte fields, or None."""
    if len(name) <= 100:
        return b"", name
    for i in range(min(len(name) - 1, 155), 0, -1):
        if name[i : i + 1] == b"/" and len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def _ustar_block(
    *,
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    block = b"".join(
        (
            name.ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            uname.ljust(32, b"\0"),
            gname.ljust(32, b"\0"),
            _octal(devmajor, 8),
            _octal(devminor, 8),
            prefix.ljust(155, b"\0"),
            b"\0" * 12,
        )
    )
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


def encode_header(
    *,
    name: str,
    typeflag: bytes,
    mode: int,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: str = "",
    uname: str = "",
    gname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: Mapping[str, bytes] | None = None,
) -> bytes:
    """The header block(s) for one entry: ustar, preceded by a pax header if needed.

    ``mtime`` is whole seconds: sub-second times are dropped as GNU tar and Go do by
    default, which keeps archives small and builds reproducible.
    """
    pax: list[tuple[str, bytes]] = []

    def fits_text(value: str, limit: int, key: str) -> bytes:
        raw = value.encode("utf-8", "surrogateescape")
        if len(raw) <= limit and raw.isascii():
            return raw
        pax.append((key, raw))
        return raw[:limit] if raw.isascii() else b""

    def fits_number(value: int, width: int, key: str) -> int:
        if 0 <= value < 8 ** (width - 1):
            return value
        pax.append((key, str(value).encode()))
        return 0

    name_raw = name.encode("utf-8", "surrogateescape")
    split = _split_ustar_name(name_raw) if name_raw.isascii() else None
    if split is None:
        pax.append(("path", name_raw))
        split = (b"", name_raw[:100] if name_raw.isascii() else b"././@LongName")
    block = _ustar_block(
        name=split[1],
        prefix=split[0],
        mode=mode & 0o7777,
        uid=fits_number(uid, 8, "uid"),
        gid=fits_number(gid, 8, "gid"),
        size=fits_number(size, 12, "size"),
        mtime=fits_number(mtime, 12, "mtime"),
        typeflag=typeflag,
        linkname=fits_text(linkname, 100, "linkpath"),
        uname=fits_text(uname, 32, "uname"),
        gname=fits_text(gname, 32, "gname"),
        devmajor=devmajor,
        devminor=devminor,
    )
    for key in sorted(xattrs or {}):
        pax.append((f"SCHILY.xattr.{key}", (xattrs or {})[key]))
    if not pax:
        return block
    records = b"".join(_pax_record(k, v) for k, v in pax)
    pax_block = _ustar_block(
        name=b"././@PaxHeader",
        prefix=b"",
        mode=0o644,
        uid=0,
        gid=0,
        size=len(records),
        mtime=0,
        typeflag=_PAX,
        linkname=b"",
        uname=b"",
        gname=b"",
        devmajor=0,
        devminor=0,
    )
    return pax_block + records + b"\0" * padding(len(records)) + block


#: Two zero blocks end an archive.
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
