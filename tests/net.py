"""Real network peers for the tests: a test CA, HTTPS servers on 127.0.0.1, GnuPG keys.

- ``test_ca`` (session): a CA made with ``cryptography``; ``test_ca.issue(names)`` gives a
  server certificate for host names / IP addresses; ``test_ca.ca_file`` is its PEM.
- ``serve`` (factory): runs an aiohttp application in its own thread and event loop on
  127.0.0.1 (TLS with a certificate for ``localhost`` and ``127.0.0.1`` by default), so
  synchronous code and subprocesses can talk to it. Returns a :class:`Server`.
- ``Repo``: a small, scriptable file server for those apps — bytes per path, ETag and
  Cache-Control, Range, a connection dropped half-way, 202 for deferred signatures, and a
  log of every request.
- ``gpg_keys`` (session): ``gpg_keys.make(uid)`` generates a real ed25519 key in a private
  GNUPGHOME; :class:`Key` has the fingerprint, the armored public key and ``sign(data)``.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TestCA:
    """A throw-away certificate authority."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Jetpack test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
        """A server certificate and key (PEM files) for ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        stem = hashlib.sha256(",".join(names).encode()).hexdigest()[:12]
        cert_file, key_file = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


class Server:
    """An aiohttp application served from its own thread on 127.0.0.1."""

    def __init__(self, app: web.Application, ssl_ctx: ssl.SSLContext | None) -> None:
        self.app = app
        self._ssl = ssl_ctx
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as err:  # reported to the test thread by start()
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> Server:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    @property
    def url(self) -> str:
        """``https://localhost:PORT`` (no trailing slash)."""
        return f"{self.scheme}://localhost:{self.port}"


@pytest.fixture
def serve(test_ca: TestCA) -> Iterator[Callable[..., Server]]:
    """Factory: ``serve(app, tls=True, names=("localhost", "127.0.0.1"))`` → a started Server."""
    servers: list[Server] = []

    def start(
        app: web.Application,
        *,
        tls: bool = True,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> Server:
        ctx = None
        if tls:
            cert, key = test_ca.issue(names)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
        server = Server(app, ctx).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class Served:
    """How :class:`Repo` serves one path."""

    body: bytes = b""
    content_type: str = "application/octet-stream"
    redirect: str | None = None  # answer 302 to this location
    etag: str | None = None
    cache_control: str | None = None
    ranges: bool = True
    drop_after: int | None = None  # close the connection after this many bytes, once
    deferred: int = 0  # answer 202 this many times first (a signature not ready yet)
    status: int = 200


@dataclass
class Repo:
    """A scriptable file server: ``repo.files[path] = Served(...)``; ``repo.log`` of requests."""

    files: dict[str, Served] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def hits(self, path: str, method: str = "GET") -> int:
        return sum(1 for m, p, _ in self.log if p == path and m == method)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs if request.query_string else request.path
        self.log.append((request.method, path, dict(request.headers)))
        served = self.files.get(path) or self.files.get(request.path)
        if served is None:
            raise web.HTTPNotFound()
        if served.redirect is not None:
            raise web.HTTPFound(served.redirect)
        if served.deferred > 0:
            served.deferred -= 1
            return web.Response(status=202, text="not ready yet")
        headers = {"Content-Type": served.content_type}
        if served.cache_control:
            headers["Cache-Control"] = served.cache_control
        if served.etag:
            headers["ETag"] = served.etag
            if request.headers.get("If-None-Match") == served.etag:
                return web.Response(status=304, headers=headers)
        body, status = served.body, served.status
        if served.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = request.headers.get("Range", "")
            if wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[6:-1])
                if_range = request.headers.get("If-Range")
                if if_range is None or if_range == served.etag:
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    body, status = body[start:], 206
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if served.drop_after is not None and request.method == "GET":
            cut, served.drop_after = served.drop_after, None
            await response.write(body[:cut])
            assert request.transport is not None
            request.transport.close()
            return response
        if request.method == "GET":
            for start in range(0, len(body), 1 << 16):
                await response.write(body[start : start + (1 << 16)])
        await response.write_eof()
        return response


@dataclass(frozen=True)
class Key:
    """A real OpenPGP key in the test keyring."""

    fingerprint: str
    public: bytes  # ASCII-armored public key
    homedir: Path

    def sign(self, data: bytes) -> bytes:
        """A detached, ASCII-armored signature of ``data`` made with this key."""
        import gnupg

        gpg = gnupg.GPG(gnupghome=str(self.homedir))
        signed = gpg.sign(data, keyid=self.fingerprint, detach=True, binary=False)
        assert signed.status == "signature created", signed.stderr
        return str(signed).encode()


class KeyMaker:
    def __init__(self, homedir: Path) -> None:
        self.homedir = homedir
        self._cache: dict[str, Key] = {}

    def make(self, uid: str = "Jetpack Test <test@example.com>") -> Key:
        """A new ed25519 signing key for ``uid`` (cached per uid within the session)."""
        if uid in self._cache:
            return self._cache[uid]
        import gnupg

        gpg = gnupg.GPG(gnupghome=str(self.homedir))
        name, _, rest = uid.partition(" <")
        spec = gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            key_usage="sign",
            name_real=name,
            name_email=rest.rstrip(">") or "test@example.com",
            no_protection=True,
            expire_date=0,
        )
        result = gpg.gen_key(spec)
        assert result.fingerprint, result.stderr
        fingerprint = str(result.fingerprint).lower()
        key = Key(fingerprint, gpg.export_keys(fingerprint).encode(), self.homedir)
        self._cache[uid] = key
        return key


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyMaker]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    yield KeyMaker(home)
    # Making and using secret keys started a gpg-agent for this home: stop it.
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
