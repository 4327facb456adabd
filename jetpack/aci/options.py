"""The values passed into and returned from the archive functions."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the store imports this module on every pod start
    from jetpack.aci.compression import Compression
    from jetpack.config import ACIConfig
    from jetpack.schema import ImageManifest


@dataclasses.dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what an archive may make us read or write.

    Attributes:
        max_ratio: largest uncompressed/compressed ratio, measured on the bytes consumed so
            far (gzip tops out near 1032x; real images stay far below 200x).
        max_size: largest uncompressed tar stream, in bytes.
        max_manifest_size: largest ``manifest`` entry, in bytes (it is held in memory).
        ratio_floor: the ratio is not checked until this many bytes came out, so a tiny,
            highly compressible archive (an empty rootfs is 10 KiB of tar in 100 bytes of
            gzip) is not mistaken for a bomb.
    """

    max_ratio: float = 200.0
    max_size: int = 64 << 30
    max_manifest_size: int = 16 << 20
    ratio_floor: int = 1 << 20

    @classmethod
    def from_config(cls, config: ACIConfig) -> ExtractLimits:
        """The limits set in the configuration's ``[aci]`` table."""
        return cls(
            max_ratio=config.max_ratio,
            max_size=config.max_size,
            max_manifest_size=config.max_manifest_size,
        )


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How :func:`jetpack.aci.extract_aci` writes files.

    Attributes:
        preserve_owners: chown entries to the archive's uid/gid and keep setuid/setgid bits;
            None means "when running as root". Without it, files belong to the caller and
            setuid/setgid bits are dropped (they would grant the caller's identity), and so
            are ``security.capability`` xattrs (file capabilities), with a warning.
        allow_devices: create character and block devices (root only); otherwise an
            archive containing one is rejected.
        limits: decompression-bomb and size limits.
    """

    preserve_owners: bool | None = None
    allow_devices: bool = False
    limits: ExtractLimits = ExtractLimits()


@dataclasses.dataclass(frozen=True)
class ACIInfo:
    """What one pass over an archive learned about it.

    Attributes:
        image_id: ``sha512-`` + hex SHA-512 of the whole uncompressed tar stream.
        manifest: the parsed image manifest.
        manifest_bytes: the ``manifest`` entry exactly as stored.
        compression: how the archive is compressed.
        compressed_size: bytes of the archive file.
        uncompressed_size: bytes of the tar stream.
        entries: tar entries (extension headers not counted).
        warnings: things that could not be preserved (e.g. an xattr the target file
            system refuses), one line each.
    """

    image_id: str
    manifest: ImageManifest
    manifest_bytes: bytes
    compression: Compression
    compressed_size: int
    uncompressed_size: int
    entries: int
    warnings: tuple[str, ...] = ()
