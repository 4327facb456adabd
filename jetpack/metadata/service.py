"""The metadata service: the appc endpoints over HTTP, registration over a unix socket.

One service per data directory (per host, with the default one) serves every pod
registered there. It resolves the token (the first path segment) to the pod before
anything else: an unknown token gets 401 whatever the path, and learns nothing of other
pods. Answers are bytes computed at registration (:mod:`jetpack.metadata.registry`), so
a GET is a dictionary lookup; the HTTP side is aiohttp's low-level server, without
router or middlewares, because each request's budget is small (the reference ACE
validator allows 100 ms).

Three sockets:

- TCP at ``metadata.listen`` (default ``127.0.0.1:812``): pods on the host's network
  reach it directly.
- ``forward/forward.sock`` (datagrams): the PID 1 of a pod with a network namespace of
  its own listens on the pod's loopback at the same port and sends each connection it
  accepts here as a file descriptor, with its pod's UUID; it is then served like any
  other, and that pod's token works only on such connections. Nothing is copied, and a
  restarted service serves the next connection.
- ``run/control.sock``: registration, confirmation, status, stop (root only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from jetpack.config import parse_ip_listen
from jetpack.errors import MetadataError
from jetpack.metadata.client import process_alive
from jetpack.metadata.paths import MetadataPaths, existing_pods, is_uuid
from jetpack.metadata.registry import Registration, Registry

log = logging.getLogger("jetpack.metadata")

BASE = "acMetadata/v1/"
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
CONTROL_LIMIT = 64 << 20  # a registration carries every image manifest of the pod
CONTROL_TIMEOUT = 10.0  # seconds a control client has to send its request
RECONCILE_SECONDS = 60.0
MAX_FORM_FIELDS = 16
MAX_FORM_BYTES = 1 << 20  # aiohttp's client_max_size: request.read() answers 413 beyond it
MAX_DIRECT = 512  # connections over the TCP port at once (host-network pods, anyone local)
MAX_PER_POD = 64  # connections one pod's PID 1 handed over, at once
IDLE_SECONDS = 10.0  # a connection with no request in flight is closed after this
MAX_PID = 1 << 22  # the kernel's highest pid_max


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=text.encode(), headers={"Content-Type": TEXT, **(headers or {})}
    )


def _ok(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})


# GET endpoints: path after acMetadata/v1/ → the attribute holding the body, its type.
_POD_GETS = {
    "pod/annotations": ("annotations", JSON),
    "pod/manifest": ("manifest", JSON),
    "pod/uuid": ("uuid", TEXT),
}
_APP_GETS = {
    "annotations": ("annotations", JSON),
    "image/manifest": ("image_manifest", JSON),
    "image/id": ("image_id", TEXT),
}


class Service:
    """The registrations in memory and the handlers that answer from them."""

    def __init__(self, paths: MetadataPaths, host: str, port: int) -> None:
        self.paths = paths
        self.registry = Registry(paths)
        self.host = host
        self.port = port
        self.by_token: dict[str, Registration] = {}
        self.by_uuid: dict[str, Registration] = {}
        self.started_pods: dict[str, int] = {}  # uuid → stage1's PID, from "start"
        self.started = _now()
        self.stop_requested = asyncio.Event()
        # Which pod handed each connection over (see Connections); none: the TCP port.
        self.origins: Mapping[object, str | None] = {}
        self._posts: dict[str, Callable[[Registration, dict[str, bytes]], web.Response]]
        self._posts = {"pod/hmac/sign": self._sign, "pod/hmac/verify": self._verify}

    # -- registrations -----------------------------------------------------------------

    def add(self, registration: Registration) -> None:
        old = self.by_uuid.pop(registration.uuid, None)
        if old is not None:
            self.by_token.pop(old.token, None)
        self.by_uuid[registration.uuid] = registration
        self.by_token[registration.token] = registration

    def remove(self, uuid: str) -> bool:
        registration = self.by_uuid.pop(uuid, None)
        self.started_pods.pop(uuid, None)
        if registration is not None:
            self.by_token.pop(registration.token, None)
        return self.registry.delete(uuid) or registration is not None

    def load(self) -> None:
        registrations, problems = self.registry.load_all()
        for problem in problems:
            log.warning("ignoring a registration: %s", problem)
        for registration in registrations:
            self.add(registration)
        self.reconcile()

    def reconcile(self) -> None:
        """Forget pods the runtime no longer has (removed while the service was down)."""
        try:
            existing = existing_pods(self.paths)
            for uuid in list(self.by_uuid):
                if uuid not in existing:
                    log.info("pod %s is gone: unregistered", uuid)
                    self.remove(uuid)
        except OSError as err:
            log.warning("cannot look for pods that are gone: %s", err)

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path  # as sent: a token and these paths need no decoding ...
        if "%" in path or "?" in path or not path.startswith("/"):
            path = request.path  # ... unless escaped, with a query, or in absolute form
        token, _, rest = path[1:].partition("/")
        registration = self.by_token.get(token)
        if registration is None or not self._reaches(registration, request):
            return _text(401, "unknown token")
        if not rest.startswith(BASE):
            return _text(404, "not found")
        rest = rest[len(BASE) :]
        method = request.method
        found = _POD_GETS.get(rest)
        if found is not None:
            if method not in ("GET", "HEAD"):
                return _text(405, "method not allowed", {"Allow": "GET, HEAD"})
            name, content_type = found
            body = registration.uuid.encode() if name == "uuid" else getattr(registration, name)
            return _ok(body, content_type)
        post = self._posts.get(rest)
        if post is not None:
            if method != "POST":
                return _text(405, "method not allowed", {"Allow": "POST"})
            try:  # (the form at once when it came with the headers: no coroutine to await)
                form = form_now(request)
                if form is None:
                    form = await read_form(request)
            except FormError as err:
                return _text(err.status, err.reason)
            return post(registration, form)
        head, _, tail = rest.partition("/")
        if head == "apps":
            app_name, _, what = tail.partition("/")
            app = registration.apps.get(app_name)
            found = _APP_GETS.get(what)
            if app is not None and found is not None:
                if method not in ("GET", "HEAD"):
                    return _text(405, "method not allowed", {"Allow": "GET, HEAD"})
                name, content_type = found
                value = getattr(app, name)
                return _ok(value.encode() if isinstance(value, str) else value, content_type)
            if app is None:
                return _text(404, "the pod has no such app")
        return _text(404, "not found")

    def _reaches(self, registration: Registration, request: web.BaseRequest) -> bool:
        """Whether the token came the way its pod's requests come: a pod with a network of
        its own only through the connections its PID 1 hands over (its token is worth
        nothing elsewhere, even if it leaks), a pod on the host's network only over the
        TCP port (no other pod's PID 1 may pass its token on)."""
        origin = self.origins.get(request.protocol)
        if registration.net == "host":
            return origin is None
        return origin == registration.uuid

    def _sign(self, registration: Registration, form: dict[str, bytes]) -> web.Response:
        content = form.get("content")
        if content is None:
            return _text(400, "the form has no field content")
        return _ok(registration.sign(content), TEXT)

    def _verify(self, _caller: Registration, form: dict[str, bytes]) -> web.Response:
        missing = [f for f in ("content", "uuid", "signature") if f not in form]
        if missing:
            return _text(400, f"the form has no field {missing[0]}")
        try:  # any form Go's types.NewUUID takes: upper case, no dashes, braces
            uuid = str(uuid_module.UUID(form["uuid"].decode("latin-1")))
        except ValueError:
            return _text(403, "the signature does not match")
        signer = self.by_uuid.get(uuid)
        if signer is None or not signer.verify(form["content"], form["signature"]):
            return _text(403, "the signature does not match")
        return _ok(b"", TEXT)

    # -- control ---------------------------------------------------------------------------

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            # read first: a refused client still gets why
            line = await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT)
            if uid != os.geteuid():
                reply: dict[str, Any] = {"ok": False, "error": "only root may register pods"}
            else:
                reply = self._control_request(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # stage1's "start" does not wait for the reply
        except (TimeoutError, OSError, ValueError, asyncio.LimitOverrunError) as err:
            log.warning("control request failed: %s", err or type(err).__name__)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _control_request(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            op = request.get("op")
            if op == "register":
                return self._register(request)
            if op == "start":
                uuid, pid = str(request.get("uuid")), request.get("pid")
                if uuid in self.by_uuid and type(pid) is int and 0 < pid <= MAX_PID:
                    self.started_pods[uuid] = pid
                    log.info("pod %s started (stage1 pid %d)", uuid, pid)
                return {"ok": uuid in self.by_uuid}
            if op == "unregister":
                uuid = str(request.get("uuid"))
                if self.remove(uuid):
                    log.info("pod %s unregistered", uuid)
                return {"ok": True}
            if op == "status":
                return {"ok": True, **self.status()}
            if op == "stop":
                log.info("stopping on request")
                self.stop_requested.set()
                return {"ok": True}
            raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError, OSError, RecursionError) as err:
            return {"ok": False, "error": str(err) or type(err).__name__}

    def _register(self, request: dict[str, Any]) -> dict[str, Any]:
        uuid = request.get("uuid")
        if not isinstance(uuid, str):
            raise ValueError("a registration needs the pod's UUID")
        if uuid in self.by_uuid:
            raise ValueError(f"pod {uuid} is already registered")
        manifest, apps = request.get("manifest"), request.get("apps")
        if not isinstance(manifest, str) or not isinstance(apps, list):
            raise ValueError("a registration needs a manifest and apps")
        images = [
            (str(a.get("name")), str(a.get("image_id")), str(a.get("image_manifest")).encode())
            for a in apps
            if isinstance(a, dict)
        ]
        net = request.get("net", "host")
        if not isinstance(net, str):
            raise ValueError("the network mode must be a string")
        registration = Registration.new(uuid, manifest.encode(), images, _now(), net)
        self.registry.save(registration)
        self.add(registration)
        log.info("pod %s registered (%d apps)", registration.uuid, len(registration.apps))
        return {"ok": True, "token": registration.token, "host": self.host, "port": self.port}

    def status(self) -> dict[str, Any]:
        for uuid, pid in list(self.started_pods.items()):
            if not process_alive(pid):
                del self.started_pods[uuid]
        return {
            "pid": os.getpid(),
            "listen": _join(self.host, self.port),
            "started": self.started,
            "pods": len(self.by_uuid),
            "running": len(self.started_pods),
        }


class FormError(Exception):
    """A posted form the service cannot read: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


_URLENCODED = "application/x-www-form-urlencoded"


def _multipart(header: str) -> bool:
    """Whether a form's Content-Type is multipart (else urlencoded).

    Raises:
        FormError: 415, not a form.
    """
    if header == _URLENCODED:  # what clients send, as is: nothing to parse
        return False
    # (the raw header, not request.content_type: parsing its parameters on every
    # signature costs more than the HMAC)
    content_type = header.partition(";")[0].strip().lower() or "application/octet-stream"
    if content_type == "multipart/form-data":
        return True
    if content_type not in (_URLENCODED, "application/octet-stream"):  # octet-stream: none
        raise FormError(415, "post a form (application/x-www-form-urlencoded)")
    return False


def form_now(request: web.BaseRequest) -> dict[str, bytes] | None:
    """The fields of a posted form whose whole body came with the headers, as a form
    usually does (taken from aiohttp's payload at once: ``request.read()`` costs as much as
    the HMAC); None when the body is still to come: await :func:`read_form`.

    Raises:
        FormError: as :func:`read_form`.
    """
    header = request.headers.get("Content-Type", "")
    multipart = _multipart(header)
    payload = request.content
    if not payload.is_eof() or payload.total_bytes > MAX_FORM_BYTES:
        return None
    return _fields(header, multipart, payload.read_nowait())


async def read_form(request: web.BaseRequest) -> dict[str, bytes]:
    """The fields of a posted form, as bytes (first value of each name wins, as Go's
    ``FormValue``): the signed content is exactly the bytes the client sent.

    Raises:
        FormError: 400 malformed, 413 larger than aiohttp's client_max_size (1 MiB),
            415 not a form.
    """
    header = request.headers.get("Content-Type", "")
    multipart = _multipart(header)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as err:
        raise FormError(413, "the form is too large") from err
    return _fields(header, multipart, body)


def _fields(header: str, multipart: bool, body: bytes) -> dict[str, bytes]:
    if multipart:
        return _multipart_fields(header, body)
    if not body.isascii():
        raise FormError(400, "a urlencoded form is ASCII")
    if b"&" not in body and b"%" not in body and b"+" not in body:
        # one field, nothing to unquote: `content=...`, as clients send it to sign
        name, _, value = body.partition(b"=")
        return {name.decode("latin-1"): value} if body else {}
    pairs = [pair for pair in body.split(b"&") if pair]
    if len(pairs) > MAX_FORM_FIELDS:
        raise FormError(400, f"the form has more than {MAX_FORM_FIELDS} fields")
    found: dict[str, bytes] = {}
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        found.setdefault(_unquote(name).decode("latin-1"), _unquote(value))
    return found


def _unquote(text: bytes) -> bytes:
    """A urlencoded name or value, byte for byte (no charset: what was sent is signed)."""
    if b"+" in text:
        text = text.replace(b"+", b" ")
    if b"%" in text:
        if _BAD_ESCAPE.search(text):
            raise FormError(400, "the form has a malformed %-escape")
        text = urllib.parse.unquote_to_bytes(text)
    return text


def _multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, each part's bytes as sent (after its
    transfer encoding, if base64 or quoted-printable; never re-encoded text)."""
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        parts = list(message.iter_parts()) if message.is_multipart() else []
        if not parts or message.defects or any(p.defects or p.is_multipart() for p in parts):
            # no boundary, or none closing it; a part that is itself multipart
            raise FormError(400, "malformed multipart form")
        found: dict[str, bytes] = {}
        for part in parts:
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or name in found or len(found) >= MAX_FORM_FIELDS:
                continue
            payload = part.get_payload(decode=True)
            found[name] = payload if isinstance(payload, bytes) else b""
    except FormError:
        raise
    except Exception as err:
        raise FormError(400, "malformed multipart form") from err
    return found


def _now() -> str:
    """UTC, ISO 8601, as pods record their times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- running it ------------------------------------------------------------------------------


def bind_tcp(paths: MetadataPaths, listen: str, *, pods_registered: bool) -> socket.socket:
    """The TCP socket at ``listen``. Port 0 means the port the last service had when pods
    are registered (they were told it: another port would leave them with a dead URL, and
    whoever took the port would get their tokens), else any free one.

    Raises:
        MetadataError: the address is taken or cannot be bound.
    """
    host, port = parse_ip_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port == 0 and pods_registered:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            old_host, old_port = parse_ip_listen(json.loads(paths.info.read_bytes())["listen"])
            if old_host == host:
                port = old_port
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as err:
        raise MetadataError(
            f"cannot listen on {_join(host, port)}",
            err.strerror or str(err),
            "stop what holds it (running pods were told this address), or set another "
            "[metadata] listen address for new pods",
        ) from err


def _unix_socket(path: Path, kind: int) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale one: we hold the lock, no other service uses it
    sock = socket.socket(socket.AF_UNIX, kind)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    path.chmod(0o600)
    sock.setblocking(False)
    return sock


class _Refused(asyncio.Protocol):
    """What a connection over its cap gets: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Connections(web.Server):
    """aiohttp's low-level server, knowing where each connection came from (the pod whose
    PID 1 handed it over, or None: the TCP port) and keeping each origin under its cap,
    so no pod and no local process can take every descriptor of the service."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> None:
        super().__init__(
            handler, access_log=None, handler_cancellation=True, keepalive_timeout=IDLE_SECONDS
        )
        self.origin: dict[object, str | None] = {}
        self.counts: dict[str | None, int] = {}

    def __call__(self) -> Any:  # the TCP site's protocol factory
        return self.make(None)

    def make(self, origin: str | None) -> asyncio.Protocol:
        count = self.counts.get(origin, 0)
        if count >= (MAX_DIRECT if origin is None else MAX_PER_POD):
            return _Refused()
        handler = super().__call__()
        self.origin[handler] = origin
        self.counts[origin] = count + 1
        return handler

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if handler in self.origin:
            origin = self.origin.pop(handler)
            self.counts[origin] -= 1
            if not self.counts[origin]:
                del self.counts[origin]


class _Forwarded:
    """Receives the connections pods' PID 1s accepted and serves them as their pod's."""

    def __init__(self, sock: socket.socket, server: Connections) -> None:
        self.sock = sock
        self.server = server
        self.tasks: set[asyncio.Task[Any]] = set()

    def ready(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(
                    64, socket.CMSG_SPACE(4 * struct.calcsize("i"))
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("cannot receive a forwarded connection: %s", err)
                return
            fds = [
                int.from_bytes(payload[i : i + 4], sys.byteorder)
                for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                for i in range(0, len(payload) - len(payload) % 4, 4)
            ]
            origin = data.decode("ascii", "replace")
            for fd in fds:
                conn = socket.socket(fileno=fd)
                if conn.type != socket.SOCK_STREAM or not is_uuid(origin) or len(fds) != 1:
                    conn.close()
                    continue
                conn.setblocking(False)
                factory = functools.partial(self.server.make, origin)
                task = loop.create_task(loop.connect_accepted_socket(factory, conn))
                self.tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("cannot serve a forwarded connection: %s", task.exception())


def _raise_open_files_limit() -> None:
    """Up to the hard limit: the caps above, not the default 1024, bound the connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))


async def serve(paths: MetadataPaths, sock: socket.socket, announce: Callable[[str], None]) -> None:
    """Serve until SIGTERM/SIGINT or a ``stop`` request. The lock must be held."""
    host, port = sock.getsockname()[:2]
    _raise_open_files_limit()
    service = Service(paths, host, port)
    service.load()
    server = Connections(service.handle)
    service.origins = server.origin
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    loop = asyncio.get_running_loop()
    control = await asyncio.start_unix_server(
        service.control, sock=_unix_socket(paths.control, socket.SOCK_STREAM), limit=CONTROL_LIMIT
    )
    forward_sock = _unix_socket(paths.forward, socket.SOCK_DGRAM)
    forwarded = _Forwarded(forward_sock, server)
    loop.add_reader(forward_sock.fileno(), forwarded.ready)
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.stop_requested.set)
    info = {"pid": os.getpid(), "listen": _join(host, port), "started": service.started}
    tmp = paths.info.with_suffix(".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(paths.info)
    log.info("serving %d pods on %s (pid %d)", len(service.by_uuid), _join(host, port), os.getpid())
    announce(_join(host, port))
    try:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(service.stop_requested.wait(), RECONCILE_SECONDS)
            if service.stop_requested.is_set():
                break
            if not paths.lock.exists():
                log.info("%s is gone: stopping", paths.root)  # its data directory was deleted
                break
            service.reconcile()
    finally:
        for path in (paths.control, paths.forward):
            with contextlib.suppress(OSError):
                path.unlink()
        loop.remove_reader(forward_sock.fileno())
        forward_sock.close()
        control.close()
        await control.wait_closed()
        await runner.cleanup()
        log.info("stopped")
