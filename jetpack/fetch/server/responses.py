"""HTTP responses with our validators: files (sendfile, Range) and small in-memory bodies.

aiohttp's ``FileResponse`` is not used: it replaces any ETag with its own (mtime and
size), honours ``If-Range`` only as a date (a resuming client sending our ETag would get a
range of a *replaced* file), and looks for ``.gz``/``.br`` siblings of the path. Here the
ETag is the precomputed one from the index, and:

- ``If-None-Match`` (weak comparison, ``*``) → 304; else ``If-Modified-Since`` → 304;
- ``Range: bytes=A-B | A- | -N`` → 206 with ``Content-Range`` if ``If-Range`` is absent or
  equals our ETag (strong) or our ``Last-Modified`` date; an unsatisfiable range → 416; a
  multi-range or another unit is ignored (200, whole body), as RFC 9110 allows;
- ``HEAD`` → the same headers, no body;
- the body goes out with ``loop.sendfile`` (``sendfile(2)`` on plain TCP; a bounded
  read-and-write loop in a worker thread under TLS), from a file descriptor opened once,
  so a file replaced during the download does not change the bytes sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import os
from pathlib import Path
from typing import NoReturn

from aiohttp import hdrs, web

ACI_TYPE = "application/vnd.appc.aci"
ASC_TYPE = "application/pgp-signature"
KEY_TYPE = "application/pgp-keys"


@functools.lru_cache(maxsize=1024)
def http_date(ts: float) -> str:
    """RFC 9110's date format; cached, as the same few timestamps are sent again and again."""
    return email.utils.formatdate(int(ts), usegmt=True)


class TooLarge(web.HTTPClientError):
    """413 without aiohttp's required sizes (``HTTPRequestEntityTooLarge`` wants both)."""

    status_code = 413


class NotAllowed(web.HTTPClientError):
    """405 without aiohttp's required method list (pushing to a read-only server)."""

    status_code = 405


def fail(kind: type[web.HTTPException], error: str, reason: str, **headers: str) -> NoReturn:
    """Raise ``kind`` with the JSON body ``{"error": error, "reason": reason}``."""
    body = json.dumps({"error": error, "reason": reason}) + "\n"
    raise kind(text=body, content_type="application/json", headers=headers or None)


def _etags(header: str) -> list[str]:
    """The entity tags of an If-None-Match / If-Match value, weak prefixes dropped."""
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def not_modified(request: web.Request, etag: str, last_modified: float) -> bool:
    inm = request.headers.get(hdrs.IF_NONE_MATCH)
    if inm is not None:
        tags = _etags(inm)
        return "*" in tags or etag in tags
    since = request.if_modified_since
    return since is not None and int(last_modified) <= since.timestamp()


def _range(
    request: web.Request, size: int, etag: str, last_modified: float
) -> tuple[int, int] | None:
    """(start, count) for a satisfiable single range to honour; None: send the whole body.

    Raises:
        web.HTTPRequestRangeNotSatisfiable: the range starts past the end.
    """
    header = request.headers.get(hdrs.RANGE)
    if header is None:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() not in (etag, http_date(last_modified)):
        return None  # the client's copy is of another version: send it all
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if not last or int(last) == 0:
            return None
        start = max(0, size - int(last))
        return start, size - start
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise web.HTTPRequestRangeNotSatisfiable(headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
    return start, end - start + 1


def _validators(etag: str, last_modified: float, cache_control: str) -> dict[str, str]:
    return {
        hdrs.ETAG: etag,
        hdrs.LAST_MODIFIED: http_date(last_modified),
        hdrs.CACHE_CONTROL: cache_control,
    }


async def send_file(
    request: web.Request,
    path: Path,
    *,
    etag: str,
    last_modified: float,
    cache_control: str,
    content_type: str,
) -> web.StreamResponse:
    """Send the regular file ``path`` (already checked to be inside the root)."""
    headers = _validators(etag, last_modified, cache_control)
    if not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=headers)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise web.HTTPNotFound() from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        wanted = _range(request, size, etag, last_modified)
        start, count = wanted if wanted is not None else (0, size)
        headers[hdrs.ACCEPT_RANGES] = "bytes"
        headers[hdrs.CONTENT_TYPE] = content_type
        response = web.StreamResponse(status=200 if wanted is None else 206, headers=headers)
        if wanted is not None:
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
        response.content_length = count
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD or count == 0:
            await response.write_eof()
            return response
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        await asyncio.get_running_loop().sendfile(transport, f, start, count)
        await response.write_eof()
        return response


def send_bytes(
    request: web.Request,
    body: bytes,
    *,
    etag: str,
    last_modified: float,
    cache_control: str,
    content_type: str,
) -> web.Response:
    """A small body with our validators (304 when the client has it)."""
    headers = _validators(etag, last_modified, cache_control)
    if not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=body,
        headers=headers,
        content_type=content_type.split(";")[0],
        charset="utf-8" if "charset" in content_type else None,
    )
