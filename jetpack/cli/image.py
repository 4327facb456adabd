"""``jetpack image``: list, inspect, remove, export, extract, verify and collect stored images.

IMAGE is an image ID, an ID prefix (``sha512-`` and at least 2 hex digits), or an app
string ``name[:version][,label=value...]`` (os/arch default to the host's).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jetpack.cli.options import (
    CliState,
    Duration,
    format_option,
    human_age,
    human_size,
    pass_state,
)
from jetpack.errors import JetpackError

if TYPE_CHECKING:
    from jetpack.store.store import ImageRecord


@click.group()
def image() -> None:
    """Manage the images in the local store."""


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def _row(record: ImageRecord) -> dict[str, Any]:
    labels = dict(record.labels)
    return {
        "id": record.id,
        "name": record.name,
        "version": labels.get("version"),
        "os": labels.get("os"),
        "arch": labels.get("arch"),
        "labels": labels,
        "compressed_size": record.compressed_size,
        "uncompressed_size": record.uncompressed_size,
        "imported_at": _iso(record.imported_at),
        "last_used_at": _iso(record.last_used_at),
        "source": record.source,
        "latest": record.latest,
    }


@image.command("list")
@format_option(("table", "json"))
@click.option("--full", is_flag=True, help="Full image IDs and absolute times.")
@click.option("--no-legend", is_flag=True, help="No header line.")
@pass_state
def list_images(state: CliState, output_format: str, full: bool, no_legend: bool) -> None:
    """List the stored images."""
    from jetpack.store import open_store

    with open_store(state.config, create=False) as store:
        records = store.images()
    if output_format == "json":
        click.echo(json.dumps([_row(r) for r in records], indent=2))
        return
    now = time.time()
    table = [["ID", "NAME", "VERSION", "OS/ARCH", "SIZE", "IMPORTED", "LAST USED"]]
    for r in records:
        labels = dict(r.labels)
        table.append(
            [
                r.id if full else r.short_id,
                r.name,
                labels.get("version", "-"),
                f"{labels.get('os', '-')}/{labels.get('arch', '-')}",
                human_size(r.compressed_size + r.uncompressed_size),
                _iso(r.imported_at) if full else human_age(now - r.imported_at),
                _iso(r.last_used_at) if full else human_age(now - r.last_used_at),
            ]
        )
    if no_legend:
        table = table[1:]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))] if table else []
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@image.command("cat-manifest")
@click.option("--pretty-print", is_flag=True, help="Indent the JSON.")
@click.argument("ref", metavar="IMAGE")
@pass_state
def cat_manifest(state: CliState, ref: str, pretty_print: bool) -> None:
    """Print the manifest of a stored image."""
    from jetpack.store import open_store

    with open_store(state.config, create=False) as store:
        record = store.resolve(ref)
    out = record.manifest.dumps(pretty=True) if pretty_print else record.manifest_bytes
    sys.stdout.buffer.write(out.rstrip(b"\n") + b"\n")


image.add_command(cat_manifest, "show")


@image.command("rm")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@pass_state
def remove(state: CliState, refs: tuple[str, ...]) -> None:
    """Remove images, their blobs and the trees rendered from them."""
    from jetpack.store import open_store

    failed = 0
    with open_store(state.config, create=False) as store:
        ids: list[str] = []
        for ref in refs:  # all resolved first: two names of one image remove it once
            try:
                ident = store.resolve(ref).id
            except JetpackError as err:
                failed += 1
                click.echo(f"jetpack: {err}", err=True)
            else:
                if ident not in ids:
                    ids.append(ident)
        for ident in ids:
            try:
                store.remove(ident)
            except JetpackError as err:
                failed += 1
                click.echo(f"jetpack: {err}", err=True)
            else:
                click.echo(f"removed {ident}")
    if failed:
        raise click.exceptions.Exit(1)


@image.command("export")
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
@click.argument("ref", metavar="IMAGE")
@click.argument("out", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def export(state: CliState, ref: str, out: Path, overwrite: bool) -> None:
    """Write a stored image to FILE, byte for byte as it was imported (same ID)."""
    from jetpack.store import open_store

    with open_store(state.config, create=False) as store:
        record = store.resolve(ref)
        store.export(record.id, out, overwrite=overwrite)
    click.echo(record.id)


def _extract_command(render: bool) -> click.Command:
    verb = "render" if render else "extract"

    @click.option("--rootfs-only", is_flag=True, help="Write only the rootfs into DIR.")
    @click.option("--overwrite", is_flag=True, help="Replace DIR if it exists.")
    @click.argument("ref", metavar="IMAGE")
    @click.argument("dest", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
    @pass_state
    def command(state: CliState, ref: str, dest: Path, rootfs_only: bool, overwrite: bool) -> None:
        from jetpack.store import open_store

        with open_store(state.config, create=False) as store:
            record = store.resolve(ref)
            store.copy_out(
                record.id, dest, rendered=render, rootfs_only=rootfs_only, overwrite=overwrite
            )
        click.echo(str(dest))

    command.__doc__ = (
        "Write the image rendered with its dependencies (and pathWhitelist) into DIR."
        if render
        else "Write the image's own files, without its dependencies, into DIR."
    )
    return click.command(verb)(command)


image.add_command(_extract_command(render=False))
image.add_command(_extract_command(render=True))


@image.command()
@click.argument("refs", metavar="[IMAGE...]", nargs=-1)
@pass_state
def verify(state: CliState, refs: tuple[str, ...]) -> None:
    """Re-hash stored blobs and check rendered trees; exit 1 on any damage."""
    from jetpack.store import open_store

    with open_store(state.config, create=False) as store:
        ids = [store.resolve(ref).id for ref in refs]
        problems = store.verify(ids)
        count = len(ids) if ids else store.summary().images
    for problem in problems:
        click.echo(f"jetpack: {problem.subject}: {problem.problem}", err=True)
    if problems:
        raise click.exceptions.Exit(1)
    click.echo(f"verified {count} image{'s' if count != 1 else ''}: no damage found")


@image.command()
@click.option(
    "--grace-period",
    type=Duration(),
    default="24h",
    show_default=True,
    help="Keep images used more recently than this.",
)
@pass_state
def gc(state: CliState, grace_period: float) -> None:
    """Remove rendered trees no pod uses and images unused for the grace period."""
    from jetpack.runtime.pods import Pods, in_use
    from jetpack.store import open_store

    pods = Pods(state.config.data_dir / "pods")
    with open_store(state.config, create=False) as store:
        report = store.gc(grace_seconds=grace_period, in_use=lambda: in_use(pods))
    for key in report.trees:
        click.echo(f"removed tree {key}")
    for ident in report.images:
        click.echo(f"removed image {ident}")
    for path in report.swept:
        click.echo(f"removed leftover {path}")
    for kept in report.kept:
        click.echo(f"jetpack: kept {kept}", err=True)
    click.echo(f"{len(report.images)} images and {len(report.trees)} trees removed")
