"""Pods on disk: where each pod lives, which state it is in, and who holds it.

Theory of operation (as in rkt). A pod is a directory ``pods/<state>/<uuid>/``; the
directory's place *is* the state, changed only by ``rename(2)``, so a crash leaves the pod
in exactly one state. An flock on the directory is liveness: whoever prepares or runs
the pod holds it (stage0 while preparing, stage1 — and through it the pod's PID 1 — while
running), so a pod found unlocked in ``prepare`` crashed while being prepared, and one
unlocked in ``run`` has exited. Reading a pod never takes its lock, so ``list`` and
``status`` never block on a running pod.

::

    embryo ──▶ prepare ──▶ prepared ──▶ run ──▶ exited-garbage ──▶ (removed)
                  │            │                                        ▲
                  └────────────┴────────────▶ garbage ──────────────────┘

What must not move lives outside the state directories, in ``pods/data/<uuid>/``: each
app's rootfs (``apps/<app>/``: a mount or a ZFS clone must not move under its backend's
feet) and the pod's empty volumes (``volumes/<name>/``), whose paths stage0 hands to
stage1 before the pod changes state.

Files of a pod directory: ``pod`` (the reified pod manifest), ``runtime.json`` (what
stage0 decided: images, trees, backend, options), ``launch`` (everything stage1 needs, in
:mod:`marshal` format — stage1 imports neither the schema code nor even :mod:`json`),
``pid`` (the pod's PID 1 as the host sees it), ``status`` (marshal, written by stage1:
start and exit of each app), ``logs/<app>.log``, ``volumes/<name>/`` (empty volumes).

Only the standard library is imported here: stage1 and ``jetpack list`` use this module.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import marshal
import os
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jetpack.errors import PodError
from jetpack.store.locks import held_elsewhere


class PodState(enum.Enum):
    EMBRYO = "embryo"
    PREPARE = "prepare"
    PREPARED = "prepared"
    RUN = "run"
    EXITED_GARBAGE = "exited-garbage"
    GARBAGE = "garbage"


# The only moves a pod's directory may make.
TRANSITIONS: dict[PodState, frozenset[PodState]] = {
    PodState.EMBRYO: frozenset({PodState.PREPARE, PodState.GARBAGE}),
    PodState.PREPARE: frozenset({PodState.PREPARED, PodState.GARBAGE}),
    PodState.PREPARED: frozenset({PodState.RUN, PodState.GARBAGE}),
    PodState.RUN: frozenset({PodState.EXITED_GARBAGE}),
    PodState.EXITED_GARBAGE: frozenset(),
    PodState.GARBAGE: frozenset(),
}

LOCK_RETRIES = 5  # x LOCK_RETRY_DELAY: how long a probe by a reader may hold a lock
LOCK_RETRY_DELAY = 0.01
DATA = "data"  # pods/data/<uuid>/: app rootfs and empty volumes, outside the state dirs


def now() -> str:
    """The current time as pods record it (UTC, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
        out.write("\n")
    tmp.replace(path)


def read_marshal(path: Path) -> Any:
    """The marshal document at ``path``; ``None`` if it is missing or unreadable."""
    try:
        return marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None


def read_json(path: Path) -> Any:
    """The JSON document at ``path``; ``None`` if it is missing or unreadable."""
    try:
        with open(path, "rb") as src:
            return json.load(src)
    except (OSError, ValueError):
        return None


@dataclass
class Pod:
    """One pod directory. ``lock_fd`` is set while this process holds the pod's lock."""

    pods: Path
    uuid: str
    state: PodState
    lock_fd: int | None = None

    @property
    def path(self) -> Path:
        return self.pods / self.state.value / self.uuid

    @property
    def data_dir(self) -> Path:
        return self.pods / DATA / self.uuid

    def app_dir(self, app: str) -> Path:
        return self.data_dir / "apps" / app

    def volume_dir(self, volume: str) -> Path:
        return self.data_dir / "volumes" / volume

    def log_path(self, app: str) -> Path:
        return self.path / "logs" / f"{app}.log"

    # -- locking ---------------------------------------------------------------------

    def lock(self, *, blocking: bool = False) -> bool:
        """Take the pod's exclusive lock; False if another process holds it.

        Readers (``list``, ``status``) probe the lock by taking it shared for an instant;
        a few short retries tell such a probe from a real holder.
        """
        if self.lock_fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise PodError(f"cannot lock pod {self.uuid}", "it was removed meanwhile") from err
        for attempt in range(LOCK_RETRIES + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if attempt == LOCK_RETRIES:
                    os.close(fd)
                    return False
                time.sleep(LOCK_RETRY_DELAY)
        self.lock_fd = fd
        return True

    def unlock(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def locked_by_other(self) -> bool:
        """Whether another process holds the pod's lock (never blocks)."""
        if self.lock_fd is not None:
            return False
        return held_elsewhere(self.path)

    # -- state -----------------------------------------------------------------------

    def move(self, state: PodState) -> None:
        """Move the pod to ``state`` (one ``rename(2)``); only moves in TRANSITIONS."""
        if state not in TRANSITIONS[self.state]:
            raise PodError(
                f"cannot move pod {self.uuid} to {state.value}",
                f"it is {self.state.value}",
            )
        target = self.pods / state.value / self.uuid
        try:
            self.path.rename(target)
        except OSError as err:
            raise PodError(f"cannot move pod {self.uuid} to {state.value}", str(err)) from err
        self.state = state

    def read(self, name: str) -> Any:
        return read_json(self.path / name)

    def write(self, name: str, data: object) -> None:
        write_json(self.path / name, data)

    def status(self) -> PodStatus:
        """What the pod is doing, from its files and its lock; never blocks."""
        return PodStatus.of(self)


@dataclass(frozen=True)
class PodStatus:
    """A pod as ``list`` and ``status`` show it."""

    uuid: str
    state: str  # embryo, preparing, prepared, running, exited, exited-garbage, garbage, ...
    created: str | None
    started: str | None
    finished: str | None
    pid: int | None
    apps: dict[str, dict[str, Any]]
    images: dict[str, str]

    @classmethod
    def of(cls, pod: Pod) -> PodStatus:
        runtime = pod.read("runtime.json") or {}
        status = read_marshal(pod.path / "status") or {}
        locked = pod.locked_by_other()
        pid: int | None = None
        if locked:
            try:
                pid = int((pod.path / "pid").read_text())
            except (OSError, ValueError):
                pid = None
        state = {
            PodState.EMBRYO: "embryo",
            PodState.PREPARE: "preparing" if locked else "abandoned",
            PodState.PREPARED: "prepared",
            PodState.RUN: "running" if locked else "exited",
            PodState.EXITED_GARBAGE: "exited-garbage",
            PodState.GARBAGE: "garbage",
        }[pod.state]
        if state == "running" and pid is None:
            state = "starting"
        apps: dict[str, dict[str, Any]] = {}
        for name in runtime.get("apps", []):
            apps[name] = dict(status.get("apps", {}).get(name, {}))
            app_state = apps[name].get("state")
            if app_state is None:
                apps[name]["state"] = "exited" if state == "exited" else "prepared"
            elif state == "exited" and app_state != "exited":
                apps[name]["state"] = "killed"  # its PID 1 died without recording an exit
        return cls(
            uuid=pod.uuid,
            state=state,
            created=runtime.get("created"),
            started=status.get("started"),
            finished=status.get("finished"),
            pid=pid,
            apps=apps,
            images=dict(runtime.get("images", {})),
        )

    def exit_code(self) -> int | None:
        """The pod's exit status once it exited: one app's own; else 0 if every app
        exited 0, or the first failure's (1 when an app never exited)."""
        if self.state not in ("exited", "exited-garbage"):
            return None
        codes = [app.get("exit_code") for app in self.apps.values()]
        if len(codes) == 1:
            return codes[0] if codes[0] is not None else 1
        for code in codes:
            if code != 0:
                return code if isinstance(code, int) and code != 0 else 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "pid": self.pid,
            "exit_code": self.exit_code(),
            "apps": self.apps,
            "images": self.images,
        }


class Pods:
    """The pods of one data directory (``<data>/pods``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        for state in (*PodState, None):
            path = self.root / (state.value if state else DATA)
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def create(self) -> Pod:
        """A new pod, locked by this process, in ``prepare``.

        It is made under a hidden name, locked, and only then renamed into ``embryo``:
        a gc looking at ``embryo`` never sees it unlocked (and takes it for abandoned).
        """
        self.ensure()
        pod = Pod(self.root, str(uuidlib.uuid4()), PodState.EMBRYO)
        hidden = pod.path.with_name(f".{pod.uuid}")
        hidden.mkdir(mode=0o700)
        fd = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        hidden.rename(pod.path)
        pod.lock_fd = fd
        pod.move(PodState.PREPARE)
        return pod

    def all(self) -> Iterator[Pod]:
        """Every pod, in no particular order (a pod moving meanwhile may be missed)."""
        for state in PodState:
            with contextlib.suppress(FileNotFoundError):
                for entry in (self.root / state.value).iterdir():
                    if not entry.name.startswith("."):
                        yield Pod(self.root, entry.name, state)

    def find(self, prefix: str) -> Pod:
        """The pod whose UUID is or starts with ``prefix``.

        Raises:
            PodError: no pod, or several, match.
        """
        text = prefix.strip().lower()
        if not text:
            raise PodError("no pod UUID given", None, "see jetpack list")
        found = {pod.uuid: pod for pod in self.all() if pod.uuid.startswith(text)}
        if not found:
            raise PodError(f"no pod {prefix}", None, "see jetpack list")
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:4])
            raise PodError(
                f"ambiguous pod UUID {prefix}", f"it matches {shown}", "give more of the UUID"
            )
        pod = next(iter(found.values()))
        # It may have moved since we listed it.
        for state in (pod.state, *PodState):
            if (self.root / state.value / pod.uuid).is_dir():
                pod.state = state
                return pod
        raise PodError(f"no pod {prefix}", "it was removed meanwhile")

    def hidden_embryos(self) -> list[Path]:
        """``embryo/.<uuid>``: pods being created (or whose creation crashed)."""
        try:
            return [p for p in (self.root / PodState.EMBRYO.value).iterdir() if p.name[0] == "."]
        except FileNotFoundError:
            return []

    def orphan_data(self) -> list[Path]:
        """Data directories whose pod directory is gone (a crash during removal)."""
        known = {pod.uuid for pod in self.all()}
        try:
            return [p for p in (self.root / DATA).iterdir() if p.name not in known]
        except FileNotFoundError:
            return []


def remove_dir(path: Path) -> None:
    """Remove ``path`` and its contents (symlinks never followed, any depth); no error if
    it is gone. Only for what holds no mount: a pod's directory, a released data dir."""
    from jetpack.aci.extract import remove_tree

    try:
        remove_tree(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise PodError(f"cannot remove {path}", err.strerror or str(err)) from err


def in_use(pods: Pods) -> set[str]:
    """Image IDs and tree keys every pod on disk holds: the store's GC hook."""
    held: set[str] = set()
    for pod in pods.all():
        runtime = pod.read("runtime.json") or {}
        held.update(runtime.get("images", {}).values())
        held.update(runtime.get("trees", {}).values())
    return held
