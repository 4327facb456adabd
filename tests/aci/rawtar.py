"""A raw tar header builder, for archives no well-behaved tar writer would produce.

:mod:`tarfile` refuses to write NUL bytes in names, negative base-256 numbers, dangling
extension headers and the like; hostile archives contain exactly those, so the tests build
them block by block here.
"""

from __future__ import annotations

import json

from tests.fixtures import MINIMAL_MANIFEST

MANIFEST = json.dumps(MINIMAL_MANIFEST).encode()
END = bytes(1024)

_ORDER = [
    "name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "link", "magic",
    "uname", "gname", "maj", "min", "prefix", "pad",
]  # fmt: skip


def hdr(
    name: str | bytes,
    typeflag: bytes = b"0",
    *,
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: str | bytes = b"",
    raw: dict[str, bytes] | None = None,
    bad_checksum: bool = False,
) -> bytes:
    """One 512-byte header; ``raw`` replaces whole fields (by name) with exact bytes."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    if isinstance(linkname, str):
        linkname = linkname.encode()
    fields = {
        "name": name[:100].ljust(100, b"\0"),
        "mode": b"%07o\0" % mode,
        "uid": b"%07o\0" % uid,
        "gid": b"%07o\0" % gid,
        "size": b"%011o\0" % size,
        "mtime": b"%011o\0" % mtime,
        "chksum": b" " * 8,
        "type": typeflag,
        "link": linkname[:100].ljust(100, b"\0"),
        "magic": b"ustar\x0000",
        "uname": bytes(32),
        "gname": bytes(32),
        "maj": b"0000000\0",
        "min": b"0000000\0",
        "prefix": bytes(155),
        "pad": bytes(12),
    }
    fields.update(raw or {})
    block = b"".join(fields[k] for k in _ORDER)
    assert len(block) == 512, len(block)
    checksum = sum(block) + (1 if bad_checksum else 0)
    return block[:148] + b"%06o\0 " % checksum + block[156:]


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    k = key.encode() if isinstance(key, str) else key
    v = value.encode() if isinstance(value, str) else value
    body = b" " + k + b"=" + v + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax(records: list[tuple[str | bytes, str | bytes]], typeflag: bytes = b"x") -> bytes:
    data = b"".join(pax_record(k, v) for k, v in records)
    return hdr("././@PaxHeader", typeflag, size=len(data)) + pad(data)


def ext(typeflag: bytes, data: bytes) -> bytes:
    """An extension header (``L``, ``K``, ``x``...) with exactly ``data``."""
    return hdr("././@LongLink", typeflag, size=len(data)) + pad(data)


def file(name: str | bytes, data: bytes = b"", **kw: object) -> bytes:
    return hdr(name, b"0", size=len(data), **kw) + pad(data)  # type: ignore[arg-type]


def directory(name: str, **kw: object) -> bytes:
    kw.setdefault("mode", 0o755)
    return hdr(name, b"5", **kw)  # type: ignore[arg-type]


def base() -> bytes:
    return file("manifest", MANIFEST) + directory("rootfs")
