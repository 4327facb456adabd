"""Fixtures for the archive tests: tar factories built with the standard tarfile module.

Archives are made with :mod:`tarfile` on purpose: it is an independent implementation, so
the tests check our codec against real tar output rather than against itself.
"""

from __future__ import annotations

import bz2
import dataclasses
import io
import json
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.aci import ACIInfo, read_aci
from tests.fixtures import MINIMAL_MANIFEST

MANIFEST_BYTES = json.dumps(MINIMAL_MANIFEST).encode()


@dataclasses.dataclass
class Entry:
    """One tar entry for :func:`tar_bytes`; ``type`` is a tarfile type constant."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 1_500_000_000
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, str] = dataclasses.field(default_factory=dict)
    size: int | None = None  # override the header size (for lying headers)


def d(name: str, **kw: object) -> Entry:
    """A directory entry."""
    kw.setdefault("mode", 0o755)
    return Entry(name, type=tarfile.DIRTYPE, **kw)  # type: ignore[arg-type]


def f(name: str, data: bytes = b"data\n", **kw: object) -> Entry:
    """A regular file entry."""
    return Entry(name, data, **kw)  # type: ignore[arg-type]


def base(manifest: bytes = MANIFEST_BYTES) -> list[Entry]:
    """The two mandatory entries."""
    return [f("manifest", manifest), d("rootfs")]


def tar_bytes(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.size = len(e.data) if e.size is None else e.size
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            tar.addfile(info, io.BytesIO(e.data) if e.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        import gzip

        return gzip.compress(data, mtime=0)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return data


MakeTar = Callable[..., Path]


@pytest.fixture
def make_tar(tmp_path: Path) -> MakeTar:
    """Factory: ``make_tar(entries, compression="none", fmt=PAX)`` → path of an archive."""
    counter = 0

    def make(
        entries: list[Entry], compression: str = "none", fmt: int = tarfile.PAX_FORMAT
    ) -> Path:
        nonlocal counter
        counter += 1
        path = tmp_path / "archives" / f"image{counter}.aci"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(compress(tar_bytes(entries, fmt), compression))
        return path

    return make


@dataclasses.dataclass
class Sandbox:
    """A parent directory with a sentinel next to where extraction goes."""

    parent: Path
    dest: Path
    sentinel: Path

    def snapshot(self) -> list[tuple[str, int, int]]:
        out = []
        for top, dirs, files in os.walk(self.parent):
            for name in sorted(dirs + files):
                st = (Path(top) / name).lstat()
                out.append((str(Path(top) / name), st.st_mode, st.st_mtime_ns))
        return sorted(out)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    parent = tmp_path / "sandbox"
    sentinel = parent / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "passwd").write_text("root:x:0:0\n")
    return Sandbox(parent, parent / "dest", sentinel)


def read_info(path: Path) -> ACIInfo:
    """read_aci() on a file, closing it."""
    with open(path, "rb") as src:
        return read_aci(src)
