"""Meta discovery: from an image name to ACI, signature and public key URLs.

Theory of operation (appc spec, discovery.md):

1. For ``example.com/project/app`` GET ``https://example.com/project/app?ac-discovery=1``
   (redirects followed by the HTTP client). A non-200 answer, a network or TLS failure, or a
   page without usable tags moves one path component up — ``example.com/project``, then
   ``example.com`` — until the name is used up.
2. On each page, ``<meta name="ac-discovery" content="PREFIX TEMPLATE">`` and
   ``<meta name="ac-discovery-pubkeys" content="PREFIX URL">`` count only when PREFIX is a
   string prefix of the name (the spec's "prefix-match"; the Go code's ``HasPrefix``). This
   is not the trust store's rule, which matches whole path components only.
3. A template becomes an :class:`Endpoint` by substitution — ``{name}`` first, then each
   label (``version`` defaulting to ``latest``), then ``{ext}`` (``aci`` / ``aci.asc``) —
   and is dropped when it has no ``{ext}`` or a ``{...}`` is left over.
4. Endpoints and keys are looked for independently: each walk stops at the first page that
   gives it something, so endpoints may come from the leaf and keys from the root. One
   pass up the path serves both, so a page is fetched at most once per :func:`discover`.
   Every matching template is kept, in document order; the fetcher tries them in order.

With plain http allowed, each path is tried over https first and then over http when https
fails (what the Go reference does with ``InsecureHTTP``); otherwise http is never used.

The pure parts (:func:`parse_meta`, :func:`expand`, :func:`endpoints_and_keys`) take values
and return values; :func:`discover` is the only one that talks to the network, through
:class:`~jetpack.fetch.http.HttpClient`. Nothing here adds ``os``/``arch``: callers pass
an :class:`AppString` that already carries them (``app.with_defaults(host_labels())``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from jetpack.discovery.appstring import AppString
from jetpack.errors import DiscoveryError, FetchError

if TYPE_CHECKING:
    from jetpack.fetch.http import HttpClient

TagName = Literal["ac-discovery", "ac-discovery-pubkeys"]
Ext = Literal["aci", "aci.asc"]

DEFAULT_VERSION = "latest"
_TAG_NAMES: frozenset[str] = frozenset({"ac-discovery", "ac-discovery-pubkeys"})
# What the Go reference treats as an unrendered variable: a brace pair, lazily.
_LEFTOVER = re.compile(r"\{.*?\}")
# UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = (
    codecs.BOM_UTF8,
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)
_PAGE_LIMIT = 1 << 20


@dataclass(frozen=True)
class MetaTag:
    """One ``<meta>`` tag of a discovery page. For pubkeys ``template`` is a plain URL."""

    name: TagName
    prefix: str
    template: str


@dataclass(frozen=True)
class Endpoint:
    """Where an image and its detached signature are."""

    aci: str
    asc: str


@dataclass(frozen=True)
class Attempt:
    """One discovery URL asked and what came of it (for ``--debug`` and error messages)."""

    url: str
    outcome: str
    # What the user can do about it, if anything particular; advice, so not compared.
    hint: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found. ``endpoints`` empty means the name cannot be fetched."""

    endpoints: list[Endpoint]
    keys: list[str]
    attempts: list[Attempt]


def _parser_encoding(html: bytes, charset: str | None) -> str | None:
    """The encoding to parse ``html`` with, or None to let libxml2 decide.

    HTML's order: a byte order mark, then the transport's charset, then the document's own
    declaration. libxml2 handles the mark and the declaration but falls back to Latin-1 for
    an undeclared page, so an undeclared page that is valid UTF-8 is read as UTF-8.
    """
    if html.startswith(_BOMS):
        return None
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    try:
        html.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "utf-8"


def parse_meta(html: bytes, *, charset: str | None = None) -> list[MetaTag]:
    """The ``ac-discovery`` and ``ac-discovery-pubkeys`` tags of a page, in document order.

    Any HTML is accepted (lxml's recovering parser): unclosed tags, ``<meta>`` in the body,
    declared or undeclared encodings. A tag counts when its ``name`` is one of the two
    (ASCII case-insensitive, as HTML compares meta names) and its ``content`` is exactly two
    white-space separated fields; anything else is ignored.

    Args:
        html: the page as served.
        charset: the ``charset`` of the response's Content-Type, if it had one.
    """
    import lxml.etree  # type: ignore[import-untyped]  # lxml ships no type stubs

    try:
        parser = lxml.etree.HTMLParser(
            recover=True, no_network=True, encoding=_parser_encoding(html, charset)
        )
    except LookupError:  # a charset Python knows and libxml2 does not
        parser = lxml.etree.HTMLParser(recover=True, no_network=True)
    try:
        root = lxml.etree.fromstring(html, parser)
    except (lxml.etree.LxmlError, ValueError):
        return []
    if root is None:  # nothing but white space or comments
        return []
    tags: list[MetaTag] = []
    for element in root.iter("meta"):
        name = (element.get("name") or "").strip().lower()
        fields = (element.get("content") or "").split()
        if name in _TAG_NAMES and len(fields) == 2:
            tags.append(MetaTag(cast(TagName, name), fields[0], fields[1]))
    return tags


def _variables(app: AppString) -> list[tuple[str, str]]:
    """Template variables in substitution order: name, the labels as given, version."""
    labels = dict(app.labels)
    if not labels.get("version"):
        labels["version"] = DEFAULT_VERSION
    # A label may not stand in for {name} or {ext}: the spec fixes what those two mean.
    return [("{name}", str(app.name))] + [
        ("{" + k + "}", v) for k, v in labels.items() if k not in ("name", "ext")
    ]


def expand(template: str, app: AppString, ext: Ext) -> str | None:
    """The URL ``template`` names for ``app``, or None when it cannot be rendered.

    ``{name}`` is replaced first, then ``{<label>}`` for each label of ``app`` (``version``
    defaults to ``latest``), then ``{ext}``. None when the template has no ``{ext}`` (the
    spec requires it to tell image from signature; the Go reference would give the same URL
    for both) or when any ``{...}`` is left over, e.g. ``{channel}`` with no such label.
    """
    if "{ext}" not in template:
        return None
    url = template
    for var, value in _variables(app):
        url = url.replace(var, value)
    url = url.replace("{ext}", ext)
    return None if _LEFTOVER.search(url) else url


@dataclass(frozen=True)
class PageResult:
    """What one discovery page gives ``app``, and a one-phrase summary of it."""

    endpoints: list[Endpoint]
    keys: list[str]
    summary: str
    hint: str | None = None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def endpoints_and_keys(tags: list[MetaTag], app: AppString) -> PageResult:
    """The endpoints and key URLs ``tags`` give ``app``, in document order."""
    name = str(app.name)
    matching = [t for t in tags if name.startswith(t.prefix)]
    endpoints: list[Endpoint] = []
    keys: list[str] = []
    unusable: list[str] = []
    for tag in matching:
        if tag.name == "ac-discovery-pubkeys":
            keys.append(tag.template)
            continue
        aci, asc = expand(tag.template, app, "aci"), expand(tag.template, app, "aci.asc")
        if aci is not None and asc is not None:
            endpoints.append(Endpoint(aci, asc))
        else:
            unusable.append(tag.template)
    hint = None
    if endpoints or keys:
        summary = f"{_count(len(endpoints), 'endpoint')}, {_count(len(keys), 'key')}"
    elif unusable and (missing := _missing(unusable, app)):
        summary = f"no usable template (no label for {', '.join(missing)})"
        label = next((v[1:-1] for v in missing if len(v) > 2), "LABEL")
        hint = f"add the labels the templates need, e.g. {app},{label}=VALUE"
    elif unusable:
        summary = "no usable template (no {ext} in the template)"
    elif tags:
        summary = f"no tags whose prefix matches {name}"
    else:
        summary = "no ac-discovery tags"
    return PageResult(endpoints, keys, summary, hint)


def _missing(templates: list[str], app: AppString) -> list[str]:
    """The ``{variables}`` that ``templates`` (with ``{ext}``) leave unfilled for ``app``."""
    missing: list[str] = []
    for template in (t for t in templates if "{ext}" in t):
        rendered = template
        for var, value in _variables(app):
            rendered = rendered.replace(var, value)
        for var in _LEFTOVER.findall(rendered.replace("{ext}", "")):
            if var not in missing:
                missing.append(var)
    return missing


def _prefixes(name: str) -> Iterator[str]:
    """``a.com/p/s``, ``a.com/p``, ``a.com``."""
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        yield "/".join(parts[:end])


def discovery_url(prefix: str, *, scheme: str = "https", port: int | None = None) -> str:
    """``https://a.com[:port]/p?ac-discovery=1`` for the name prefix ``a.com/p``."""
    host, _, path = prefix.partition("/")
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{'/' + path if path else ''}?ac-discovery=1"


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


async def _page(
    http: HttpClient,
    prefix: str,
    app: AppString,
    *,
    schemes: tuple[str, ...],
    port: int | None,
    attempts: list[Attempt],
) -> PageResult | None:
    """The discovery page for ``prefix`` read for ``app``, or None if none could be had."""
    for scheme in schemes:
        url = discovery_url(prefix, scheme=scheme, port=port)
        try:
            got = await http.fetch(url, limit=_PAGE_LIMIT)
        except FetchError as err:
            attempts.append(Attempt(url, err.why or str(err), err.hint))
            continue
        if got.status != 200:
            attempts.append(Attempt(url, f"HTTP {got.status}"))
            continue
        content_type = next((v for k, v in got.headers.items() if k.lower() == "content-type"), "")
        result = endpoints_and_keys(parse_meta(got.body, charset=_charset(content_type)), app)
        attempts.append(Attempt(url, result.summary, result.hint))
        return result
    return None


async def discover(
    app: AppString,
    http: HttpClient,
    *,
    port: int | None = None,
    allow_http: bool | None = None,
    find_endpoints: bool = True,
    find_keys: bool = True,
) -> Discovery:
    """Walk ``app``'s name up, collecting ACI endpoints and public key URLs.

    Args:
        app: the name and labels to discover, ``os`` and ``arch`` already filled in by the
            caller (``app.with_defaults(host_labels())``); ``version`` defaults to
            ``latest`` here.
        http: the client; its transport decides TLS verification and credentials.
        port: the port of every discovery URL (as ``actool discover --port``); None for the
            scheme's default.
        allow_http: also try plain http after https fails; None (the default) follows
            ``http.transport.allow_http``.
        find_endpoints, find_keys: what to look for; the walk stops as soon as everything
            asked for is found (``jetpack trust`` wants keys only).

    Returns:
        What was found. Empty ``endpoints`` (or ``keys``) is not an error here: the caller
        decides, e.g. with :func:`discovery_error`. Network failures and HTTP errors are not
        raised either; they are in ``attempts`` and make the walk go on.
    """
    if allow_http is None:
        allow_http = http.transport.allow_http
    schemes = ("https", "http") if allow_http else ("https",)
    endpoints: list[Endpoint] = []
    keys: list[str] = []
    attempts: list[Attempt] = []
    want_endpoints, want_keys = find_endpoints, find_keys
    for prefix in _prefixes(str(app.name)):
        if not (want_endpoints or want_keys):
            break
        page = await _page(http, prefix, app, schemes=schemes, port=port, attempts=attempts)
        if page is None:
            continue
        if want_endpoints and page.endpoints:
            endpoints, want_endpoints = page.endpoints, False
        if want_keys and page.keys:
            keys, want_keys = page.keys, False
    return Discovery(endpoints, keys, attempts)


def discovery_error(app: AppString, found: Discovery) -> DiscoveryError:
    """The one-line error for a :func:`discover` that found no endpoint: what was tried."""
    tried = ", ".join(f"{a.url} ({a.outcome})" for a in found.attempts)
    return DiscoveryError(
        f"cannot discover {app}",
        f"no usable ac-discovery meta tags at {tried}" if tried else "nothing to try",
        next(
            (a.hint for a in found.attempts if a.hint),
            "check the name, or fetch the image by URL or from a file",
        ),
    )
