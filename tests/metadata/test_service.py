"""The HTTP contract of the metadata service, through a real aiohttp server on TCP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from jetpack.metadata.paths import MetadataPaths
from jetpack.metadata.registry import Registration
from jetpack.metadata.service import Service
from tests.metadata import UUID_A, UUID_B, PodSpec, annotations_json, pod_a, pod_b

Client = TestClient[Any, Any]
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
FORM = "application/x-www-form-urlencoded"
BASE = "acMetadata/v1"


@pytest.fixture
def pods() -> dict[str, PodSpec]:
    return {UUID_A: pod_a(), UUID_B: pod_b()}


@pytest.fixture
def service(tmp_path: Path, pods: dict[str, PodSpec]) -> Service:
    paths = MetadataPaths.for_data_dir(tmp_path / "data")
    paths.ensure()
    service = Service(paths, "127.0.0.1", 18112)
    for pod in pods.values():
        service.add(pod.registration())
    return service


@pytest.fixture
async def client(aiohttp_raw_server: Any, aiohttp_client: Any, service: Service) -> Client:
    server = await aiohttp_raw_server(service.handle)
    return await aiohttp_client(server)  # type: ignore[no-any-return]


def reg(service: Service, uuid: str) -> Registration:
    return service.by_uuid[uuid]


def url(service: Service, uuid: str, path: str) -> str:
    return f"/{reg(service, uuid).token}/{BASE}/{path}"


def hmac_b64(key: bytes, content: bytes) -> bytes:
    return base64.b64encode(hmac.new(key, content, hashlib.sha512).digest())


async def post_form(
    client: Client, path: str, body: bytes | io.BytesIO, content_type: str | None = FORM
) -> ClientResponse:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return await client.post(path, data=body, headers=headers, skip_auto_headers=["Content-Type"])


def multipart(
    fields: list[tuple[str, bytes, str]], boundary: str = "b0undary"
) -> tuple[bytes, str]:
    """A multipart/form-data body: (name, value, extra part headers) each."""
    body = b""
    for name, value, extra in fields:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n{extra}\r\n'
            ).encode()
            + value
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- GET endpoints -----------------------------------------------------------------------------

Expect = Callable[[PodSpec, str], tuple[str, Callable[[bytes], None]]]


def _exactly(expected: bytes) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        assert body == expected

    return check


def _json_list(expected: list[dict[str, str]]) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        assert json.loads(body) == expected  # the order of the list is part of the answer
        assert not body.endswith(b"\n")

    return check


POD_ENDPOINTS: dict[str, tuple[str, Callable[[PodSpec], Callable[[bytes], None]]]] = {
    "pod/annotations": (JSON, lambda pod: _json_list(annotations_json(pod.annotations))),
    "pod/manifest": (JSON, lambda pod: _exactly(pod.manifest)),
    "pod/uuid": (TEXT, lambda pod: _exactly(pod.uuid.encode())),
}
APP_ENDPOINTS: dict[str, tuple[str, Callable[[PodSpec, str], Callable[[bytes], None]]]] = {
    "annotations": (JSON, lambda pod, app: _json_list(annotations_json(pod.app(app).merged))),
    "image/manifest": (JSON, lambda pod, app: _exactly(pod.app(app).image_manifest)),
    "image/id": (TEXT, lambda pod, app: _exactly(pod.app(app).image_id.encode())),
}


@pytest.mark.parametrize("endpoint", list(POD_ENDPOINTS))
async def test_pod_endpoints(
    client: Client, service: Service, pods: dict[str, PodSpec], endpoint: str
) -> None:
    content_type, expect = POD_ENDPOINTS[endpoint]
    for uuid, pod in pods.items():
        resp = await client.get(url(service, uuid, endpoint))
        body = await resp.read()
        assert resp.status == 200, body
        assert resp.headers["Content-Type"] == content_type
        assert resp.headers["Content-Length"] == str(len(body))
        expect(pod)(body)


@pytest.mark.parametrize("endpoint", list(APP_ENDPOINTS))
async def test_app_endpoints(
    client: Client, service: Service, pods: dict[str, PodSpec], endpoint: str
) -> None:
    content_type, expect = APP_ENDPOINTS[endpoint]
    for uuid, pod in pods.items():
        for app in pod.apps:
            resp = await client.get(url(service, uuid, f"apps/{app.name}/{endpoint}"))
            body = await resp.read()
            assert resp.status == 200, body
            assert resp.headers["Content-Type"] == content_type
            expect(pod, app.name)(body)


async def test_image_manifest_is_served_byte_for_byte(client: Client, service: Service) -> None:
    resp = await client.get(url(service, UUID_A, "apps/web/image/manifest"))
    body = await resp.read()
    assert body == pod_a().app("web").image_manifest
    assert body.startswith(b'{  "name" : ') and body.endswith(b"}\n")


async def test_app_annotations_merge_image_and_pod(client: Client, service: Service) -> None:
    resp = await client.get(url(service, UUID_A, "apps/web/annotations"))
    assert json.loads(await resp.read()) == [
        {"name": "authors", "value": "web team"},
        {"name": "created", "value": "2024-05-01"},  # the pod manifest's, in the image's place
        {"name": "homepage", "value": "x"},
        {"name": "extra", "value": "web-pod"},
    ]


@pytest.mark.parametrize("endpoint", ["pod/uuid", "pod/manifest", "apps/db/image/id"])
async def test_head_of_a_get_endpoint(client: Client, service: Service, endpoint: str) -> None:
    got = await client.get(url(service, UUID_A, endpoint))
    full = await got.read()
    resp = await client.head(url(service, UUID_A, endpoint))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == got.headers["Content-Type"]
    assert resp.headers["Content-Length"] == str(len(full))
    assert await resp.read() == b""


# -- refusals ---------------------------------------------------------------------------------

ALL_PATHS = [
    *POD_ENDPOINTS,
    *(f"apps/web/{e}" for e in APP_ENDPOINTS),
    *(f"apps/api/{e}" for e in APP_ENDPOINTS),
    "pod/hmac/sign",
    "pod/hmac/verify",
    "nothing",
]


def _secrets(service: Service) -> list[bytes]:
    words = [UUID_A, UUID_B, "web", "db", "api", "worker"]
    words += [r.token for r in service.by_uuid.values()]
    return [w.encode() for w in words]


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
async def test_unknown_token_is_401_everywhere(
    client: Client, service: Service, method: str
) -> None:
    token_a = reg(service, UUID_A).token
    tokens = ["nope", token_a[:-1], token_a + "x", token_a.swapcase(), UUID_A]
    paths = [f"/{t}/{BASE}/{p}" for t in tokens for p in ALL_PATHS]
    paths += ["/", "/x", f"/{token_a[:-1]}", f"/x/{token_a}/{BASE}/pod/uuid"]
    for path in paths:
        resp = await client.request(method, path, data=b"content=x", headers={"Content-Type": FORM})
        body = await resp.read()
        assert resp.status == 401, path
        assert resp.headers["Content-Type"] == TEXT
        if method != "HEAD":
            assert body == b"unknown token"
        assert not any(secret in body for secret in _secrets(service))


async def test_another_pods_app_is_404(client: Client, service: Service) -> None:
    for endpoint in APP_ENDPOINTS:
        for uuid, app in ((UUID_A, "api"), (UUID_B, "web"), (UUID_A, "nosuch")):
            resp = await client.get(url(service, uuid, f"apps/{app}/{endpoint}"))
            assert resp.status == 404
            assert resp.headers["Content-Type"] == TEXT
            body = await resp.read()
            assert UUID_B.encode() not in body and b"worker" not in body


@pytest.mark.parametrize(
    "path",
    [
        f"/{BASE}/pod/nothing",
        f"/{BASE}/pod",
        f"/{BASE}/",
        f"/{BASE}",
        "/acMetadata/v2/pod/uuid",
        f"/{BASE}/apps/web",
        f"/{BASE}/apps/web/",
        f"/{BASE}/apps/web/image",
        f"/{BASE}/apps/web/nothing",
        f"/{BASE}/pod/uuid/more",
        f"/{BASE}/pod/hmac",
        "",
        "/",
    ],
)
async def test_unknown_path_with_a_valid_token_is_404(
    client: Client, service: Service, path: str
) -> None:
    resp = await client.get(f"/{reg(service, UUID_A).token}{path}")
    assert resp.status == 404
    assert resp.headers["Content-Type"] == TEXT


@pytest.mark.parametrize(
    ("method", "endpoint", "allow"),
    [
        ("POST", "pod/uuid", "GET, HEAD"),
        ("PUT", "pod/manifest", "GET, HEAD"),
        ("DELETE", "pod/annotations", "GET, HEAD"),
        ("POST", "apps/web/image/id", "GET, HEAD"),
        ("PATCH", "apps/db/annotations", "GET, HEAD"),
        ("GET", "pod/hmac/sign", "POST"),
        ("HEAD", "pod/hmac/sign", "POST"),
        ("PUT", "pod/hmac/verify", "POST"),
        ("GET", "pod/hmac/verify", "POST"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    client: Client, service: Service, method: str, endpoint: str, allow: str
) -> None:
    resp = await client.request(method, url(service, UUID_A, endpoint))
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    assert resp.headers["Content-Type"] == TEXT


# -- sign and verify ---------------------------------------------------------------------------


async def sign(client: Client, service: Service, uuid: str, content: bytes) -> bytes:
    from urllib.parse import quote_from_bytes

    resp = await post_form(
        client,
        url(service, uuid, "pod/hmac/sign"),
        b"content=" + quote_from_bytes(content).encode(),
    )
    body = await resp.read()
    assert resp.status == 200, body
    assert resp.headers["Content-Type"] == TEXT
    return body


async def verify(
    client: Client, service: Service, caller: str, signer: str, content: bytes, signature: bytes
) -> int:
    from urllib.parse import urlencode

    form = urlencode({"content": content, "uuid": signer, "signature": signature}).encode()
    resp = await post_form(client, url(service, caller, "pod/hmac/verify"), form)
    body = await resp.read()
    assert resp.headers["Content-Type"] == "text/plain; charset=us-ascii"
    if resp.status == 200:
        assert resp.headers["Content-Type"] == TEXT
        assert body == b""
    return resp.status


async def test_sign_is_base64_hmac_sha512_without_newline(client: Client, service: Service) -> None:
    content = b"hello, world"
    signature = await sign(client, service, UUID_A, content)
    assert signature == hmac_b64(reg(service, UUID_A).key, content)
    assert not signature.endswith(b"\n")
    assert signature != await sign(client, service, UUID_B, content)  # another key


async def test_sign_then_verify_across_pods(client: Client, service: Service) -> None:
    content = b"a message from A"
    signature = await sign(client, service, UUID_A, content)
    assert await verify(client, service, UUID_B, UUID_A, content, signature) == 200
    assert await verify(client, service, UUID_A, UUID_A, content, signature) == 200
    assert await verify(client, service, UUID_B, UUID_A.upper(), content, signature) == 200
    # the signer is A, not B
    assert await verify(client, service, UUID_B, UUID_B, content, signature) == 403


@pytest.mark.parametrize("form", [str.upper, lambda u: u.replace("-", ""), lambda u: "{" + u + "}"])
async def test_verify_takes_the_uuid_in_any_form_go_takes(
    client: Client, service: Service, form: Callable[[str], str]
) -> None:
    signature = await sign(client, service, UUID_A, b"x")
    assert await verify(client, service, UUID_B, form(UUID_A), b"x", signature) == 200


async def test_verify_refusals(client: Client, service: Service) -> None:
    content = b"signed"
    good = await sign(client, service, UUID_A, content)
    raw = bytearray(base64.b64decode(good))
    raw[0] ^= 0x80
    tampered = base64.b64encode(bytes(raw))
    cases = {
        "tampered": (UUID_A, content, tampered),
        "other content": (UUID_A, b"signed!", good),
        "unknown uuid": ("11111111-2222-4333-8444-555555555555", content, good),
        "not a uuid": ("whoever", content, good),
        "not base64": (UUID_A, content, b"!!! not base64 !!!"),
        "base64 with junk": (UUID_A, content, good + b"*"),
        "truncated": (UUID_A, content, good[:-8]),
        "empty": (UUID_A, content, b""),
    }
    for case, (signer, data, signature) in cases.items():
        status = await verify(client, service, UUID_B, signer, data, signature)
        assert status == 403, case


async def test_content_with_arbitrary_bytes_is_signed_exactly(
    client: Client, service: Service
) -> None:
    key = reg(service, UUID_A).key
    for body, content in [
        (b"content=%FF%00", b"\xff\x00"),
        (b"content=a+b%2Bc%0D%0A", b"a b+c\r\n"),
        (b"content=", b""),
        (b"other=1&content=x&content=y", b"x"),  # the first value wins
        (b"content=%e2%82%ac", "€".encode()),
    ]:
        resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), body)
        assert resp.status == 200
        assert await resp.read() == hmac_b64(key, content), body
    signature = hmac_b64(key, b"\xff\x00")
    form = b"content=%FF%00&uuid=" + UUID_A.encode() + b"&signature="
    form += signature.replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
    resp = await post_form(client, url(service, UUID_B, "pod/hmac/verify"), form)
    assert resp.status == 200


async def test_multipart_form(client: Client, service: Service) -> None:
    key = reg(service, UUID_A).key
    content = b"multipart \x00\xff content"
    body, content_type = multipart(
        [("content", content, "Content-Type: application/octet-stream\r\n")]
    )
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), body, content_type)
    signature = await resp.read()
    assert resp.status == 200, signature
    assert signature == hmac_b64(key, content)
    text_body, content_type = multipart([("content", b"plain text", "")])
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), text_body, content_type)
    assert await resp.read() == hmac_b64(key, b"plain text")
    body, content_type = multipart(
        [
            ("uuid", UUID_A.encode(), ""),
            ("signature", signature, ""),
            ("content", content, "Content-Type: application/octet-stream\r\n"),
        ]
    )
    resp = await post_form(client, url(service, UUID_B, "pod/hmac/verify"), body, content_type)
    assert resp.status == 200, await resp.read()
    body, content_type = multipart([("uuid", UUID_B.encode(), ""), ("signature", signature, "")])
    resp = await post_form(client, url(service, UUID_B, "pod/hmac/verify"), body, content_type)
    assert resp.status == 400


async def test_multipart_file_field(client: Client, service: Service) -> None:
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="content"; filename="blob"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\xff\x00\r\n--XX--\r\n"
    )
    resp = await post_form(
        client, url(service, UUID_A, "pod/hmac/sign"), body, "multipart/form-data; boundary=XX"
    )
    assert resp.status == 200
    assert await resp.read() == hmac_b64(reg(service, UUID_A).key, b"\xff\x00")


async def test_multipart_latin1_text_part_is_signed_as_sent(
    client: Client, service: Service
) -> None:
    body, content_type = multipart(
        [("content", b"caf\xe9", "Content-Type: text/plain; charset=latin-1\r\n")]
    )
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), body, content_type)
    assert resp.status == 200
    assert await resp.read() == hmac_b64(reg(service, UUID_A).key, b"caf\xe9")


@pytest.mark.parametrize(
    ("endpoint", "form"),
    [
        ("pod/hmac/sign", b""),
        ("pod/hmac/sign", b"contents=x"),
        ("pod/hmac/verify", b"uuid=" + UUID_A.encode() + b"&signature=AAAA"),
        ("pod/hmac/verify", b"content=x&signature=AAAA"),
        ("pod/hmac/verify", b"content=x&uuid=" + UUID_A.encode()),
        ("pod/hmac/verify", b""),
    ],
)
async def test_missing_form_fields_are_400(
    client: Client, service: Service, endpoint: str, form: bytes
) -> None:
    resp = await post_form(client, url(service, UUID_A, endpoint), form)
    assert resp.status == 400
    assert resp.headers["Content-Type"] == TEXT
    assert b"field" in await resp.read()


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "image/png", "multipart/mixed; boundary=x"]
)
@pytest.mark.parametrize("endpoint", ["pod/hmac/sign", "pod/hmac/verify"])
async def test_not_a_form_is_415(
    client: Client, service: Service, endpoint: str, content_type: str
) -> None:
    resp = await post_form(client, url(service, UUID_A, endpoint), b"content=x", content_type)
    assert resp.status == 415


async def test_no_content_type_is_read_as_urlencoded(client: Client, service: Service) -> None:
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), b"content=x", None)
    assert resp.status == 200
    assert await resp.read() == hmac_b64(reg(service, UUID_A).key, b"x")


MP = "multipart/form-data; boundary=XX"
CD = b'Content-Disposition: form-data; name="content"\r\n'


def _part(headers: bytes, value: bytes = b"x") -> bytes:
    return b"--XX\r\n" + headers + b"\r\n" + value + b"\r\n--XX--\r\n"


VERIFY_FIELDS = b"&uuid=" + UUID_A.encode() + b"&signature=AAAA"

# id, Content-Type, body
MALFORMED: list[tuple[str, str | None, bytes]] = [
    ("bad percent escape", FORM, b"content=%ZZ%"),
    ("truncated percent escape", FORM, b"content=%4"),
    (
        "bad percent escape, every field",
        FORM,
        b"content=%ZZ" + VERIFY_FIELDS,
    ),
    ("non-ascii byte", FORM, b"content=caf\xe9"),
    ("non-ascii byte, every field", FORM, b"content=caf\xe9" + VERIFY_FIELDS),
    ("utf-8 unescaped", FORM, "content=€".encode()),
    ("17 fields", FORM, b"&".join(b"f%d=1" % i for i in range(17)) + b"&content=x"),
    ("many empty fields", FORM, b"&" * 5000),
    ("binary garbage", FORM, bytes(range(256)) * 4),
    ("binary garbage, no content type", None, b"\x80\x81\x82"),
    ("multipart without boundary", "multipart/form-data", b"content=x"),
    ("multipart garbage", MP, b"\x00\x01 garbage"),
    ("multipart unterminated", MP, b"--XX\r\n" + CD + b"\r\nunterminated"),
    ("multipart part without name", MP, _part(b"Content-Disposition: form-data\r\n")),
    ("multipart part without disposition", MP, _part(b"")),
    (
        "multipart nested",
        MP,
        _part(CD + b"Content-Type: multipart/mixed; boundary=YY\r\n", b"--YY\r\n\r\nx\r\n--YY--"),
    ),
]


def _malformed_params() -> list[Any]:
    params = []
    for endpoint in ("pod/hmac/sign", "pod/hmac/verify"):
        for case, content_type, body in MALFORMED:
            params.append(pytest.param(endpoint, content_type, body, id=f"{endpoint}-{case}"))
    return params


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"Content-Type: text/plain; charset=no-such-charset\r\n", id="charset"),
        pytest.param(b"Content-Transfer-Encoding: rot13\r\n", id="transfer encoding"),
    ],
)
async def test_multipart_part_of_unknown_encoding_is_signed_as_sent(
    client: Client, service: Service, headers: bytes
) -> None:
    """As Go's mime/multipart, which the reference code uses: what the service does not
    know how to decode, it signs as the bytes sent (never a 500)."""
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), _part(CD + headers), MP)
    assert resp.status == 200
    assert await resp.read() == hmac_b64(reg(service, UUID_A).key, b"x")


@pytest.mark.parametrize(("endpoint", "content_type", "body"), _malformed_params())
async def test_malformed_forms_are_4xx(
    client: Client, service: Service, endpoint: str, content_type: str | None, body: bytes
) -> None:
    resp = await post_form(client, url(service, UUID_A, endpoint), body, content_type)
    text = await resp.read()
    assert 400 <= resp.status < 500, (resp.status, text)
    assert resp.headers["Content-Type"] == "text/plain; charset=us-ascii"
    # the service keeps answering
    assert (await client.get(url(service, UUID_A, "pod/uuid"))).status == 200


@pytest.mark.parametrize("endpoint", ["pod/hmac/sign", "pod/hmac/verify"])
async def test_body_over_1_mib_is_413(client: Client, service: Service, endpoint: str) -> None:
    big = io.BytesIO(b"content=" + b"a" * (1 << 20))
    resp = await post_form(client, url(service, UUID_A, endpoint), big)
    assert resp.status == 413
    body, content_type = multipart([("content", b"a" * ((1 << 20) + 1), "")])
    resp = await post_form(client, url(service, UUID_A, endpoint), io.BytesIO(body), content_type)
    assert resp.status == 413


async def test_body_just_under_1_mib_is_signed(client: Client, service: Service) -> None:
    content = b"a" * ((1 << 20) - len(b"content="))
    body = io.BytesIO(b"content=" + content)
    resp = await post_form(client, url(service, UUID_A, "pod/hmac/sign"), body)
    assert resp.status == 200
    assert await resp.read() == hmac_b64(reg(service, UUID_A).key, content)


# -- registrations change what is served ---------------------------------------------------


async def test_removed_pod_is_401_and_the_other_still_served(
    client: Client, service: Service
) -> None:
    token_a = reg(service, UUID_A).token
    assert service.remove(UUID_A) is True
    resp = await client.get(f"/{token_a}/{BASE}/pod/uuid")
    assert resp.status == 401
    resp = await client.get(url(service, UUID_B, "pod/uuid"))
    assert await resp.read() == UUID_B.encode()


async def test_reregistered_pod_old_token_is_401(client: Client, service: Service) -> None:
    old = reg(service, UUID_A)
    service.add(pod_a().registration())
    new = reg(service, UUID_A)
    assert new.token != old.token
    assert (await client.get(f"/{old.token}/{BASE}/pod/uuid")).status == 401
    assert (await client.get(f"/{new.token}/{BASE}/pod/uuid")).status == 200


async def raw_request(client: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the status, headers and body of the reply."""
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "target",
    [
        b"//acMetadata/v1/pod/uuid",
        b"/acMetadata/v1/pod/uuid",
        b"*",
        b"http://evil.example/acMetadata/v1/pod/uuid",
    ],
)
async def test_raw_request_targets_without_a_known_token_are_401(
    client: Client, service: Service, target: bytes
) -> None:
    status, headers, body = await raw_request(
        client, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status in (400, 401), (status, body)
    assert not any(secret in body for secret in _secrets(service))
    if status == 401:
        assert headers["Content-Type"] == TEXT


async def test_raw_request_with_the_token_is_served(client: Client, service: Service) -> None:
    token = reg(service, UUID_A).token.encode()
    status, headers, body = await raw_request(
        client,
        b"GET /"
        + token
        + b"/acMetadata/v1/pod/uuid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert (status, headers["Content-Type"], body) == (200, TEXT, UUID_A.encode())


@pytest.mark.parametrize("late", [False, True], ids=["with-the-headers", "after-a-pause"])
async def test_a_form_is_signed_whenever_its_body_arrives(
    client: Client, service: Service, late: bool
) -> None:
    """The body taken at once when it came with the headers, awaited when it comes later:
    the same signature either way."""
    import asyncio

    token = reg(service, UUID_A).token.encode()
    head = (
        b"POST /" + token + b"/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n"
        b"Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        if late:
            writer.write(head + b"conte")
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler is waiting for the rest by now
            writer.write(b"nt=hello")
        else:
            writer.write(head + b"content=hello")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.partition(b"\r\n\r\n")[2] == hmac_b64(reg(service, UUID_A).key, b"hello")


@pytest.mark.parametrize(
    "target",
    [
        b"/{token}/acMetadata/v1/pod/uuid?ignored=1",  # a query
        b"/{token}/acMetadata/v1/pod/%75uid",  # an escaped character
        b"http://127.0.0.1/{token}/acMetadata/v1/pod/uuid",  # absolute form (RFC 9112 3.2.2)
    ],
    ids=["query", "escaped", "absolute-form"],
)
async def test_request_targets_are_read_as_their_path(
    client: Client, service: Service, target: bytes
) -> None:
    """The path is taken as sent when it is plain, else as aiohttp decodes it: the same
    answer either way."""
    token = reg(service, UUID_A).token.encode()
    status, headers, body = await raw_request(
        client,
        b"GET " + target.replace(b"{token}", token) + b" HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert (status, headers["Content-Type"], body) == (200, TEXT, UUID_A.encode())
