"""Image archives (ACI): detection, image IDs, validation, safe extraction, building, patching.

How the parts fit::

    compression  magic-byte detection; bounded streaming decoders and deterministic encoders
    stream       ArchiveStream: read → tee → decode → count/limit → hash, in one pass;
                 prefetch() runs it in a helper thread; image_id() hashes without parsing
    tarformat    a strict tar codec (ustar/GNU/pax in, ustar + pax out), raw blocks kept
    reader       LayoutChecker (names, layout, duplicates, links) and scan(), the shared
                 pass; read_aci() is scan() with nothing written
    extract      extract_aci(): scan() with a visitor creating files through O_NOFOLLOW,
                 dir-fd-relative calls; the destination vanishes on any failure
    build        validate_layout(), write_aci(), build_aci(): layout directory → archive
    patch        patch_aci(): copy entry for entry, replacing only the manifest
    output       TarSink (hash + compress + write) and atomic publication of output files

Everything is pure file I/O on paths and file objects given by the caller; nothing prints.
"""

from typing import TYPE_CHECKING

from jetpack._lazy import lazy_attributes
from jetpack.errors import ACIError

if TYPE_CHECKING:
    from jetpack.aci.build import build_aci, validate_layout, write_aci
    from jetpack.aci.compression import Compression, detect_compression
    from jetpack.aci.extract import extract_aci, remove_tree
    from jetpack.aci.options import ACIInfo, ExtractLimits, ExtractOptions
    from jetpack.aci.patch import patch_aci
    from jetpack.aci.reader import read_aci
    from jetpack.aci.stream import image_id

__all__ = [
    "ACIError",
    "ACIInfo",
    "Compression",
    "ExtractLimits",
    "ExtractOptions",
    "build_aci",
    "detect_compression",
    "extract_aci",
    "image_id",
    "patch_aci",
    "read_aci",
    "remove_tree",
    "validate_layout",
    "write_aci",
]

# The names above are loaded on first use (PEP 562): a submodule such as
# ``jetpack.aci.options`` imports this package first, and the pod start path, which needs
# only that, must not pay for the tar codec, the builder and the compressors.
_SUBMODULE = {
    "build_aci": "build",
    "validate_layout": "build",
    "write_aci": "build",
    "Compression": "compression",
    "detect_compression": "compression",
    "extract_aci": "extract",
    "remove_tree": "extract",
    "ACIInfo": "options",
    "ExtractLimits": "options",
    "ExtractOptions": "options",
    "patch_aci": "patch",
    "read_aci": "reader",
    "image_id": "stream",
}

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULE, globals())
