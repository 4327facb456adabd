"""Receiving a push: stage the upload, check it, and only then publish it.

The request: ``POST /_jetpack/v1/images`` with ``Authorization`` (bearer or basic) and a
``multipart/form-data`` body of two parts, ``signature`` (optional, the detached armored
signature, at most 64 KiB) and ``image`` (the ACI, at most ``max-upload-size``), e.g.::

    curl -H "Authorization: Bearer $TOKEN" -F signature=@app.aci.asc -F image=@app.aci \\
         https://images.example.com/_jetpack/v1/images

The query may declare what the client believes it pushes — ``name``, ``version``, ``os``,
``arch`` (``jetpack push`` sends all four, read from the image). A declared name is checked
against the credential before the body is read; after the upload, each declared value must
equal the manifest's (the manifest is what is published: a mismatch means the client is
pushing another image than it thinks, and is refused, 422 ``contradicts-manifest``).

Checks, in order, each a 4xx with ``{"error": ..., "reason": ...}`` and nothing published:

====  ========================  ==================================================
401   unauthorized              no or wrong credential
400   bad-request               not multipart, unknown / repeated / missing parts
413   too-large                 the image or the signature is over the limit
422   invalid-image             not a valid ACI (``read_aci``: layout, traversal,
                                hard links, bombs, manifest)
422   missing-label             no ``version``, ``os`` or ``arch`` label
422   invalid-version           a version that cannot be one URL path component,
                                or ``latest`` (reserved for "the highest version")
422   contradicts-manifest      a declared name/version/os/arch differs
403   forbidden                 the credential may not push that name
422   untrusted-signature       the signature does not verify with the keys the
                                server trusts for the name (``serve.trust``)
422   unsigned                  no signature, and the server has no signing key
409   exists                    that name/version/os/arch is published (unless
                                ``allow-overwrite``)
====  ========================  ==================================================

Staging is ``<root>/tmp/upload-<random>/`` (the images' file system, so publishing is a
``rename``); it is removed whatever happens.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web

from jetpack.aci import ExtractLimits, read_aci
from jetpack.config import ServeUser
from jetpack.errors import ACIError, ManifestError, TrustError
from jetpack.fetch.server.auth import may_push
from jetpack.fetch.server.catalog import LATEST, VERSION_RE, Entry, Key, etag_of, quote_etag
from jetpack.fetch.server.responses import TooLarge, fail
from jetpack.fetch.server.signing import Signer
from jetpack.fetch.trust import TrustStore

SIGNATURE_LIMIT = 64 << 10
_CHUNK = 1 << 20
_DECLARABLE = ("name", "version", "os", "arch")
_SIMPLE = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True)
class Staged:
    """An upload on disk, not yet checked."""

    aci: Path
    signature: bytes | None
    sha256: str
    size: int


def declared(request: web.Request) -> dict[str, str]:
    """The query's name/version/os/arch; unknown parameters are a 400."""
    unknown = sorted(set(request.query) - set(_DECLARABLE))
    if unknown:
        fail(web.HTTPBadRequest, "bad-request", f"unknown query parameter {unknown[0]!r}")
    return {k: request.query[k] for k in _DECLARABLE if k in request.query}


async def receive(request: web.Request, directory: Path, limit: int) -> Staged:
    """Stream the multipart body into ``directory``: ``image.aci`` and the signature."""
    if request.content_length is not None and request.content_length > limit + SIGNATURE_LIMIT:
        fail(TooLarge, "too-large", f"the upload is over {limit} bytes")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        fail(web.HTTPBadRequest, "bad-request", "send multipart/form-data: image and signature")
    aci = directory / "image.aci"
    signature: bytes | None = None
    seen: set[str] = set()
    digest = hashlib.sha256()
    size = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or part.name not in ("image", "signature"):
            name = getattr(part, "name", None)
            fail(web.HTTPBadRequest, "bad-request", f"unknown part {name!r} (image, signature)")
        if part.name in seen:
            fail(web.HTTPBadRequest, "bad-request", f"part {part.name!r} is given twice")
        seen.add(part.name)
        if part.name == "signature":
            data = bytearray()
            while chunk := await part.read_chunk(SIGNATURE_LIMIT):
                data += chunk
                if len(data) > SIGNATURE_LIMIT:
                    fail(TooLarge, "too-large", "the signature is too large")
            signature = bytes(data)
            continue
        with open(aci, "wb") as out:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > limit:
                    fail(
                        TooLarge,
                        "too-large",
                        f"the image is over the limit of {limit} bytes (serve.max-upload-size)",
                    )
                digest.update(chunk)
                out.write(chunk)
    if "image" not in seen:
        fail(web.HTTPBadRequest, "bad-request", "no 'image' part in the upload")
    return Staged(aci, signature or None, digest.hexdigest(), size)


@dataclass(frozen=True)
class Checked:
    """An upload that passed every check: its entry-to-be, signature and signer's key."""

    entry: Entry
    signature: bytes
    key: Key


def check(
    staged: Staged,
    *,
    claims: dict[str, str],
    user: ServeUser,
    trust: TrustStore,
    signer: Signer | None,
    limits: ExtractLimits,
    now: float,
) -> Checked:
    """Every check of the table above except the conflict (blocking: run it in a thread)."""
    try:
        with open(staged.aci, "rb") as f:
            info = read_aci(f, limits=limits)
    except (ACIError, ManifestError) as err:
        fail(web.HTTPUnprocessableEntity, "invalid-image", f"not a valid ACI: {err}")
    manifest = info.manifest
    name = str(manifest.name)
    labels = {k: manifest.label(k) for k in ("version", "os", "arch")}
    missing = [k for k, v in labels.items() if not v]
    if missing:
        fail(
            web.HTTPUnprocessableEntity,
            "missing-label",
            f"the manifest of {name} has no {', '.join(missing)} label "
            "(every pushed image needs version, os and arch)",
        )
    version, os_, arch = (str(labels["version"]), str(labels["os"]), str(labels["arch"]))
    if version == LATEST or not VERSION_RE.fullmatch(version):
        fail(
            web.HTTPUnprocessableEntity,
            "invalid-version",
            f"version {version!r} cannot be served: use letters, digits and . _ + ~ - "
            "(not starting with a symbol), and not 'latest'",
        )
    if not (_SIMPLE.fullmatch(os_) and _SIMPLE.fullmatch(arch)):
        fail(web.HTTPUnprocessableEntity, "invalid-image", f"unusable os/arch {os_}/{arch}")
    actual = {"name": name, "version": version, "os": os_, "arch": arch}
    for field, value in claims.items():
        if actual[field] != value:
            fail(
                web.HTTPUnprocessableEntity,
                "contradicts-manifest",
                f"the push says {field} {value!r}, but the image's manifest says {actual[field]!r}",
            )
    if not may_push(user, name):
        fail(web.HTTPForbidden, "forbidden", f"user {user.name} may not push {name}")
    key: Key
    if staged.signature is not None:
        try:
            trusted = trust.verify(name, staged.aci, staged.signature)
        except TrustError as err:
            fail(web.HTTPUnprocessableEntity, "untrusted-signature", str(err))
        armored = trusted.path.read_bytes()
        key = Key(
            trusted.fingerprint, armored, trusted.uids[0] if trusted.uids else "", etag_of(armored)
        )
        signature, by_server = staged.signature, False
    elif signer is not None:
        signature, key, by_server = signer.sign_file(staged.aci), signer.key, True
    else:
        fail(
            web.HTTPUnprocessableEntity,
            "unsigned",
            f"{name} is not signed and this server signs nothing (no signing key)",
        )
    entry = Entry(
        name=name,
        version=version,
        os=os_,
        arch=arch,
        id=info.image_id,
        size=staged.size,
        etag=quote_etag("sha256-" + staged.sha256),
        aci=staged.aci,
        pushed_at=now,
        asc_etag=etag_of(signature),
        signer=key.fingerprint,
        signer_uid=key.uid or None,
        signed_by_server=by_server,
        pushed_by=user.name,
        compression=info.compression.value,
    )
    return Checked(entry, signature, key)
