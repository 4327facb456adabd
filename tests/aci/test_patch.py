"""Patching an archive's manifest: only the manifest changes."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from jetpack.aci import Compression, build_aci, extract_aci, patch_aci, read_aci
from jetpack.aci.compression import decoder
from jetpack.aci.tarformat import TarReader
from jetpack.errors import ACIError
from jetpack.schema import ACIdentifier, ImageManifest
from jetpack.schema.patch import ManifestPatch
from tests.aci.conftest import MakeTar, base, compress, f, read_info, tar_bytes
from tests.fixtures import MINIMAL_MANIFEST


def _entries(path: Path) -> list[tuple[str, bytes, bytes]]:
    """(name, raw header blocks, data) of each entry, decoded with our own reader."""
    raw = path.read_bytes()
    kind = read_info(path).compression
    tar = b"".join(decoder(kind).feed(raw, 1 << 30))
    reader = TarReader(iter([tar]), capture=True)
    out = []
    while (header := reader.next()) is not None:
        out.append((header.name, header.raw, reader.read_data()))
    return out


def test_patch_replaces_only_the_manifest(make_tar: MakeTar, tmp_path: Path) -> None:
    src = make_tar(
        [*base(), f("rootfs/a", b"A" * 700, xattrs={"user.k": "v"}), f("rootfs/b")], "xz"
    )
    out = tmp_path / "patched.aci"
    info = patch_aci(src, out, ManifestPatch(exec=("/bin/sh", "-c", "true")))
    assert info.manifest.app is not None and info.manifest.app.exec == ("/bin/sh", "-c", "true")
    with open(out, "rb") as f_out:
        read = read_aci(f_out)
    assert read.image_id == info.image_id
    assert read.compression is Compression.XZ  # the input's
    assert read.manifest == info.manifest
    before, after = _entries(src), _entries(out)
    assert [e[0] for e in before] == [e[0] for e in after]
    assert before[0][2] != after[0][2]
    assert before[1:] == after[1:]  # headers and data byte-identical
    tar = b"".join(decoder(Compression.XZ).feed(out.read_bytes(), 1 << 30))
    assert info.image_id == "sha512-" + hashlib.sha512(tar).hexdigest()
    original = read_info(src)
    assert original.image_id != info.image_id


def test_patch_with_a_function_and_new_compression(make_tar: MakeTar, tmp_path: Path) -> None:
    src = make_tar([*base(), f("rootfs/a")], "gzip")

    def rename(manifest: ImageManifest) -> ImageManifest:
        return dataclasses.replace(manifest, name=ACIdentifier("example.com/renamed"))

    out = tmp_path / "renamed.aci"
    info = patch_aci(src, out, rename, compression=Compression.BZIP2)
    assert info.compression is Compression.BZIP2
    dest = tmp_path / "x"
    with open(out, "rb") as f_out:
        extracted = extract_aci(f_out, dest)
    assert extracted.manifest.name == "example.com/renamed"
    assert (dest / "manifest").read_bytes() == info.manifest_bytes
    assert (dest / "rootfs/a").read_bytes() == b"data\n"


def test_patch_keeps_trailing_bytes(tmp_path: Path) -> None:
    raw = tar_bytes([*base(), f("rootfs/a")]) + b"appended" + bytes(504)
    src = tmp_path / "src.aci"
    src.write_bytes(compress(raw, "gzip"))
    out = tmp_path / "out.aci"
    patch_aci(src, out, lambda m: m)
    tar = b"".join(decoder(Compression.GZIP).feed(out.read_bytes(), 1 << 30))
    assert tar.endswith(b"appended" + bytes(504))


def test_patch_refuses_overwrite_and_invalid_result(make_tar: MakeTar, tmp_path: Path) -> None:
    src = make_tar(base())
    out = tmp_path / "out.aci"
    out.write_bytes(b"keep")
    with pytest.raises(ACIError, match="already exists"):
        patch_aci(src, out, lambda m: m)
    assert out.read_bytes() == b"keep"
    with pytest.raises(ACIError, match="invalid patched manifest"):
        patch_aci(src, tmp_path / "bad.aci", ManifestPatch(name="Not Valid"))
    assert not (tmp_path / "bad.aci").exists()
    patch_aci(src, out, lambda m: m, overwrite=True)
    assert read_info(out).manifest.name == MINIMAL_MANIFEST["name"]


@pytest.mark.actool
def test_actool_validates_patched(tmp_path: Path, make_layout: object, actool: str) -> None:
    layout = make_layout()  # type: ignore[operator]
    src = tmp_path / "src.aci"
    build_aci(layout, src)
    out = tmp_path / "out.aci"
    patch_aci(src, out, ManifestPatch(exec=("/bin/true", "--flag"), user="1000"))
    result = subprocess.run([actool, "validate", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run([actool, "cat-manifest", str(out)], capture_output=True, check=True)
    assert b"--flag" in shown.stdout


def test_patch_io_errors_name_the_file(make_tar: MakeTar, tmp_path: Path) -> None:
    src = make_tar(base())
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    patch = ManifestPatch(exec=("/x",))
    with pytest.raises(ACIError, match=f"cannot write {blocker}/x.aci: Not a directory"):
        patch_aci(src, blocker / "x.aci", patch)
    missing = tmp_path / "missing.aci"
    with pytest.raises(ACIError, match=f"cannot read {missing}: No such file or directory"):
        patch_aci(missing, tmp_path / "out.aci", patch)


def test_read_errors_name_the_archive(make_tar: MakeTar) -> None:
    class Failing(io.RawIOBase):
        name = "broken.aci"

        def __init__(self, data: bytes) -> None:
            self._data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self._data:
                out, self._data = self._data, b""
                return out
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    data = make_tar(base(), "gzip").read_bytes()
    for cut in (0, len(data) // 2):
        with pytest.raises(ACIError, match=r"^cannot read broken.aci: Input/output error$"):
            read_aci(Failing(data[:cut]))  # type: ignore[arg-type]
