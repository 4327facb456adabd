"""The reviewer's hostile corpus: archives built block by block, refused (or accepted) alike
by validation and extraction, with nothing but :class:`ACIError` ever raised."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import resource
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetpack.aci import ExtractLimits, ExtractOptions, extract_aci, patch_aci, read_aci
from jetpack.aci.extract import _os_error_hint, remove_tree
from jetpack.aci.tarformat import _number
from jetpack.errors import ACIError
from jetpack.schema.patch import ManifestPatch
from tests.aci.conftest import Sandbox
from tests.aci.rawtar import END, base, directory, ext, file, hdr, pad, pax

_CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service=ep

# name → (archive, message fragment when refused, or None when it is a valid image)
CASES: dict[str, tuple[bytes, str | None]] = {
    "ok": (base() + file("rootfs/a", b"hi") + END, None),
    # pax abuse
    "pax-path-dotdot": (
        base() + pax([("path", "rootfs/../../escape")]) + file("rootfs/x") + END,
        "'..' component",
    ),
    "pax-path-nul": (
        base() + pax([("path", "rootfs/a\0b")]) + file("rootfs/x") + END,
        "has a NUL byte",
    ),
    "pax-linkpath-nul": (
        base() + pax([("linkpath", "/etc\0x")]) + hdr("rootfs/l", b"2", linkname="x") + END,
        "has a NUL byte",
    ),
    "pax-xattr-nul-key": (
        base() + pax([("SCHILY.xattr.user.a\0b", "v")]) + file("rootfs/a") + END,
        "has a NUL byte",
    ),
    "pax-xattr-empty-key": (
        base() + pax([("SCHILY.xattr.", "v")]) + file("rootfs/a") + END,
        "empty attribute name",
    ),
    "pax-empty-key": (base() + pax([("", "v")]) + file("rootfs/a") + END, "is empty"),
    "pax-uid-huge": (
        base() + pax([("uid", "99999999999999999999999")]) + file("rootfs/a") + END,
        "out of range",
    ),
    "pax-uid-over-32-bits": (
        base() + pax([("uid", str(2**32))]) + file("rootfs/a") + END,
        "uid 4294967296, out of range",
    ),
    "pax-mtime-huge": (
        base() + pax([("mtime", "99999999999999999999999.5")]) + file("rootfs/a") + END,
        "out of range",
    ),
    "pax-mtime-negative-huge": (
        base() + pax([("mtime", "-99999999999999999999999")]) + file("rootfs/a") + END,
        "out of range",
    ),
    "pax-mtime-after-2262": (
        base() + pax([("mtime", "9999999999")]) + file("rootfs/a") + END,
        "years 1677 to 2262",
    ),
    "pax-size-superscript": (
        base() + pax([("size", "\u00b2")]) + file("rootfs/a") + END,
        "not a non-negative integer",
    ),
    "pax-mtime-superscript": (
        base() + pax([("mtime", "\u00b2")]) + file("rootfs/a") + END,
        "is not a number",
    ),
    "pax-mtime-arabic-digits": (
        base() + pax([("mtime", "\u0661\u0662.\u0663")]) + file("rootfs/a") + END,
        "is not a number",
    ),
    "pax-size-negative": (
        base() + pax([("size", "-5")]) + file("rootfs/a") + END,
        "not a non-negative integer",
    ),
    "pax-length-superscript": (
        base() + ext(b"x", pad(b"\xc2\xb2 a=b\n")[:7]) + file("rootfs/a") + END,
        "length is not a number",
    ),
    "pax-length-signed": (
        base() + ext(b"x", b"+8 a=b\n") + file("rootfs/a") + END,
        "length is not a number",
    ),
    "pax-length-too-long": (
        base() + ext(b"x", b"99999 a=b\n") + file("rootfs/a") + END,
        "does not match",
    ),
    "pax-size-beyond-data": (
        base() + pax([("size", "100000")]) + file("rootfs/a", b"x") + END,
        "truncated",
    ),
    "pax-header-huge": (
        base() + hdr("././@PaxHeader", b"x", size=(1 << 33) - 1) + END,
        "out of range",
    ),
    "pax-global-path-makes-duplicates": (
        base() + pax([("path", "rootfs/g")], b"g") + file("rootfs/a") + file("rootfs/b") + END,
        "duplicate entry 'rootfs/g'",
    ),
    "pax-component-over-name-max": (
        base() + pax([("path", "rootfs/" + "a" * 256)]) + file("rootfs/x") + END,
        "longer than 255 bytes",
    ),
    "pax-symlink-target-over-path-max": (
        base() + pax([("linkpath", "a/" * 2048)]) + hdr("rootfs/l", b"2", linkname="x") + END,
        "longer than 4095 bytes",
    ),
    # GNU long names
    "gnu-longname-dotdot": (
        base() + ext(b"L", b"rootfs/../../escape\0") + file("rootfs/a") + END,
        "'..' component",
    ),
    "gnu-longlink-absolute": (
        base() + ext(b"K", b"/etc/passwd\0") + hdr("rootfs/h", b"1", linkname="x") + END,
        "absolute path",
    ),
    "gnu-longlink-dotdot": (
        base() + ext(b"K", b"rootfs/../../etc\0") + hdr("rootfs/l", b"1", linkname="x") + END,
        "'..' component",
    ),
    # base-256 and octal numbers
    "b256-size-negative": (
        base() + hdr("rootfs/a", raw={"size": b"\xff" * 12}) + END,
        "size -1, out of range",
    ),
    "b256-uid-huge": (
        base() + hdr("rootfs/a", raw={"uid": b"\x80" + b"\xff" * 7}) + END,
        "out of range",
    ),
    "b256-uid-negative": (
        base() + hdr("rootfs/a", raw={"uid": b"\xc0" + bytes(7)}) + END,
        "has uid -",
    ),
    "b256-mtime-huge": (
        base() + hdr("rootfs/a", raw={"mtime": b"\x80" + b"\xff" * 11}) + END,
        "out of range",
    ),
    "b256-size-huge": (
        base() + hdr("rootfs/a", raw={"size": b"\x80" + b"\xff" * 11}) + END,
        "out of range",
    ),
    "b256-mode-negative": (
        base() + hdr("rootfs/a", raw={"mode": b"\xff" * 8}) + END,
        "negative mode",
    ),
    "b256-uid-valid": (
        base()
        + hdr("rootfs/a", raw={"uid": b"\x80" + bytes(3) + (70000).to_bytes(4, "big")})
        + END,
        None,
    ),
    "octal-signed": (base() + hdr("rootfs/a", raw={"uid": b"-000001\0"}) + END, "octal"),
    "octal-underscore": (base() + hdr("rootfs/a", raw={"uid": b"00_0001\0"}) + END, "octal"),
    # names
    "nul-in-gnu-longname-is-cut": (
        base() + ext(b"L", b"rootfs/a\0/../../x") + file("rootfs/ignored") + END,
        None,
    ),
    "newline-name": (base() + file("rootfs/a\nb", b"x") + END, None),
    "non-utf8-name": (base() + file(b"rootfs/\xff\xfe", b"x") + END, None),
    "deep-2000": (
        base() + pax([("path", "rootfs/" + "/".join(["a"] * 2000) + "/f")]) + file("x") + END,
        None,
    ),
    "deep-2000-then-bad": (
        base()
        + pax([("path", "rootfs/" + "/".join(["a"] * 2000) + "/f")])
        + file("x")
        + file("rootfs/../escape")
        + END,
        "'..' component",
    ),
    "v7-directory-by-pax-name": (
        base() + pax([("path", "rootfs/dd/")]) + hdr("rootfs/x", b"\0") + file("rootfs/dd/f") + END,
        None,
    ),
    # sparse files
    "gnu-sparse-type": (base() + hdr("rootfs/s", b"S") + END, "unknown type b'S'"),
    "pax-sparse": (
        base()
        + pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "s")])
        + file("rootfs/x")
        + END,
        "GNU sparse file",
    ),
    # extension headers and the end of the archive
    "pax-then-end": (base() + pax([("path", "rootfs/x")]) + END, "followed by the end"),
    "pax-then-eof": (base() + pax([("path", "rootfs/x")]), "ends after an extension header"),
    "gnu-longname-then-end": (base() + ext(b"L", b"rootfs/x\0") + END, "followed by the end"),
    "global-pax-then-end": (base() + pax([("uid", "1")], b"g") + END, "followed by the end"),
    "one-zero-block-then-header": (
        base() + bytes(512) + file("rootfs/a") + END,
        "single zero block is followed by more data",
    ),
    "one-zero-block-then-garbage": (
        base() + bytes(512) + b"junk",
        "single zero block is followed by more data",
    ),
    "one-zero-block-then-eof": (base() + bytes(512), None),
    "two-zero-blocks-then-garbage": (base() + END + b"GARBAGE" * 100, None),
    "no-end-marker": (base(), None),
    "bad-checksum": (base() + hdr("rootfs/a", bad_checksum=True) + END, "checksum"),
}


def _write(tmp_path: Path, name: str, data: bytes, kind: str) -> Path:
    path = tmp_path / f"{name}.{kind}.aci"
    path.write_bytes(gzip.compress(data, mtime=0) if kind == "gzip" else data)
    return path


def _outcome(path: Path, dest: Path) -> tuple[str | None, str | None]:
    """(read_aci's error or None, extract_aci's error or None): only ACIError is allowed."""
    read_err = extract_err = None
    try:
        with open(path, "rb") as src:
            read_aci(src)
    except ACIError as err:
        read_err = str(err)
    try:
        with open(path, "rb") as src:
            extract_aci(src, dest)
    except ACIError as err:
        extract_err = str(err)
        assert not dest.exists()
    return read_err, extract_err


@pytest.mark.parametrize("kind", ["none", "gzip"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_validation_and_extraction_agree(
    case: str, kind: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    data, fragment = CASES[case]
    path = _write(tmp_path, case, data, kind)
    before = sandbox.snapshot()
    read_err, extract_err = _outcome(path, sandbox.dest)
    if fragment is None:
        assert read_err is None and extract_err is None
        assert (sandbox.dest / "manifest").is_file()
        remove_tree(sandbox.dest)
    else:
        assert read_err is not None and fragment in read_err
        assert extract_err == read_err
        assert sandbox.snapshot() == before


def test_patch_refuses_what_validation_refuses(tmp_path: Path) -> None:
    # patch copies raw blocks (capture=True): the dangling extension must still be caught.
    for case in ("pax-then-end", "gnu-longname-then-end", "one-zero-block-then-header"):
        data, fragment = CASES[case]
        assert fragment is not None
        src = _write(tmp_path, case, data, "none")
        with pytest.raises(ACIError, match=fragment):
            patch_aci(src, tmp_path / f"{case}.out", ManifestPatch(exec=("/x",)))
        assert not (tmp_path / f"{case}.out").exists()


def test_patch_completes_a_single_zero_block_end(tmp_path: Path) -> None:
    src = _write(tmp_path, "one-zero", CASES["one-zero-block-then-eof"][0], "none")
    out = tmp_path / "out.aci"
    patch_aci(src, out, ManifestPatch(exec=("/x",)))
    assert out.read_bytes().endswith(END)


def test_deep_tree_is_extracted_and_removed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with open(_write(tmp_path, "deep", CASES["deep-2000"][0], "none"), "rb") as src:
        extract_aci(src, dest)
    fd = os.open(dest / "rootfs", os.O_RDONLY)
    try:
        for _ in range(2000):
            child = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        assert stat.S_ISREG(os.stat("f", dir_fd=fd).st_mode)
    finally:
        os.close(fd)
    remove_tree(dest)
    assert not dest.exists()


def test_v7_directory_is_decided_on_the_final_name(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with open(_write(tmp_path, "v7", CASES["v7-directory-by-pax-name"][0], "none"), "rb") as src:
        extract_aci(src, dest)
    assert (dest / "rootfs/dd").is_dir() and (dest / "rootfs/dd/f").is_file()


def test_base256_is_decoded_as_go_does() -> None:
    assert _number(b"\x80" + bytes(6) + b"\x05", "uid") == 5
    assert _number(b"\xff" * 8, "uid") == -1
    assert _number(b"\xc0" + bytes(7), "uid") == -(1 << 62)
    assert _number(b"\xff" * 7 + b"\xfe", "uid") == -2
    assert _number(b" 0000644\0", "mode") == 0o644
    assert _number(b"\0" * 8, "mode") == 0
    for bad in (b"-0000001", b"0o00001\0", b"00_0001\0", b"0000009\0", b"00007\xb2\0"):
        with pytest.raises(ACIError, match="not an octal number"):
            _number(bad, "uid")


def test_negative_mtime_in_range_is_kept(tmp_path: Path) -> None:
    data = base() + pax([("mtime", "-86400.5")]) + file("rootfs/old", b"x") + END
    dest = tmp_path / "dest"
    with open(_write(tmp_path, "old", data, "none"), "rb") as src:
        extract_aci(src, dest)
    assert (dest / "rootfs/old").stat().st_mtime_ns == -86_400_500_000_000


def test_os_error_hint_depends_on_errno() -> None:
    import errno

    def hint(code: int) -> str | None:
        return _os_error_hint(OSError(code, os.strerror(code)))

    assert hint(errno.ENOSPC) == hint(errno.EDQUOT) == "check the file system's free space"
    assert "permissions" in (hint(errno.EACCES) or "")
    assert "permissions" in (hint(errno.EROFS) or "")
    assert hint(errno.EMFILE) is None
    assert hint(errno.ENAMETOOLONG) is None


# -- file capabilities ------------------------------------------------------------------


def _cap_archive(tmp_path: Path) -> Path:
    data = (
        base()
        + pax([("SCHILY.xattr.security.capability", _CAP)])
        + file("rootfs/ping", b"x", mode=0o755)
        + END
    )
    return _write(tmp_path, "cap", data, "none")


def test_file_capabilities_dropped_without_owners(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with open(_cap_archive(tmp_path), "rb") as src:
        info = extract_aci(src, dest, options=ExtractOptions(preserve_owners=False))
    with pytest.raises(OSError):
        os.getxattr(dest / "rootfs/ping", "security.capability")
    assert any(
        "security.capability dropped from 'rootfs/ping'" in w and "preserving owners" in w
        for w in info.warnings
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="setting file capabilities needs root")
def test_file_capabilities_kept_as_root_with_owners(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with open(_cap_archive(tmp_path), "rb") as src:
        info = extract_aci(src, dest, options=ExtractOptions(preserve_owners=True))
    try:
        value = os.getxattr(dest / "rootfs/ping", "security.capability")
    except OSError:
        pytest.skip("this file system does not store security.capability")
    assert value == _CAP
    assert not any("capability" in w for w in info.warnings)


# -- many directories under a low open-file limit ----------------------------------------


@pytest.fixture
def low_nofile() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 128
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("listed", [True, False], ids=["dir-entries", "implied-dirs"])
def test_many_directories_under_a_low_fd_limit(
    listed: bool, tmp_path: Path, low_nofile: int
) -> None:
    count = 3000  # far more directories than descriptors
    parts = [base()]
    for i in range(count):
        if listed:
            parts.append(directory(f"rootfs/d{i}", mode=0o750, mtime=1000 + i))
        parts.append(file(f"rootfs/d{i}/sub/f", b"x"))
    archive = _write(tmp_path, "many", b"".join(parts) + END, "none")
    dest = tmp_path / "dest"
    with open(archive, "rb") as src:
        info = extract_aci(src, dest)
    assert info.entries == 2 + count * (2 if listed else 1)
    assert len(list((dest / "rootfs").iterdir())) == count
    st = (dest / "rootfs/d2999").stat()
    if listed:
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o750, 3999 * 10**9)
    assert len(list(Path("/proc/self/fd").iterdir())) < low_nofile // 2  # nothing leaked


# -- decompression bombs in every format -------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_ratio_bomb(kind: str, tmp_path: Path, sandbox: Sandbox) -> None:
    size = 16 << 20
    raw = base() + hdr("rootfs/zeros", size=size) + bytes(size) + END
    compressor = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind]
    archive = tmp_path / f"bomb.{kind}.aci"
    archive.write_bytes(compressor(raw))
    limits = ExtractLimits(max_ratio=100, ratio_floor=1 << 20)
    with open(archive, "rb") as src, pytest.raises(ACIError, match="decompression bomb"):
        read_aci(src, limits=limits)
    with open(archive, "rb") as src, pytest.raises(ACIError, match="decompression bomb"):
        extract_aci(src, sandbox.dest, options=ExtractOptions(limits=limits))
    assert not sandbox.dest.exists()


def test_tarfile_agrees_on_the_valid_cases(tmp_path: Path) -> None:
    # An independent reader sees the same entries in what we accept (sanity of the builder).
    data, _ = CASES["ok"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["manifest", "rootfs", "rootfs/a"]
