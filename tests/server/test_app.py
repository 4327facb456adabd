"""The server application in-process (aiohttp's test client): reads, pushes, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from jetpack.aci import image_id as _image_id
from jetpack.discovery import host_labels, parse_app_string
from jetpack.discovery.meta import endpoints_and_keys, parse_meta
from jetpack.fetch.server import ServerDeps, make_app, version_key
from tests.fixtures import image_manifest
from tests.net import Key
from tests.server.conftest import OTHER_TOKEN, TOKEN

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOST = host_labels()


def image_id(aci: Path | io.BytesIO) -> str:
    if isinstance(aci, Path):
        with open(aci, "rb") as f:
            return _image_id(f)
    return _image_id(aci)


PLATFORM = f"{HOST['os']}-{HOST['arch']}"


@pytest.fixture
def client(aiohttp_client: Any, deps: Callable[..., ServerDeps]) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        return await aiohttp_client(make_app(deps(**overrides)))  # type: ignore[no-any-return]

    return make


async def do_push(
    client: Client,
    aci: Path,
    *,
    signature: bytes | None = None,
    token: str | None = TOKEN,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    if signature is not None:
        form.add_field("signature", signature, filename="image.aci.asc")
    form.add_field("image", aci.read_bytes(), filename="image.aci")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.post(
        "/_jetpack/v1/images", data=form, params=params or {}, headers=headers
    ) as response:
        return response.status, await response.json()


def nothing_published(root: Path) -> None:
    index = root / "index.json"
    assert not index.exists() or json.loads(index.read_text())["images"] == []
    assert [p for p in (root / "images").rglob("*") if p.is_file()] == []
    assert list((root / "tmp").iterdir()) == []


async def _published(client: Client, app_aci: Callable[..., Path], key: Key, **kw: Any) -> Path:
    aci = app_aci(**kw)
    status, body = await do_push(client, aci, signature=key.sign(aci.read_bytes()))
    assert status == 201, body
    return aci


# -- reading -----------------------------------------------------------------------------


async def test_discovery_page_is_read_by_our_client(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key
) -> None:
    c = await client()
    aci = await _published(c, app_aci, publisher)
    for path in ("/app?ac-discovery=1", "/?ac-discovery=1"):
        response = await c.get(path)
        assert response.status == 200
        tags = parse_meta(await response.read())
        app = parse_app_string("localhost/app:1.0.0").with_defaults(HOST)
        found = endpoints_and_keys(tags, app)
        base = "https://127.0.0.1:1"
        assert found.endpoints[0].aci == f"{base}/images/localhost/app/1.0.0/{PLATFORM}.aci"
        assert found.keys == [f"{base}/keys/{publisher.fingerprint}.asc"]
    # the endpoint and the key are served where the page says
    got = await c.get(f"/images/localhost/app/1.0.0/{PLATFORM}.aci")
    assert await got.read() == aci.read_bytes()
    key = await c.get(f"/keys/{publisher.fingerprint}.asc")
    assert b"BEGIN PGP PUBLIC KEY BLOCK" in await key.read()
    # a prefix nobody is under, and a page without the query: 404
    assert (await c.get("/nothing?ac-discovery=1")).status == 404
    assert (await c.get("/app")).status == 404


async def test_latest_is_the_highest_semver(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key
) -> None:
    c = await client()
    ids = {}
    for version in ("1.9.0", "1.10.0", "1.10.0-rc.1", "1.2"):
        ids[version] = image_id(await _published(c, app_aci, publisher, version=version))
    response = await c.get(f"/images/localhost/app/latest/{PLATFORM}.aci")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache"
    listing = await (await c.get("/_jetpack/v1/images")).json()
    latest = [i for i in listing["images"] if i["latest"]]
    assert [i["version"] for i in latest] == ["1.10.0"]
    assert latest[0]["id"] == ids["1.10.0"]
    versions = ["1.9.0", "1.10.0", "1.10.0-rc.1", "1.2", "v2", "1.0.0-alpha"]
    assert sorted(versions, key=version_key) == [
        "1.0.0-alpha", "1.2", "1.9.0", "1.10.0-rc.1", "1.10.0", "v2"
    ]  # fmt: skip


async def test_etag_304_head_and_ranges(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key
) -> None:
    c = await client()
    aci = await _published(c, app_aci, publisher)
    data = aci.read_bytes()
    url = f"/images/localhost/app/1.0.0/{PLATFORM}.aci"
    first = await c.get(url)
    etag = first.headers["ETag"]
    assert etag.startswith('"sha256-') and "Last-Modified" in first.headers
    assert "immutable" in first.headers["Cache-Control"]
    assert first.headers["Accept-Ranges"] == "bytes"
    assert (await c.get(url, headers={"If-None-Match": etag})).status == 304
    assert (await c.get(url, headers={"If-None-Match": f'"x", W/{etag}'})).status == 304
    assert (await c.get(url, headers={"If-None-Match": '"other"'})).status == 200
    head = await c.head(url)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    assert await head.read() == b""
    part = await c.get(url, headers={"Range": "bytes=10-19"})
    assert part.status == 206 and await part.read() == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = await c.get(url, headers={"Range": "bytes=-5"})
    assert await tail.read() == data[-5:]
    rest = await c.get(url, headers={"Range": "bytes=100-", "If-Range": etag})
    assert rest.status == 206 and await rest.read() == data[100:]
    stale = await c.get(url, headers={"Range": "bytes=100-", "If-Range": '"old"'})
    assert stale.status == 200 and await stale.read() == data
    assert (await c.get(url, headers={"Range": f"bytes={len(data)}-"})).status == 416
    multi = await c.get(url, headers={"Range": "bytes=0-1,4-5"})
    assert multi.status == 200
    sig = await c.get(url + ".asc")
    assert sig.status == 200 and b"BEGIN PGP SIGNATURE" in await sig.read()
    assert (await c.get(url + ".asc", headers={"If-None-Match": sig.headers["ETag"]})).status == 304


async def test_index_json_and_health(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key
) -> None:
    c = await client()
    aci = await _published(c, app_aci, publisher)
    page = await (await c.get("/")).text()
    assert "localhost/app" in page and "1.0.0" in page and "Publisher" in page
    listing = await (await c.get("/_jetpack/v1/images")).json()
    (item,) = listing["images"]
    assert item["id"] == image_id(aci) and item["signer"] == publisher.fingerprint
    assert item["size"] == aci.stat().st_size
    health = await (await c.get("/_jetpack/v1/health")).json()
    assert health["status"] == "ok" and health["images"] == 1


async def test_names_are_escaped_in_the_index(
    client: MakeClient, deps: Callable[..., ServerDeps]
) -> None:
    c = await client(title="<script>alert(1)</script>")
    page = await (await c.get("/")).text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


async def _raw(client: Client, target: str) -> tuple[int, bytes]:
    """A request with the target exactly as given (the client library would normalise it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/images/../../../../etc/passwd",
    "/images/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/images/localhost/app/1.0.0/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/images/localhost/app/..%2f..%2f..%2findex.json/" + PLATFORM + ".aci",
    "/images//etc/passwd/1.0.0/" + PLATFORM + ".aci",
    "/images/localhost/app/1.0.0/" + PLATFORM + ".aci%00.asc",
    "/images/localhost/app/1.0.0/%2e%2e/%2e%2e/%2e%2e/index.json",
    "/keys/../index.json",
    "/keys/..%2f..%2findex.json",
    "/keys/%2e%2e%2findex.json",
    "//etc/passwd",
    "/../../../etc/passwd?ac-discovery=1",
    "/%2e%2e/%2e%2e/etc/passwd?ac-discovery=1",
    "/index.json",
    "/trustedkeys/prefix.d/localhost/app",
    "/tmp",
    "/.lock",
    "/_jetpack/v1/../../index.json",
    "/_jetpack/v1/images/..%2f..%2findex.json",
    "http://evil.example/etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_traversal_is_refused_on_every_route(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key, target: str
) -> None:
    c = await client()
    await _published(c, app_aci, publisher)
    status, body = await _raw(c, target)
    assert status in (400, 404, 405), (target, status, body[:200])
    assert b"root:" not in body and b'"images"' not in body and b"PGP" not in body


async def test_symlinks_out_of_the_root_are_not_followed(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key, root: Path, tmp_path: Path
) -> None:
    c = await client()
    await _published(c, app_aci, publisher)
    url = f"/images/localhost/app/1.0.0/{PLATFORM}.aci"
    published = root / url.lstrip("/")
    published.unlink()
    published.symlink_to("/etc/passwd")
    assert (await c.get(url)).status == 404
    # a directory of the path swapped for a symlink to a copy outside the root
    outside = tmp_path / "outside"
    (root / "images" / "localhost").rename(outside)
    (root / "images" / "localhost").symlink_to(outside)
    (outside / "app/1.0.0" / f"{PLATFORM}.aci").unlink()
    (outside / "app/1.0.0" / f"{PLATFORM}.aci").write_bytes(b"outside")
    assert (await c.get(url)).status == 404
    assert (await c.get(url + ".asc")).status == 404


# -- pushing -----------------------------------------------------------------------------


def _hostile(tmp_path: Path) -> Path:
    out = tmp_path / "escape.aci"
    manifest = json.dumps(image_manifest("localhost/app")).encode()
    with tarfile.open(out, "w") as tar:
        entry = tarfile.TarInfo("manifest")
        entry.size = len(manifest)
        tar.addfile(entry, io.BytesIO(manifest))
        rootfs = tarfile.TarInfo("rootfs")
        rootfs.type = tarfile.DIRTYPE
        tar.addfile(rootfs)
        evil = tarfile.TarInfo("rootfs/../../evil")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    return out


@pytest.mark.parametrize(
    "case",
    ["no-credential", "wrong-token", "wrong-prefix", "declared-wrong-prefix", "unsigned",
     "bad-signature", "untrusted-key", "contradicts", "escape", "no-version", "latest",
     "too-large", "not-multipart"],
)  # fmt: skip
async def test_refused_pushes_publish_nothing(
    client: MakeClient,
    app_aci: Callable[..., Path],
    make_aci: Callable[..., Path],
    publisher: Key,
    stranger: Key,
    root: Path,
    tmp_path: Path,
    case: str,
) -> None:
    c = await client(max_upload_size=64 << 10)
    aci = app_aci()
    good = publisher.sign(aci.read_bytes())
    kw: dict[str, Any] = {"signature": good}
    expect: tuple[int, str]
    if case == "no-credential":
        kw["token"], expect = None, (401, "unauthorized")
    elif case == "wrong-token":
        kw["token"], expect = "nope" * 8, (401, "unauthorized")
    elif case == "wrong-prefix":
        kw["token"], expect = OTHER_TOKEN, (403, "forbidden")
    elif case == "declared-wrong-prefix":
        kw["params"], expect = {"name": "localhost/application"}, (403, "forbidden")
    elif case == "unsigned":
        kw["signature"], expect = None, (422, "unsigned")
    elif case == "bad-signature":
        aci = app_aci(annotations=[{"name": "authors", "value": "mallory"}])
        expect = (422, "untrusted-signature")
    elif case == "untrusted-key":
        kw["signature"], expect = stranger.sign(aci.read_bytes()), (422, "untrusted-signature")
    elif case == "contradicts":
        other_arch = "i386" if HOST["arch"] != "i386" else "amd64"
        kw["params"], expect = {"arch": other_arch}, (422, "contradicts-manifest")
    elif case == "escape":
        aci = _hostile(tmp_path)
        kw["signature"], expect = publisher.sign(aci.read_bytes()), (422, "invalid-image")
    elif case == "no-version":
        manifest = image_manifest("localhost/app")
        manifest["labels"] = [lbl for lbl in manifest["labels"] if lbl["name"] != "version"]
        aci = make_aci(manifest)
        kw["signature"], expect = publisher.sign(aci.read_bytes()), (422, "missing-label")
    elif case == "latest":
        aci = app_aci(version="latest")
        kw["signature"], expect = publisher.sign(aci.read_bytes()), (422, "invalid-version")
    elif case == "too-large":
        aci = make_aci(image_manifest("localhost/app"), {"big": os.urandom(128 << 10)})
        kw["signature"], expect = publisher.sign(aci.read_bytes()), (413, "too-large")
    else:
        response = await c.post(
            "/_jetpack/v1/images",
            data=aci.read_bytes(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 400
        assert (await response.json())["error"] == "bad-request"
        nothing_published(root)
        return
    status, body = await do_push(c, aci, **kw)
    assert (status, body["error"]) == expect, body
    assert body["reason"]
    nothing_published(root)


async def test_server_signs_unsigned_uploads(
    client: MakeClient, app_aci: Callable[..., Path], server_key: tuple[Key, Path]
) -> None:
    from jetpack.fetch.server.signing import Signer

    signer = Signer(server_key[1])
    assert signer.fingerprint == server_key[0].fingerprint
    c = await client(signer=signer)
    status, body = await do_push(c, app_aci())
    assert status == 201 and body["signed_by_server"] and body["signer"] == signer.fingerprint
    key = await c.get(f"/keys/{signer.fingerprint}.asc")
    assert key.status == 200
    page = await (await c.get("/app?ac-discovery=1")).read()
    assert f"/keys/{signer.fingerprint}.asc".encode() in page


async def test_concurrent_pushes_of_one_version(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key, root: Path
) -> None:
    c = await client()
    acis = [app_aci(annotations=[{"name": "authors", "value": f"n{i}"}]) for i in range(4)]
    results = await asyncio.gather(
        *(do_push(c, a, signature=publisher.sign(a.read_bytes())) for a in acis)
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [201, 409, 409, 409], results
    winner = next(b for s, b in results if s == 201)
    index = json.loads((root / "index.json").read_text())["images"]
    assert [i["id"] for i in index] == [winner["id"]]
    assert list((root / "tmp").iterdir()) == []
    served = await c.get(f"/images/localhost/app/1.0.0/{PLATFORM}.aci")
    assert image_id(io.BytesIO(await served.read())) == winner["id"]


async def test_overwrite_when_allowed(
    client: MakeClient, app_aci: Callable[..., Path], publisher: Key, root: Path
) -> None:
    c = await client(allow_overwrite=True)
    await _published(c, app_aci, publisher)
    second = await _published(
        c, app_aci, publisher, annotations=[{"name": "authors", "value": "b"}]
    )
    index = json.loads((root / "index.json").read_text())["images"]
    assert [i["id"] for i in index] == [image_id(second)]


async def test_read_auth(client: MakeClient, app_aci: Callable[..., Path], publisher: Key) -> None:
    c = await client(read_auth=True)
    assert (await c.get("/")).status == 401
    assert (await c.get("/_jetpack/v1/health")).status == 200
    ok = await c.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
