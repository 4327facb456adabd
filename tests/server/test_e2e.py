"""`jetpack serve` as a real process over HTTPS: push → trust by discovery → fetch; SIGTERM."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.aci import image_id
from jetpack.cli.main import run
from jetpack.fetch.server import RootRepository
from jetpack.fetch.trust import TrustStore
from tests.fixtures import image_manifest
from tests.net import Key, TestCA
from tests.server.conftest import TOKEN, ServeProcess, server_config

Capsys = pytest.CaptureFixture[str]


def _id(path: Path) -> str:
    with open(path, "rb") as f:
        return image_id(f)


def _client(tmp_path: Path, test_ca: TestCA, server: ServeProcess) -> Callable[..., int]:
    config = tmp_path / "client.toml"
    config.write_text(
        f'[storage]\nbackend = "copy"\n'
        f'[fetch]\nca-file = "{test_ca.ca_file}"\ndiscovery-port = {server.port}\n'
        f'[trust]\nlocal = "{tmp_path / "trust"}"\nvendor = "{tmp_path / "vendor"}"\n'
        f'[push]\nserver = "{server.url}"\ntoken = "{TOKEN}"\n'
    )

    def jp(*argv: str) -> int:
        return run(["--dir", str(tmp_path / "client"), "--config", str(config), *argv])

    return jp


def _sign(aci: Path, key: Key) -> Path:
    asc = Path(str(aci) + ".asc")
    asc.write_bytes(key.sign(aci.read_bytes()))
    return asc


def test_push_trust_fetch_over_https(
    tmp_path: Path,
    test_ca: TestCA,
    root: Path,
    publisher: Key,
    app_aci: Callable[..., Path],
    start_server: Callable[..., ServeProcess],
    capsys: Capsys,
) -> None:
    server = start_server(server_config(tmp_path, test_ca, root), tmp_path / "srv")
    assert server.url.startswith("https://127.0.0.1:")
    jp = _client(tmp_path, test_ca, server)
    pushed = {}
    for version in ("1.0.0", "1.10.0", "1.9.0"):
        aci = app_aci(version=version)
        _sign(aci, publisher)
        assert jp("push", str(aci)) == 0, capsys.readouterr().err
        out = capsys.readouterr().out.split()
        assert out[0] == _id(aci)
        assert out[1].startswith(f"{server.url}/images/localhost/app/{version}/")
        pushed[version] = out[0]
    # a second push of the same version: refused, one line
    assert jp("push", str(aci)) == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: cannot push localhost/app: ") and "HTTP 409 exists" in err
    assert err.count("\n") == 1
    assert jp("trust", "--prefix", "localhost/app", "--fingerprint", publisher.fingerprint) == 0
    capsys.readouterr()
    assert jp("fetch", "-q", "localhost/app:1.0.0") == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == pushed["1.0.0"]
    # update: the store has 1.0.0 already, which "new" would take for "no version asked"
    assert jp("fetch", "-q", "--pull-policy=update", "localhost/app") == 0
    assert capsys.readouterr().out.strip() == pushed["1.10.0"]
    # an image from the store, by name: the store kept no signature, the server has no key
    assert jp("push", "localhost/app:1.0.0") == 1
    err = capsys.readouterr().err
    assert "signs nothing (no signing key) (HTTP 422 unsigned)" in err
    assert "--signature" in err
    log = server.log.read_text()
    assert '127.0.0.1 ci "POST /_jetpack/v1/images?name=localhost/app&version=1.0.0' in log
    assert log.count('HTTP/1.1" 201') == 3 and log.count('HTTP/1.1" 409') == 1
    assert log.count('HTTP/1.1" 422') == 1
    assert 'GET /app?ac-discovery=1 HTTP/1.1" 200' in log


def test_server_key_signs_and_is_discovered(
    tmp_path: Path,
    test_ca: TestCA,
    root: Path,
    server_key: tuple[Key, Path],
    app_aci: Callable[..., Path],
    start_server: Callable[..., ServeProcess],
    capsys: Capsys,
) -> None:
    key, key_file = server_key
    config = server_config(tmp_path, test_ca, root, extra=f'signing-key = "{key_file}"\n')
    server = start_server(config, tmp_path / "srv")
    jp = _client(tmp_path, test_ca, server)
    aci = app_aci()
    assert jp("push", str(aci)) == 0
    assert "(signed by the server)" in capsys.readouterr().err
    assert jp("trust", "--prefix", "localhost/app", "--skip-fingerprint-review") == 0
    assert key.fingerprint in capsys.readouterr().err
    assert jp("fetch", "-q", "localhost/app:1.0.0") == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == _id(aci)


def test_from_store_shares_the_local_store(
    tmp_path: Path,
    test_ca: TestCA,
    root: Path,
    server_key: tuple[Key, Path],
    app_aci: Callable[..., Path],
    start_server: Callable[..., ServeProcess],
    capsys: Capsys,
) -> None:
    key, key_file = server_key
    # the serving host's store holds the image (fetched from a file)
    host = tmp_path / "host"
    aci = app_aci()
    assert run(["--dir", str(host), "fetch", "-q", "--insecure-options=image", str(aci)]) == 0
    capsys.readouterr()
    config = server_config(tmp_path, test_ca, root, extra=f'signing-key = "{key_file}"\n')
    server = start_server(config, host, "--from-store")
    jp = _client(tmp_path, test_ca, server)
    assert jp("trust", "--prefix", "localhost/app", "--fingerprint", key.fingerprint) == 0
    assert jp("fetch", "-q", "localhost/app:1.0.0") == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().endswith(_id(aci))
    assert jp("push", "--server", server.url, str(aci)) == 1
    assert "read-only" in capsys.readouterr().err


def test_sigterm_finishes_downloads_in_flight(
    tmp_path: Path,
    test_ca: TestCA,
    root: Path,
    publisher: Key,
    make_aci: Callable[..., Path],
    start_server: Callable[..., ServeProcess],
) -> None:
    aci = make_aci(image_manifest("localhost/app"), {"big": os.urandom(12 << 20)})
    _sign(aci, publisher)
    server = start_server(server_config(tmp_path, test_ca, root), tmp_path / "srv")
    jp = _client(tmp_path, test_ca, server)
    assert jp("push", str(aci)) == 0
    path = RootRepository(root).read_entries()[0].url_path()
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_file))
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    conn = ctx.wrap_socket(raw, server_hostname="localhost")
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    got = conn.recv(1 << 16)
    assert got.startswith(b"HTTP/1.1 200")
    server.terminate()
    time.sleep(1.0)  # the server is draining, our download is stalled on purpose
    assert server.proc.poll() is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    while chunk := conn.recv(1 << 20):
        got += chunk
    conn.close()
    _, _, body = got.partition(b"\r\n\r\n")
    assert len(body) == aci.stat().st_size, (len(body), server.log.read_text()[-1500:])
    assert body == aci.read_bytes()
    assert server.proc.wait(20) == 0


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(f"chromium is not installed and apt-get failed: {proc.stderr.strip()[-300:]}")
    return found


def test_index_page_in_headless_chromium(
    tmp_path: Path,
    test_ca: TestCA,
    root: Path,
    publisher: Key,
    app_aci: Callable[..., Path],
    start_server: Callable[..., ServeProcess],
    capsys: Capsys,
) -> None:
    chromium = _chromium()
    TrustStore(root / "trustedkeys", root / ".no-vendor").add(publisher.public, "localhost/other")
    config = server_config(tmp_path, test_ca, root)
    config.write_text(
        config.read_text().replace('prefixes = ["localhost/app"]', 'prefixes = ["*"]')
    )
    server = start_server(config, tmp_path / "srv")
    jp = _client(tmp_path, test_ca, server)
    for name, version in (("localhost/app", "1.0.0"), ("localhost/app", "2.0.0"),
                          ("localhost/other", "0.1.0")):  # fmt: skip
        aci = app_aci(name, version)
        _sign(aci, publisher)
        assert jp("push", str(aci)) == 0, capsys.readouterr().err
    profile = tempfile.mkdtemp(prefix="jetpack-chromium-")
    try:
        shown = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--ignore-certificate-errors", f"--user-data-dir={profile}",
             "--dump-dom", server.url + "/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = shown.stdout
    assert "localhost/app" in dom and "localhost/other" in dom, shown.stderr[-2000:]
    for text in ("2.0.0", "1.0.0", "0.1.0", "latest", "Publisher", "/images/localhost/app/2.0.0/"):
        assert text in dom
    assert dom.count("<tr>") >= 3
