"""Meta discovery: tag parsing and template expansion (pure), and the walk over real HTTPS.

The network tests run an aiohttp server on 127.0.0.1 with a certificate from the session's
test CA and discover names like ``localhost/app`` with the server's port passed explicitly.
The cases of the Go reference's ``discovery_test.go`` / ``http_test.go`` are covered here as
our own tests (marked "Go:").
"""

from __future__ import annotations

import codecs
import socket
from collections.abc import Callable

import pytest

from jetpack.config import Credential
from jetpack.discovery import (
    AppString,
    Attempt,
    Endpoint,
    MetaTag,
    discover,
    discovery_error,
    expand,
    parse_app_string,
    parse_meta,
)
from jetpack.discovery.meta import discovery_url, endpoints_and_keys
from jetpack.errors import DiscoveryError
from jetpack.fetch.http import HttpClient, Transport
from jetpack.schema.types import ACIdentifier
from tests.net import Repo, Served, Server, TestCA

Serve = Callable[..., Server]

STORAGE = "https://storage.example.com"
FULL = f"{STORAGE}/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}"
SHORT = f"{STORAGE}/{{name}}-{{version}}.{{ext}}"
KEYS = "https://example.com/pubkeys.gpg"


def html(*tags: tuple[str, str], head: str = "<title>My app</title>") -> bytes:
    """A tidy page with ``<meta name=N content=C>`` for each (N, C)."""
    metas = "\n".join(f'    <meta name="{n}" content="{c}">' for n, c in tags)
    return (
        f"<!DOCTYPE html>\n<html>\n<head>\n    {head}\n{metas}\n</head>\n"
        "<body><h1>My App</h1></body>\n</html>\n"
    ).encode()


def disc(prefix: str, template: str) -> tuple[str, str]:
    return ("ac-discovery", f"{prefix} {template}")


def keys(prefix: str, url: str = KEYS) -> tuple[str, str]:
    return ("ac-discovery-pubkeys", f"{prefix} {url}")


def app(text: str) -> AppString:
    return parse_app_string(text)


LINUX = "version=1.0.0,os=linux,arch=amd64"


# --- parse_meta ------------------------------------------------------------------------


def test_parse_both_kinds_in_document_order() -> None:
    page = html(disc("example.com", FULL), keys("example.com"), disc("example.com", SHORT))
    assert parse_meta(page) == [
        MetaTag("ac-discovery", "example.com", FULL),
        MetaTag("ac-discovery-pubkeys", "example.com", KEYS),
        MetaTag("ac-discovery", "example.com", SHORT),
    ]


def test_parse_messy_html() -> None:
    page = (
        b"<html><HEAD><title>messy</title>"
        b"<META NAME='AC-Discovery'"
        b" CONTENT='  example.com \n\t https://a/{name}.{ext}?x=1&amp;y=2 '>"
        b"<body><p>text<div><table><tr>"
        b"<meta name=ac-discovery-pubkeys content=example.com&#32;https://k/1>"
        b'<td>cell<meta name="ac-discovery" content="example.com https://b/{name}.{ext}"/>'
    )
    assert parse_meta(page) == [
        MetaTag("ac-discovery", "example.com", "https://a/{name}.{ext}?x=1&y=2"),
        MetaTag("ac-discovery-pubkeys", "example.com", "https://k/1"),
        MetaTag("ac-discovery", "example.com", "https://b/{name}.{ext}"),
    ]


def test_parse_ignores_what_is_not_a_discovery_tag() -> None:
    page = (
        b'<meta name="description" content="example.com https://x/{ext}">'
        b'<meta name="ac-foo" content="example.com https://x/{ext}">'
        b'<meta content="example.com https://x/{ext}">'
        b'<meta name="ac-discovery">'
        b'<meta name="ac-discovery" content="">'
        b'<meta name="ac-discovery" content="example.com">'  # one field
        b'<meta name="ac-discovery" content="example.com https://x/{ext} extra">'  # three
        b'<meta property="ac-discovery" content="example.com https://x/{ext}">'
        b'<!-- <meta name="ac-discovery" content="example.com https://comment/{ext}"> -->'
        b'<script>document.write(\'<meta name="ac-discovery" content="a https://s/{ext}">\')'
        b"</script>"
        b'<meta name="ac-discovery" content="example.com https://kept/{ext}">'
    )
    assert parse_meta(page) == [MetaTag("ac-discovery", "example.com", "https://kept/{ext}")]


@pytest.mark.parametrize(
    "page",
    [b"", b"   \n", b"<!-- nothing -->", b"\x00\x00\x00", bytes(range(256)), b"{}", b"<html>"],
)
def test_parse_junk_gives_nothing(page: bytes) -> None:
    assert parse_meta(page) == []


def test_parse_xhtml() -> None:
    page = (
        b'<?xml version="1.0" encoding="utf-8"?>\n'
        b'<html xmlns="http://www.w3.org/1999/xhtml"><head>'
        b'<meta name="ac-discovery" content="example.com https://x/{name}.{ext}" /></head></html>'
    )
    assert parse_meta(page) == [MetaTag("ac-discovery", "example.com", "https://x/{name}.{ext}")]


TEMPLATE = "https://exämple.net/{name}.{ext}"


@pytest.mark.parametrize(
    ("page", "charset"),
    [
        # undeclared UTF-8 (libxml2 alone would read it as Latin-1)
        (f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode(), None),
        # declared in the page
        (
            '<html><head><meta charset="iso-8859-1">'
            f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode("latin-1"),
            None,
        ),
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
            f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode("cp1252"),
            None,
        ),
        # only in the Content-Type header
        (
            f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode("latin-1"),
            "latin1",
        ),
        # a byte order mark wins over everything
        (
            codecs.BOM_UTF16_LE
            + f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode("utf-16-le"),
            "iso-8859-1",
        ),
        (
            codecs.BOM_UTF8
            + f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode(),
            None,
        ),
        # a charset nobody knows is ignored
        (f'<meta name="ac-discovery" content="example.com {TEMPLATE}">'.encode(), "x-bogus"),
    ],
)
def test_parse_encodings(page: bytes, charset: str | None) -> None:
    assert parse_meta(page, charset=charset) == [MetaTag("ac-discovery", "example.com", TEMPLATE)]


# --- expand ----------------------------------------------------------------------------


def test_expand_the_spec_example() -> None:
    template = "https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}"
    a = app(f"example.com/reduce-worker,{LINUX}")
    assert expand(template, a, "aci.asc") == (
        "https://storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci.asc"
    )
    assert expand(template, a, "aci") == (
        "https://storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci"
    )


def test_expand_version_defaults_to_latest() -> None:
    assert expand(SHORT, app("example.com/myapp"), "aci") == (
        f"{STORAGE}/example.com/myapp-latest.aci"
    )
    assert (
        expand(SHORT, app("example.com/myapp:2.1"), "aci") == f"{STORAGE}/example.com/myapp-2.1.aci"
    )
    assert expand(SHORT, AppString(ACIdentifier("a.com/b"), (("version", ""),)), "aci") == (
        f"{STORAGE}/a.com/b-latest.aci"
    )


def test_expand_every_occurrence_and_any_label() -> None:
    a = app("example.com/myapp:1,channel=beta,os=linux")
    template = "https://x/{channel}/{os}/{name}/{name}-{version}.{ext}"
    assert expand(template, a, "aci") == (
        "https://x/beta/linux/example.com/myapp/example.com/myapp-1.aci"
    )


@pytest.mark.parametrize(
    "template",
    [
        FULL,  # Go: a missing label (os, arch) leaves {os}: dropped
        "https://x/{name}-{channel}.{ext}",
        "https://x/{name}.{ext}{}",
        "https://x/{Name}.{ext}",  # variables are case-sensitive
        "https://x/{name}.{ext}?q={",  # ...but an unclosed brace is no variable: see below
    ],
)
def test_expand_drops_leftovers(template: str) -> None:
    got = expand(template, app("example.com/myapp:1.0.0"), "aci")
    if template.endswith("q={"):
        assert got == "https://x/example.com/myapp.aci?q={"
    else:
        assert got is None


def test_expand_needs_ext() -> None:
    # The spec: templates "must contain {ext}" to tell the image from its signature. The Go
    # reference keeps such a template and gives the same URL for both; we drop it.
    assert expand("https://x/{name}-{version}.aci", app("example.com/myapp"), "aci") is None


def test_expand_name_first_then_labels_then_ext() -> None:
    # {name} is replaced before labels, so a label value "{name}" stays a leftover.
    odd = AppString(ACIdentifier("a.com/b"), (("channel", "{name}"),))
    assert expand("https://x/{channel}.{ext}", odd, "aci") is None
    # Go: a label called "name" never stands in for {name}; nor may one called "ext".
    named = AppString(ACIdentifier("a.com/b"), (("name", "other"), ("ext", "zip")))
    assert expand("https://x/{name}.{ext}", named, "aci.asc") == "https://x/a.com/b.aci.asc"


# --- one page --------------------------------------------------------------------------


def test_prefix_is_a_string_prefix_of_the_name() -> None:
    # The spec's prefix-match (and Go's HasPrefix) is a plain string prefix, unlike the
    # trust store's whole-component rule: "localhost/ap" matches "localhost/app".
    tags = [
        MetaTag("ac-discovery", "localhost/app/sub", "https://deeper/{name}.{ext}"),
        MetaTag("ac-discovery", "other.com", "https://other/{name}.{ext}"),
        MetaTag("ac-discovery", "localhost/ap", "https://partial/{name}.{ext}"),
        MetaTag("ac-discovery-pubkeys", "other.com", "https://other/keys"),
        MetaTag("ac-discovery", "localhost", "https://host/{name}.{ext}"),
        MetaTag("ac-discovery-pubkeys", "localhost/app", "https://k/1"),
    ]
    got = endpoints_and_keys(tags, app("localhost/app"))
    assert got.endpoints == [
        Endpoint("https://partial/localhost/app.aci", "https://partial/localhost/app.aci.asc"),
        Endpoint("https://host/localhost/app.aci", "https://host/localhost/app.aci.asc"),
    ]
    assert got.keys == ["https://k/1"]
    assert got.summary == "2 endpoints, 1 key"


def test_multiple_templates_kept_in_order() -> None:
    # Go: meta06 — three templates, one of them not even http.
    hdfs = "hdfs://storage.example.com/{name}-{version}-{os}-{arch}.{ext}"
    tags = parse_meta(
        html(
            disc("example.com", FULL),
            disc("example.com", SHORT),
            disc("example.com", hdfs),
            keys("example.com"),
        )
    )
    got = endpoints_and_keys(tags, app(f"example.com/myapp,{LINUX}"))
    assert [e.aci for e in got.endpoints] == [
        f"{STORAGE}/example.com/myapp-1.0.0-linux-amd64.aci",
        f"{STORAGE}/example.com/myapp-1.0.0.aci",
        "hdfs://storage.example.com/example.com/myapp-1.0.0-linux-amd64.aci",
    ]
    assert [e.asc for e in got.endpoints] == [e.aci + ".asc" for e in got.endpoints]
    assert got.keys == [KEYS]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Go: meta05 with only version: the template needing os/arch is dropped
        ("example.com/myapp:1.0.0", [f"{STORAGE}/example.com/myapp-1.0.0.aci"]),
        # Go: no labels at all: version is latest
        ("example.com/myapp", [f"{STORAGE}/example.com/myapp-latest.aci"]),
        (
            f"example.com/myapp,{LINUX}",
            [
                f"{STORAGE}/example.com/myapp-1.0.0-linux-amd64.aci",
                f"{STORAGE}/example.com/myapp-1.0.0.aci",
            ],
        ),
    ],
)
def test_templates_rendered_for_the_labels_given(text: str, expected: list[str]) -> None:
    tags = parse_meta(html(disc("example.com", FULL), disc("example.com", SHORT)))
    assert [e.aci for e in endpoints_and_keys(tags, app(text)).endpoints] == expected


@pytest.mark.parametrize(
    ("tags", "summary"),
    [
        ([], "no ac-discovery tags"),
        ([disc("other.com", SHORT)], "no tags whose prefix matches localhost/app"),
        ([disc("localhost", FULL)], "no usable template (no label for {os}, {arch})"),
        (
            [disc("localhost", "https://x/{name}.aci")],
            "no usable template (no {ext} in the template)",
        ),
        ([keys("localhost")], "0 endpoints, 1 key"),
    ],
)
def test_page_summaries(tags: list[tuple[str, str]], summary: str) -> None:
    assert endpoints_and_keys(parse_meta(html(*tags)), app("localhost/app")).summary == summary


def test_discovery_url() -> None:
    assert discovery_url("example.com/a/b") == "https://example.com/a/b?ac-discovery=1"
    assert discovery_url("example.com") == "https://example.com?ac-discovery=1"
    assert discovery_url("example.com/a", scheme="http", port=8080) == (
        "http://example.com:8080/a?ac-discovery=1"
    )


# --- the walk, over real HTTPS -----------------------------------------------------------


def page_for(*tags: tuple[str, str]) -> Served:
    return Served(html(*tags), content_type="text/html; charset=utf-8")


@pytest.fixture
def client(test_ca: TestCA) -> Callable[..., HttpClient]:
    def make(**kw: object) -> HttpClient:
        kw.setdefault("ca_file", test_ca.ca_file)
        kw.setdefault("connect_timeout", 5.0)
        kw.setdefault("read_timeout", 5.0)
        return HttpClient(Transport(**kw))  # type: ignore[arg-type]

    return make


async def run(
    client: Callable[..., HttpClient], name: str, server: Server, **kw: object
) -> tuple[list[Endpoint], list[str], list[Attempt]]:
    transport = {
        k: kw.pop(k) for k in ("verify_tls", "allow_http", "ca_file", "credentials") if k in kw
    }
    async with client(**transport) as http:
        found = await discover(app(name), http, port=server.port, **kw)  # type: ignore[arg-type]
    return found.endpoints, found.keys, found.attempts


def asked(repo: Repo) -> list[str]:
    """The paths of the discovery requests ``repo`` saw, in order."""
    assert all(p.endswith("?ac-discovery=1") for _, p, _ in repo.log)
    return [p.removesuffix("?ac-discovery=1") for _, p, _ in repo.log]


def ep(base: str, stem: str) -> Endpoint:
    return Endpoint(f"{base}/{stem}.aci", f"{base}/{stem}.aci.asc")


async def test_endpoints_and_keys_at_the_leaf(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    # Go: meta01 at /myapp. Both found there, so the walk stops: the root is never asked.
    repo = Repo({"/myapp": page_for(disc("localhost", FULL), keys("localhost"))})
    server = serve(repo.app())
    endpoints, found_keys, attempts = await run(client, f"localhost/myapp,{LINUX}", server)
    assert endpoints == [ep(STORAGE, "localhost/myapp-1.0.0-linux-amd64")]
    assert found_keys == [KEYS]
    url = f"https://localhost:{server.port}/myapp?ac-discovery=1"
    assert attempts == [Attempt(url, "1 endpoint, 1 key")]
    assert [(m, p) for m, p, _ in repo.log] == [("GET", "/myapp?ac-discovery=1")]


async def test_walks_up_on_404_to_the_root(serve: Serve, client: Callable[..., HttpClient]) -> None:
    # Go: meta01 at the root only, name three levels deep.
    repo = Repo({"/": page_for(disc("localhost", FULL), keys("localhost"))})
    server = serve(repo.app())
    endpoints, found_keys, attempts = await run(client, f"localhost/myapp/foobar,{LINUX}", server)
    assert endpoints == [ep(STORAGE, "localhost/myapp/foobar-1.0.0-linux-amd64")]
    assert found_keys == [KEYS]
    base = f"https://localhost:{server.port}"
    assert attempts == [
        Attempt(f"{base}/myapp/foobar?ac-discovery=1", "HTTP 404"),
        Attempt(f"{base}/myapp?ac-discovery=1", "HTTP 404"),
        Attempt(f"{base}?ac-discovery=1", "1 endpoint, 1 key"),
    ]


async def test_nothing_anywhere(serve: Serve, client: Callable[..., HttpClient]) -> None:
    # Go: tags only at a path that is not on the way up.
    repo = Repo({"/path/out/of/myapp": page_for(disc("localhost", FULL), keys("localhost"))})
    server = serve(repo.app())
    a = app(f"localhost/myapp/foobar/bazzer,{LINUX}")
    async with client() as http:
        found = await discover(a, http, port=server.port)
    assert (found.endpoints, found.keys) == ([], [])
    assert [x.outcome for x in found.attempts] == ["HTTP 404"] * 4
    err = discovery_error(a, found)
    assert isinstance(err, DiscoveryError)
    base = f"https://localhost:{server.port}"
    assert str(err) == (
        f"cannot discover {a}: no usable ac-discovery meta tags at "
        f"{base}/myapp/foobar/bazzer?ac-discovery=1 (HTTP 404), "
        f"{base}/myapp/foobar?ac-discovery=1 (HTTP 404), "
        f"{base}/myapp?ac-discovery=1 (HTTP 404), {base}?ac-discovery=1 (HTTP 404) "
        "(check the name, or fetch the image by URL or from a file)"
    )
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("root", "leaf", "want_endpoint", "want_keys"),
    [
        # Go: endpoints at the root, keys at the leaf
        (
            [disc("localhost", FULL)],
            [keys("localhost")],
            f"{STORAGE}/localhost/myapp-1.0.0-linux-amd64.aci",
            [KEYS],
        ),
        # Go: keys at the root, endpoints at the leaf
        (
            [keys("localhost")],
            [disc("localhost", FULL)],
            f"{STORAGE}/localhost/myapp-1.0.0-linux-amd64.aci",
            [KEYS],
        ),
        # Go: both at the root, endpoints at the leaf: the leaf's template wins
        (
            [disc("localhost", FULL.replace("storage", "another")), keys("localhost")],
            [disc("localhost", FULL)],
            f"{STORAGE}/localhost/myapp-1.0.0-linux-amd64.aci",
            [KEYS],
        ),
        # Go: only endpoints, at the root
        ([disc("localhost", FULL)], None, f"{STORAGE}/localhost/myapp-1.0.0-linux-amd64.aci", []),
        # Go: only keys, at the root
        ([keys("localhost")], None, None, [KEYS]),
    ],
)
async def test_endpoints_and_keys_walk_independently(
    serve: Serve,
    client: Callable[..., HttpClient],
    root: list[tuple[str, str]],
    leaf: list[tuple[str, str]] | None,
    want_endpoint: str | None,
    want_keys: list[str],
) -> None:
    repo = Repo({"/": page_for(*root)})
    if leaf is not None:
        repo.files["/myapp"] = page_for(*leaf)
    server = serve(repo.app())
    endpoints, found_keys, _ = await run(client, f"localhost/myapp,{LINUX}", server)
    assert [e.aci for e in endpoints] == ([want_endpoint] if want_endpoint else [])
    assert found_keys == want_keys
    # Each page is fetched once, whichever walk needed it.
    assert asked(repo) == ["/myapp", "/"]


async def test_find_only_what_is_asked(serve: Serve, client: Callable[..., HttpClient]) -> None:
    repo = Repo({"/myapp": page_for(disc("localhost", SHORT)), "/": page_for(keys("localhost"))})
    server = serve(repo.app())
    endpoints, found_keys, _ = await run(client, "localhost/myapp", server, find_keys=False)
    assert (len(endpoints), found_keys, asked(repo)) == (1, [], ["/myapp"])
    endpoints, found_keys, _ = await run(client, "localhost/myapp", server, find_endpoints=False)
    assert (endpoints, found_keys, asked(repo)) == ([], [KEYS], ["/myapp", "/myapp", "/"])


@pytest.mark.parametrize(
    ("leaf", "outcome"),
    [
        (Served(status=500), "HTTP 500"),
        (Served(status=401), "HTTP 401"),
        (Served(b'{"ac-discovery": 1}', content_type="application/json"), "no ac-discovery tags"),
        (page_for(), "no ac-discovery tags"),
        (page_for(disc("other.com", SHORT)), "no tags whose prefix matches localhost/app"),
        (
            page_for(disc("localhost", "https://x/{name}-{channel}.{ext}")),
            "no usable template (no label for {channel})",
        ),
        (
            page_for(disc("localhost", "https://x/{name}.aci")),
            "no usable template (no {ext} in the template)",
        ),
        # A network error: the server sends its headers and hangs up.
        (Served(b"<html>" * 100, drop_after=0), "the server closed the connection early"),
    ],
)
async def test_walks_up_past_a_bad_page(
    serve: Serve, client: Callable[..., HttpClient], leaf: Served, outcome: str
) -> None:
    repo = Repo({"/app": leaf, "/": page_for(disc("localhost", SHORT))})
    server = serve(repo.app())
    endpoints, _, attempts = await run(client, "localhost/app", server)
    assert endpoints == [ep(STORAGE, "localhost/app-latest")]
    assert attempts[0] == Attempt(f"https://localhost:{server.port}/app?ac-discovery=1", outcome)
    assert len(attempts) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_walks_up_past_an_unreachable_redirect(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    # The leaf redirects to a port where nothing listens: connection refused, then up.
    dead = f"https://127.0.0.1:{_closed_port()}/gone"
    repo = Repo({"/app": Served(redirect=dead), "/": page_for(disc("localhost", SHORT))})
    server = serve(repo.app())
    endpoints, _, attempts = await run(client, "localhost/app", server)
    assert len(endpoints) == 1
    assert attempts[0].outcome.startswith("cannot connect")


async def test_nothing_listening(client: Callable[..., HttpClient]) -> None:
    a = app("localhost/app")
    async with client() as http:
        found = await discover(a, http, port=_closed_port())
    assert [x.outcome.startswith("cannot connect") for x in found.attempts] == [True, True]
    assert "cannot connect" in str(discovery_error(a, found))


async def test_redirects_are_followed(serve: Serve, client: Callable[..., HttpClient]) -> None:
    other = Repo({"/meta.html": page_for(disc("localhost", SHORT), keys("localhost"))})
    other_server = serve(other.app(), names=("127.0.0.1",))
    repo = Repo(
        {
            "/app": Served(redirect="/moved"),
            "/moved": Served(redirect=f"https://127.0.0.1:{other_server.port}/meta.html"),
        }
    )
    server = serve(repo.app())
    endpoints, found_keys, attempts = await run(client, "localhost/app", server)
    assert (len(endpoints), found_keys) == (1, [KEYS])
    assert [a.url for a in attempts] == [f"https://localhost:{server.port}/app?ac-discovery=1"]
    assert other.hits("/meta.html") == 1


async def test_tls_failure_without_the_ca(serve: Serve, client: Callable[..., HttpClient]) -> None:
    server = serve(Repo({"/": page_for(disc("localhost", SHORT))}).app())
    a = app("localhost/app")
    async with client(ca_file=None) as http:
        found = await discover(a, http, port=server.port)
    assert found.endpoints == []
    assert all(x.outcome.startswith("TLS verification failed") for x in found.attempts)
    message = str(discovery_error(a, found))
    assert message.endswith(
        "(set fetch.ca-file to the server's CA, or --insecure-options=tls to skip the check)"
    )
    # --insecure-options=tls
    endpoints, _, _ = await run(client, "localhost/app", server, ca_file=None, verify_tls=False)
    assert len(endpoints) == 1


async def test_plain_http_only_when_allowed(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    # Go: "file-only-on-http" / "https-server-is-down": https fails, http is tried when allowed.
    repo = Repo({"/": page_for(disc("localhost", SHORT))})
    server = serve(repo.app(), tls=False)
    a = app("localhost/app")
    async with client() as http:
        found = await discover(a, http, port=server.port)
    assert found.endpoints == []
    assert [x.url.split(":")[0] for x in found.attempts] == ["https", "https"]
    assert repo.log == []  # nothing ever went out as plain http

    endpoints, _, attempts = await run(client, "localhost/app", server, allow_http=True)
    assert endpoints == [ep(STORAGE, "localhost/app-latest")]
    base = f"localhost:{server.port}"
    assert [(x.url, x.outcome == "HTTP 404") for x in attempts] == [
        (f"https://{base}/app?ac-discovery=1", False),  # not TLS: a transport failure
        (f"http://{base}/app?ac-discovery=1", True),
        (f"https://{base}?ac-discovery=1", False),
        (f"http://{base}?ac-discovery=1", False),
    ]
    assert attempts[-1].outcome == "1 endpoint, 0 keys"


async def test_allow_http_follows_the_transport(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    repo = Repo({"/": page_for(disc("localhost", SHORT))})
    server = serve(repo.app(), tls=False)
    async with client(allow_http=True) as http:
        assert len((await discover(app("localhost/app"), http, port=server.port)).endpoints) == 1
        refused = await discover(app("localhost/app"), http, port=server.port, allow_http=False)
    assert refused.endpoints == []


async def test_https_page_never_redirects_to_http(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    plain = serve(Repo({"/meta": page_for(disc("localhost", SHORT))}).app(), tls=False)
    server = serve(Repo({"/app": Served(redirect=f"{plain.url}/meta")}).app())
    a = app("localhost/app")
    async with client() as http:
        found = await discover(a, http, port=server.port)
    assert "redirects to plain http" in found.attempts[0].outcome
    assert str(discovery_error(a, found)).endswith("(pass --insecure-options=http to allow it)")


async def test_credentials_are_sent(serve: Serve, client: Callable[..., HttpClient]) -> None:
    # Go: the auth-header case; the HTTP client adds it, over https, to that host only.
    repo = Repo({"/app": page_for(disc("localhost", SHORT))})
    server = serve(repo.app())
    cred = Credential(host="localhost", type="basic", user="bar", password="baz")
    endpoints, _, _ = await run(client, "localhost/app", server, credentials=(cred,))
    assert len(endpoints) == 1
    assert repo.log[0][2]["Authorization"] == "Basic YmFyOmJheg=="


async def test_charset_from_the_content_type(
    serve: Serve, client: Callable[..., HttpClient]
) -> None:
    body = '<meta name="ac-discovery" content="localhost https://exämple.net/{name}.{ext}">'
    repo = Repo(
        {"/app": Served(body.encode("latin-1"), content_type="text/html; charset=ISO-8859-1")}
    )
    server = serve(repo.app())
    endpoints, _, _ = await run(client, "localhost/app", server)
    assert endpoints == [ep("https://exämple.net", "localhost/app")]


async def test_missing_labels_hint(serve: Serve, client: Callable[..., HttpClient]) -> None:
    server = serve(Repo({"/": page_for(disc("localhost", FULL))}).app())
    a = app("localhost/app")
    async with client() as http:
        found = await discover(a, http, port=server.port)
    base = f"https://localhost:{server.port}"
    assert str(discovery_error(a, found)) == (
        f"cannot discover localhost/app: no usable ac-discovery meta tags at "
        f"{base}/app?ac-discovery=1 (HTTP 404), "
        f"{base}?ac-discovery=1 (no usable template (no label for {{os}}, {{arch}})) "
        "(add the labels the templates need, e.g. localhost/app,os=VALUE)"
    )
