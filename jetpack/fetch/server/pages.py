"""The human-facing index page and the JSON listing, rendered from a catalog. Pure."""

from __future__ import annotations

import datetime
import html
from typing import Any

from jetpack.fetch.server.catalog import Catalog, Entry
from jetpack.schema.types import short_id

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;
color:#1b1f24;background:#fff}
h1{font-size:1.4rem;margin:0 0 .2rem}p.sub{color:#57606a;margin:0 0 1.5rem}
h2{font-size:1.1rem;margin:1.6rem 0 .4rem;font-family:ui-monospace,monospace}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;
border-bottom:1px solid #d8dee4;vertical-align:top}th{font-weight:600;color:#57606a}
td.num{text-align:right;white-space:nowrap}code{font-family:ui-monospace,monospace;
font-size:.85em}.latest{background:#ddf4ff;border-radius:.6rem;padding:0 .4rem;
font-size:.8em;margin-left:.3rem}a{color:#0969da}
"""


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _signer(e: Entry) -> str:
    if not e.signer:
        return "—"
    who = html.escape(e.signer_uid or "")
    fp = html.escape(e.signer[-16:].upper())
    server = " (this server)" if e.signed_by_server else ""
    return f"{who}{server}<br><code>{fp}</code>" if who else f"<code>{fp}</code>{server}"


def _latest_ids(catalog: Catalog) -> set[tuple[str, str | None, str | None, str]]:
    found: set[tuple[str, str | None, str | None, str]] = set()
    for e in catalog.entries:
        best = catalog.find(e.name, "latest", e.os or "any", e.arch or "any")
        if best is not None:
            found.add((best.name, best.os, best.arch, best.id))
    return found


def index_html(catalog: Catalog, title: str) -> bytes:
    """``/``: each name, then a row per version and os/arch, newest first."""
    latest = _latest_ids(catalog)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{len(catalog.entries)} image(s) · discovery template '
        f"<code>{esc(catalog.template())}</code> · "
        '<a href="/_jetpack/v1/images">JSON</a></p>',
    ]
    if not catalog.entries:
        parts.append("<p>No images yet. Push one with <code>jetpack push IMAGE</code>.</p>")
    for name in catalog.names():
        rows = sorted(
            (e for e in catalog.entries if e.name == name),
            key=lambda e: catalog_order(e),
            reverse=True,
        )
        parts.append(f'<h2 id="{esc(name)}">{esc(name)}</h2>')
        parts.append(
            "<table><thead><tr><th>Version</th><th>OS/arch</th><th>Size</th><th>Signed by</th>"
            "<th>Pushed</th><th>Image ID</th></tr></thead><tbody>"
        )
        for e in rows:
            tag = (
                '<span class="latest">latest</span>'
                if (e.name, e.os, e.arch, e.id) in latest
                else ""
            )
            url = esc(e.url_path())
            parts.append(
                f"<tr><td>{esc(e.version or '—')}{tag}</td>"
                f'<td><a href="{url}">{esc(e.os or "any")}/{esc(e.arch or "any")}</a></td>'
                f'<td class="num">{human_size(e.size)}</td><td>{_signer(e)}</td>'
                f"<td>{_when(e.pushed_at)}</td>"
                f'<td><code title="{esc(e.id)}">{esc(short_id(e.id))}</code></td></tr>'
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode()


def catalog_order(e: Entry) -> tuple[object, ...]:
    from jetpack.fetch.server.catalog import version_key

    return (version_key(e.version), e.platform)


def index_json(catalog: Catalog) -> dict[str, Any]:
    """``/_jetpack/v1/images``: the same as the page, for programs."""
    latest = _latest_ids(catalog)
    base = catalog.base_url
    return {
        "images": [
            {
                "name": e.name,
                "version": e.version,
                "os": e.os,
                "arch": e.arch,
                "id": e.id,
                "size": e.size,
                "etag": e.etag,
                "signer": e.signer,
                "signer_uid": e.signer_uid,
                "signed_by_server": e.signed_by_server,
                "pushed_at": datetime.datetime.fromtimestamp(e.pushed_at, datetime.UTC).isoformat(
                    timespec="seconds"
                ),
                "latest": (e.name, e.os, e.arch, e.id) in latest,
                "url": base + e.url_path(),
                "signature_url": base + e.url_path() + ".asc",
            }
            for e in catalog.entries
        ]
    }
