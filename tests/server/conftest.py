"""Fixtures for the image server: a repository, keys it trusts, `jetpack serve` processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jetpack.cli.main import cli
from jetpack.cli.serve import push, serve
from jetpack.config import ServeUser
from jetpack.fetch.server import RootRepository, ServerDeps
from jetpack.fetch.trust import TrustStore
from tests.fixtures import image_manifest
from tests.net import Key, KeyMaker, TestCA

TOKEN = "ci-token-0123456789abcdef"
OTHER_TOKEN = "other-token-0123456789abcdef"
USERS = (
    ServeUser(name="ci", prefixes=("localhost/app",), token=TOKEN),
    ServeUser(name="other", prefixes=("localhost/other",), token=OTHER_TOKEN),
)

# Until cli/main.py registers them, the commands are added here (add_command is idempotent).
LAUNCH = (
    "from jetpack.cli.main import cli, main; from jetpack.cli.serve import serve, push; "
    "cli.add_command(serve); cli.add_command(push); main()"
)


@pytest.fixture(autouse=True)
def _register_commands() -> None:
    cli.add_command(serve)
    cli.add_command(push)


@pytest.fixture
def publisher(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Publisher <pub@example.com>")


@pytest.fixture
def stranger(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Stranger <stranger@example.com>")


@pytest.fixture
def app_aci(make_aci: Callable[..., Path]) -> Callable[..., Path]:
    """Factory: an ACI named ``name`` at ``version`` for this host's os/arch."""

    def make(name: str = "localhost/app", version: str = "1.0.0", **fields: Any) -> Path:
        return make_aci(image_manifest(name, version=version, **fields), {"bin/app": name.encode()})

    return make


@pytest.fixture
def root(tmp_path: Path, publisher: Key) -> Path:
    """A repository whose upload trust store trusts ``publisher`` for localhost/app."""
    path = tmp_path / "repo"
    RootRepository(path)
    TrustStore(path / "trustedkeys", path / ".no-vendor").add(publisher.public, "localhost/app")
    return path


@pytest.fixture
def deps(root: Path) -> Callable[..., ServerDeps]:
    def make(**overrides: Any) -> ServerDeps:
        settings: dict[str, Any] = {
            "repository": RootRepository(root),
            "public_url": "https://127.0.0.1:1",
            "users": USERS,
            "trust": TrustStore(root / "trustedkeys", root / ".no-vendor"),
        }
        settings.update(overrides)
        return ServerDeps(**settings)

    return make


@dataclass
class ServeProcess:
    """A `jetpack serve` subprocess; stdout (the access log) goes to a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    stopped: bool = field(default=False)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text() if self.log.exists() else ""
            match = re.search(r"jetpack: serving .* at (\S+)", text)
            if match:
                self.url = match.group(1)
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"jetpack serve exited {self.proc.returncode}: {text}")
            time.sleep(0.05)
        raise AssertionError("jetpack serve did not start")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        self.stopped = True


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(config: Path, data: Path, *argv: str) -> ServeProcess:
        log = tmp_path / f"serve{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "--config", str(config), "--dir", str(data),
                 "serve", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = ServeProcess(proc, log)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(server.proc.pid, signal.SIGKILL)
                server.proc.wait()


def server_config(
    tmp_path: Path, test_ca: TestCA, root: Path, *, extra: str = "", port: int = 0
) -> Path:
    cert, key = test_ca.issue(("localhost", "127.0.0.1"))
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[storage]\nbackend = "copy"\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nroot = "{root}"\n'
        f'tls-cert = "{cert}"\ntls-key = "{key}"\n{extra}'
        f'[[serve.users]]\nname = "ci"\ntoken = "{TOKEN}"\nprefixes = ["localhost/app"]\n'
    )
    return config


@pytest.fixture
def server_key(gpg_keys: KeyMaker, tmp_path: Path) -> tuple[Key, Path]:
    """The server's signing key: the Key and its armored secret key file."""
    import gnupg

    key = gpg_keys.make("Jetpack Server <server@example.com>")
    gpg = gnupg.GPG(gnupghome=str(key.homedir))
    secret = gpg.export_keys(key.fingerprint, secret=True, expect_passphrase=False)
    path = tmp_path / "server-signing.asc"
    path.write_text(secret)
    return key, path
