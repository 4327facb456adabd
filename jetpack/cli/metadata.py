"""``jetpack metadata-service`` (alias ``mds``): run the metadata service, or ask about it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from jetpack.cli.options import CliState, format_option, pass_state

if TYPE_CHECKING:
    from jetpack.metadata.paths import MetadataPaths

EXIT_NOT_RUNNING = 3  # as LSB init scripts' status: "program is not running"


@click.command("metadata-service")
@click.option(
    "--listen",
    metavar="ADDR:PORT",
    help="The HTTP address (default: [metadata] listen, 127.0.0.1:812).",
)
@click.option("--status", "show_status", is_flag=True, help="Say whether it runs; exit 3 if not.")
@click.option("--stop", is_flag=True, help="Stop the running service.")
@format_option(("text", "json"))
@pass_state
def metadata_service(
    state: CliState, listen: str | None, show_status: bool, stop: bool, output_format: str
) -> None:
    """Serve the appc metadata service to every pod of this data directory.

    \b
    jetpack run and prepare start it in the background when it is not running; run it
    in the foreground yourself (or from contrib/systemd) to keep it in your own hands.
    """
    from jetpack.metadata.client import MetadataClient
    from jetpack.metadata.paths import MetadataPaths

    paths = MetadataPaths.for_data_dir(state.config.data_dir)
    if show_status and stop:
        raise click.UsageError("give --status or --stop, not both")
    if show_status:
        current = MetadataClient(paths).status()
        _show(current, paths.root.parent, output_format)
        if current is None:
            sys.exit(EXIT_NOT_RUNNING)
        return
    if stop:
        pid = MetadataClient(paths).stop()
        click.echo("not running" if pid is None else f"stopped (pid {pid})")
        return
    chosen = listen or state.config.metadata.listen
    if listen is not None:
        from jetpack.config import parse_ip_listen

        try:
            parse_ip_listen(listen)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--listen") from err
    _serve(paths, chosen)


def _serve(paths: MetadataPaths, listen: str) -> None:
    from jetpack.metadata.paths import take_lock

    lock = take_lock(paths)  # first: a second service ends before it imports aiohttp
    import asyncio
    import logging

    from jetpack.metadata.service import bind_tcp, serve

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    # A malformed request is the client's 400, not an error of ours: aiohttp would log each
    # with a traceback (and the start of its URL, a token), so anyone able to connect could
    # fill the disk. Accept errors (descriptors running out) are kept off by the caps.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sock = bind_tcp(paths, listen, pods_registered=any(paths.pods.glob("*.json")))

    def announce(address: str) -> None:
        click.echo(f"jetpack metadata service on http://{address} for {paths.root.parent}")
        sys.stdout.flush()

    try:
        asyncio.run(serve(paths, sock, announce))
    finally:
        import os

        os.close(lock)


def _show(current: dict[str, object] | None, data_dir: object, output_format: str) -> None:
    if output_format == "json":
        facts: dict[str, object] = {"running": current is not None}
        if current is not None:
            facts.update(
                pid=current["pid"],
                listen=current["listen"],
                started=current["started"],
                pods=current["pods"],
                running_pods=current["running"],
            )
        click.echo(json.dumps(facts, indent=2))
        return
    if current is None:
        click.echo(f"metadata service: not running (for {data_dir})")
        return
    click.echo(
        f"metadata service: running (pid {current['pid']}) on http://{current['listen']}, "
        f"serving {current['pods']} pods ({current['running']} running), "
        f"since {current['started']}"
    )
