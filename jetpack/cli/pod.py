"""Pod commands: ``run``, ``prepare``, ``run-prepared``, ``list``, ``status``, ``stop``,
``enter``, ``logs``, ``cat-manifest``, ``rm``, ``gc``.

``run`` and ``prepare`` take rkt's shape: pod options, then
``IMAGE [app options] [--- IMAGE [app options]]...`` (parsed by
:func:`jetpack.runtime.plan.parse_app_arguments`), or ``--pod-manifest FILE``.
Heavy modules (schema, store, fetch) are imported inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from jetpack.cli.options import (
    CliState,
    Duration,
    fetch_insecure_option,
    format_option,
    pass_state,
    pull_policy_option,
)
from jetpack.errors import JetpackError, PodError

if TYPE_CHECKING:
    from jetpack.metadata.client import MetadataClient
    from jetpack.runtime.pods import Pod, Pods, PodStatus
    from jetpack.schema.image import ImageManifest
    from jetpack.schema.pod import PodManifest
    from jetpack.store.store import Store


def _pods(state: CliState) -> Pods:
    from jetpack.runtime.pods import Pods

    return Pods(state.config.data_dir / "pods")


def _pod_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``run`` and ``prepare`` that apply to the whole pod."""
    options = [
        click.option(
            "--pod-manifest",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Run the pod this manifest describes instead of IMAGE arguments.",
        ),
        click.option(
            "--volume",
            "volumes",
            multiple=True,
            metavar="NAME,kind=host|empty,...",
            help="A pod volume: source=PATH, readOnly=BOOL, recursive=BOOL (host); "
            "mode=, uid=, gid= (empty).",
        ),
        click.option(
            "--set-env", "env", multiple=True, metavar="NAME=VALUE", help="For every app."
        ),
        click.option("--annotation", "annotations", multiple=True, metavar="NAME=VALUE"),
        click.option("--hostname", help="The pod's host name (default: jetpack-UUID)."),
        click.option(
            "--net",
            type=click.Choice(["host", "none"]),
            default="host",
            show_default=True,
            help="host: the host's network; none: loopback only.",
        ),
        click.option("--dns", "dns", multiple=True, metavar="IP", help="Name server."),
        click.option(
            "--interactive",
            is_flag=True,
            help="Attach stdin and the terminal to the (single) app.",
        ),
        click.option(
            "--mds-register/--no-mds-register",
            "mds_register",
            default=None,
            help="Register the pod with the metadata service, started if need be, and set "
            "AC_METADATA_URL (default: [metadata] register, true).",
        ),
        click.option(
            "--uuid-file-save",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the pod's UUID to this file.",
        ),
        pull_policy_option,
        fetch_insecure_option,
        click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="IMAGE [OPTIONS]..."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


_RUN_CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@contextlib.contextmanager
def _prepared(state: CliState, params: dict[str, Any]) -> Iterator[tuple[Store, Pod]]:
    """Parse, fetch what is missing, reify and prepare: the common part of run/prepare.

    The store stays open while the caller uses the pod: ``run`` execs stage1 from inside,
    and closing the index first would checkpoint SQLite's WAL (~8 ms per pod start) for
    no gain — the next writer does it, and the WAL is crash-safe by design.

    SIGTERM and SIGHUP interrupt like Ctrl-C meanwhile, so a half-prepared pod is removed.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    from jetpack.runtime import plan
    from jetpack.runtime.stage0 import RuntimeOptions, prepare
    from jetpack.store import open_store

    options = RuntimeOptions(
        hostname=plan.validate_hostname(params["hostname"]) if params["hostname"] else None,
        net=params["net"],
        dns=tuple(plan.parse_dns(d) for d in params["dns"]),
        interactive=params["interactive"],
    )
    words: tuple[str, ...] = params["words"]
    manifest_file: Path | None = params["pod_manifest"]
    if manifest_file is not None and words:
        raise click.UsageError("give either --pod-manifest or IMAGE arguments, not both")
    if manifest_file is None and not words:
        raise click.UsageError("no IMAGE given (or use --pod-manifest FILE)")
    try:
        apps = plan.parse_app_arguments(words) if words else ()
    except PodError as err:
        raise click.UsageError(str(err)) from err
    volumes = tuple(plan.parse_volume(v) for v in params["volumes"])
    env = tuple(plan.parse_env(e) for e in params["env"])
    annotations = tuple(plan.parse_annotation(a) for a in params["annotations"])
    uuid_file: Path | None = params["uuid_file_save"]

    def save_uuid(pod: Pod) -> None:
        if uuid_file is not None:
            try:
                uuid_file.write_text(pod.uuid + "\n")
            except OSError as err:
                raise PodError(
                    f"cannot write {uuid_file}", err.strerror or str(err), "check the path"
                ) from err

    register = params["mds_register"]
    if register is None:
        register = state.config.metadata.register
    metadata = _metadata(state) if register else None
    with open_store(state.config) as store:
        if manifest_file is not None:
            manifest = _read_pod_manifest(state, store, manifest_file, params)
        else:
            images = [_image(state, store, app.image, params) for app in apps]
            manifest = plan.reify(
                apps, images, volumes=volumes, environment=env, annotations=annotations
            )
        yield (
            store,
            prepare(
                store,
                _pods(state),
                manifest,
                options,
                on_created=save_uuid,
                warn=lambda text: click.echo(f"jetpack: warning: {text}", err=True),
                metadata=metadata,
            ),
        )


def _metadata(state: CliState, *, now: bool = False) -> MetadataClient:
    """A client of the data directory's metadata service, which is started if it does not
    run: ``now``, or when the client first finds nobody answering."""
    from jetpack.metadata.client import MetadataClient, ensure_running
    from jetpack.metadata.paths import MetadataPaths

    data_dir, config_file = state.config.data_dir, state.config.config_file
    paths = MetadataPaths.for_data_dir(data_dir)
    if now:
        return ensure_running(paths, data_dir, config_file)
    return MetadataClient(paths, start=lambda: ensure_running(paths, data_dir, config_file))


def _image(
    state: CliState, store: Store, ref: str, params: dict[str, Any]
) -> tuple[str, ImageManifest]:
    """The image ``ref`` names: from the store when the pull policy allows, else fetched."""
    from jetpack.errors import StoreError

    is_id = ref.startswith("sha512-")  # an image ID names what the store has: never fetched
    local = params["pull_policy"] != "update" and "://" not in ref and not Path(ref).exists()
    if is_id or local:
        try:
            record = store.resolve(ref)
            return record.id, record.manifest
        except StoreError:
            if is_id or params["pull_policy"] == "never":
                raise
    record = _fetch(state, store, ref, params)
    return record.id, record.manifest


def _fetch(state: CliState, store: Store, ref: str, params: dict[str, Any]) -> Any:
    import asyncio
    import gc

    gc.enable()  # a download is long: collect as usual (see jetpack.cli.main)

    from jetpack.cli.fetch import make_fetcher

    async def fetch_one() -> Any:
        fetcher = make_fetcher(state, store, params["pull_policy"], params["insecure_options_text"])
        async with fetcher:
            return await fetcher.fetch(ref)

    return asyncio.run(fetch_one())


def _read_pod_manifest(
    state: CliState, store: Store, path: Path, params: dict[str, Any]
) -> PodManifest:
    """The pod manifest in ``path``, its images fetched when missing (and allowed), then
    completed like a reified one (implied volumes, mount targets checked)."""
    from jetpack.errors import ManifestError
    from jetpack.runtime.plan import complete
    from jetpack.schema.pod import parse_pod_manifest

    try:
        data = path.read_bytes()
    except OSError as err:
        raise PodError(f"cannot read {path}", err.strerror or str(err)) from err
    try:
        manifest = parse_pod_manifest(data)
    except ManifestError as err:
        raise err.prefixed(str(path)) from err
    images: dict[str, ImageManifest] = {}
    for app in manifest.apps:
        record = store.get(str(app.image.id))
        if record is None:
            if app.image.name is None or params["pull_policy"] == "never":
                raise PodError(
                    f"image {app.image.id} of app {app.name} is not in the store",
                    None,
                    "fetch it first, or give its name in the manifest",
                )
            labels = "".join(f",{k}={v}" for k, v in app.image.labels.items())
            record = _fetch(state, store, f"{app.image.name}{labels}", params)
            if record.id != app.image.id:
                raise PodError(
                    f"cannot run app {app.name}",
                    f"{app.image.name} is {record.id}, not the {app.image.id} the manifest asks",
                )
        images[str(app.image.id)] = record.manifest
    return complete(manifest, images)


@click.command(context_settings=_RUN_CONTEXT)
@_pod_options
@pass_state
def run(state: CliState, /, **params: Any) -> NoReturn:
    """Run a pod of one or more apps in the foreground; exit with its status.

    \b
    jetpack run [POD OPTIONS] IMAGE [APP OPTIONS] [--- IMAGE [APP OPTIONS]]...
    App options: --name NAME, --exec CMD, --user U, --group G, --set-env NAME=VALUE,
    --working-dir DIR, --mount volume=NAME,target=PATH, --readonly-rootfs, -- ARGS...
    """
    from jetpack.runtime.handoff import fork_stage1
    from jetpack.runtime.stage0 import discard

    # Stage1 boots in the parent (the process the shell waits for) while this child
    # prepares the pod; see jetpack.runtime.handoff.
    handoff = fork_stage1()
    with _prepared(state, params) as (store, pod):
        handoff.send(pod, discard=lambda: discard(store, pod))


@click.command(context_settings=_RUN_CONTEXT)
@_pod_options
@pass_state
def prepare(state: CliState, /, **params: Any) -> None:
    """Prepare a pod (as run does) without starting it; print its UUID."""
    with _prepared(state, params) as (_store, pod):
        pod.unlock()
        click.echo(pod.uuid)


@click.command("run-prepared")
@click.argument("uuid")
@pass_state
def run_prepared(state: CliState, uuid: str) -> NoReturn:
    """Run a prepared pod in the foreground."""
    from jetpack.runtime.pods import PodState
    from jetpack.runtime.stage0 import exec_stage1

    pod = _pods(state).find(uuid)
    if pod.state != PodState.PREPARED:
        now = pod.status().state
        why = "it already ran" if pod.state != PodState.PREPARE else f"it is {now}"
        raise PodError(f"cannot run pod {pod.uuid}", why, "prepare a new one")
    if not pod.lock():
        raise PodError(f"cannot run pod {pod.uuid}", "another process is starting it")
    if (pod.read("runtime.json") or {}).get("mds"):
        _metadata(state, now=True)  # it may have stopped since the pod was prepared
    exec_stage1(pod)


# -- looking at pods -------------------------------------------------------------------


def _statuses(state: CliState) -> list[PodStatus]:
    statuses = [pod.status() for pod in _pods(state).all()]
    return sorted(statuses, key=lambda s: (s.created or "", s.uuid))


@click.command("list")
@format_option(("table", "json"))
@click.option("--full", is_flag=True, help="Whole UUIDs and image IDs.")
@pass_state
def list_pods(state: CliState, output_format: str, full: bool) -> None:
    """List the pods."""
    statuses = _statuses(state)
    if output_format == "json":
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    rows = [("UUID", "APP", "IMAGE ID", "STATE", "CREATED", "EXIT")]
    for s in statuses:
        code = s.exit_code()
        for i, (app, image) in enumerate(s.images.items() or [("-", "-")]):
            rows.append(
                (
                    (s.uuid if full else s.uuid[:8]) if i == 0 else "",
                    app,
                    image if full or image == "-" else image[: len("sha512-") + 12],
                    s.state if i == 0 else "",
                    (s.created or "-") if i == 0 else "",
                    "" if code is None or i else str(code),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


class _WaitCommand(click.Command):
    """``--wait`` alone waits for ever; a limit is only ``--wait=DURATION`` (as in rkt), so
    ``status --wait UUID`` does not take the UUID for a duration."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            head, tail = args[:cut], args[cut:]
        else:
            head, tail = args, []
        head = ["--wait=forever" if arg == "--wait" else arg for arg in head]
        return super().parse_args(ctx, head + tail)


@click.command(cls=_WaitCommand)
@click.option(
    "--wait",
    "wait",
    is_flag=False,
    flag_value="forever",
    default=None,
    metavar="[=DURATION]",
    help="Wait until the pod exits (for at most DURATION).",
)
@format_option(("text", "json"))
@click.argument("uuid")
@pass_state
def status(state: CliState, uuid: str, wait: str | None, output_format: str) -> None:
    """Show a pod's state, times, PID and the exit status of each app."""
    from jetpack.cli.options import parse_duration

    pod = _pods(state).find(uuid)
    if wait is not None:
        timeout = None if wait == "forever" else parse_duration(wait)
        pod = _wait_exited(_pods(state), pod, timeout)
    current = pod.status()
    if output_format == "json":
        click.echo(json.dumps(current.to_json(), indent=2))
        return
    click.echo(f"uuid={current.uuid}")
    click.echo(f"state={current.state}")
    click.echo(f"created={current.created or ''}")
    click.echo(f"started={current.started or ''}")
    if current.pid is not None:
        click.echo(f"pid={current.pid}")
    if current.finished:
        click.echo(f"finished={current.finished}")
    code = current.exit_code()
    if code is not None:
        click.echo(f"exit-code={code}")
    for name, app in current.apps.items():
        click.echo(f"app-{name}={app.get('state', '')}")
        if "exit_code" in app:
            click.echo(f"app-{name}-exit-code={app['exit_code']}")
        if "error" in app:
            click.echo(f"app-{name}-error={app['error']}")


_RUNNING_STATES = ("embryo", "preparing", "prepared", "running", "starting")


def _wait_exited(pods: Pods, pod: Pod, timeout: float | None) -> Pod:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pod = pods.find(pod.uuid)
        if pod.status().state not in _RUNNING_STATES:
            return pod
        if deadline is not None and time.monotonic() >= deadline:
            raise PodError(f"pod {pod.uuid} is still {pod.status().state}", "the wait timed out")
        time.sleep(0.05)


@click.command()
@click.option("--force", is_flag=True, help="Kill at once (SIGKILL), without SIGTERM.")
@click.option(
    "--timeout",
    type=Duration(),
    default="10s",
    show_default=True,
    help="How long the apps get to exit after SIGTERM before they are killed.",
)
@click.argument("uuids", metavar="UUID...", nargs=-1, required=True)
@pass_state
def stop(state: CliState, uuids: tuple[str, ...], force: bool, timeout: float) -> None:
    """Stop running pods: SIGTERM to every app, SIGKILL after the timeout."""
    pods = _pods(state)

    import signal  # not at the top: `run` does not need it (1 ms of every pod start)

    def stop_one(pod: Pod) -> None:
        current = pod.status()
        if current.state != "running" or current.pid is None:
            raise PodError(f"cannot stop pod {pod.uuid}", f"it is {current.state}")
        _signal(current.pid, signal.SIGKILL if force else signal.SIGTERM)
        try:
            _wait_exited(pods, pod, timeout)
        except PodError:
            _signal(current.pid, signal.SIGKILL)
            _wait_exited(pods, pod, 10)

    _each(pods, uuids, stop_one)


def _each(pods: Pods, uuids: tuple[str, ...], action: Callable[[Pod], None]) -> None:
    """``action`` on the pod of each UUID (prefix), printing its UUID when done; a failure
    is one line on stderr and the others still go; exit 1 if any failed."""
    failed = 0
    for uuid in uuids:
        try:
            pod = pods.find(uuid)
            action(pod)
            click.echo(pod.uuid)
        except JetpackError as err:
            click.echo(f"jetpack: {err}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--app", "app_name", help="The app whose rootfs to enter (default: the only one).")
@click.argument("uuid")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def enter(state: CliState, uuid: str, app_name: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND (default /bin/sh) inside a running pod, in an app's rootfs."""
    from jetpack.runtime.linux import enter as enter_pod

    pod = _pods(state).find(uuid)
    current = pod.status()
    if current.state != "running" or current.pid is None:
        raise PodError(f"cannot enter pod {pod.uuid}", f"it is {current.state}")
    sys.exit(enter_pod(pod, current.pid, app_name, list(command) or ["/bin/sh"]))


@click.command()
@click.option("--app", "app_name", help="Only this app's output.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until the pod exits.")
@click.argument("uuid")
@pass_state
def logs(state: CliState, uuid: str, app_name: str | None, follow: bool) -> None:
    """Print the output of a pod's apps (each line prefixed by its app when several)."""
    pods = _pods(state)
    pod = pods.find(uuid)
    names = list(pod.status().apps)
    if app_name is not None:
        if app_name not in names:
            raise PodError(
                f"pod {pod.uuid} has no app {app_name}", None, f"its apps: {', '.join(names)}"
            )
        names = [app_name]
    offsets = dict.fromkeys(names, 0)
    out = sys.stdout.buffer
    while True:
        running = follow and pod.status().state in _RUNNING_STATES
        for name in names:
            offsets[name] = _print_log(pod.log_path(name), offsets[name], name, len(names), out)
        out.flush()
        if not running:
            return
        time.sleep(0.1)
        pod = pods.find(pod.uuid)


def _print_log(path: Path, offset: int, name: str, count: int, out: Any) -> int:
    try:
        with open(path, "rb") as src:
            src.seek(offset)
            data = src.read()
    except FileNotFoundError:
        return offset
    if count > 1:
        complete = data[: data.rfind(b"\n") + 1]
        prefix = f"[{name}] ".encode()
        out.write(b"".join(prefix + line for line in complete.splitlines(keepends=True)))
        return offset + len(complete)
    out.write(data)
    return offset + len(data)


@click.command("cat-manifest")
@click.argument("uuid")
@pass_state
def cat_manifest(state: CliState, uuid: str) -> None:
    """Print a pod's reified pod manifest."""
    pod = _pods(state).find(uuid)
    try:
        click.echo((pod.path / "pod").read_text().rstrip("\n"))
    except FileNotFoundError as err:
        raise PodError(f"pod {pod.uuid} has no manifest", "it was never prepared") from err


@click.command()
@click.argument("uuids", metavar="UUID...", nargs=-1, required=True)
@pass_state
def rm(state: CliState, uuids: tuple[str, ...]) -> None:
    """Remove pods that do not run: their rootfs, volumes and logs."""
    from jetpack.runtime.stage0 import remove
    from jetpack.store import open_store

    with open_store(state.config) as store:
        _each(_pods(state), uuids, lambda pod: remove(store, pod))


@click.command()
@click.option(
    "--grace-period",
    type=Duration(),
    default="30m",
    show_default=True,
    help="How long an exited pod stays (marked as garbage) before it is removed.",
)
@click.option(
    "--expire-prepared",
    type=Duration(),
    default="24h",
    show_default=True,
    help="Remove prepared pods never run for this long.",
)
@click.option("--mark-only", is_flag=True, help="Only mark exited pods as garbage.")
@pass_state
def gc(state: CliState, grace_period: float, expire_prepared: float, mark_only: bool) -> None:
    """Collect exited, abandoned and expired pods."""
    from jetpack.runtime.gc import collect
    from jetpack.store import open_store

    with open_store(state.config) as store:
        report = collect(
            store,
            _pods(state),
            grace_seconds=grace_period,
            expire_prepared_seconds=expire_prepared,
            mark_only=mark_only,
        )
    for uuid in report.marked:
        click.echo(f"marked {uuid} as garbage")
    for uuid in report.removed:
        click.echo(f"removed pod {uuid}")
    for problem in report.failed:
        click.echo(f"jetpack: {problem}", err=True)
    if report.failed:
        sys.exit(1)


COMMANDS = (
    run,
    prepare,
    run_prepared,
    list_pods,
    status,
    stop,
    enter,
    logs,
    cat_manifest,
    rm,
    gc,
)
