"""Replacing an archive's manifest, like ``actool patch-manifest``.

Two passes over the source: the first validates it and yields the manifest to patch, the
second copies every entry byte for byte — raw header blocks, data and padding, and the
trailer after the last entry — except the manifest, which gets a new header (same mode,
owner, mtime and xattrs) and the patched content. So the image ID changes only because the
manifest did.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from jetpack.aci.compression import Compression
from jetpack.aci.options import ACIInfo, ExtractLimits
from jetpack.aci.output import TarSink, atomic_output
from jetpack.aci.reader import MANIFEST, Member, parse_manifest, read_aci, relabel, scan
from jetpack.aci.tarformat import BLOCK, REGULAR, TarReader, encode_header, padding
from jetpack.errors import ACIError, ManifestError
from jetpack.schema import ImageManifest

if TYPE_CHECKING:
    from jetpack.schema.patch import ManifestPatch

# The source was fully validated by the first pass; the second needs no bomb limits.
_NO_LIMITS = ExtractLimits(max_ratio=math.inf, max_size=2**63)


def _patched(
    manifest: ImageManifest,
    patch: ManifestPatch | Callable[[ImageManifest], ImageManifest],
) -> tuple[ImageManifest, bytes]:
    from jetpack.schema.patch import ManifestPatch, apply_patch  # only patching needs it

    try:
        new = apply_patch(manifest, patch) if isinstance(patch, ManifestPatch) else patch(manifest)
        data = new.dumps()
        # Round-trip through the parser: a callable may have built an invalid manifest.
        return parse_manifest(data), data
    except ManifestError as err:
        why = f"{err.path}: {err.rule}" if err.path else err.rule
        raise ACIError("invalid patched manifest", why, err.hint) from err


def _open_source(src: Path) -> BinaryIO:
    try:
        return open(src, "rb")  # the caller closes it, in a with statement
    except OSError as err:
        raise ACIError(f"cannot read {src}", err.strerror or str(err)) from err


def patch_aci(
    src: Path,
    out: Path,
    patch: ManifestPatch | Callable[[ImageManifest], ImageManifest],
    *,
    compression: Compression | None = None,
    overwrite: bool = False,
) -> ACIInfo:
    """Write a copy of ``src`` to ``out`` with its manifest patched.

    Args:
        patch: a :class:`ManifestPatch`, or a function from the old manifest to the new.
        compression: of the output; None keeps the input's.
        overwrite: replace ``out`` if it exists.

    Raises:
        ACIError: ``src`` is not a valid ACI, the patch makes the manifest invalid, or
            ``out`` exists and ``overwrite`` is false.
    """
    with _open_source(src) as f:
        info = read_aci(f)
    try:
        manifest, manifest_bytes = _patched(info.manifest, patch)
    except ACIError as err:
        raise relabel(err, str(src)) from err.__cause__
    kind = compression if compression is not None else info.compression
    with atomic_output(out, overwrite=overwrite) as dst:
        sink = TarSink(dst, kind)
        trailer = 0

        def visit(member: Member, reader: TarReader) -> None:
            sink.entries += 1
            header = member.header
            if member.path != MANIFEST:
                sink.write(header.raw)
                reader.copy_data(sink.write, with_padding=True)
                return
            sink.write(
                encode_header(
                    name=header.name,
                    typeflag=REGULAR,
                    mode=header.mode,
                    uid=header.uid,
                    gid=header.gid,
                    size=len(manifest_bytes),
                    mtime=header.mtime_ns // 1_000_000_000,
                    uname=header.uname,
                    gname=header.gname,
                    xattrs=header.xattrs,
                )
            )
            sink.write(manifest_bytes + b"\0" * padding(len(manifest_bytes)))

        def copy_trailer(reader: TarReader) -> None:
            nonlocal trailer

            def take(view: memoryview) -> None:
                nonlocal trailer
                trailer += len(view)
                sink.write(view)

            reader.drain(take)

        with _open_source(src) as f:
            scan(f, limits=_NO_LIMITS, visit=visit, capture=True, on_end=copy_trailer)
        # A source that just stopped after its last entry gets a proper end marker; one
        # that stopped after a single zero block gets the second.
        if trailer == 0:
            sink.close()
        else:
            if trailer == BLOCK:
                sink.write(bytes(BLOCK))
            sink.close(end_marker=False)
    return dataclasses.replace(
        info,
        image_id=sink.image_id,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        compression=kind,
        compressed_size=sink.compressed_size,
        uncompressed_size=sink.uncompressed_size,
        entries=sink.entries,
    )
