"""Where the metadata service of a data directory keeps its state, and the URL a pod
gets; imported on every pod start, so it is small (no dataclasses, no hashing).

Under ``<data-dir>/mds`` (mode 0700, root only)::

    service.lock        flock held by the running service for its whole life
    service.json        pid, address and start time of the last service that started
    service.log         its log, when ``jetpack run`` started it in the background
    run/control.sock    registration: one JSON request line, one JSON reply line
    forward/forward.sock  datagrams carrying connections (SCM_RIGHTS) that a pod's PID 1
                        accepted inside a network namespace not the host's (the directory
                        is bound into each such pod's PID 1's root: nothing else is in it)
    pods/<uuid>.json    one registration, mode 0600 (its token and key are secrets)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from jetpack.errors import MetadataError


class MetadataPaths:
    """The files of one data directory's metadata service."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"MetadataPaths({self.root!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetadataPaths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> MetadataPaths:
        return cls(data_dir / "mds")

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def control(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def forward_dir(self) -> Path:
        return self.root / "forward"

    @property
    def forward(self) -> Path:
        return self.forward_dir / "forward.sock"

    @property
    def lock(self) -> Path:
        return self.root / "service.lock"

    @property
    def info(self) -> Path:
        return self.root / "service.json"

    @property
    def log(self) -> Path:
        return self.root / "service.log"

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def pods_of_runtime(self) -> Path:
        """The runtime's pod directories (``<data-dir>/pods``), to find pods that are gone."""
        return self.root.parent / "pods"

    def registration(self, uuid: str) -> Path:
        """The file of pod ``uuid``'s registration.

        Raises:
            ValueError: ``uuid`` is not a pod UUID (so never a path elsewhere).
        """
        if not is_uuid(uuid):
            raise ValueError(f"bad pod UUID {uuid!r}")
        return self.pods / f"{uuid}.json"

    def ensure(self) -> None:
        for path in (self.root, self.run_dir, self.forward_dir, self.pods):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in canonical (lower-case) form."""
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdef" for c in text.replace("-", "")
    )


def take_lock(paths: MetadataPaths) -> int:
    """Hold the service's lock (for the life of this process); its descriptor.

    Raises:
        MetadataError: another service runs for this data directory.
    """
    paths.ensure()
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MetadataError(
            f"a metadata service already runs for {paths.root.parent}",
            None,
            "see jetpack metadata-service --status",
        ) from None
    return fd


def existing_pods(paths: MetadataPaths) -> set[str]:
    """The UUIDs of every pod the runtime has (in any state, or only its data).

    Raises:
        OSError: the pods' directories cannot be listed.
    """
    found: set[str] = set()
    try:
        states = [entry for entry in paths.pods_of_runtime.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return found
    for state in states:
        with contextlib.suppress(FileNotFoundError):
            found.update(entry.name.lstrip(".") for entry in state.iterdir())
    return found


def metadata_url(listen_host: str, port: int, token: str, net: str) -> str:
    """``AC_METADATA_URL`` of a pod: the service's own address when the pod shares the
    host's network; else the pod's loopback, where its PID 1 listens on the same port
    and hands each connection to the service (no trailing slash, as the spec's
    ``$AC_METADATA_URL/acMetadata/v1`` needs)."""
    if net != "host":
        host = "127.0.0.1"
    elif ":" in listen_host:
        host = "[::1]" if listen_host == "::" else f"[{listen_host}]"
    else:
        host = "127.0.0.1" if listen_host == "0.0.0.0" else listen_host
    return f"http://{host}:{port}/{token}"
