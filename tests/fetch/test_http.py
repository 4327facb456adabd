"""The HTTP client's policy, against real HTTPS servers on 127.0.0.1 with a test CA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.config import Credential
from jetpack.errors import FetchError
from jetpack.fetch.http import HttpClient, Transport
from tests.net import Repo, Served, Server, TestCA


def transport(ca: TestCA, **kw: object) -> Transport:
    return Transport(ca_file=ca.ca_file, **kw)  # type: ignore[arg-type]


async def test_https_with_the_test_ca(serve: Callable[..., Server], test_ca: TestCA) -> None:
    repo = Repo({"/hello": Served(b"hi")})
    server = serve(repo.app())
    async with HttpClient(transport(test_ca)) as http:
        got = await http.fetch(f"{server.url}/hello")
    assert (got.status, got.body) == (200, b"hi")
    assert repo.log[0][2]["User-Agent"].startswith("jetpack/")


async def test_untrusted_certificate_is_refused_unless_insecure(
    serve: Callable[..., Server], test_ca: TestCA
) -> None:
    server = serve(Repo({"/x": Served(b"x")}).app())
    async with HttpClient(Transport()) as http:
        with pytest.raises(FetchError, match=r"TLS verification failed.*fetch.ca-file"):
            await http.fetch(f"{server.url}/x")
    async with HttpClient(Transport(verify_tls=False)) as http:
        assert (await http.fetch(f"{server.url}/x")).body == b"x"


async def test_wrong_host_name_is_refused(serve: Callable[..., Server], test_ca: TestCA) -> None:
    server = serve(Repo({"/x": Served(b"x")}).app(), names=("example.com",))
    async with HttpClient(transport(test_ca)) as http:
        with pytest.raises(FetchError, match="TLS verification failed"):
            await http.fetch(f"{server.url}/x")


async def test_plain_http_needs_permission(serve: Callable[..., Server], test_ca: TestCA) -> None:
    server = serve(Repo({"/x": Served(b"x")}).app(), tls=False)
    async with HttpClient(transport(test_ca)) as http:
        with pytest.raises(
            FetchError, match=r"plain http is not allowed \(pass --insecure-options=http"
        ):
            await http.fetch(f"{server.url}/x")
    async with HttpClient(transport(test_ca, allow_http=True)) as http:
        assert (await http.fetch(f"{server.url}/x")).body == b"x"


async def test_https_to_a_plain_http_server_says_so(
    serve: Callable[..., Server], test_ca: TestCA
) -> None:
    plain = serve(Repo({"/x": Served(b"x")}).app(), tls=False)
    async with HttpClient(transport(test_ca)) as http:
        with pytest.raises(FetchError, match=r"does not speak TLS \(it may serve plain http"):
            await http.fetch(f"https://localhost:{plain.port}/x")


async def test_redirect_to_http_is_refused(serve: Callable[..., Server], test_ca: TestCA) -> None:
    plain = serve(Repo({"/x": Served(b"x")}).app(), tls=False)
    secure = serve(Repo({"/go": Served(redirect=f"{plain.url}/x")}).app())
    async with HttpClient(transport(test_ca)) as http:
        with pytest.raises(FetchError, match="redirects to plain http"):
            await http.fetch(f"{secure.url}/go")


async def test_credentials_only_over_https_to_their_host(
    serve: Callable[..., Server], test_ca: TestCA
) -> None:
    other = Repo({"/x": Served(b"elsewhere")})
    other_server = serve(other.app(), names=("127.0.0.1",))
    home = Repo(
        {
            "/mine": Served(b"mine"),
            "/away": Served(redirect=f"https://127.0.0.1:{other_server.port}/x"),
        }
    )
    server = serve(home.app())
    cred = Credential(host="localhost", type="bearer", token="s3cret")
    async with HttpClient(transport(test_ca, credentials=(cred,))) as http:
        assert (await http.fetch(f"{server.url}/mine")).body == b"mine"
        assert (await http.fetch(f"{server.url}/away")).body == b"elsewhere"
    assert [entry[2]["Authorization"] for entry in home.log] == ["Bearer s3cret"] * 2
    assert "Authorization" not in other.log[0][2]


async def test_too_many_redirects(serve: Callable[..., Server], test_ca: TestCA) -> None:
    server = serve(Repo({"/loop": Served(redirect="/loop")}).app())
    async with HttpClient(transport(test_ca, max_redirects=3)) as http:
        with pytest.raises(FetchError, match="more than 3 redirects"):
            await http.fetch(f"{server.url}/loop")


async def test_unreachable_server_names_the_url(test_ca: TestCA, tmp_path: Path) -> None:
    async with HttpClient(transport(test_ca, connect_timeout=2)) as http:
        with pytest.raises(FetchError, match=r"cannot fetch https://127.0.0.1:1/x: cannot connect"):
            await http.fetch("https://127.0.0.1:1/x")


def test_real_gpg_keys_sign(gpg_keys: object) -> None:
    key = gpg_keys.make("Alice <alice@example.com>")  # type: ignore[attr-defined]
    assert len(key.fingerprint) == 40
    assert key.public.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert key.sign(b"data").startswith(b"-----BEGIN PGP SIGNATURE-----")
