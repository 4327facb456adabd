"""``jetpack serve`` (an image server) and ``jetpack push`` (upload an image to one).

The server is :mod:`jetpack.fetch.server`; settings come from ``[serve]`` and ``[push]``
in the configuration, and the flags here override them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jetpack.cli.options import CliState, insecure_options, pass_state, warn_insecure
from jetpack.errors import ConfigError, FetchError

if TYPE_CHECKING:
    from jetpack.fetch.server.app import ServerDeps

ENV_PUSH_TOKEN = "JETPACK_PUSH_TOKEN"


@click.command()
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on [127.0.0.1:8443].")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository directory [<data-dir>/serve].",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM chain.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key.")
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Armored secret key (no passphrase) to sign unsigned uploads with.",
)
@click.option("--public-url", metavar="URL", help="Base URL for discovery templates.")
@click.option(
    "--from-store", is_flag=True, help="Share the local store's images (read-only, no push)."
)
@click.option(
    "--hash-password",
    is_flag=True,
    help="Read a password on stdin, print a password-hash for [[serve.users]], and exit.",
)
@pass_state
def serve(
    state: CliState,
    listen: str | None,
    root: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    signing_key: Path | None,
    public_url: str | None,
    from_store: bool,
    hash_password: bool,
) -> None:
    """Serve images to 'jetpack fetch' (meta discovery, signatures, keys) and take pushes.

    Logs one line per request on stdout. SIGTERM stops accepting connections, lets
    downloads in flight finish (serve.shutdown-timeout), and exits 0. Health check:
    GET /_jetpack/v1/health.
    """
    if hash_password:
        from jetpack.fetch.server.auth import hash_password as make_hash

        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise click.UsageError("give the password on standard input")
        click.echo(make_hash(password))
        return

    import asyncio

    from jetpack.config import parse_listen
    from jetpack.fetch.server.run import bind, tls_context
    from jetpack.fetch.server.run import serve as run_server

    config = state.config
    settings = config.serve
    try:
        host, port = parse_listen(listen or settings.listen)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--listen") from None
    cert, key = tls_cert or settings.tls_cert, tls_key or settings.tls_key
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    ssl_ctx = tls_context(cert, key) if cert is not None and key is not None else None
    if public_url is not None and not public_url.startswith(("https://", "http://")):
        raise click.BadParameter("not an http(s) URL", param_hint="--public-url")
    if ssl_ctx is None:
        click.echo(
            "jetpack: warning: no TLS (--tls-cert/--tls-key): clients need "
            "--insecure-options=http, and credentials cross the network in clear",
            err=True,
        )
    sock = bind(host, port)

    def build(url: str) -> ServerDeps:
        return _deps(state, url, root=root, signing_key=signing_key, from_store=from_store)

    def announce(deps: ServerDeps) -> None:
        what = "the store" if from_store else str(deps.repository.root)
        n = len(deps.catalog().entries)
        click.echo(f"jetpack: serving {what} ({n} images) at {deps.public_url}")
        sys.stdout.flush()

    asyncio.run(
        run_server(
            sock,
            build,
            ssl_context=ssl_ctx,
            public_url=(public_url or settings.public_url or "").rstrip("/") or None,
            shutdown_timeout=settings.shutdown_timeout,
            announce=announce,
        )
    )


def _deps(
    state: CliState, url: str, *, root: Path | None, signing_key: Path | None, from_store: bool
) -> ServerDeps:
    from jetpack.aci import ExtractLimits
    from jetpack.fetch.server.app import ServerDeps
    from jetpack.fetch.server.repository import RootRepository, StoreRepository
    from jetpack.fetch.server.signing import Signer
    from jetpack.fetch.trust import TrustStore

    config = state.config
    settings = config.serve
    key_file = signing_key or settings.signing_key
    signer = Signer(key_file) if key_file is not None else None
    repository: RootRepository | StoreRepository
    if from_store:
        from jetpack.store import open_store

        keys = {signer.fingerprint: signer.key} if signer else {}
        repository = StoreRepository(
            open_store(config, create=False), keys, signer.fingerprint if signer else None
        )
    else:
        repository = RootRepository(root or settings.root or config.data_dir / "serve")
    trust_dir = settings.trust or repository.root / "trustedkeys"
    return ServerDeps(
        repository=repository,
        public_url=url,
        users=settings.users,
        # No vendor keys for uploads: only what the operator put in serve.trust counts.
        trust=TrustStore(trust_dir, trust_dir / ".no-vendor"),
        signer=signer,
        allow_overwrite=settings.allow_overwrite,
        read_auth=settings.read_auth,
        max_upload_size=settings.max_upload_size,
        limits=ExtractLimits.from_config(config.aci),
    )


# -- push --------------------------------------------------------------------------------


def _what_to_push(
    state: CliState, ref: str, signature: Path | None
) -> tuple[Path, bytes | None, dict[str, str]]:
    """(the ACI file, its signature or None, the name/version/os/arch it declares)."""
    from jetpack.aci import ExtractLimits, read_aci

    path = Path(ref)
    if path.is_file():
        with open(path, "rb") as f:
            manifest = read_aci(f, limits=ExtractLimits.from_config(state.config.aci)).manifest
        labels: dict[str, str] = {"name": str(manifest.name)}
        labels.update({k: v for k in ("version", "os", "arch") if (v := manifest.label(k))})
        asc = signature or Path(str(path) + ".asc")
        if signature is None and not asc.exists():
            return path, None, labels
    else:
        from jetpack.store import open_store

        with open_store(state.config, create=False) as store:
            record = store.resolve(ref)
            path = store.blob_path(record.id)
        labels = {"name": record.name}
        labels.update({k: v for k in ("version", "os", "arch") if (v := record.label(k))})
        asc = signature or Path(str(path) + ".asc")
        if signature is None and not asc.exists():
            return path, None, labels
    try:
        return path, asc.read_bytes(), labels
    except OSError as err:
        raise FetchError(f"cannot read signature {asc}", err.strerror or str(err)) from err


def _server_error(status: int, body: bytes) -> tuple[str, str | None]:
    import json

    try:
        data = json.loads(body)
        reason, error = str(data["reason"]), str(data["error"])
    except (ValueError, KeyError, TypeError):
        return f"the server answered HTTP {status}", None
    hints = {
        "unauthorized": f"give a token: --token, ${ENV_PUSH_TOKEN} or push.token",
        "unsigned": "sign it (gpg --detach-sign --armor) and pass --signature",
        "untrusted-signature": "ask the server's operator to trust your key for this name",
    }
    return f"{reason} (HTTP {status} {error})", hints.get(error)


async def _upload(
    state: CliState,
    url: str,
    token: str,
    path: Path,
    signature: bytes | None,
    labels: dict[str, str],
    insecure: frozenset[str],
) -> dict[str, Any]:
    import aiohttp

    from jetpack.fetch.http import USER_AGENT, Transport, ssl_context

    transport = Transport.from_config(
        state.config.fetch, allow_http="http" in insecure, verify_tls="tls" not in insecure
    )
    what = f"cannot push {labels.get('name', path)}"
    if url.startswith("http://") and not transport.allow_http:
        raise FetchError(what, f"{url} is plain http", "pass --insecure-options=http to allow it")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=transport.connect_timeout)
    connector = aiohttp.TCPConnector(ssl=ssl_context(transport))
    headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        with open(path, "rb") as f:
            form = aiohttp.FormData()
            if signature is not None:
                form.add_field(
                    "signature",
                    signature,
                    filename="image.aci.asc",
                    content_type="application/pgp-signature",
                )
            form.add_field(
                "image", f, filename="image.aci", content_type="application/vnd.appc.aci"
            )
            target = url.rstrip("/") + "/_jetpack/v1/images"
            try:
                async with session.post(
                    target, data=form, params=labels, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as err:
                from jetpack.fetch.http import _reason

                why, hint = _reason(err)
                raise FetchError(what, f"{target}: {why}", hint) from err
    if status != 201:
        why, hint = _server_error(status, body)
        raise FetchError(what, why, hint)
    import json

    result: dict[str, Any] = json.loads(body)
    return result


@click.command()
@click.option("--server", metavar="URL", help="The image server (default: push.server).")
@click.option(
    "--token", metavar="TOKEN", help=f"Bearer token (default: ${ENV_PUSH_TOKEN}, push.token)."
)
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Detached signature of IMAGE (default: IMAGE.asc beside the file or the blob).",
)
@click.option(
    "--insecure-options",
    "insecure_flags",
    default="none",
    metavar="none,http,tls,all",
    help="http = allow a plain http server; tls = skip certificate checks.",
)
@click.argument("ref", metavar="IMAGE-OR-FILE")
@pass_state
def push(
    state: CliState,
    server: str | None,
    token: str | None,
    signature: Path | None,
    insecure_flags: str,
    ref: str,
) -> None:
    """Upload an image to a Jetpack image server and print its ID and URL.

    IMAGE-OR-FILE is an .aci file (its signature FILE.asc beside it is sent if present),
    or an image in the store by ID or name[:version] (with the signature the store kept).
    Unsigned images are accepted only by servers with a signing key.
    """
    import asyncio

    insecure = insecure_options(insecure_flags) & {"http", "tls"}
    warn_insecure(insecure)
    config = state.config
    url = server or config.push.server
    if not url:
        raise click.UsageError("say where to push: --server URL or push.server in the config")
    if not url.startswith(("https://", "http://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--server")
    secret = token or os.environ.get(ENV_PUSH_TOKEN) or config.push.token
    if not secret:
        raise ConfigError(
            "cannot push",
            "no token",
            f"give --token, set ${ENV_PUSH_TOKEN}, or push.token in the config",
        )
    path, sig, labels = _what_to_push(state, ref, signature)
    result = asyncio.run(_upload(state, url, secret, path, sig, labels, insecure))
    signed = " (signed by the server)" if result.get("signed_by_server") else ""
    click.echo(
        f"jetpack: pushed {result['name']}:{result['version']} "
        f"{result['os']}/{result['arch']}{signed}",
        err=True,
    )
    click.echo(result["id"])
    click.echo(result["url"])
