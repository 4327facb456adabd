"""The aiohttp application: ``make_app(deps)`` and its handlers.

Routes (every other path is 404; no handler maps a URL to a file name directly — the URL
is parsed into name/version/os/arch or a fingerprint and looked up in the catalog, and the
file the catalog names is checked to be a regular file inside the root)::

    GET  /                                    HTML index (with ?ac-discovery=1: discovery)
    GET  /<path>?ac-discovery=1               discovery page for names <domain>/<path>[/...]
    GET  /images/<name>/<version>/<os>-<arch>.aci[.asc]   image / signature; version
                                              "latest" = the highest for that os/arch
    GET  /keys/<fingerprint>.asc              a signer's public key
    GET  /_jetpack/v1/images                  the index as JSON
    POST /_jetpack/v1/images                  push (see push.py)
    GET  /_jetpack/v1/health                  {"status": "ok", ...} for supervisors
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from jetpack import __version__
from jetpack.aci import ExtractLimits
from jetpack.config import DEFAULT_MAX_UPLOAD, ServeUser
from jetpack.errors import ACIError
from jetpack.fetch.server import push as push_mod
from jetpack.fetch.server.auth import authenticate, may_push
from jetpack.fetch.server.catalog import LATEST, VERSION_RE, Catalog, Entry
from jetpack.fetch.server.pages import index_html, index_json
from jetpack.fetch.server.repository import RootRepository, StoreRepository, inside
from jetpack.fetch.server.responses import (
    ACI_TYPE,
    ASC_TYPE,
    KEY_TYPE,
    NotAllowed,
    fail,
    send_bytes,
    send_file,
)
from jetpack.fetch.server.signing import Signer
from jetpack.fetch.trust import TrustStore
from jetpack.schema.types import ACIdentifier, short_id

log = logging.getLogger("jetpack.serve")

_PLATFORM = re.compile(r"([a-z0-9_]{1,32})-([a-z0-9_]{1,32})\.(aci|aci\.asc)")
_KEY_FILE = re.compile(r"([0-9a-f]{40})\.asc")
_CHALLENGE = 'Bearer realm="jetpack", Basic realm="jetpack"'
_STARTED = time.time()


@dataclass
class ServerDeps:
    """What the application needs; the caller builds it (``cli/serve.py``, or a test).

    The application owns ``signer`` once given: it is closed at cleanup.
    """

    repository: RootRepository | StoreRepository
    public_url: str
    users: tuple[ServeUser, ...] = ()
    trust: TrustStore | None = None
    signer: Signer | None = None
    allow_overwrite: bool = False
    read_auth: bool = False
    max_upload_size: int = DEFAULT_MAX_UPLOAD
    limits: ExtractLimits = field(default_factory=ExtractLimits)
    title: str = "Jetpack image server"

    def catalog(self) -> Catalog:
        return self.repository.catalog(self.public_url)

    def cache_control(self, version: str | None) -> str:
        if version == LATEST:
            return "no-cache"
        if self.allow_overwrite or not self.repository.writable:
            return "public, max-age=300"
        return "public, max-age=31536000, immutable"


DEPS = web.AppKey("deps", ServerDeps)
USER = web.RequestKey("user", str)  # who authenticated, for the access log


class AccessLogger(AbstractAccessLogger):
    """One line per request on stdout:
    ``ADDR USER "METHOD PATH HTTP/x" STATUS BYTES MSms "USER-AGENT"``."""

    stream: TextIO = sys.stdout

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        user = request.get(USER, "-")
        length = response.content_length if response.content_length is not None else "-"
        if response.status == 304 or request.method == hdrs.METH_HEAD:
            length = 0
        agent = request.headers.get(hdrs.USER_AGENT, "-").replace('"', "'")
        line = (
            f'{request.remote or "-"} {user} "{request.method} {request.path_qs} '
            f'HTTP/{request.version.major}.{request.version.minor}" {response.status} '
            f'{length} {time * 1000:.1f}ms "{agent}"\n'
        )
        try:
            self.stream.write(line)
        except (OSError, ValueError):
            return
        # One flush per event-loop turn, however many requests ended in it: lines reach a
        # supervisor's pipe at once without a write(2) per request under load.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    _flush_pending = False

    def _flush(self) -> None:
        self._flush_pending = False
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()


# -- middleware ------------------------------------------------------------------------


@web.middleware
async def _read_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    deps = request.app[DEPS]
    if deps.read_auth and request.path != "/_jetpack/v1/health" and request.method != "POST":
        user = authenticate(request.headers.get(hdrs.AUTHORIZATION), deps.users)
        if user is None:
            fail(
                web.HTTPUnauthorized,
                "unauthorized",
                "this server needs a credential to read",
                **{hdrs.WWW_AUTHENTICATE: _CHALLENGE},
            )
        request[USER] = user.name
    return await handler(request)


# -- reading ---------------------------------------------------------------------------


def _discovery(request: web.Request, path: str) -> web.StreamResponse:
    deps = request.app[DEPS]
    catalog = deps.catalog()
    page = catalog.discovery_page(path)
    if page is None:
        raise web.HTTPNotFound(text=f"no image is served under /{path}\n")
    return send_bytes(
        request,
        page,
        etag=f'"d{catalog.generation}-{hash(page) & 0xFFFFFFFF:08x}"',
        last_modified=catalog.built_at,
        cache_control="public, max-age=60",
        content_type="text/html; charset=utf-8",
    )


def _wants_discovery(request: web.Request) -> bool:
    return "ac-discovery" in request.query


async def index(request: web.Request) -> web.StreamResponse:
    if _wants_discovery(request):
        return _discovery(request, "")
    deps = request.app[DEPS]
    body = index_html(deps.catalog(), deps.title)
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={hdrs.CACHE_CONTROL: "no-cache"},
    )


async def other(request: web.Request) -> web.StreamResponse:
    if not _wants_discovery(request):
        raise web.HTTPNotFound()
    path = request.match_info["tail"].strip("/")
    try:
        ACIdentifier(path)
    except ACIError:
        raise web.HTTPNotFound() from None
    except ValueError:
        raise web.HTTPNotFound() from None
    return _discovery(request, path)


def _parse_image_path(tail: str) -> tuple[str, str, str, str, str] | None:
    """``<name>/<version>/<os>-<arch>.<ext>`` → (name, version, os, arch, ext), or None."""
    head, _, file = tail.rpartition("/")
    name, _, version = head.rpartition("/")
    match = _PLATFORM.fullmatch(file)
    if not name or match is None or not VERSION_RE.fullmatch(version):
        return None
    try:
        ACIdentifier(name)
    except ValueError:
        return None
    return name, version, match.group(1), match.group(2), match.group(3)


async def image_file(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    parsed = _parse_image_path(request.match_info["tail"])
    if parsed is None:
        raise web.HTTPNotFound()
    name, version, os_, arch, ext = parsed
    entry = deps.catalog().find(name, version, os_, arch)
    if entry is None:
        raise web.HTTPNotFound()
    cache = deps.cache_control(version)
    if ext == "aci":
        path = inside(deps.repository.root, entry.aci)
        if path is None:
            log.warning("refusing to serve %s: not a regular file inside the root", entry.aci)
            raise web.HTTPNotFound()
        return await send_file(
            request,
            path,
            etag=entry.etag,
            last_modified=entry.pushed_at,
            cache_control=cache,
            content_type=ACI_TYPE,
        )
    return await _signature(request, deps, entry, cache)


async def _signature(
    request: web.Request, deps: ServerDeps, entry: Entry, cache: str
) -> web.StreamResponse:
    if entry.asc is not None and entry.asc_etag is not None:
        path = inside(deps.repository.root, entry.asc)
        if path is None:
            raise web.HTTPNotFound()
        return await send_file(
            request,
            path,
            etag=entry.asc_etag,
            last_modified=entry.pushed_at,
            cache_control=cache,
            content_type=ASC_TYPE,
        )
    repo = deps.repository
    if not isinstance(repo, StoreRepository) or deps.signer is None:
        raise web.HTTPNotFound()
    got = repo.cached_signature(entry.id)
    if got is None:
        path = inside(repo.root, entry.aci)
        if path is None:
            raise web.HTTPNotFound()
        signer = deps.signer
        got = repo.keep_signature(entry.id, await asyncio.to_thread(signer.sign_file, path))
    body, etag = got
    return send_bytes(
        request,
        body,
        etag=etag,
        last_modified=entry.pushed_at,
        cache_control=cache,
        content_type=ASC_TYPE,
    )


async def key_file(request: web.Request) -> web.StreamResponse:
    match = _KEY_FILE.fullmatch(request.match_info["file"])
    key = deps_key = None
    if match is not None:
        deps_key = request.app[DEPS].catalog().keys.get(match.group(1))
        key = deps_key
    if key is None:
        raise web.HTTPNotFound()
    return send_bytes(
        request,
        key.armored,
        etag=key.etag,
        last_modified=_STARTED,
        cache_control="public, max-age=3600",
        content_type=KEY_TYPE,
    )


async def images_json(request: web.Request) -> web.StreamResponse:
    body = json.dumps(index_json(request.app[DEPS].catalog()), indent=1) + "\n"
    return web.Response(
        text=body, content_type="application/json", headers={hdrs.CACHE_CONTROL: "no-cache"}
    )


async def health(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    catalog = deps.catalog()  # reads the index: a broken repository is not "ok"
    body = {
        "status": "ok",
        "version": __version__,
        "images": len(catalog.entries),
        "uptime": round(time.time() - _STARTED, 1),
        "writable": deps.repository.writable,
    }
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: "no-store"})


# -- pushing ---------------------------------------------------------------------------


async def push(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    user = authenticate(request.headers.get(hdrs.AUTHORIZATION), deps.users)
    if user is None:
        fail(
            web.HTTPUnauthorized,
            "unauthorized",
            "pushing needs a valid credential",
            **{hdrs.WWW_AUTHENTICATE: _CHALLENGE},
        )
    request[USER] = user.name
    repo = deps.repository
    if not isinstance(repo, RootRepository):
        fail(
            NotAllowed,
            "read-only",
            "this server shares a store: it takes no push",
            Allow="GET, HEAD",
        )
    claims = push_mod.declared(request)
    if "name" in claims and not may_push(user, claims["name"]):
        fail(web.HTTPForbidden, "forbidden", f"user {user.name} may not push {claims['name']}")
    staging = repo.staging()
    try:
        staged = await push_mod.receive(request, staging, deps.max_upload_size)
        checked = await asyncio.to_thread(
            push_mod.check,
            staged,
            claims=claims,
            user=user,
            trust=deps.trust or TrustStore(repo.root / "trustedkeys", repo.root / ".no-vendor"),
            signer=deps.signer,
            limits=deps.limits,
            now=time.time(),
        )
        asc = staging / "image.aci.asc"
        asc.write_bytes(checked.signature)

        def conflict(existing: Entry) -> Exception:
            body = json.dumps(
                {
                    "error": "exists",
                    "reason": f"{existing.name}:{existing.version} for "
                    f"{existing.os}/{existing.arch} is already published "
                    f"({short_id(existing.id)}); versions are immutable here",
                }
            )
            return web.HTTPConflict(text=body + "\n", content_type="application/json")

        try:
            entry = await asyncio.to_thread(
                repo.publish,
                checked.entry,
                staged_aci=staged.aci,
                staged_asc=asc,
                key=checked.key,
                allow_overwrite=deps.allow_overwrite,
                conflict=conflict,
            )
        except OSError as err:
            fail(web.HTTPConflict, "path-conflict", f"cannot place the image: {err.strerror}")
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    log.info(
        "published %s:%s %s-%s %s by %s",
        entry.name,
        entry.version,
        entry.os,
        entry.arch,
        entry.id,
        user.name,
    )
    url = deps.public_url + entry.url_path()
    body = {
        "name": entry.name,
        "version": entry.version,
        "os": entry.os,
        "arch": entry.arch,
        "id": entry.id,
        "size": entry.size,
        "url": url,
        "signature_url": url + ".asc",
        "signer": entry.signer,
        "signed_by_server": entry.signed_by_server,
        "pushed_at": datetime.datetime.fromtimestamp(entry.pushed_at, datetime.UTC).isoformat(
            timespec="seconds"
        ),
    }
    return web.json_response(body, status=201, headers={hdrs.LOCATION: url})


# -- the application -------------------------------------------------------------------


def make_app(deps: ServerDeps) -> web.Application:
    """The server application for ``deps``; run it with any aiohttp runner."""
    middlewares = [_read_auth] if deps.read_auth else []
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app[DEPS] = deps

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if isinstance(deps.repository, RootRepository):
            await asyncio.to_thread(deps.repository.sweep)
        deps.catalog()  # a broken index fails startup, not the first request
        yield
        if deps.signer is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(deps.signer.close)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", index)
    app.router.add_get("/_jetpack/v1/health", health)
    app.router.add_get("/_jetpack/v1/images", images_json)
    app.router.add_post("/_jetpack/v1/images", push)
    app.router.add_get("/images/{tail:.+}", image_file)
    app.router.add_get("/keys/{file}", key_file)
    app.router.add_get("/{tail:.+}", other)
    return app
