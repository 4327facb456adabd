"""``jetpack version``, ``init`` and ``info``: about this host's Jetpack."""

from __future__ import annotations

import json
import sys

import click

from jetpack import APPC_SPEC_VERSION, __version__
from jetpack.cli.options import CliState, format_option, human_size, pass_state


@click.command()
def version() -> None:
    """Print the versions of Jetpack, the appc spec and Python."""
    click.echo(f"jetpack {__version__}")
    click.echo(f"appc spec {APPC_SPEC_VERSION}")
    click.echo(f"python {sys.version.split()[0]}")


@click.command()
@pass_state
def init(state: CliState) -> None:
    """Create the data directory, the image index and the backend's datasets (idempotent)."""
    from jetpack.store import open_store

    with open_store(state.config) as store:
        store.backend.init()
        click.echo(f"initialised {store.data_dir} (backend {store.backend.name})")


@click.command()
@format_option(("text", "json"))
@pass_state
def info(state: CliState, output_format: str) -> None:
    """Show the version, data directory, storage backend, images, store size and pods."""
    from collections import Counter

    from jetpack.runtime.pods import Pods
    from jetpack.store import open_store

    with open_store(state.config, create=False) as store:
        summary = store.summary()
    states = Counter(pod.status().state for pod in Pods(state.config.data_dir / "pods").all())
    mds = _metadata_service(state)
    facts = {
        "version": __version__,
        "appc-spec": APPC_SPEC_VERSION,
        "data-dir": str(state.config.data_dir),
        "config-file": str(state.config.config_file) if state.config.config_file else None,
        "backend": summary.backend,
        "images": summary.images,
        "trees": summary.trees,
        "store-size": summary.size,
        "pods": dict(sorted(states.items())),
        "metadata": mds,
    }
    if output_format == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        shown = human_size(value) if key == "store-size" and isinstance(value, int) else value
        if key == "metadata":
            shown = (
                f"running (pid {value['pid']}) on http://{value['listen']}, {value['pods']} pods"
                if isinstance(value, dict)
                else "not running"
            )
        elif isinstance(value, dict):
            shown = ", ".join(f"{n} {state}" for state, n in value.items()) or "none"
        click.echo(f"{key + ':':13} {shown if shown is not None else '-'}")


def _metadata_service(state: CliState) -> dict[str, object] | None:
    """Where the metadata service runs and how many pods it serves; None if it does not."""
    from jetpack.errors import MetadataError
    from jetpack.metadata.client import MetadataClient
    from jetpack.metadata.paths import MetadataPaths

    try:
        current = MetadataClient(MetadataPaths.for_data_dir(state.config.data_dir)).status()
    except MetadataError:
        return None
    if current is None:
        return None
    return {key: current[key] for key in ("pid", "listen", "pods")}
