"""``jetpack aci``: build, validate, inspect and patch image archives without a store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from jetpack.cli.options import CliState, compression_option, overwrite_option, pass_state
from jetpack.errors import ACIError, ConfigError, JetpackError, ManifestError

if TYPE_CHECKING:
    from jetpack.aci import ACIInfo, ExtractLimits
    from jetpack.schema import ImageManifest, PodManifest
    from jetpack.schema.patch import ManifestPatch

# The ustar magic sits at offset 257, so this many bytes tell every supported kind apart.
_SNIFF = 512


def _describe(manifest: ImageManifest) -> str:
    version = manifest.label("version")
    return f"{manifest.name}:{version}" if version else str(manifest.name)


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below, after the error mapping
    except IsADirectoryError:
        raise ACIError(
            f"cannot read {path}", "it is a directory", "give the path of an .aci file"
        ) from None
    except OSError as err:
        raise ACIError(f"cannot read {path}", err.strerror or str(err)) from err
    with f:
        yield f


def _limits(state: CliState) -> ExtractLimits:
    from jetpack.aci import ExtractLimits

    return ExtractLimits.from_config(state.config.aci)


def _read_aci(state: CliState, path: Path) -> ACIInfo:
    from jetpack.aci import read_aci

    with _open(path) as f:
        try:
            return read_aci(f, limits=_limits(state))
        except ACIError as err:
            raise _about(path, err) from err


def _about(path: Path, err: JetpackError) -> JetpackError:
    """``err`` with the file name in front, unless it already names it."""
    text = str(err)
    if str(path) in text or isinstance(err, ConfigError):
        return err
    return ACIError(str(path), text)


@click.group()
def aci() -> None:
    """Build, validate, inspect and patch ACI image archives."""


@aci.command()
@overwrite_option
@compression_option("gzip", "Compression of the archive.")
@click.option("--owner-root", is_flag=True, help="Record every file as owned by root:root.")
@click.argument("layout", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def build(layout: Path, output: Path, overwrite: bool, compression: str, owner_root: bool) -> None:
    """Build an ACI from an image layout (LAYOUT/manifest and LAYOUT/rootfs/).

    Prints the new image's ID.
    """
    from jetpack.aci import Compression, build_aci

    info = build_aci(
        layout,
        output,
        compression=Compression(compression),
        owner_root=owner_root,
        overwrite=overwrite,
    )
    click.echo(info.image_id)


def _validate_one(state: CliState, path: Path, kind: str) -> str:
    """Validate one file; return the description of what it is, or raise."""
    from jetpack.aci import detect_compression, validate_layout
    from jetpack.schema.types import short_id

    if kind == "layout" or (kind == "auto" and path.is_dir()):
        manifest = validate_layout(path)
        return f"valid image layout ({_describe(manifest)})"
    with _open(path) as f:
        head = f.read(_SNIFF)
    if kind == "auto":
        if not head:
            raise ACIError(str(path), "empty file", "give an ACI, an image layout or a manifest")
        kind = "manifest" if head.lstrip()[:1] == b"{" else "aci"
    if kind == "aci":
        detect_compression(head)
        info = _read_aci(state, path)
        return f"valid ACI {short_id(info.image_id)} ({_describe(info.manifest)})"
    return _validate_manifest(path)


def _validate_manifest(path: Path) -> str:
    from jetpack.schema import ImageManifest, parse_manifest

    with _open(path) as f:
        data = f.read()
    parsed: ImageManifest | PodManifest = parse_manifest(data)
    if isinstance(parsed, ImageManifest):
        return f"valid image manifest ({_describe(parsed)})"
    return f"valid pod manifest ({len(parsed.apps)} app{'s' if len(parsed.apps) != 1 else ''})"


@aci.command()
@click.option(
    "--type",
    "kind",
    type=click.Choice(["auto", "aci", "layout", "manifest"]),
    default="auto",
    show_default=True,
    help="What the files are; auto detects ACIs (by magic bytes), layouts and manifests.",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_state
def validate(state: CliState, files: tuple[Path, ...], kind: str) -> None:
    """Check ACIs, image layouts, image manifests and pod manifests against appc 0.8.11.

    Prints one line per file; exits 1 if any is invalid.
    """
    failed = 0
    for path in files:
        try:
            what = _validate_one(state, path, kind)
        except ManifestError as err:
            failed += 1
            click.echo(f"jetpack: {path}: invalid: {err}", err=True)
        except JetpackError as err:
            failed += 1
            click.echo(f"jetpack: {_about(path, err)}", err=True)
        else:
            click.echo(f"{path}: {what}")
    if failed:
        raise click.exceptions.Exit(1)


@aci.command("cat-manifest")
@click.option("--pretty-print", is_flag=True, help="Indent the JSON.")
@click.argument("file", type=click.Path(path_type=Path))
@pass_state
def cat_manifest(state: CliState, file: Path, pretty_print: bool) -> None:
    """Print the manifest of an ACI (as stored, or re-indented with --pretty-print)."""
    info = _read_aci(state, file)
    out = info.manifest.dumps(pretty=True) if pretty_print else info.manifest_bytes
    sys.stdout.buffer.write(out.rstrip(b"\n") + b"\n")


@aci.command("id")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def image_id_cmd(files: tuple[Path, ...]) -> None:
    """Print the image ID (sha512 of the uncompressed tar) of each ACI."""
    from jetpack.aci import image_id

    for path in files:
        with _open(path) as f:
            try:
                ident = image_id(f)
            except ACIError as err:
                raise _about(path, err) from err
        click.echo(ident if len(files) == 1 else f"{ident}  {path}")


@aci.command("patch-manifest")
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Replace the whole manifest with this file (alone: no other patch option).",
)
@click.option("--name", help="New image name.")
@click.option("--exec", "exec_", metavar="CMDLINE", help='New command line, e.g. "/app --debug".')
@click.option("--user", help="New user (name, number or absolute path).")
@click.option("--group", help="New group (name, number or absolute path).")
@click.option("--supplementary-groups", metavar="GID,...", help="New supplementary GIDs.")
@click.option("--capability", metavar="CAP,...", help="Set os/linux/capabilities-retain-set.")
@click.option(
    "--revoke-capability", metavar="CAP,...", help="Set os/linux/capabilities-remove-set."
)
@click.option(
    "--mounts", metavar="NAME,path=P[,readOnly=B][:...]", help="Replace the mount points."
)
@click.option("--ports", metavar="NAME,protocol=P,port=N[:...]", help="Replace the ports.")
@click.option("--isolators", metavar="NAME,k=v[:...]", help="Replace the isolators.")
@click.option("--seccomp-mode", metavar="retain|remove[,errno=E]", help="Add a seccomp isolator.")
@click.option("--seccomp-set", metavar="SYSCALL,...", help="Syscalls of the seccomp isolator.")
@click.option("--replace", is_flag=True, help="Patch INPUT in place (then give no OUTPUT).")
@overwrite_option
@compression_option(None, "Compression of OUTPUT (default: the same as INPUT).")
@click.argument("input_aci", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output", required=False, type=click.Path(dir_okay=False, path_type=Path))
def patch_manifest(
    input_aci: Path,
    output: Path | None,
    manifest_file: Path | None,
    name: str | None,
    exec_: str | None,
    user: str | None,
    group: str | None,
    supplementary_groups: str | None,
    capability: str | None,
    revoke_capability: str | None,
    mounts: str | None,
    ports: str | None,
    isolators: str | None,
    seccomp_mode: str | None,
    seccomp_set: str | None,
    replace: bool,
    overwrite: bool,
    compression: str | None,
) -> None:
    """Copy an ACI, changing its manifest (as actool patch-manifest does).

    Prints the new image's ID.
    """
    from jetpack.aci import Compression, patch_aci

    if replace == (output is not None):
        raise click.UsageError("give either OUTPUT or --replace")
    patch = _build_patch(
        name,
        exec_,
        user,
        group,
        supplementary_groups,
        capability,
        revoke_capability,
        mounts,
        ports,
        isolators,
        seccomp_mode,
        seccomp_set,
    )
    if manifest_file is not None:
        if patch is not None:
            raise click.UsageError(
                "--manifest replaces the whole manifest: give no other patch option"
            )
        replacement = _load_image_manifest(manifest_file)
        info = patch_aci(
            input_aci,
            output or input_aci,
            lambda _old: replacement,
            compression=Compression(compression) if compression else None,
            overwrite=overwrite or replace,
        )
    else:
        if patch is None:
            raise click.UsageError("nothing to patch: give --manifest or at least one patch option")
        info = patch_aci(
            input_aci,
            output or input_aci,
            patch,
            compression=Compression(compression) if compression else None,
            overwrite=overwrite or replace,
        )
    click.echo(info.image_id)


def _load_image_manifest(path: Path) -> ImageManifest:
    from jetpack.schema import parse_image_manifest

    with _open(path) as f:
        data = f.read()
    try:
        return parse_image_manifest(data)
    except ManifestError as err:
        raise ManifestError(err.path, err.rule, f"fix {path}") from err


def _build_patch(
    name: str | None,
    exec_: str | None,
    user: str | None,
    group: str | None,
    gids: str | None,
    retain: str | None,
    remove: str | None,
    mounts: str | None,
    ports: str | None,
    isolators: str | None,
    seccomp_mode: str | None,
    seccomp_set: str | None,
) -> ManifestPatch | None:
    """The patch the options describe, or None when no patch option was given."""
    from jetpack.schema.patch import (
        ManifestPatch,
        parse_capabilities_option,
        parse_exec_option,
        parse_gids_option,
        parse_isolators_option,
        parse_mounts_option,
        parse_ports_option,
        parse_seccomp_mode_option,
        parse_seccomp_set_option,
    )

    given = [
        name,
        exec_,
        user,
        group,
        gids,
        retain,
        remove,
        mounts,
        ports,
        isolators,
        seccomp_mode,
        seccomp_set,
    ]
    if all(v is None for v in given):
        return None
    if (seccomp_mode is None) != (seccomp_set is None):
        raise click.UsageError("--seccomp-mode and --seccomp-set go together")
    mode, errno = parse_seccomp_mode_option(seccomp_mode) if seccomp_mode else (None, None)
    return ManifestPatch(
        name=name,
        exec=parse_exec_option(exec_) if exec_ is not None else None,
        user=user,
        group=group,
        supplementary_gids=parse_gids_option(gids) if gids is not None else None,
        capabilities_retain=parse_capabilities_option(retain) if retain is not None else None,
        capabilities_remove=parse_capabilities_option(remove) if remove is not None else None,
        mounts=parse_mounts_option(mounts) if mounts is not None else None,
        ports=parse_ports_option(ports) if ports is not None else None,
        isolators=parse_isolators_option(isolators) if isolators is not None else None,
        seccomp_mode=mode,
        seccomp_errno=errno,
        seccomp_set=parse_seccomp_set_option(seccomp_set) if seccomp_set is not None else None,
    )
