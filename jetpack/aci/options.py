"""The values passed into and returned from the archive functions."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from jetpack.aci.limits import ExtractLimits

if TYPE_CHECKING:
    from jetpack.aci.compression import Compression
    from jetpack.schema import ImageManifest

__all__ = ["ACIInfo", "ExtractLimits", "ExtractOptions"]


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
    limits: ExtractLimits = dataclasses.field(default_factory=ExtractLimits)


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
