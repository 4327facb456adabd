"""Compression of image archives: detection by magic bytes, streaming decoders and encoders.

An ACI is a tar, optionally compressed with gzip, bzip2 or xz (the appc spec allows no
other). The kind is decided from the first bytes only, never from the file name, and
anything unrecognised is described in the error so the user learns what they actually
have (a zip, an HTML error page, a manifest given by mistake).

Decoders are bounded: every call returns at most ``max_out`` bytes, so a decompression bomb
is caught by the caller's size checks before it can fill memory. Concatenated members
(``cat a.gz b.gz``, ``pbzip2`` output, multi-stream xz) decode as one stream, as ``gunzip``
does; bytes after the last member are an error unless they are zero padding.
"""

from __future__ import annotations

import bz2
import enum
import lzma
from collections.abc import Iterator
from typing import Protocol

from isal import isal_zlib

from jetpack.errors import ACIError


class Compression(enum.Enum):
    """How an image archive's tar stream is compressed."""

    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    NONE = "none"


_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_TAR_MAGIC_OFFSET = 257

#: How many leading bytes :func:`detect_compression` needs to decide.
DETECT_BYTES = 512

# Formats people hand us by mistake, so the error can name them.
_KNOWN_OTHERS: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"(\xb5/\xfd", "a zstd stream (appc allows only gzip, bzip2 and xz)"),
    (b"\x04\x22\x4d\x18", "an lz4 stream (appc allows only gzip, bzip2 and xz)"),
    (b"\x89LZO", "an lzop stream (appc allows only gzip, bzip2 and xz)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"Rar!", "a rar archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"%PDF", "a PDF document"),
    (b"-----BEGIN PGP", "an armored PGP file (the signature, not the image?)"),
    (b"\x89PNG", "a PNG image"),
)


def detect_compression(head: bytes) -> Compression:
    """Decide how an archive is compressed from its first bytes.

    Args:
        head: the first bytes of the file; :data:`DETECT_BYTES` are enough to recognise a
            plain tar (its ``ustar`` magic sits at offset 257).

    Raises:
        ACIError: the bytes are not the start of an ACI; the message says what they are.
    """
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(_BZIP2_MAGIC):
        return Compression.BZIP2
    if head.startswith(_XZ_MAGIC):
        return Compression.XZ
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return Compression.NONE
    raise ACIError(
        "not an image archive",
        f"found {describe(head)}",
        "an ACI is a tar file, optionally gzip, bzip2 or xz compressed",
    )


def describe(head: bytes) -> str:
    """A short human description of what ``head`` looks like, for error messages."""
    if not head:
        return "an empty file"
    for magic, what in _KNOWN_OTHERS:
        if head.startswith(magic):
            return what
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "JSON text — did you mean to validate a manifest?"
    if text[:1] == b"<":
        return "HTML or XML text — perhaps an error page instead of the image?"
    if len(head) < _TAR_MAGIC_OFFSET + 5 and not head.strip(b"\0"):
        return f"{len(head)} zero bytes"
    if len(head) < _TAR_MAGIC_OFFSET + 5:
        return f"only {len(head)} bytes starting with {head[:16].hex()}"
    if not head.strip(b"\0"):
        return "zero bytes (a blank or truncated file)"
    return f"unknown data starting with {head[:16].hex()}"


class Decoder(Protocol):
    """Incremental decoder with bounded output per call."""

    def feed(self, data: bytes, max_out: int) -> Iterator[bytes]:
        """Decode ``data``, yielding chunks of at most ``max_out`` bytes each."""
        ...

    def finish(self) -> None:
        """Check the stream ended cleanly; raise ACIError if it was cut short."""
        ...


class _PassThrough:
    def feed(self, data: bytes, max_out: int) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> None:
        return


class _MultiMember:
    """Decodes member after member, like ``gunzip``; zero padding may follow the last.

    Between members the next bytes decide: the format's magic starts another member, zeros
    are padding, anything else is corruption. Bytes are held back while they are still a
    prefix of the magic, because a member boundary can fall anywhere in a read.
    """

    magic: bytes = b""
    name: str = ""

    def __init__(self) -> None:
        self._between = False  # the last member ended; the next bytes decide what follows
        self._held = b""
        self._trailing = False  # only zero padding may follow
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _step(self, data: bytes, max_out: int) -> tuple[bytes, bool, bytes]:
        """Decode some of ``data``: (output, member ended, input not consumed yet)."""
        raise NotImplementedError

    def feed(self, data: bytes, max_out: int) -> Iterator[bytes]:
        while True:
            if self._trailing:
                _check_padding(data, self.name)
                return
            if self._between:
                data = self._held + data
                self._held = b""
                if len(data) < len(self.magic) and self.magic.startswith(data):
                    self._held = data
                    return
                if not data.startswith(self.magic):
                    self._trailing = True
                    continue
                self._between = False
                self._start()
            out, ended, data = self._step(data, max_out)
            if out:
                yield out
            if ended:
                self._between = True
            elif not out and not data:
                return

    def finish(self) -> None:
        if self._held:
            _check_padding(self._held, self.name)
        if not (self._between or self._trailing):
            raise ACIError(f"truncated {self.name} data", "the stream ends early", _CORRUPT_HINT)


class _GzipDecoder(_MultiMember):
    """gzip through ISA-L, several times faster than zlib."""

    magic = _GZIP_MAGIC
    name = "gzip"

    def _start(self) -> None:
        self._d = isal_zlib.decompressobj(31)

    def _step(self, data: bytes, max_out: int) -> tuple[bytes, bool, bytes]:
        try:
            out = self._d.decompress(data, max_out)
        except _ISAL_ERROR as err:
            raise ACIError("corrupt gzip data", str(err), _CORRUPT_HINT) from err
        if self._d.eof:
            return out, True, self._d.unused_data
        return out, False, self._d.unconsumed_tail


class _StdlibDecoder(_MultiMember):
    """bzip2 or xz through the standard library's incremental decompressors."""

    def __init__(self, kind: Compression) -> None:
        self.kind = kind
        self.name = kind.value
        self.magic = _BZIP2_MAGIC if kind is Compression.BZIP2 else _XZ_MAGIC
        super().__init__()

    def _start(self) -> None:
        self._d: bz2.BZ2Decompressor | lzma.LZMADecompressor
        if self.kind is Compression.BZIP2:
            self._d = bz2.BZ2Decompressor()
        else:
            self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def _step(self, data: bytes, max_out: int) -> tuple[bytes, bool, bytes]:
        # These decompressors keep unconsumed input internally: feed b"" to drain them.
        if not data and self._d.needs_input:
            return b"", False, b""
        try:
            out = self._d.decompress(data, max_out)
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise ACIError(f"corrupt {self.name} data", str(err), _CORRUPT_HINT) from err
        if self._d.eof:
            return out, True, self._d.unused_data
        return out, False, b""


# isal's stubs declare ``error`` as an instance, not a class; it is the exception class.
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]

_CORRUPT_HINT = "the file is damaged or incomplete; fetch or build it again"


def _check_padding(data: bytes, kind: str) -> None:
    if data.strip(b"\0"):
        raise ACIError(
            f"corrupt {kind} data",
            "unexpected bytes after the end of the compressed stream",
            _CORRUPT_HINT,
        )


def decoder(kind: Compression) -> Decoder:
    """A fresh streaming decoder for ``kind``."""
    if kind is Compression.GZIP:
        return _GzipDecoder()
    if kind is Compression.NONE:
        return _PassThrough()
    return _StdlibDecoder(kind)


class Encoder(Protocol):
    """Incremental encoder, the shape shared by zlib, bz2 and lzma compressors."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


def encoder(kind: Compression) -> Encoder:
    """A fresh encoder producing a deterministic stream for ``kind``.

    gzip uses ISA-L's default level: about zlib -6's size at several times the speed. Its
    header carries mtime 0 and no file name, so equal tars give equal files.
    """
    if kind is Compression.GZIP:
        return isal_zlib.compressobj(isal_zlib.ISAL_DEFAULT_COMPRESSION, isal_zlib.DEFLATED, 31)
    if kind is Compression.BZIP2:
        return bz2.BZ2Compressor(9)
    if kind is Compression.XZ:
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    return _Identity()
