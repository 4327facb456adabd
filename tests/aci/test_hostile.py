"""Hostile and broken archives: every one is refused, leaving nothing behind."""

from __future__ import annotations

import io
import random
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.aci import ExtractLimits, ExtractOptions, extract_aci, read_aci
from jetpack.errors import ACIError
from tests.aci.conftest import (
    MANIFEST_BYTES,
    Entry,
    MakeTar,
    Sandbox,
    base,
    compress,
    d,
    f,
    read_info,
)
from tests.aci.conftest import tar_bytes as tar

SYM, LNK = tarfile.SYMTYPE, tarfile.LNKTYPE

# (entries given the sentinel dir, expected message fragment, read_aci rejects it too)
Case = tuple[Callable[[str], list[Entry]], str, bool]

CASES: dict[str, Case] = {
    "dotdot": (lambda s: [*base(), f("rootfs/../../sentinel/evil")], "'..' component", True),
    "dotdot-leading": (lambda s: [*base(), f("../sentinel/evil")], "'..' component", True),
    "absolute": (lambda s: [*base(), f(f"{s}/evil")], "absolute path", True),
    "symlink-dir-then-file": (
        lambda s: [*base(), Entry("rootfs/a", type=SYM, linkname=s), f("rootfs/a/passwd")],
        "through symlink 'rootfs/a'",
        True,
    ),
    "symlink-dir-then-dir": (
        lambda s: [*base(), Entry("rootfs/a", type=SYM, linkname=s), d("rootfs/a/sub")],
        "through symlink",
        True,
    ),
    "symlink-then-hardlink-through-it": (
        lambda s: [
            *base(),
            Entry("rootfs/a", type=SYM, linkname=s),
            Entry("rootfs/x", type=LNK, linkname="rootfs/a/passwd"),
        ],
        "not an earlier entry",
        True,
    ),
    "symlink-to-dotdot": (
        lambda s: [
            *base(),
            Entry("rootfs/up", type=SYM, linkname=".."),
            Entry("rootfs/up2", type=SYM, linkname="../.."),
            f("rootfs/up2/sentinel/evil"),
        ],
        "through symlink 'rootfs/up2'",
        True,
    ),
    "symlink-replaces-implied-dir": (
        lambda s: [*base(), f("rootfs/a/b"), Entry("rootfs/a", type=SYM, linkname=s)],
        "use it as a directory",
        True,
    ),
    "hardlink-outside-absolute": (
        lambda s: [*base(), Entry("rootfs/x", type=LNK, linkname=f"{s}/passwd")],
        "absolute path",
        True,
    ),
    "hardlink-outside-dotdot": (
        lambda s: [*base(), Entry("rootfs/x", type=LNK, linkname="rootfs/../../sentinel/passwd")],
        "'..' component",
        True,
    ),
    "hardlink-to-manifest": (
        lambda s: [*base(), Entry("rootfs/x", type=LNK, linkname="manifest")],
        "points outside rootfs",
        True,
    ),
    "hardlink-not-yet-extracted": (
        lambda s: [
            *base(),
            Entry("rootfs/x", type=LNK, linkname="rootfs/later"),
            f("rootfs/later"),
        ],
        "not an earlier entry",
        True,
    ),
    "hardlink-to-directory": (
        lambda s: [*base(), d("rootfs/dir"), Entry("rootfs/x", type=LNK, linkname="rootfs/dir")],
        "points to a directory",
        True,
    ),
    "chardev": (
        lambda s: [*base(), Entry("rootfs/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "device node refused",
        False,
    ),
    "blockdev": (
        lambda s: [*base(), Entry("rootfs/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)],
        "device node refused",
        False,
    ),
    "duplicate-file": (lambda s: [*base(), f("rootfs/a"), f("rootfs/a")], "duplicate", True),
    "duplicate-via-dot-slash": (
        lambda s: [*base(), f("rootfs/a"), f("./rootfs/a")],
        "duplicate",
        True,
    ),
    "duplicate-manifest": (lambda s: [*base(), f("manifest", MANIFEST_BYTES)], "duplicate", True),
    "duplicate-rootfs": (lambda s: [*base(), d("rootfs")], "duplicate", True),
    "extra-top-level": (lambda s: [*base(), f("etc/passwd")], "outside rootfs/", True),
    "extra-top-level-file": (lambda s: [*base(), f("README")], "outside rootfs/", True),
    "manifest-is-dir": (lambda s: [d("manifest"), d("rootfs")], "not a regular file", True),
    "manifest-is-symlink": (
        lambda s: [Entry("manifest", type=SYM, linkname="/etc/passwd"), d("rootfs")],
        "not a regular file",
        True,
    ),
    "rootfs-is-file": (
        lambda s: [f("manifest", MANIFEST_BYTES), f("rootfs")],
        "not a directory",
        True,
    ),
    "missing-manifest": (lambda s: [d("rootfs"), f("rootfs/a")], "no manifest", True),
    "missing-rootfs": (lambda s: [f("manifest", MANIFEST_BYTES)], "no rootfs", True),
    "missing-rootfs-entry": (
        lambda s: [f("manifest", MANIFEST_BYTES), f("rootfs/a")],
        "no rootfs",
        True,
    ),
    "invalid-manifest-json": (lambda s: base(b"{not json"), "invalid manifest", True),
    "invalid-manifest-name": (
        lambda s: base(MANIFEST_BYTES.replace(b"example.com/minimal", b"Not A Name")),
        "invalid manifest: name",
        True,
    ),
    "file-under-file": (
        lambda s: [*base(), f("rootfs/a"), f("rootfs/a/b")],
        "which is a regular",
        True,
    ),
    "unknown-type": (lambda s: [*base(), Entry("rootfs/v", type=b"Z")], "unknown type", True),
    "empty-component": (lambda s: [*base(), f("rootfs//a")], "not a canonical path", True),
}


def _check_refused(sandbox: Sandbox, archive: Path, fragment: str, **kw: object) -> None:
    before = sandbox.snapshot()
    with open(archive, "rb") as src, pytest.raises(ACIError) as caught:
        extract_aci(src, sandbox.dest, **kw)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert str(archive) in str(caught.value)  # the message names the archive
    assert not sandbox.dest.exists()
    assert sandbox.snapshot() == before


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused(case: str, make_tar: MakeTar, sandbox: Sandbox) -> None:
    entries, fragment, read_rejects = CASES[case]
    archive = make_tar(entries(str(sandbox.sentinel)), "gzip")
    _check_refused(sandbox, archive, fragment)
    if read_rejects:
        with open(archive, "rb") as src, pytest.raises(ACIError, match=re.escape(fragment)):
            read_aci(src)
    else:
        with open(archive, "rb") as src:
            read_aci(src)  # a valid image; only extracting it without permission is refused


def test_devices_refused_when_not_allowed_even_as_root(make_tar: MakeTar, sandbox: Sandbox) -> None:
    entries = [*base(), Entry("rootfs/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)]
    _check_refused(
        sandbox, make_tar(entries), "device", options=ExtractOptions(allow_devices=False)
    )


def test_bomb_by_ratio(make_tar: MakeTar, sandbox: Sandbox) -> None:
    archive = make_tar([*base(), f("rootfs/zeros", bytes(8 << 20))], "gzip")
    limits = ExtractLimits(max_ratio=50, ratio_floor=64 << 10)
    _check_refused(sandbox, archive, "decompression bomb", options=ExtractOptions(limits=limits))
    with open(archive, "rb") as src, pytest.raises(ACIError, match="bomb"):
        read_aci(src, limits=limits)


def test_bomb_by_absolute_size(make_tar: MakeTar, sandbox: Sandbox) -> None:
    archive = make_tar([*base(), f("rootfs/big", bytes(300 << 10))], "xz")
    limits = ExtractLimits(max_size=200 << 10)
    _check_refused(sandbox, archive, "image too large", options=ExtractOptions(limits=limits))


def test_small_archive_under_ratio_floor_is_not_a_bomb(make_tar: MakeTar, sandbox: Sandbox) -> None:
    # ~75 KiB of tar squeezed into a few hundred bytes of gzip: over the 50x ratio, but
    # under the floor, so not a bomb.
    entries = [*base(), f("rootfs/zeros", bytes(64 << 10))]
    archive = make_tar(entries, "gzip")
    assert archive.stat().st_size * 50 < len(tar(entries))
    with open(archive, "rb") as src:
        extract_aci(src, sandbox.dest, options=ExtractOptions(limits=ExtractLimits(max_ratio=50)))
    assert (sandbox.dest / "manifest").read_bytes() == MANIFEST_BYTES


def test_manifest_too_big(make_tar: MakeTar, sandbox: Sandbox) -> None:
    limits = ExtractLimits(max_manifest_size=100)
    _check_refused(
        sandbox, make_tar(base()), "manifest too large", options=ExtractOptions(limits=limits)
    )


@pytest.mark.parametrize(
    ("cut", "fragment"),
    [
        (100, "found only 100 bytes"),  # not even a whole header: not recognisable as a tar
        (1024 + 200, "the archive is truncated"),  # inside the rootfs/ header
        (-1024 - 10, "truncated in the middle of an entry"),  # inside the manifest's data
    ],
)
def test_truncated_archive(cut: int, fragment: str, tmp_path: Path, sandbox: Sandbox) -> None:
    data = tar([*base(), f("rootfs/file", b"x" * 3000)])
    assert len(data) == 10240  # tarfile pads to 20 blocks; the negative cut relies on it
    archive = tmp_path / "cut.aci"
    archive.write_bytes(data[:cut] if cut > 0 else data[: len(data) + cut - 8192])
    _check_refused(sandbox, archive, fragment)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_truncated_compressed_stream(kind: str, tmp_path: Path, sandbox: Sandbox) -> None:
    data = compress(tar([*base(), f("rootfs/file", bytes(range(256)) * 64)]), kind)
    archive = tmp_path / "cut.aci"
    archive.write_bytes(data[: len(data) // 2])
    _check_refused(sandbox, archive, f"truncated {kind} data: the stream ends early")


def test_corrupt_gzip(tmp_path: Path, sandbox: Sandbox) -> None:
    data = bytearray(compress(tar([*base(), f("rootfs/file", bytes(range(256)) * 64)]), "gzip"))
    data[40:60] = b"\xff" * 20
    archive = tmp_path / "corrupt.aci"
    archive.write_bytes(data)
    _check_refused(sandbox, archive, "gzip")


def test_corrupt_tar_checksum(tmp_path: Path, sandbox: Sandbox) -> None:
    data = bytearray(tar([*base(), f("rootfs/file")]))
    data[5] ^= 0x20  # inside the first header's name
    archive = tmp_path / "corrupt.aci"
    archive.write_bytes(data)
    _check_refused(sandbox, archive, "checksum")


def test_not_an_archive(tmp_path: Path, sandbox: Sandbox) -> None:
    archive = tmp_path / "manifest.aci"
    archive.write_bytes(MANIFEST_BYTES)
    _check_refused(sandbox, archive, "did you mean to validate a manifest")


class _InterruptingReader(io.RawIOBase):
    """A source that raises KeyboardInterrupt after some reads, like a Ctrl-C mid-extraction."""

    def __init__(self, data: bytes, reads: int) -> None:
        self._src = io.BytesIO(data)
        self._reads = reads
        self.name = "interrupted.aci"

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._reads -= 1
        if self._reads < 0:
            raise KeyboardInterrupt
        return self._src.read(min(size, 4096))


@pytest.mark.parametrize("kind", ["none", "gzip"])
def test_interrupt_removes_destination(kind: str, sandbox: Sandbox) -> None:
    rng = random.Random(0)  # incompressible, so 20 reads stop well inside the archive
    files = [f(f"rootfs/d{i}/f{j}", rng.randbytes(2048)) for i in range(10) for j in range(10)]
    data = compress(tar([*base(), *files]), kind)
    src = _InterruptingReader(data, reads=20)
    with pytest.raises(KeyboardInterrupt):
        extract_aci(src, sandbox.dest)  # type: ignore[arg-type]
    assert not sandbox.dest.exists()


def test_existing_destination_is_refused(make_tar: MakeTar, sandbox: Sandbox) -> None:
    sandbox.dest.mkdir()
    (sandbox.dest / "keep").write_text("mine")
    with open(make_tar(base()), "rb") as src, pytest.raises(ACIError, match="already exists"):
        extract_aci(src, sandbox.dest)
    assert (sandbox.dest / "keep").read_text() == "mine"


def test_paths_needing_too_much_memory_to_check_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The real bound is 256 MiB of implied directory names; shrink it so the test is fast.
    from jetpack.aci import reader

    monkeypatch.setattr(reader, "MAX_PATH_BYTES", 64 << 10)
    entries = [*base()] + [
        f(f"rootfs/t{n}/" + "/".join(["d" * 50] * 40) + "/leaf") for n in range(40)
    ]
    archive = tmp_path / "deep.aci"
    archive.write_bytes(tar(entries))
    with pytest.raises(ACIError, match=r"paths need more than .* of memory to check"):
        read_info(archive)
