"""How much an archive may make us read or write: a module of its own, because the store
needs it on every pod start and the rest of :mod:`jetpack.aci.options` it does not."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jetpack.config import ACIConfig


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
