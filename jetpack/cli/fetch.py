"""``jetpack fetch``: bring images into the store."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from jetpack.cli.options import CliState, pass_state
from jetpack.errors import JetpackError, StoreError

INSECURE_OPTIONS = ("none", "image", "tls", "http", "pubkey", "all")


def _insecure(value: str) -> frozenset[str]:
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = chosen - set(INSECURE_OPTIONS)
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(sorted(unknown))} (choose from {', '.join(INSECURE_OPTIONS)})",
            param_hint="--insecure-options",
        )
    if "all" in chosen:
        chosen = set(INSECURE_OPTIONS) - {"none", "all"}
    chosen.discard("none")
    return frozenset(chosen)


def _local_path(ref: str) -> Path | None:
    """The file ``ref`` names (a path or a file:// URL), or None if it names no file."""
    if ref.startswith("file://"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"cannot fetch {ref}", "file:// URLs must name a local path")
        return Path(unquote(parts.path))
    if ref.startswith(("http://", "https://")):
        return None
    # A name (example.com/app:1.0) never ends in .aci; a missing file.aci should say so.
    path = Path(ref)
    if ref.endswith(".aci") or path.exists():
        return path
    return None


@click.command()
@click.option(
    "--insecure-options",
    default="none",
    metavar="none,image,tls,http,pubkey,all",
    help="Checks to skip; image = accept an image without a verified signature.",
)
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@pass_state
def fetch(state: CliState, refs: tuple[str, ...], insecure_options: str) -> None:
    """Import images into the store and print their IDs.

    IMAGE is a file path or a file:// URL of an ACI. (Fetching by name and from
    http(s) URLs, with signature checks, comes with discovery.)
    """
    from jetpack.store import open_store

    insecure = _insecure(insecure_options)
    with open_store(state.config) as store:
        for ref in refs:
            path = _local_path(ref)
            if path is None:
                raise StoreError(
                    f"cannot fetch {ref}",
                    "fetching by name or over http(s) is not implemented yet",
                    "give a local .aci file or file:// URL",
                )
            if "image" not in insecure:
                raise StoreError(
                    f"cannot fetch {ref}",
                    "signature verification is not implemented yet, so the image cannot be trusted",
                    "pass --insecure-options=image to import it without a signature check",
                )
            try:
                with open(path, "rb") as src:
                    result = store.import_aci(src, source=path.resolve().as_uri())
            except OSError as err:
                raise StoreError(f"cannot fetch {ref}", err.strerror or str(err)) from err
            except JetpackError as err:
                if ref in str(err) or str(path) in str(err):
                    raise
                raise StoreError(f"cannot fetch {ref}", str(err)) from err
            click.echo(result.image.id)
