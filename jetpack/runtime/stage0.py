"""Stage0: turn a reified pod manifest into a prepared pod, start it, remove it.

``prepare`` does every decision and every check that can fail before a pod starts, with
the pod's lock held and nothing published until the end: each app's rootfs from the
store's backend; users and groups looked up in that rootfs; mount targets created inside
it with symlinks resolved as the app would see them (never through to the host); empty
volumes with their mode and owner; /etc/hosts and /etc/resolv.conf. It writes the result
as stage1's ``launch`` file. Any failure removes everything it made.

``exec_stage1`` moves a prepared pod to ``run`` and replaces this process with stage1,
handing it the pod's lock; ``remove`` releases a pod's rootfs and deletes it.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import posixpath
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from jetpack.errors import JetpackError, PodError
from jetpack.runtime import rootfs as inroot
from jetpack.runtime.handoff import stage1_argv
from jetpack.runtime.isolation import app_isolation
from jetpack.runtime.pods import Pod, Pods, PodState, now, remove_dir
from jetpack.schema._json import dump_bytes
from jetpack.schema.app import App
from jetpack.schema.pod import PodManifest, RuntimeApp, Volume
from jetpack.store.store import ImageRecord, Store

if TYPE_CHECKING:
    from jetpack.metadata.client import MetadataClient

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ACE_NAME = "jetpack"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")

NetMode = Literal["host", "none"]


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """What a pod gets beyond its manifest (``jetpack run`` pod options)."""

    hostname: str | None = None
    net: NetMode = "host"
    dns: tuple[str, ...] = ()
    interactive: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "net": self.net,
            "dns": list(self.dns),
            "interactive": self.interactive,
        }


def hostname_for(uuid: str) -> str:
    return f"jetpack-{uuid}"


def prepare(
    store: Store,
    pods: Pods,
    manifest: PodManifest,
    options: RuntimeOptions,
    *,
    on_created: Callable[[Pod], None] = lambda _pod: None,
    warn: Callable[[str], None] = lambda _text: None,
    metadata: MetadataClient | None = None,
) -> Pod:
    """Prepare a pod for ``manifest``; return it in ``prepared``, still locked by us.

    ``on_created`` is called with the pod as soon as it has a UUID (``--uuid-file-save``);
    ``warn`` with what the pod asks for that this runtime does not enforce (the spec wants
    an ACE to report ignored isolators). With ``metadata``, the pod is registered with
    that metadata service and every app gets ``AC_METADATA_URL``.

    Raises:
        PodError, StoreError: the pod cannot be prepared; nothing of it is left.
    """
    if not manifest.apps:
        raise PodError("cannot prepare a pod", "it has no apps", "name at least one image")
    if options.interactive and len(manifest.apps) != 1:
        raise PodError("cannot prepare an interactive pod", "--interactive takes exactly one app")
    _check_volume_sources(
        [
            *manifest.volumes,
            *(m.app_volume for a in manifest.apps for m in a.mounts if m.app_volume),
        ]
    )
    pod = pods.create()
    try:
        on_created(pod)
        hostname = options.hostname or hostname_for(pod.uuid)
        runtime: dict[str, Any] = {
            "created": now(),
            "apps": [str(app.name) for app in manifest.apps],
            "images": {str(app.name): str(app.image.id) for app in manifest.apps},
            "trees": {},
            "backend": store.backend.name,
            **options.to_json(),
            "hostname": hostname,
        }
        if metadata is not None:
            runtime["mds"] = str(metadata.paths.root)  # removing the pod unregisters it
        # Written before anything is rendered, so a concurrent image GC sees the images.
        pod.write("runtime.json", runtime)
        (pod.path / "logs").mkdir(mode=0o700)
        pod.data_dir.mkdir(mode=0o700)
        metadata_env: dict[str, str] = {}
        mds: dict[str, Any] | None = None
        reified = _reified_json(manifest)
        record = functools.cache(store.get)  # one index query per image, whoever asks
        if metadata is not None:
            registered = metadata.register(
                pod.uuid, dump_bytes(reified, pretty=False), _images(record, manifest), options.net
            )
            metadata_env["AC_METADATA_URL"] = registered.url(options.net)
            mds = {
                "control": str(metadata.paths.control),
                "forward_dir": str(metadata.paths.forward_dir),
                "port": registered.port,
            }
        launch_apps = []
        ignored = [f"pod: {isolator.name}" for isolator in manifest.isolators]
        volumes = _make_volumes(pod, manifest)
        for app in manifest.apps:
            tree = store.render(str(app.image.id))
            runtime["trees"][str(app.name)] = tree.key
            pod.write("runtime.json", runtime)
            app_dir = pod.app_dir(str(app.name))
            app_dir.mkdir(mode=0o700, parents=True)
            root = store.backend.create_rootfs(tree.key, app_dir)
            effective = app.app or _image_app(record, str(app.image.id))
            if effective is None:
                raise PodError(
                    f"cannot prepare app {app.name}",
                    f"its image {app.image.name or app.image.id} has no app to run",
                    "give --exec",
                )
            launch_app, not_enforced = _launch_app(
                str(app.name), effective, root, app, volumes, metadata_env
            )
            launch_apps.append(launch_app)
            ignored += [f"app {app.name}: {name}" for name in not_enforced]
            _write_network_files(root, hostname, options.dns)
        stage1_root = pod.data_dir / "stage1"  # where stage1 builds the pod's root
        stage1_root.mkdir(mode=0o700)
        launch = {
            "uuid": pod.uuid,
            "stage1_root": str(stage1_root),
            "hostname": hostname,
            "net": options.net,
            "interactive": options.interactive,
            "apps": launch_apps,
            "mds": mds,
        }
        if ignored:
            runtime["ignored"] = ignored
            pod.write("runtime.json", runtime)
            warn(f"isolators not enforced: {', '.join(ignored)}")
        (pod.path / "launch").write_bytes(marshal.dumps(launch))
        (pod.path / "pod").write_bytes(dump_bytes(reified, pretty=True) + b"\n")
        pod.move(PodState.PREPARED)
    except BaseException:
        # A second Ctrl-C must not cut the clean-up short.
        with _interrupts_held(), contextlib.suppress(JetpackError, OSError):
            discard(store, pod)
        raise
    return pod


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    import signal

    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def _image_app(record: Callable[[str], ImageRecord | None], image_id: str) -> App | None:
    """The app of a stored image (only asked when the pod manifest has none of its own)."""
    found = record(image_id)
    return found.manifest.app if found is not None else None


def _reified_json(manifest: PodManifest) -> dict[str, Any]:
    """The pod manifest as the pod runs it (``jetpack cat-manifest``, the metadata
    service's ``pod/manifest``). Its ``annotations`` are always written, as the reference
    code writes them: a reader in Go then finds the same empty list that ``pod/annotations``
    serves for none (the ACE validator compares the two)."""
    data = manifest.to_json()
    data.setdefault("annotations", [])
    return data


def _images(
    record: Callable[[str], ImageRecord | None], manifest: PodManifest
) -> list[tuple[str, str, bytes]]:
    """(app name, image ID, image manifest as the image has it) of each app."""
    found = []
    for app in manifest.apps:
        stored = record(str(app.image.id))
        if stored is None:
            raise PodError(
                f"cannot prepare app {app.name}",
                f"its image {app.image.id} is not in the store",
                "fetch it first",
            )
        found.append((str(app.name), stored.id, stored.manifest_bytes))
    return found


def _check_volume_sources(volumes: Iterable[Volume]) -> None:
    for volume in volumes:
        if volume.kind == "host" and volume.source and not Path(volume.source).exists():
            raise PodError(
                f"cannot use volume {volume.name}",
                f"its source {volume.source} does not exist",
                "create it, or fix source= in --volume",
            )


def _make_volumes(pod: Pod, manifest: PodManifest) -> dict[str, tuple[Volume, str]]:
    """Each pod volume and its host path; empty volumes are created here, shared by every
    app that mounts them."""
    found: dict[str, tuple[Volume, str]] = {}
    app_volumes = [m.app_volume for a in manifest.apps for m in a.mounts if m.app_volume]
    for volume in (*manifest.volumes, *app_volumes):
        if str(volume.name) in found:
            continue
        if volume.kind == "host":
            assert volume.source is not None
            found[str(volume.name)] = (volume, volume.source)
            continue
        path = pod.volume_dir(str(volume.name))
        path.mkdir(mode=0o700, parents=True)
        os.chown(path, volume.effective_uid, volume.effective_gid)
        path.chmod(volume.effective_mode)
        found[str(volume.name)] = (volume, str(path))
    return found


def _launch_app(
    name: str,
    app: App,
    root: Path,
    runtime_app: RuntimeApp,
    volumes: dict[str, tuple[Volume, str]],
    ace_env: dict[str, str],
) -> tuple[dict[str, Any], list[str]]:
    """Stage1's description of one app (plain values only), and the names of its
    isolators that are not enforced."""
    if not app.exec:
        raise PodError(f"cannot prepare app {name}", "its image sets no exec", "give --exec CMD")
    uid = inroot.resolve_user(root, app.user)
    gid = inroot.resolve_group(root, app.group)
    env: dict[str, str] = {
        "PATH": DEFAULT_PATH,
        "AC_APP_NAME": name,
        "container": ACE_NAME,
    }
    env.update(app.environment)
    env["AC_APP_NAME"] = name
    env.update(ace_env)
    mounts: list[dict[str, Any]] = [
        {"kind": "proc", "target": str(inroot.make_dirs(root, "/proc"))},
        {"kind": "sysfs", "target": str(inroot.make_dirs(root, "/sys"))},
        {"kind": "dev", "target": str(inroot.make_dirs(root, "/dev"))},
    ]
    read_only_points = {_normal(mp.path) for mp in app.mount_points if mp.read_only}
    for mount in runtime_app.mounts:
        entry = volumes.get(str(mount.volume))
        if entry is None:
            raise PodError(f"cannot prepare app {name}", f"the pod has no volume {mount.volume}")
        volume, source = entry
        if Path(source).is_dir():
            target = inroot.make_dirs(root, mount.path)
        else:
            target = inroot.make_file(root, mount.path)
        mounts.append(
            {
                "kind": "bind",
                "source": source,
                "target": str(target),
                "recursive": volume.effective_recursive,
                "read_only": volume.effective_read_only or _normal(mount.path) in read_only_points,
            }
        )
    handlers = {h.name: list(h.exec) for h in app.event_handlers}
    isolation, ignored = app_isolation(name, app.isolators)
    launch = {
        **isolation,
        "name": name,
        "root": str(root),
        "read_only": bool(runtime_app.read_only_root_fs),
        "exec": list(app.exec),
        "env": list(env.items()),
        "uid": uid,
        "gid": gid,
        "groups": list(app.supplementary_gids),
        "cwd": app.working_directory or "/",
        "pre_start": handlers.get("pre-start"),
        "post_stop": handlers.get("post-stop"),
        "mounts": mounts,
    }
    return launch, ignored


def _normal(path: str) -> str:
    """A path inside an app as the planner writes it: absolute, normalised, one ``/``."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _write_network_files(root: Path, hostname: str, dns: tuple[str, ...]) -> None:
    if not inroot.exists(root, "/etc/hosts"):
        hosts = (
            f"127.0.0.1\tlocalhost localhost.localdomain {hostname}\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback {hostname}\n"
        )
        inroot.write_file(root, "/etc/hosts", hosts.encode())
    if dns:
        resolv = "".join(f"nameserver {server}\n" for server in dns).encode()
    else:
        try:
            resolv = HOST_RESOLV_CONF.read_bytes()
        except OSError:
            return
    inroot.write_file(root, "/etc/resolv.conf", resolv)


# -- starting ---------------------------------------------------------------------------


def exec_stage1(pod: Pod) -> NoReturn:
    """Move the prepared pod (locked by us) to ``run`` and become its stage1."""
    if pod.lock_fd is None and not pod.lock():
        raise PodError(f"cannot run pod {pod.uuid}", "another process holds it")
    pod.move(PodState.RUN)
    assert pod.lock_fd is not None
    argv = stage1_argv(str(pod.path), str(pod.lock_fd))
    os.set_inheritable(pod.lock_fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


# -- removing ---------------------------------------------------------------------------


def discard(store: Store, pod: Pod) -> None:
    """Release every app rootfs of ``pod`` and delete it (its lock must be ours or free)."""
    runtime = pod.read("runtime.json") or {}
    backend = runtime.get("backend", store.backend.name)
    if backend != store.backend.name:
        raise PodError(
            f"cannot remove pod {pod.uuid}",
            f"its rootfs were made by the {backend} backend, not {store.backend.name}",
            f"set storage.backend = {backend!r} to remove it",
        )
    apps_dir = pod.data_dir / "apps"
    if apps_dir.is_dir():
        for app_dir in sorted(apps_dir.iterdir()):
            store.backend.release_rootfs(app_dir)
    _remove_data(pod.data_dir)
    if runtime.get("mds"):
        _unregister(Path(runtime["mds"]), pod.uuid)
    remove_dir(pod.path)
    pod.unlock()


@functools.cache
def _metadata_client(mds_dir: Path) -> MetadataClient:
    """One client per service for this process (it remembers a service that stopped
    answering)."""
    from jetpack.metadata.client import MetadataClient
    from jetpack.metadata.paths import MetadataPaths

    return MetadataClient(MetadataPaths(mds_dir), timeout=1.0)


def _unregister(mds_dir: Path, uuid: str) -> None:
    """Forget the pod's registration (see :meth:`MetadataClient.unregister`); removing the
    pod never fails for it."""
    with contextlib.suppress(OSError, ValueError):
        _metadata_client(mds_dir).unregister(uuid)


def _remove_data(path: Path) -> None:
    """Delete a pod's data directory once the backend released every rootfs in it.

    Only the places a backend mounts are checked (not the whole mount table, whose size
    grows with every pod on the host): deleting through a mount left there would delete
    what it shows.
    """
    apps = path / "apps"
    candidates = (
        [p for app in apps.iterdir() for p in (app / "rootfs", app / ".zfs")]
        if apps.is_dir()
        else []
    )
    still = [str(p) for p in candidates if p.is_mount()]
    if still:
        raise PodError(
            f"cannot remove {path}",
            f"still mounted: {', '.join(still[:3])}",
            "unmount it, then run jetpack gc",
        )
    remove_dir(path)


def remove(store: Store, pod: Pod) -> None:
    """Delete a pod that does not run: move it to garbage first (so a crash half-way is
    finished by gc), then release and delete.

    Raises:
        PodError: the pod runs or is being prepared or removed by another process.
    """
    if not pod.lock():
        raise PodError(
            f"cannot remove pod {pod.uuid}",
            "it is running or busy",
            f"stop it first: jetpack stop {pod.uuid}",
        )
    if pod.state == PodState.RUN:
        pod.move(PodState.EXITED_GARBAGE)
    elif pod.state in (PodState.EMBRYO, PodState.PREPARE, PodState.PREPARED):
        pod.move(PodState.GARBAGE)
    discard(store, pod)
