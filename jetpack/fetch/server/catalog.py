"""What a server offers, in memory: images by name/version/os/arch, keys, discovery pages.

A :class:`Catalog` is immutable and built from a list of :class:`Entry` (read from the
repository's ``index.json`` or from the local store); a new one replaces it whole when the
index changes, so a request sees one consistent snapshot. Everything a hot request needs —
the entry for a URL, the best version for ``latest``, a discovery page — is a dictionary
look-up here: nothing is hashed, listed or parsed per request. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jetpack.errors import ManifestError
from jetpack.schema.types import SemVer

LATEST = "latest"
# A version must be one path component of the URL and of the repository on disk.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
_LOOSE = re.compile(r"v?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.-]+))?(?:\+.*)?")


def version_key(version: str | None) -> tuple[object, ...]:
    """A sort key: SemVer precedence (``1.10.0`` > ``1.9.0`` > ``1.9.0-rc.1``).

    Versions that are not SemVer but look like one (``1.2``, ``v2``, ``1.2.3.4``) are read
    as dotted numbers; anything else ranks below every number, in string order.
    """
    if version is None:
        return (-1,)
    numbers: tuple[int, ...]
    pre: str | None
    try:
        sv = SemVer(version)
        numbers, pre = (sv.major, sv.minor, sv.patch), sv.prerelease
    except ManifestError:
        match = _LOOSE.fullmatch(version)
        if match is None:
            return (0, version)
        numbers = tuple(int(n) for n in match.group(1).split("."))
        numbers += (0,) * (3 - len(numbers))
        pre = match.group(2)
    if pre is None:
        return (1, numbers, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (1, numbers, 0, parts)


def quote_etag(value: str) -> str:
    return f'"{value}"'


def etag_of(data: bytes) -> str:
    """A strong ETag for a small in-memory body."""
    return quote_etag("sha256-" + hashlib.sha256(data).hexdigest()[:32])


@dataclass(frozen=True)
class Entry:
    """One published image file and what is known about it.

    ``version``, ``os`` and ``arch`` are None only for store images without those labels
    (pushed images always have them). ``etag`` is precomputed: the digest of the file as
    stored (repository) or the image ID (store, whose blobs never change).
    """

    name: str
    version: str | None
    os: str | None
    arch: str | None
    id: str
    size: int
    etag: str
    aci: Path
    pushed_at: float
    asc: Path | None = None
    asc_etag: str | None = None
    signer: str | None = None  # fingerprint
    signer_uid: str | None = None
    signed_by_server: bool = False
    pushed_by: str | None = None
    compression: str = ""

    @property
    def platform(self) -> str:
        return f"{self.os or 'any'}-{self.arch or 'any'}"

    def url_path(self, version: str | None = None) -> str:
        """``/images/<name>/<version>/<os>-<arch>.aci`` (the discovery template's shape)."""
        return f"/images/{self.name}/{version or self.version or LATEST}/{self.platform}.aci"


@dataclass(frozen=True)
class Key:
    """A public key the server hands out: armored bytes and their ETag."""

    fingerprint: str
    armored: bytes
    uid: str = ""
    etag: str = ""


def _domain_and_path(name: str) -> tuple[str, str]:
    domain, _, path = name.partition("/")
    return domain, path


@dataclass
class Catalog:
    """An immutable snapshot (the page cache aside, filled on first use)."""

    entries: tuple[Entry, ...]
    keys: Mapping[str, Key]
    base_url: str
    generation: int = 0
    built_at: float = field(default_factory=time.time)
    _exact: dict[tuple[str, str, str | None, str | None], Entry] = field(init=False, repr=False)
    _latest: dict[tuple[str, str | None, str | None], Entry] = field(init=False, repr=False)
    _pages: dict[str, bytes | None] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._exact = {}
        self._latest = {}
        for e in self.entries:
            if e.version is not None:
                self._exact[(e.name, e.version, e.os, e.arch)] = e
            key = (e.name, e.os, e.arch)
            best = self._latest.get(key)
            if best is None or (version_key(e.version), e.pushed_at) > (
                version_key(best.version),
                best.pushed_at,
            ):
                self._latest[key] = e

    @classmethod
    def build(
        cls, entries: Iterable[Entry], keys: Mapping[str, Key], base_url: str, generation: int = 0
    ) -> Catalog:
        ordered = sorted(entries, key=lambda e: (e.name, version_key(e.version), e.platform))
        return cls(tuple(ordered), dict(keys), base_url.rstrip("/"), generation)

    def find(self, name: str, version: str, os: str | None, arch: str | None) -> Entry | None:
        """The entry a URL names; ``latest`` is the highest version for that os/arch.

        ``any`` in the URL stands for a missing os/arch label (store images only).
        """
        os_, arch_ = (None if os == "any" else os), (None if arch == "any" else arch)
        if version == LATEST:
            return self._latest.get((name, os_, arch_))
        return self._exact.get((name, version, os_, arch_))

    def names(self) -> list[str]:
        return sorted({e.name for e in self.entries})

    def template(self) -> str:
        return f"{self.base_url}/images/{{name}}/{{version}}/{{os}}-{{arch}}.{{ext}}"

    def discovery_page(self, path: str) -> bytes | None:
        """The ``ac-discovery`` page for a request path (the name minus its domain).

        Answered when some hosted name is that path or below it (``""``: every name); the
        tags' prefix is ``<domain>/<path>`` for each domain hosting such a name, so the
        page serves whatever host name the client used. None means 404.
        """
        if path in self._pages:
            return self._pages[path]
        matching = [
            e
            for e in self.entries
            if not path
            or _domain_and_path(e.name)[1] == path
            or _domain_and_path(e.name)[1].startswith(path + "/")
        ]
        page = self._render_page(path, matching) if matching else None
        if page is not None:  # misses are not cached: the cache stays bounded by the names
            self._pages[path] = page
        return page

    def _render_page(self, path: str, matching: list[Entry]) -> bytes:
        prefixes = sorted(
            {_domain_and_path(e.name)[0] + (f"/{path}" if path else "") for e in matching}
        )
        signers = sorted({e.signer for e in matching if e.signer and e.signer in self.keys})
        template = self.template()
        lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">']
        for prefix in prefixes:
            content = html.escape(f"{prefix} {template}")
            lines.append(f'<meta name="ac-discovery" content="{content}">')
            for fp in signers:
                url = html.escape(f"{prefix} {self.base_url}/keys/{fp}.asc")
                lines.append(f'<meta name="ac-discovery-pubkeys" content="{url}">')
        title = html.escape(prefixes[0] if len(prefixes) == 1 else path or "images")
        lines.append(f"<title>{title}</title></head>")
        lines.append(f'<body><p><a href="{html.escape(self.base_url)}/">{title}</a></p></body>')
        lines.append("</html>")
        return ("\n".join(lines) + "\n").encode()
