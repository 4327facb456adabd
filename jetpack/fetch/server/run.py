"""Running the server: bind, announce, serve until SIGTERM/SIGINT, drain, exit.

The socket is bound before the application is built, so ``--listen 127.0.0.1:0`` works
(the announced URL has the real port) and the default public URL can name it. On SIGTERM
or SIGINT the listening socket is closed at once (new connections are refused), requests
in flight — downloads included — run to completion for up to ``shutdown-timeout``
seconds, idle keep-alive connections are closed, every connection's buffered bytes are
flushed (the loop runs until each is closed), and :func:`serve` returns normally, so the
command exits 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from jetpack.errors import ConfigError
from jetpack.fetch.server.app import AccessLogger, ServerDeps, make_app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"cannot load the TLS certificate {cert} and key {key}",
            str(getattr(err, "strerror", None) or err),
            "check serve.tls-cert and serve.tls-key",
        ) from err
    return ctx


def default_public_url(host: str, port: int, tls: bool) -> str:
    """``https://HOST:PORT`` from the bound address (the host's name for a wildcard)."""
    scheme = "https" if tls else "http"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = socket.getfqdn()
    elif address is not None and address.version == 6:
        host = f"[{host}]"
    default = 443 if tls else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as err:
        raise ConfigError(
            f"cannot listen on {host}:{port}", err.strerror or str(err), "choose another --listen"
        ) from err


async def serve(
    sock: socket.socket,
    build: Callable[[str], ServerDeps],
    *,
    ssl_context: ssl.SSLContext | None,
    public_url: str | None,
    shutdown_timeout: float,
    announce: Callable[[ServerDeps], None],
) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT; ``build(public_url)`` makes the deps."""
    host, port = sock.getsockname()[:2]
    url = public_url or default_public_url(host, port, ssl_context is not None)
    deps = build(url)
    runner = web.AppRunner(
        make_app(deps),
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("jetpack.serve.access"),
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    try:
        site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=1024)
        await site.start()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        announce(deps)
        await stop.wait()
    finally:
        # cleanup() returns when the handlers are done, but what they wrote may still sit
        # in transport buffers (under TLS, most of a slow download): keep the loop running
        # until each connection's socket is really closed — asyncio closes it only once
        # its buffer is flushed — or the last bytes of a download would be lost. (aiohttp
        # forgets its connections during cleanup, so their sockets are noted before.)
        server = runner.server
        handlers = server.connections if server is not None else []
        sockets = [h.transport.get_extra_info("socket") for h in handlers if h.transport]
        await runner.cleanup()
        deadline = loop.time() + max(shutdown_timeout, 1.0)
        while any(s is not None and s.fileno() != -1 for s in sockets):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
