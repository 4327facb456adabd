"""``jetpack serve``: the image server other hosts fetch from, and the target of ``jetpack push``.

How the parts fit::

    catalog     Entry, Key, Catalog: an immutable in-memory snapshot — look-ups by
                name/version/os/arch, "latest" = highest version (SemVer precedence) per
                os/arch, discovery pages rendered once per prefix; version_key(). Pure.
    repository  RootRepository: the directory (index.json + images/ + keys/ + tmp/ +
                .lock), publication by rename + atomic index rewrite under flock;
                StoreRepository: the local store, read-only (--from-store); inside():
                the one check every served file passes (regular file, under the root).
    responses   send_file (our ETag, Last-Modified, Cache-Control, HEAD, Range/206 with
                If-Range, If-None-Match/304, loop.sendfile), send_bytes, fail() (JSON 4xx)
    auth        [[serve.users]]: bearer tokens, basic with scrypt hashes, name prefixes at
                whole path components
    push        multipart upload → staging → read_aci, labels, claims, prefix, signature
                (TrustStore of serve.trust) or the server's signature → Checked
    signing     Signer: the server's secret key in a throw-away GNUPGHOME
    pages       the HTML index and the JSON listing
    app         make_app(ServerDeps): routes, handlers, read-auth middleware, access log
    run         bind, serve until SIGTERM, drain in-flight requests, return

The repository layout (``--root``, default ``<data-dir>/serve``)::

    index.json                                  what is published: name, version, os,
                                                arch, id, size, etag, signer, pushed-at...
    images/<name>/<version>/<os>-<arch>.aci     as pushed (compression kept)
    images/<name>/<version>/<os>-<arch>.aci.asc detached armored signature
    keys/<fingerprint>.asc                      public keys of the signers
    trustedkeys/{root.d,prefix.d/<prefix>}/     keys trusted to sign uploads (default of
                                                serve.trust; jetpack trust's layout)
    tmp/upload-*/                               uploads being received and checked
    .lock                                       flock of the publisher

URLs: ``GET /<path>?ac-discovery=1`` answers for any name or prefix hosted (``<path>`` is
the name without its domain; ``/`` covers every name) with ``ac-discovery`` =
``<domain>/<path> <public-url>/images/{name}/{version}/{os}-{arch}.{ext}`` and one
``ac-discovery-pubkeys`` = ``<domain>/<path> <public-url>/keys/<fp>.asc`` per key that
signed an image under it. ``/images/<name>/latest/<os>-<arch>.aci`` is the highest
version for that os/arch, served in place (no redirect; ``Cache-Control: no-cache``, the
ETag tells versions apart). The public URL defaults to the listen address and scheme;
set ``serve.public-url`` behind a proxy. ``/`` is an HTML index, ``/_jetpack/v1/images``
the same as JSON, ``/_jetpack/v1/health`` a health check; ``POST /_jetpack/v1/images``
is a push (see :mod:`~jetpack.fetch.server.push`).

ETags are never computed per request: a pushed file's is the SHA-256 of its bytes, taken
while it streamed in; a store image's is its image ID (store blobs never change). Reads
are anonymous unless ``serve.read-auth``; pushes always need a credential.
"""

from jetpack.fetch.server.app import DEPS, ServerDeps, make_app
from jetpack.fetch.server.catalog import Catalog, Entry, Key, version_key
from jetpack.fetch.server.repository import RootRepository, StoreRepository

__all__ = [
    "DEPS",
    "Catalog",
    "Entry",
    "Key",
    "RootRepository",
    "ServerDeps",
    "StoreRepository",
    "make_app",
    "version_key",
]
