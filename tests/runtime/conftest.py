"""Fixtures for the pod runtime's integration tests: real pods from small static-busybox
images, run through the ``jetpack`` command as a user would.

- ``busybox_aci`` (session): factory building an ACI of Debian's static busybox with its
  applets, an ``/etc/passwd`` and ``/etc/group`` (root; ``user`` 1000 in group ``users``
  100; group ``staff`` 50), a ``/home/user`` owned by ``user`` and a world-writable
  ``/tmp``. The images the tests share are :data:`IMAGES`.
- ``pod_env`` (module): a data directory with every image of :data:`IMAGES` imported, and
  helpers to run ``jetpack`` in it. Tests that do not disturb each other share it.
- ``make_pod_env`` (function): factory for a fresh data directory of its own (another
  storage backend, more images), for tests that collect or count pods.

Every environment stops its running pods, collects them, and unmounts whatever is left
under its directory when it is closed; background ``jetpack run`` processes are waited
for (killed if they hang).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import image_manifest
from tests.store.zfs_fixture import unmount_under

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    *("sh", "echo", "cat", "ls", "id", "hostname", "pwd", "env", "sleep", "ps", "touch"),
    *("mkdir", "true", "false", "test", "grep", "mount", "ip", "ifconfig", "kill", "mv"),
    *("stat", "umount", "wget", "sed", "head", "wc", "tr", "seq"),
)
PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:100:user:/home/user:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:user\nusers:x:100:\n"

JETPACK = Path(sys.executable).parent / "jetpack"
TIMEOUT = 30.0  # seconds for one jetpack command; a hang fails the test, never the session

#: The images every ``pod_env`` has, by name: their ``app`` sections.
IMAGES: dict[str, dict[str, Any]] = {
    # The workhorse: tests give --exec and app options.
    "example.com/busybox": {
        "exec": ["/bin/true"],
        "user": "0",
        "group": "0",
        "environment": [
            {"name": "IMAGE_VAR", "value": "image"},
            {"name": "OVERRIDE", "value": "image"},
        ],
    },
    # pre-start → exec → post-stop, each appending to /order in the app's rootfs.
    "example.com/handlers": {
        "exec": ["/bin/sh", "-c", "echo main >> /order"],
        "user": "0",
        "group": "0",
        "eventHandlers": [
            {
                "name": "pre-start",
                "exec": [
                    "/bin/sh",
                    "-c",
                    "echo pre-start >> /order; sleep 0.2; echo pre-start-done >> /order",
                ],
            },
            {
                "name": "post-stop",
                "exec": ["/bin/sh", "-c", "echo post-stop >> /order; cat /order"],
            },
        ],
    },
    # A non-root app with supplementary groups and a working directory.
    "example.com/user": {
        "exec": ["/bin/id"],
        "user": "user",
        "group": "users",
        "supplementaryGIDs": [50, 4242],
        "workingDirectory": "/home/user",
    },
    # A mount point no --volume satisfies: the pod gets an implied empty volume.
    "example.com/volume": {
        "exec": ["/bin/true"],
        "user": "0",
        "group": "0",
        "mountPoints": [{"name": "data", "path": "/data", "readOnly": False}],
    },
}


def _write_rootfs(rootfs: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    etc = rootfs / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    for name in ("passwd", "group"):
        os.chown(etc / name, 0, 0)
        (etc / name).chmod(0o644)
    home = rootfs / "home" / "user"
    home.mkdir(parents=True)
    os.chown(home, 1000, 100)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)


@pytest.fixture(scope="session")
def busybox_aci(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make(name, app=None, version="1.0.0", annotations=None)`` → the ACI of a
    busybox image named ``name`` running ``app`` (an image manifest's ``app`` section).
    Built once per (name, version) per session."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    from jetpack.aci import build_aci

    out_dir = tmp_path_factory.mktemp("busybox-acis")
    built: dict[tuple[str, str], Path] = {}

    def make(
        name: str,
        app: dict[str, Any] | None = None,
        version: str = "1.0.0",
        annotations: list[dict[str, str]] | None = None,
    ) -> Path:
        key = (name, version)
        if key not in built:
            slug = name.replace("/", "_") + "-" + version
            layout = out_dir / slug
            _write_rootfs(layout / "rootfs")
            fields: dict[str, Any] = {"app": app} if app is not None else {}
            if annotations is not None:
                fields["annotations"] = annotations
            manifest = image_manifest(name, version=version, **fields)
            (layout / "manifest").write_text(json.dumps(manifest))
            build_aci(layout, out_dir / f"{slug}.aci")
            built[key] = out_dir / f"{slug}.aci"
        return built[key]

    return make


@pytest.fixture(scope="session")
def standard_acis(busybox_aci: Callable[..., Path]) -> dict[str, Path]:
    """The ACI of each image of :data:`IMAGES`."""
    return {name: busybox_aci(name, app) for name, app in IMAGES.items()}


# -- running jetpack ----------------------------------------------------------------------


def mount_points_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, from this process's mountinfo, in order."""
    found = []
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as src:
        for line in src:
            target = line.split()[4]
            # mountinfo escapes space, tab, newline and backslash as octal
            for code in ("\\040", "\\011", "\\012", "\\134"):
                target = target.replace(code, chr(int(code[1:], 8)))
            if target == str(path) or target.startswith(prefix):
                found.append(target)
    return found


@dataclass
class Background:
    """A ``jetpack run`` in the background; its output goes to files."""

    proc: subprocess.Popen[bytes]
    uuid_file: Path
    stdout_file: Path
    stderr_file: Path

    @property
    def stdout(self) -> str:
        return self.stdout_file.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    @property
    def uuid(self) -> str:
        """The pod's UUID (``--uuid-file-save``), waited for."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(FileNotFoundError):
                text = self.uuid_file.read_text().strip()
                if len(text) == 36:
                    return text
            if self.proc.poll() is not None:
                raise AssertionError(f"jetpack run exited {self.proc.returncode}: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError("jetpack run saved no UUID")
            time.sleep(0.02)

    def wait_output(self, text: str, timeout: float = TIMEOUT) -> None:
        """Wait until ``text`` appears on the pod's stdout."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None and text not in self.stdout:
                raise AssertionError(
                    f"jetpack run exited {self.proc.returncode} before printing {text!r}: "
                    f"stdout={self.stdout!r} stderr={self.stderr!r}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on stdout: {self.stdout!r}")
            time.sleep(0.02)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)


@dataclass
class PodEnv:
    """A data directory and the means to run ``jetpack`` on it."""

    root: Path  # holds data/, config.toml, and the tests' scratch files
    config_text: str = ""
    image_ids: dict[str, str] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pods_dir(self) -> Path:
        return self.data / "pods"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def argv(self, *args: str) -> list[str]:
        return [str(JETPACK), "--config", str(self.config), "--dir", str(self.data), *args]

    def jetpack(
        self, *args: str, timeout: float = TIMEOUT, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``jetpack ARGS`` on this data directory; its exit status and output."""
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """As :meth:`jetpack`, asserting exit status 0."""
        result = self.jetpack(*args, timeout=timeout)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result

    def run(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``jetpack run ARGS``."""
        return self.jetpack("run", *args, timeout=timeout)

    def start(self, *args: str) -> Background:
        """``jetpack run ARGS`` in the background (``--uuid-file-save`` added first)."""
        n = len(self.background)
        uuid_file = self.root / f"bg{n}.uuid"
        out, err = self.root / f"bg{n}.out", self.root / f"bg{n}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                self.argv("run", "--uuid-file-save", str(uuid_file), *args),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        bg = Background(proc, uuid_file, out, err)
        self.background.append(bg)
        return bg

    def status(self, uuid: str) -> dict[str, Any]:
        result = self.ok("status", "--format", "json", uuid)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def wait_running(self, uuid: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until the pod runs and each of its apps is past pre-start; its status."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(uuid)
            apps = current["apps"].values()
            if current["state"] == "running" and all(a["state"] == "running" for a in apps):
                return current
            assert current["state"] in ("preparing", "prepared", "starting", "running"), current
            assert time.monotonic() < deadline, f"pod {uuid} is not running: {current}"
            time.sleep(0.05)

    def pod_entries(self) -> set[str]:
        """``state/uuid`` of every pod directory, and ``data/uuid`` of every data one."""
        if not self.pods_dir.is_dir():
            return set()
        return {
            f"{state.name}/{entry.name}"
            for state in self.pods_dir.iterdir()
            for entry in state.iterdir()
        }

    def mounts(self) -> list[str]:
        """Mount points under this environment's directory."""
        return mount_points_under(self.root)

    def fetch(self, *acis: Path) -> list[str]:
        """Import ACIs from files; their image IDs."""
        result = self.ok("fetch", "--insecure-options=image", *map(str, acis))
        return result.stdout.split()

    def close(self) -> None:
        """Stop every pod, collect them all, unmount what is left."""
        for bg in self.background:
            if bg.proc.poll() is None:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self.jetpack("stop", "--force", bg.uuid)
        for bg in self.background:
            try:
                bg.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(bg.proc.pid, signal.SIGKILL)
                bg.proc.wait()
        if self.data.is_dir():
            with contextlib.suppress(subprocess.TimeoutExpired):
                listed = self.jetpack("list", "--format", "json")
                for pod in json.loads(listed.stdout or "[]"):
                    if pod["state"] == "running" and pod["pid"]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pod["pid"], signal.SIGKILL)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    listed = self.jetpack("list", "--format", "json")
                    if all(p["state"] != "running" for p in json.loads(listed.stdout or "[]")):
                        break
                    time.sleep(0.05)
                self.jetpack("gc", "--grace-period", "0s", "--expire-prepared", "0s")
                self.jetpack("metadata-service", "--stop")
        unmount_under(self.root)


@contextlib.contextmanager
def open_pod_env(root: Path, images: dict[str, Path], config_text: str = "") -> Iterator[PodEnv]:
    """A :class:`PodEnv` in ``root`` with ``images`` (name → ACI) imported; closed on exit.

    Its metadata service (started by the first pod) listens on a free port, so that
    environments side by side do not compete for the default one, and is stopped when the
    environment is closed."""
    root.mkdir(parents=True, exist_ok=True)
    if "[metadata]" not in config_text:
        config_text = f'{config_text}\n[metadata]\nlisten = "127.0.0.1:0"\n'
    env = PodEnv(root, config_text)
    env.config.write_text(config_text)
    try:
        ids = env.fetch(*images.values())
        env.image_ids = dict(zip(images, ids, strict=True))
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def pod_env(
    tmp_path_factory: pytest.TempPathFactory, standard_acis: dict[str, Path]
) -> Iterator[PodEnv]:
    """A data directory (default config: overlay as root) with :data:`IMAGES` imported,
    shared by the tests of a module."""
    with open_pod_env(tmp_path_factory.mktemp("pods"), standard_acis) as env:
        yield env


@pytest.fixture
def make_pod_env(
    tmp_path_factory: pytest.TempPathFactory, standard_acis: dict[str, Path]
) -> Iterator[Callable[..., PodEnv]]:
    """Factory: ``make(config_text="", images=None, cleanup=None)`` → a fresh
    :class:`PodEnv` of this test's own, with ``images`` (name → ACI; default
    :data:`IMAGES`) imported; ``cleanup`` is called after it is closed."""
    with contextlib.ExitStack() as stack:

        def make(
            config_text: str = "",
            images: dict[str, Path] | None = None,
            cleanup: Callable[[], None] | None = None,
        ) -> PodEnv:
            root = tmp_path_factory.mktemp("pods")
            if cleanup is not None:
                stack.callback(cleanup)  # after the environment is closed
            chosen = standard_acis if images is None else images
            return stack.enter_context(open_pod_env(root, chosen, config_text))

        yield make
