"""``jetpack discover``: show where meta discovery finds an image, as ``actool discover`` does."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from jetpack.cli.options import CliState, pass_state, warn_insecure
from jetpack.cli.options import insecure_options as parse_insecure

if TYPE_CHECKING:
    from jetpack.discovery import AppString, Discovery
    from jetpack.fetch.http import Transport


async def _discover_all(
    apps: list[AppString], transport: Transport, port: int | None
) -> list[Discovery]:
    from jetpack.discovery import discover
    from jetpack.fetch.http import HttpClient

    async with HttpClient(transport) as http:
        return [await discover(app, http, port=port) for app in apps]


def _render_text(found: Discovery) -> None:
    # actool's format, line for line.
    for endpoint in found.endpoints:
        click.echo(f"ACI: {endpoint.aci}, ASC: {endpoint.asc}")
    if found.keys:
        click.echo("PublicKeys: " + ",".join(found.keys))


def _as_json(name: str, found: Discovery) -> dict[str, Any]:
    return {
        "name": name,
        "endpoints": [{"aci": e.aci, "asc": e.asc} for e in found.endpoints],
        "keys": found.keys,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one entry per NAME.")
@click.option(
    "--insecure-options",
    default="none",
    metavar="none,tls,http,all",
    help="Checks to skip: tls = certificates, http = also try plain http.",
)
@click.option(
    "--discovery-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Port of the discovery URLs (default: fetch.discovery-port, else 443/80).",
)
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@pass_state
def discover(
    state: CliState,
    names: tuple[str, ...],
    as_json: bool,
    insecure_options: str,
    discovery_port: int | None,
) -> None:
    """Print the ACI, signature and public key URLs meta discovery finds for each NAME.

    NAME is an app string, name[:version][,label=value...]; os and arch default to this
    host's. With --debug every discovery URL tried is shown on stderr.
    """
    import asyncio

    from jetpack.discovery import discovery_error, host_labels, parse_app_string
    from jetpack.fetch.http import Transport

    insecure = parse_insecure(insecure_options) & {"tls", "http"}
    apps = [parse_app_string(name).with_defaults(host_labels()) for name in names]
    warn_insecure(insecure)
    config = state.config.fetch
    transport = Transport.from_config(
        config, allow_http="http" in insecure, verify_tls="tls" not in insecure
    )
    port = discovery_port if discovery_port is not None else config.discovery_port
    results = asyncio.run(_discover_all(apps, transport, port))
    documents: list[dict[str, Any]] = []
    for name, app, found in zip(names, apps, results, strict=True):
        if state.debug:
            for attempt in found.attempts:
                click.echo(f"jetpack: discover {name}: {attempt.url}: {attempt.outcome}", err=True)
        if not found.endpoints:
            raise discovery_error(app, found)
        if as_json:
            documents.append(_as_json(name, found))
        else:
            _render_text(found)
    if as_json:
        click.echo(json.dumps(documents, indent=4))
