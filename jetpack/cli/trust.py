"""``jetpack trust`` and ``jetpack untrust``: which keys may sign which images.

The trust store is ``jetpack.fetch.trust`` (rkt's layout under ``trust.local`` and
``trust.vendor``). This module gets keys (files, URLs, or ``ac-discovery-pubkeys`` found by
meta discovery), shows each key's fingerprint and user IDs, asks, and only then stores them.
Nothing is written until every key is fetched, read and, with ``--fingerprint``, matched.

``--insecure-options`` here: ``pubkey`` lets keys be fetched over plain http (rkt's
meaning); ``http`` lets meta discovery use plain http; ``tls`` skips TLS certificate checks
for both. Anything insecure prints a warning.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import click

from jetpack.cli.options import (
    CliState,
    format_option,
    insecure_options,
    pass_state,
    warn_insecure,
)
from jetpack.errors import DiscoveryError, FetchError, TrustError

if TYPE_CHECKING:
    from jetpack.fetch.http import HttpClient
    from jetpack.fetch.trust import KeyInfo, TrustedKey, TrustStore

_KEY_LIMIT = 1 << 20
_RELEVANT = frozenset({"http", "tls", "pubkey"})  # "image" means nothing to trust


@dataclass(frozen=True)
class _Candidate:
    """A key got from somewhere, read but not yet trusted."""

    source: str  # the file or URL, as given or discovered
    data: bytes
    info: KeyInfo
    verified_https: bool  # fetched over https with the certificate checked


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _read_file(ref: str) -> bytes:
    path = Path(unquote(urlsplit(ref).path)) if ref.startswith("file://") else Path(ref)
    try:
        with open(path, "rb") as f:
            data = f.read(_KEY_LIMIT + 1)
    except OSError as err:
        raise TrustError(f"cannot read key {ref}", err.strerror or str(err)) from err
    if len(data) > _KEY_LIMIT:
        raise TrustError(f"cannot read key {ref}", "it is too large to be a public key")
    return data


async def _download(http: HttpClient, url: str, insecure: frozenset[str]) -> bytes:
    if urlsplit(url).scheme == "http" and "pubkey" not in insecure:
        raise TrustError(
            f"cannot fetch key {url}",
            "keys are not fetched over plain http",
            "use an https URL, or pass --insecure-options=pubkey to allow it",
        )
    got = await http.fetch(url, limit=_KEY_LIMIT)
    if got.status != 200:
        raise FetchError(f"cannot fetch key {url}", f"the server answered HTTP {got.status}")
    return got.body


async def _discover_keys(state: CliState, prefix: str, insecure: frozenset[str]) -> list[str]:
    from jetpack.discovery import parse_app_string
    from jetpack.discovery.meta import discover
    from jetpack.fetch.http import HttpClient, Transport

    app = parse_app_string(prefix)
    config = state.config.fetch
    transport = Transport.from_config(
        config, allow_http="http" in insecure, verify_tls="tls" not in insecure
    )
    async with HttpClient(transport) as http:
        found = await discover(
            app,
            http,
            port=config.discovery_port,
            allow_http="http" in insecure,
            find_endpoints=False,
        )
    if not found.keys:
        tried = ", ".join(f"{a.url} ({a.outcome})" for a in found.attempts) or "nothing to try"
        raise DiscoveryError(
            f"cannot discover keys for {prefix}",
            f"no ac-discovery-pubkeys meta tags at {tried}",
            f"give the key itself: jetpack trust --prefix {prefix} KEY-FILE-OR-URL",
        )
    return found.keys


async def _get_keys(
    state: CliState, refs: list[str], insecure: frozenset[str]
) -> list[tuple[str, bytes, bool]]:
    from jetpack.fetch.http import HttpClient, Transport

    transport = Transport.from_config(
        state.config.fetch, allow_http="pubkey" in insecure, verify_tls="tls" not in insecure
    )
    got: list[tuple[str, bytes, bool]] = []
    async with HttpClient(transport) as http:
        for ref in refs:
            scheme = urlsplit(ref).scheme
            if scheme in ("http", "https"):
                data = await _download(http, ref, insecure)
                got.append((ref, data, scheme == "https" and transport.verify_tls))
            else:
                got.append((ref, _read_file(ref), False))
    return got


def _show(candidate: _Candidate, prefix: str | None) -> None:
    info = candidate.info
    click.echo(f"Prefix: {prefix or '(root: every image)'}", err=True)
    click.echo(f"Key: {candidate.source}", err=True)
    click.echo(f"GPG key fingerprint is: {info.spaced_fingerprint}", err=True)
    click.echo(f"    {info.algorithm}, created {info.created:%Y-%m-%d}", err=True)
    for uid in info.uids:
        click.echo(f"    {uid}", err=True)


def _check_pins(candidates: list[_Candidate], pinned: set[str]) -> None:
    found = {c.info.fingerprint for c in candidates}
    for c in candidates:
        if c.info.fingerprint not in pinned:
            raise TrustError(
                f"refusing key {c.source}",
                f"its fingerprint is {c.info.fingerprint}, not {' or '.join(sorted(pinned))}",
                "check where the key comes from; nothing was trusted",
            )
    missing = pinned - found
    if missing:
        raise TrustError(
            f"no key with fingerprint {', '.join(sorted(missing))}",
            f"the keys given have {', '.join(sorted(found))}",
            "nothing was trusted",
        )


def _list(store: TrustStore, output_format: str, no_legend: bool) -> None:
    keys: list[TrustedKey] = store.list()
    if output_format == "json":
        rows: list[dict[str, Any]] = [
            {
                "prefix": k.prefix,
                "fingerprint": k.fingerprint,
                "uids": list(k.uids),
                "source": k.source,
                "path": str(k.path),
            }
            for k in keys
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = [["PREFIX", "FINGERPRINT", "USER ID"]]
    table += [[k.prefix or "*", k.fingerprint, ", ".join(k.uids)] for k in keys]
    if no_legend:
        table = table[1:]
    if not table:
        return
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.command()
@click.option(
    "--prefix",
    metavar="PREFIX",
    help="Trust the keys for images named PREFIX or below it (whole path components).",
)
@click.option("--root", is_flag=True, help="Trust the keys for every image (no discovery).")
@click.option("--skip-fingerprint-review", is_flag=True, help="Trust the keys without asking.")
@click.option(
    "--fingerprint",
    "fingerprints",
    multiple=True,
    metavar="FP",
    help="Trust only keys with this fingerprint, without asking (repeatable).",
)
@click.option(
    "--trust-keys-from-https",
    is_flag=True,
    help="Trust keys fetched over https with a verified certificate without asking.",
)
@click.option(
    "--insecure-options",
    "insecure_flags",
    default="none",
    metavar="none,http,tls,pubkey,all",
    help="Checks to skip: pubkey = keys over plain http, http = discovery over plain http, "
    "tls = no certificate checks.",
)
@format_option(("table", "json"))
@click.option("--no-legend", is_flag=True, help="No header line when listing.")
@click.argument("refs", metavar="[KEY-FILE-OR-URL...]", nargs=-1)
@pass_state
def trust(
    state: CliState,
    prefix: str | None,
    root: bool,
    skip_fingerprint_review: bool,
    fingerprints: tuple[str, ...],
    trust_keys_from_https: bool,
    insecure_flags: str,
    output_format: str,
    no_legend: bool,
    refs: tuple[str, ...],
) -> None:
    """Trust keys to sign images, or (with no arguments) list the trusted keys.

    \b
    jetpack trust --prefix example.com/app              discover the keys of example.com/app
    jetpack trust --prefix example.com/app KEY...       trust KEY (file or URL) for it
    jetpack trust --root KEY...                         trust KEY for every image
    jetpack trust                                       list: PREFIX, FINGERPRINT, USER ID

    Each key's fingerprint and user IDs are shown and you are asked, unless
    --skip-fingerprint-review is given or the key matches --fingerprint.
    """
    from jetpack.fetch.trust import TrustStore, check_prefix, check_usable, normalize_fingerprint

    store = TrustStore.from_config(state.config.trust)
    if prefix is None and not root and not refs and not fingerprints:
        _list(store, output_format, no_legend)
        return
    if prefix is not None and root:
        raise click.UsageError("give --prefix or --root, not both")
    if prefix is None and not root:
        raise click.UsageError(
            "say what the keys are trusted for: --prefix PREFIX (images named PREFIX or "
            "below) or --root (every image)"
        )
    if root and not refs:
        raise click.UsageError("--root needs KEY-FILE-OR-URL (root keys are never discovered)")
    prefix = check_prefix(prefix)
    insecure = insecure_options(insecure_flags) & _RELEVANT
    warn_insecure(insecure)
    pinned = {normalize_fingerprint(f) for f in fingerprints}

    async def gather() -> list[tuple[str, bytes, bool]]:
        sources = list(refs)
        if not sources:
            assert prefix is not None
            sources = await _discover_keys(state, prefix, insecure)
        return await _get_keys(state, sources, insecure)

    candidates = [
        _Candidate(source, data, store.inspect(data, f"key {source}"), https)
        for source, data, https in asyncio.run(gather())
    ]
    for c in candidates:
        check_usable(c.info, f"key {c.source}")
    if pinned:
        _check_pins(candidates, pinned)
    review = [
        not (skip_fingerprint_review or pinned or (trust_keys_from_https and c.verified_https))
        for c in candidates
    ]
    if any(review) and not _stdin_is_tty():
        first = candidates[review.index(True)]
        fp = first.info.fingerprint
        raise TrustError(
            f"cannot ask whether to trust key {first.source} ({fp})",
            "standard input is not a terminal",
            f"pass --fingerprint {fp} if that is the key you expect, or --skip-fingerprint-review",
        )
    added = 0
    for c, ask in zip(candidates, review, strict=True):
        _show(c, prefix)
        if ask and not click.confirm(
            "Are you sure you want to trust this key?", default=False, err=True
        ):
            click.echo(f"Not trusting {c.source}", err=True)
            continue
        key = store.add(c.data, prefix, f"key {c.source}")
        where = f"prefix {prefix}" if prefix else "every image (root)"
        click.echo(f"Added key {key.fingerprint} for {where} at {key.path}", err=True)
        added += 1
    if not added:
        raise TrustError("no key was trusted", "every key was declined")


@click.command()
@click.argument("fingerprints", metavar="FINGERPRINT...", nargs=-1, required=True)
@pass_state
def untrust(state: CliState, fingerprints: tuple[str, ...]) -> None:
    """Stop trusting keys: delete local copies, and mask vendor keys with an empty file."""
    from jetpack.fetch.trust import TrustStore, normalize_fingerprint

    store = TrustStore.from_config(state.config.trust)
    wanted = [normalize_fingerprint(f) for f in fingerprints]
    failed = 0
    for fp in wanted:
        try:
            paths = store.remove(fp)
        except TrustError as err:
            failed += 1
            click.echo(f"jetpack: {err}", err=True)
            continue
        for path in paths:
            verb = "masked" if path.exists() else "removed"
            click.echo(f"{verb} {path}")
    if failed:
        raise click.exceptions.Exit(1)
