"""Compression detection and the image ID, which must agree across every entry point."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from jetpack.aci import Compression, detect_compression, extract_aci, image_id, read_aci
from jetpack.errors import ACIError
from tests.aci.conftest import MANIFEST_BYTES, base, compress, f, tar_bytes

KINDS = ["gzip", "bzip2", "xz", "none"]


def _sha(data: bytes) -> str:
    return "sha512-" + hashlib.sha512(data).hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_detects_each_compression(kind: str) -> None:
    data = compress(tar_bytes(base()), kind)
    assert detect_compression(data[:512]) is Compression(kind)


@pytest.mark.parametrize(
    ("head", "fragment"),
    [
        (b"", "an empty file"),
        (b"PK\x03\x04" + bytes(600), "a zip archive"),
        (b'  {"acKind": "ImageManifest"}', "did you mean to validate a manifest"),
        (b"<!DOCTYPE html><html>", "HTML"),
        (b"(\xb5/\xfd" + bytes(600), "zstd"),
        (bytes(1024), "zero bytes"),
        (b"\x01\x02\x03" + bytes(600), "unknown data starting with 010203"),
        (b"hello", "only 5 bytes starting with 68656c6c6f"),
    ],
)
def test_junk_is_described(head: bytes, fragment: str) -> None:
    with pytest.raises(ACIError, match="not an image archive") as caught:
        detect_compression(head)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_image_id_agrees_everywhere(kind: str, tmp_path: Path) -> None:
    # Trailing bytes after the end-of-archive blocks count too: the ID covers everything.
    raw = tar_bytes([*base(), f("rootfs/a", b"x" * 5000)]) + b"trailing" + bytes(504)
    path = tmp_path / "image.aci"
    path.write_bytes(compress(raw, kind))
    expected = _sha(raw)
    with open(path, "rb") as src:
        assert image_id(src) == expected
    with open(path, "rb") as src:
        info = read_aci(src)
    assert info.image_id == expected
    assert info.compression is Compression(kind)
    assert info.uncompressed_size == len(raw)
    assert info.compressed_size == path.stat().st_size
    assert info.manifest_bytes == MANIFEST_BYTES
    assert info.entries == 3
    tee = io.BytesIO()
    with open(path, "rb") as src:
        extracted = extract_aci(src, tmp_path / "out", tee=tee)
    assert extracted.image_id == expected
    assert tee.getvalue() == path.read_bytes()


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_concatenated_members_are_one_stream(kind: str, tmp_path: Path) -> None:
    raw = tar_bytes([*base(), f("rootfs/a", bytes(range(256)) * 100)])
    half = len(raw) // 2
    data = compress(raw[:half], kind) + compress(raw[half:], kind) + bytes(100)
    assert image_id(io.BytesIO(data)) == _sha(raw)
    assert read_aci(io.BytesIO(data)).image_id == _sha(raw)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_garbage_after_the_stream_is_refused(kind: str) -> None:
    data = compress(tar_bytes(base()), kind) + b"garbage"
    with pytest.raises(ACIError, match="after the end of the compressed stream"):
        image_id(io.BytesIO(data))


class _Trickle(io.RawIOBase):
    """Returns one byte per read, like a slow pipe: nothing may assume full reads."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._src.read(1)


@pytest.mark.parametrize("kind", KINDS)
def test_short_reads(kind: str) -> None:
    raw = tar_bytes([*base(), f("rootfs/a", b"abc" * 300)])
    data = compress(raw, kind)
    assert read_aci(_Trickle(data)).image_id == _sha(raw)  # type: ignore[arg-type]
