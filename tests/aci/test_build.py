"""Building archives from layouts, checked against the real actool and our own reader."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.aci import (
    Compression,
    build_aci,
    extract_aci,
    image_id,
    read_aci,
    validate_layout,
)
from jetpack.errors import ACIError
from tests.fixtures import MINIMAL_MANIFEST

MakeLayout = Callable[..., Path]


@pytest.fixture
def layout(make_layout: MakeLayout) -> Path:
    """A layout with a bit of everything: dirs, links, modes, a long name, odd mtimes."""
    lay = make_layout(files={"bin/true": b"#!/bin/sh\n", "etc/hostname": b"box\n"})
    root = lay / "rootfs"
    os.link(root / "etc/hostname", root / "etc/hostname.hard")
    (root / "bin/sh").symlink_to("true")
    (root / "empty").mkdir(mode=0o700)
    deep = root / ("long" * 30) / ("name" * 30)
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"deep\n")
    (root / "bin/true").chmod(0o751)
    os.utime(root / "etc/hostname", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return lay


@pytest.mark.parametrize("kind", list(Compression))
def test_build_reads_back(kind: Compression, layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.aci"
    info = build_aci(layout, out, compression=kind)
    assert info.compressed_size == out.stat().st_size
    with open(out, "rb") as src:
        assert image_id(src) == info.image_id
    with open(out, "rb") as src:
        read = read_aci(src)
    assert read.compression is kind
    assert read.image_id == info.image_id
    assert read.entries == info.entries
    assert read.uncompressed_size == info.uncompressed_size
    assert read.manifest == info.manifest


@pytest.mark.actool
@pytest.mark.parametrize("kind", list(Compression))
def test_actool_validates_our_build(
    kind: Compression, layout: Path, tmp_path: Path, actool: str
) -> None:
    out = tmp_path / "image.aci"
    build_aci(layout, out, compression=kind, owner_root=True)
    result = subprocess.run([actool, "validate", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_is_deterministic(layout: Path, tmp_path: Path) -> None:
    first = build_aci(layout, tmp_path / "a.aci")
    second = build_aci(layout, tmp_path / "b.aci")
    assert (tmp_path / "a.aci").read_bytes() == (tmp_path / "b.aci").read_bytes()
    assert first.image_id == second.image_id
    assert (tmp_path / "a.aci").read_bytes()[4:8] == bytes(4)  # gzip mtime 0


def test_entry_order_and_owner_root(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.aci"
    build_aci(layout, out, owner_root=True)
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["manifest", "rootfs"]
    assert names[2:] == sorted(names[2:], key=lambda n: n.split("/"))  # depth-first, sorted
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root") for m in members)
    hard = next(m for m in members if m.name == "rootfs/etc/hostname.hard")
    assert hard.islnk() and hard.linkname == "rootfs/etc/hostname"
    hostname = next(m for m in members if m.name == "rootfs/etc/hostname")
    assert hostname.mtime == 1_600_000_000  # whole seconds
    assert next(m for m in members if m.name == "rootfs/bin/true").mode == 0o751


def test_hard_links_and_xattrs_round_trip(layout: Path, tmp_path: Path) -> None:
    target = layout / "rootfs/etc/hostname"
    try:
        os.setxattr(target, "user.origin", b"\x00binary\xff")
    except OSError as err:
        pytest.skip(f"the test file system refuses user.* xattrs: {err}")
    out = tmp_path / "image.aci"
    build_aci(layout, out, compression=Compression.XZ)
    dest = tmp_path / "out"
    with open(out, "rb") as src:
        extract_aci(src, dest)
    got = dest / "rootfs/etc"
    assert Path(got / "hostname").stat().st_ino == Path(got / "hostname.hard").stat().st_ino
    assert os.getxattr(got / "hostname", "user.origin") == b"\x00binary\xff"
    assert (dest / "rootfs" / ("long" * 30) / ("name" * 30) / "file").read_bytes() == b"deep\n"
    assert str(Path(dest / "rootfs/bin/sh").readlink()) == "true"


@pytest.mark.actool
def test_image_id_of_actool_build(layout: Path, tmp_path: Path, actool: str) -> None:
    out = tmp_path / "actool.aci"
    subprocess.run([actool, "build", str(layout), str(out)], check=True, capture_output=True)
    with gzip.open(out) as raw:
        expected = "sha512-" + hashlib.sha512(raw.read()).hexdigest()
    with open(out, "rb") as src:
        assert image_id(src) == expected
    with open(out, "rb") as src:
        assert read_aci(src).image_id == expected
    with open(out, "rb") as src:
        assert extract_aci(src, tmp_path / "x").image_id == expected


def test_refuses_existing_output_unless_overwrite(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.aci"
    out.write_bytes(b"precious")
    with pytest.raises(ACIError, match="already exists"):
        build_aci(layout, out)
    assert out.read_bytes() == b"precious"
    build_aci(layout, out, overwrite=True)
    assert out.read_bytes() != b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        (lambda lay: (lay / "README").write_text("x"), "unexpected 'README' at the top level"),
        (
            lambda lay: [(lay / f"x{i}").write_text("x") for i in range(7)],
            "unexpected 'x0', 'x1', 'x2', 'x3', 'x4' and 2 more at the top level",
        ),
        (
            lambda lay: [
                (lay / "manifest").rename(lay / "m.json"),
                (lay / "rootfs").rename(lay / "root"),
            ],
            "no manifest and no rootfs/: not an image layout",
        ),
        (lambda lay: (lay / "manifest").unlink(), "no manifest"),
        (lambda lay: (lay / "manifest").write_text("{"), "invalid manifest"),
        (
            lambda lay: (lay / "manifest").write_text(
                json.dumps({**MINIMAL_MANIFEST, "name": "BAD"})
            ),
            "invalid manifest: name",
        ),
    ],
)
def test_invalid_layout_is_refused_before_writing(
    breakage: Callable[[Path], object], fragment: str, layout: Path, tmp_path: Path
) -> None:
    breakage(layout)
    with pytest.raises(ACIError, match=fragment):
        validate_layout(layout)
    with pytest.raises(ACIError, match=fragment):
        build_aci(layout, tmp_path / "image.aci")
    assert not (tmp_path / "image.aci").exists()


def test_validate_layout_returns_manifest(layout: Path) -> None:
    assert validate_layout(layout).name == MINIMAL_MANIFEST["name"]


def test_rootfs_must_be_a_directory(make_layout: MakeLayout, tmp_path: Path) -> None:
    lay = make_layout()
    for child in sorted((lay / "rootfs").rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    (lay / "rootfs").rmdir()
    (lay / "rootfs").symlink_to("/")
    with pytest.raises(ACIError, match="rootfs is not a directory"):
        validate_layout(lay)


def test_rootfs_file_hard_linked_to_the_manifest(layout: Path, tmp_path: Path) -> None:
    # The manifest is never a link target (the reader calls that hostile), so the rootfs
    # file is archived as a regular file with the manifest's content.
    os.link(layout / "manifest", layout / "rootfs/manifest-copy")
    out = tmp_path / "image.aci"
    build_aci(layout, out)
    with open(out, "rb") as src:
        read_info = read_aci(src)
    dest = tmp_path / "out"
    with open(out, "rb") as src:
        extract_aci(src, dest)
    copy = dest / "rootfs/manifest-copy"
    assert copy.read_bytes() == (layout / "manifest").read_bytes()
    assert copy.stat().st_nlink == 1
    assert read_info.entries > 2
    with tarfile.open(out) as tar:
        assert tar.getmember("rootfs/manifest-copy").isreg()


def test_output_errors_name_the_output(layout: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ACIError, match=f"cannot write {blocker}/x.aci: Not a directory"):
        build_aci(layout, blocker / "x.aci")


def test_write_errors_name_the_output(layout: Path, tmp_path: Path) -> None:
    from jetpack.aci import write_aci

    class Full(io.RawIOBase):
        name = "full.aci"

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(ACIError, match=r"cannot write full\.aci: No space left on device"):
        write_aci(layout, Full())  # type: ignore[arg-type]


def test_read_errors_name_the_layout_file(
    layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.listxattr

    def failing(path: str, **kw: bool) -> list[str]:
        if str(path).endswith("hostname"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(path, **kw)

    monkeypatch.setattr(os, "listxattr", failing)
    out = tmp_path / "x.aci"
    hostname = layout / "rootfs/etc/hostname"
    with pytest.raises(ACIError, match=f"cannot read {hostname}: Input/output error"):
        build_aci(layout, out)
    assert not out.exists() and not list(tmp_path.glob(".x.aci.*"))
