"""The HTTP(S) client every network step goes through: discovery, keys, ACIs, signatures.

One place decides what may be sent where:

- ``https`` only, unless the operator allows ``http`` (``--insecure-options=http``); a
  redirect from https to http is refused unless http is allowed.
- TLS verified against the system CAs (``$SSL_CERT_FILE`` honoured) plus ``fetch.ca-file``,
  unless the operator turns verification off (``--insecure-options=tls``).
- Per-host credentials (``[[fetch.credentials]]``) are added to a request only when it goes
  over https to exactly that host — redirects are followed here, hop by hop, so an
  Authorization header never crosses to another host or to plain http.
- Connect and read timeouts; every failure is a :class:`FetchError` naming the URL.

Bodies are never decompressed on the fly: an ACI's signature covers the bytes as served.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from jetpack import __version__
from jetpack.errors import FetchError
from jetpack.fetch.transport import Transport

__all__ = ["Fetched", "HttpClient", "Transport", "describe_status", "ssl_context"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"jetpack/{__version__}"


@dataclass(frozen=True)
class Fetched:
    """A whole (small) response: discovery pages, keys, signatures."""

    status: int
    url: str
    headers: Mapping[str, str]
    body: bytes


def ssl_context(transport: Transport) -> ssl.SSLContext:
    """The TLS settings of ``transport`` (system CAs, $SSL_CERT_FILE, fetch.ca-file)."""
    ctx = ssl.create_default_context()
    if transport.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(transport.ca_file))
        except (OSError, ssl.SSLError) as err:
            raise FetchError(
                f"cannot load CA file {transport.ca_file}", str(err), "fix fetch.ca-file"
            ) from err
    if not transport.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _reason(err: BaseException) -> tuple[str, str | None]:
    """A short reason and a hint for a transport-level failure."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        cause = getattr(err, "certificate_error", None) or err
        if "WRONG_VERSION_NUMBER" in str(cause):
            return (
                "the server does not speak TLS",
                "it may serve plain http: use an http:// URL with --insecure-options=http",
            )
        return (
            f"TLS verification failed: {getattr(cause, 'verify_message', None) or cause}",
            "set fetch.ca-file to the server's CA, or --insecure-options=tls to skip the check",
        )
    if isinstance(err, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out", "check the server, or raise fetch.connect-timeout/read-timeout"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect: {err.os_error.strerror or err.os_error}", None
    if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the server closed the connection early", None
    return f"{type(err).__name__}: {err}", None


class HttpClient:
    """An aiohttp session with the policy of a :class:`Transport`. Use ``async with``."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.transport.connect_timeout,
            sock_read=self.transport.read_timeout,
        )
        connector = aiohttp.TCPConnector(ssl=ssl_context(self.transport), limit=16)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            auto_decompress=False,
            # identity: a signature covers the bytes as served, never a re-encoding of them
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check_scheme(self, url: str, origin: str | None) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "https":
            return
        if scheme != "http":
            raise FetchError(f"cannot fetch {url}", f"unsupported URL scheme {scheme!r}")
        if not self.transport.allow_http:
            why = "plain http is not allowed"
            if origin is not None:
                why = f"{origin} redirects to plain http, which is not allowed"
            raise FetchError(f"cannot fetch {url}", why, "pass --insecure-options=http to allow it")

    @asynccontextmanager
    async def open(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The final response for ``url`` after redirects, body unread (stream it)."""
        assert self._session is not None, "use HttpClient in 'async with'"
        origin: str | None = None
        current = url
        for _ in range(self.transport.max_redirects + 1):
            self._check_scheme(current, origin)
            sent: dict[str, str] = dict(headers or {})
            cred = self.transport.credential(current)
            if cred is not None:
                sent["Authorization"] = cred.header()
            try:
                response = await self._session.request(
                    method, current, headers=sent, allow_redirects=False
                )
            except (TimeoutError, aiohttp.ClientError) as err:
                why, hint = _reason(err)
                raise FetchError(f"cannot fetch {current}", why, hint) from err
            except UnicodeError as err:  # the resolver's IDNA step: a label over 63 chars
                raise FetchError(
                    f"cannot fetch {current}",
                    f"its host name is not valid ({err})",
                    "check the name (DNS labels are at most 63 characters)",
                ) from err
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                response.release()
                origin, current = current, urljoin(current, location)
                continue
            try:
                yield response
            except (TimeoutError, aiohttp.ClientError) as err:
                why, hint = _reason(err)
                raise FetchError(f"cannot fetch {current}", why, hint) from err
            finally:
                response.release()
            return
        raise FetchError(
            f"cannot fetch {url}", f"more than {self.transport.max_redirects} redirects"
        )

    async def fetch(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        limit: int = 4 << 20,
    ) -> Fetched:
        """GET ``url`` whole (at most ``limit`` bytes): for pages, keys and signatures."""
        async with self.open(url, headers=headers) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 << 10):
                body += chunk
                if len(body) > limit:
                    raise FetchError(
                        f"cannot fetch {response.url}", f"the response is larger than {limit} bytes"
                    )
            return Fetched(response.status, str(response.url), dict(response.headers), bytes(body))


def describe_status(response: Any) -> str:
    """``404 Not Found`` and the like."""
    reason = getattr(response, "reason", "") or ""
    return f"{response.status} {reason}".strip()
