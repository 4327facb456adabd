"""``jetpack fetch``: bring images into the store — by name, URL or file — verified."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jetpack.cli.options import (
    CliState,
    fetch_insecure_option,
    insecure_options,
    pass_state,
    pull_policy_option,
    warn_insecure,
)

if TYPE_CHECKING:
    from jetpack.fetch.fetcher import Fetcher, Progress, ProgressTask
    from jetpack.store.store import Store


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: int) -> None:
        self._progress.advance(self._id, n)

    def done(self) -> None:
        self._progress.remove_task(self._id)


class _RichProgress:
    """Bytes, rate and ETA per download, on stderr."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def start(self, label: str, total: int | None) -> ProgressTask:
        return _RichTask(self._progress, self._progress.add_task(label, total=total))


@contextmanager
def progress_display(quiet: bool) -> Iterator[Progress | None]:
    """A progress bar on a terminal; nothing when quiet or when stderr is not a TTY."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _RichProgress(bar)


def make_fetcher(
    state: CliState,
    store: Store,
    pull_policy: str,
    insecure_options_text: str,
    *,
    progress: Progress | None = None,
    discovery_port: int | None = None,
    trust_keys_from_https: bool = False,
    signature: Path | None = None,
) -> Fetcher:
    """A :class:`Fetcher` set up from the configuration and the fetch options of a command
    (``fetch``, ``run``, ``prepare``); the insecure options each print their warning."""
    from jetpack.fetch.fetcher import Fetcher, FetchOptions, PullPolicy
    from jetpack.fetch.transport import Transport
    from jetpack.fetch.trust import TrustStore

    insecure = insecure_options(insecure_options_text)
    warn_insecure(insecure)
    config = state.config
    options = FetchOptions(
        pull_policy=PullPolicy(pull_policy),
        verify_signatures="image" not in insecure,
        allow_http="http" in insecure,
        keys_over_http="pubkey" in insecure,
        discovery_port=discovery_port or config.fetch.discovery_port,
        trust_keys_from_https=trust_keys_from_https,
        signature=signature,
    )
    transport = Transport.from_config(
        config.fetch, allow_http="http" in insecure, verify_tls="tls" not in insecure
    )
    return Fetcher(
        store,
        TrustStore(config.trust.local, config.trust.vendor),
        transport,
        options,
        **({"progress": progress} if progress is not None else {}),
        warn=lambda text: click.echo(f"jetpack: warning: {text}", err=True),
    )


@click.command()
@pull_policy_option
@fetch_insecure_option
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding the detached signature of IMAGE (default: IMAGE.asc beside it).",
)
@click.option("--discovery-port", type=click.IntRange(1, 65535), help="Port for meta discovery.")
@click.option(
    "--trust-keys-from-https",
    is_flag=True,
    help="Trust the keys discovered over https for an image's name, without asking.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@pass_state
def fetch(
    state: CliState,
    refs: tuple[str, ...],
    pull_policy: str,
    insecure_options_text: str,
    signature: Path | None,
    discovery_port: int | None,
    trust_keys_from_https: bool,
    quiet: bool,
) -> None:
    """Fetch images into the store and print their IDs.

    IMAGE is a name (example.com/app:1.0, found by meta discovery), an https:// or http://
    URL of an ACI, or a file path or file:// URL. Signatures are checked against the keys
    trusted for the image's name (see jetpack trust).
    """
    import asyncio

    from jetpack.store import open_store

    if signature is not None and len(refs) != 1:
        raise click.UsageError("--signature goes with exactly one IMAGE")
    insecure_options(insecure_options_text)  # a bad value is a usage error before any work

    async def run_all() -> None:
        with open_store(state.config) as store, progress_display(quiet) as progress:
            fetcher = make_fetcher(
                state,
                store,
                pull_policy,
                insecure_options_text,
                progress=progress,
                discovery_port=discovery_port,
                trust_keys_from_https=trust_keys_from_https,
                signature=signature,
            )
            async with fetcher:
                for ref in refs:
                    click.echo((await fetcher.fetch(ref)).id)

    asyncio.run(run_all())
