"""What extraction preserves: modes, owners, mtimes, links, xattrs, devices."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetpack.aci import ACIError, ExtractOptions, extract_aci
from tests.aci.conftest import Entry, MakeTar, base, d, f
from tests.fixtures import xattrs_supported

SYM, LNK = tarfile.SYMTYPE, tarfile.LNKTYPE
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, setuid, devices)")


@pytest.fixture
def xattr_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose file system takes user.* xattrs: tmp_path, or a tmpfs we mount."""
    if xattrs_supported(tmp_path):
        yield tmp_path
        return
    if os.geteuid() != 0:
        pytest.skip("the test file system refuses user.* xattrs and mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        if not xattrs_supported(mnt):
            pytest.skip("neither the test file system nor tmpfs takes user.* xattrs here")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _extract(archive: Path, dest: Path, **kw: object) -> None:
    with open(archive, "rb") as src:
        extract_aci(src, dest, **kw)  # type: ignore[arg-type]


@root_only
@pytest.mark.root
def test_preserves_modes_owners_mtimes_and_links(make_tar: MakeTar, tmp_path: Path) -> None:
    entries = [
        *base(),
        d("rootfs/bin", mode=0o751, uid=12, gid=34, mtime=1_000_000_000),
        f("rootfs/bin/su", b"#!", mode=0o4755, uid=0, gid=0, mtime=1_000_000_001),
        f("rootfs/bin/wall", b"#!", mode=0o2755, uid=5, gid=6, mtime=1_000_000_002),
        Entry("rootfs/bin/su2", type=LNK, linkname="rootfs/bin/su"),
        Entry(
            "rootfs/bin/sh", type=SYM, linkname="/bin/busybox", uid=7, gid=8, mtime=1_000_000_003
        ),
        d("rootfs/tmp", mode=0o1777, mtime=1_000_000_004),
        d("rootfs/ro", mode=0o555, mtime=1_000_000_005),
        f("rootfs/ro/file", b"read only", mode=0o444),
        f("rootfs/implied/deep/file", b"parents made 0755"),
        Entry("rootfs/fifo", type=tarfile.FIFOTYPE, mode=0o640, mtime=1_000_000_006),
    ]
    dest = tmp_path / "out"
    _extract(make_tar(entries, "gzip"), dest)
    root = dest / "rootfs"

    def st(rel: str) -> os.stat_result:
        return os.lstat(root / rel)

    assert stat.S_IMODE(st("bin").st_mode) == 0o751
    assert (st("bin").st_uid, st("bin").st_gid) == (12, 34)
    assert st("bin").st_mtime == 1_000_000_000  # set after its children were created
    assert stat.S_IMODE(st("bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(st("bin/wall").st_mode) == 0o2755
    assert (st("bin/wall").st_uid, st("bin/wall").st_gid) == (5, 6)
    assert st("bin/wall").st_mtime == 1_000_000_002
    assert st("bin/su2").st_ino == st("bin/su").st_ino
    assert str(Path(root / "bin/sh").readlink()) == "/bin/busybox"
    assert (st("bin/sh").st_uid, st("bin/sh").st_gid, st("bin/sh").st_mtime) == (
        7,
        8,
        1_000_000_003,
    )
    assert stat.S_IMODE(st("tmp").st_mode) == 0o1777
    assert stat.S_IMODE(st("ro").st_mode) == 0o555
    assert (root / "ro/file").read_bytes() == b"read only"
    assert stat.S_IMODE(st("implied").st_mode) == 0o755
    assert stat.S_IMODE(st("implied/deep").st_mode) == 0o755
    assert stat.S_ISFIFO(st("fifo").st_mode)
    assert stat.S_IMODE(st("fifo").st_mode) == 0o640
    assert (dest / "manifest").read_bytes() == base()[0].data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_without_owners_setuid_is_stripped(make_tar: MakeTar, tmp_path: Path) -> None:
    entries = [
        *base(),
        f("rootfs/su", b"#!", mode=0o6755, uid=4242, gid=4242),
        d("rootfs/shared", mode=0o3775),
    ]
    dest = tmp_path / "out"
    _extract(make_tar(entries), dest, options=ExtractOptions(preserve_owners=False))
    su = Path(dest / "rootfs/su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o755
    assert (su.st_uid, su.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(Path(dest / "rootfs/shared").stat().st_mode) == 0o1775  # sticky stays


def test_xattrs(make_tar: MakeTar, xattr_dir: Path) -> None:
    entries = [
        *base(),
        d("rootfs/dir", xattrs={"user.dir": "on a directory"}),
        f("rootfs/dir/file", xattrs={"user.one": "1", "user.two": "zwei"}),
    ]
    dest = xattr_dir / "out"
    _extract(make_tar(entries, "xz"), dest)
    assert os.getxattr(dest / "rootfs/dir/file", "user.one") == b"1"
    assert os.getxattr(dest / "rootfs/dir/file", "user.two") == b"zwei"
    assert os.getxattr(dest / "rootfs/dir", "user.dir") == b"on a directory"


def test_unsupported_xattr_is_a_warning(make_tar: MakeTar, tmp_path: Path) -> None:
    # No file system knows the "bogus." namespace: EOPNOTSUPP everywhere, like user.* on
    # a file system mounted without xattr support.
    entries = [
        *base(),
        f("rootfs/a", xattrs={"bogus.x": "1"}),
        f("rootfs/b", xattrs={"bogus.x": "1"}),
    ]
    with open(make_tar(entries), "rb") as src:
        info = extract_aci(src, tmp_path / "out")
    assert len(info.warnings) == 1
    assert "bogus.x" in info.warnings[0]
    assert "'rootfs/a' and 1 more" in info.warnings[0]
    assert (tmp_path / "out/rootfs/b").exists()


@root_only
@pytest.mark.root
def test_devices_when_allowed(make_tar: MakeTar, tmp_path: Path) -> None:
    entries = [
        *base(),
        Entry("rootfs/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        Entry("rootfs/loop9", type=tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660),
    ]
    dest = tmp_path / "out"
    _extract(make_tar(entries), dest, options=ExtractOptions(allow_devices=True))
    null = os.lstat(dest / "rootfs/null")
    assert stat.S_ISCHR(null.st_mode)
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(dest / "rootfs/loop9")
    assert stat.S_ISBLK(loop.st_mode)
    assert (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 9)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_every_tar_format(fmt: int, make_tar: MakeTar, tmp_path: Path) -> None:
    deep = "rootfs/" + "/".join(["component" * 5] * 3)  # 230 bytes in all: prefix or longname
    target = deep + "/target-" + "t" * 80
    entries = [*base(), f(target, b"deep")]
    if fmt == tarfile.USTAR_FORMAT:
        entries.append(Entry(target + "-link", type=LNK, linkname=target[:90]))
        entries.insert(2, f(target[:90], b"short"))
    else:  # link names over 100 bytes need GNU K or pax linkpath
        entries.append(Entry("rootfs/link", type=LNK, linkname=target))
        long_target = "/" + "x" * 150  # a symlink target over 100 bytes: GNU K or pax linkpath
        entries.append(Entry("rootfs/" + "s" * 120, type=SYM, linkname=long_target))
    dest = tmp_path / "out"
    _extract(make_tar(entries, fmt=fmt), dest)
    assert (dest / target).read_bytes() == b"deep"
    if fmt == tarfile.USTAR_FORMAT:
        assert (
            Path(dest / (target + "-link")).stat().st_ino == Path(dest / target[:90]).stat().st_ino
        )
    else:
        assert Path(dest / "rootfs/link").stat().st_ino == Path(dest / target).stat().st_ino
        assert str(Path(dest / ("rootfs/" + "s" * 120)).readlink()) == "/" + "x" * 150


def test_dot_slash_prefix_is_normalised(make_tar: MakeTar, tmp_path: Path) -> None:
    entries = [d("./"), *base(), f("./rootfs/a", b"A")]
    for e in entries[1:3]:
        e.name = "./" + e.name  # what `tar -C layout .` writes
    dest = tmp_path / "out"
    _extract(make_tar(entries), dest)
    assert (dest / "rootfs/a").read_bytes() == b"A"
    assert sorted(p.name for p in dest.iterdir()) == ["manifest", "rootfs"]


def test_pax_fractional_mtime_and_big_ids(make_tar: MakeTar, tmp_path: Path) -> None:
    entries = [*base(), f("rootfs/a", mtime=1_234_567_890.5, uid=3_000_000, gid=3_000_001)]
    dest = tmp_path / "out"
    _extract(make_tar(entries), dest, options=ExtractOptions(preserve_owners=os.geteuid() == 0))
    st = Path(dest / "rootfs/a").stat()
    assert st.st_mtime_ns == 1_234_567_890_500_000_000
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (3_000_000, 3_000_001)


def test_kernel_refuses_a_symlinked_parent_even_if_names_look_fine(tmp_path: Path) -> None:
    # The name checker normally stops this first; here the second line of defence (the
    # O_NOFOLLOW walk) is exercised alone, on a symlink that appeared behind its back.
    from jetpack.aci.extract import _Extractor
    from jetpack.errors import ACIError

    dest = tmp_path / "dest"
    (dest / "rootfs").mkdir(parents=True)
    (dest / "rootfs/a").symlink_to(tmp_path)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        extractor = _Extractor(fd, ExtractOptions())
        with pytest.raises(ACIError, match="not a directory"):
            extractor._dir("rootfs/a/b")
        extractor.close()
    finally:
        os.close(fd)
    assert not (tmp_path / "b").exists()


@root_only
@pytest.mark.root
def test_full_file_system_is_one_error_and_leaves_nothing(
    make_tar: MakeTar, tmp_path: Path
) -> None:
    # A real ENOSPC: a 256 KiB tmpfs and a 1 MiB file.
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        archive = make_tar([*base(), f("rootfs/big", os.urandom(1 << 20))])
        dest = mnt / "dest"
        with pytest.raises(ACIError, match=r"cannot extract into .*/dest: No space left on device"):
            _extract(archive, dest)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
