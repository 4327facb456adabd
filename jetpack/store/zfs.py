"""A thin typed wrapper around the ``zfs`` and ``zpool`` commands.

As in Jetpack for FreeBSD, a :class:`Dataset` is just a name with methods that each run one
command through :mod:`jetpack.command` (so a failure is a ``CommandError`` carrying argv, exit
status and stderr). Nothing is cached: ZFS itself is the state.

Output is read with ``-H`` (tab-separated, no header) and, for ``zfs get``, ``-p`` (exact
numbers). ``zfs list`` does not take ``-p`` on zfs-fuse (ZFS pool version 23), and nothing
here needs its numbers, so it is called with ``-H`` only.

``rename``, ``destroy`` and ``unmount`` retry for a few seconds while ZFS answers "dataset
is busy": zfs-fuse tears a FUSE mount down asynchronously, so a dataset is briefly busy
right after it is unmounted (measured: one retry, ~50 ms). On OpenZFS a busy dataset is
usually really busy, and the retry only delays the error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from jetpack.command import output, run
from jetpack.errors import CommandError

ZFS = "zfs"
ZPOOL = "zpool"

_BUSY_RETRY_SECONDS = 5.0
_BUSY_SLEEP = 0.02

PropValue = str | int | bool | Path


def _format(value: PropValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _options(props: dict[str, PropValue]) -> list[str]:
    argv: list[str] = []
    for prop, value in props.items():
        argv += ["-o", f"{prop}={_format(value)}"]
    return argv


def _missing(err: CommandError) -> bool:
    return "does not exist" in err.stderr or "no such pool" in err.stderr


def _run_retrying_busy(argv: Sequence[str]) -> None:
    deadline = time.monotonic() + _BUSY_RETRY_SECONDS
    while True:
        try:
            run(argv)
            return
        except CommandError as err:
            if "busy" not in err.stderr or time.monotonic() >= deadline:
                raise
        time.sleep(_BUSY_SLEEP)


def list_datasets(
    root: str,
    props: Sequence[str] = ("name",),
    *,
    depth: int | None = None,
    kind: str = "filesystem",
) -> list[list[str]]:
    """``zfs list -H -r`` under ``root``: one row of ``props`` values per dataset.

    ``root`` itself is included. A missing ``root`` gives an empty list.
    """
    argv = [ZFS, "list", "-H", "-r", "-t", kind, "-o", ",".join(props)]
    if depth is not None:
        argv += ["-d", str(depth)]
    try:
        text = output([*argv, root])
    except CommandError as err:
        if _missing(err):
            return []
        raise
    return [line.split("\t") for line in text.splitlines() if line]


class Pool:
    """A ZFS pool, by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Pool({self.name!r})"

    def exists(self) -> bool:
        try:
            run([ZPOOL, "list", "-H", "-o", "name", self.name])
        except CommandError as err:
            if _missing(err):
                return False
            raise
        return True


class Dataset:
    """A ZFS file system (or snapshot, for ``get``/``exists``/``destroy``), by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dataset) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __truediv__(self, child: str) -> Dataset:
        return Dataset(f"{self.name}/{child}")

    @property
    def pool(self) -> Pool:
        return Pool(self.name.split("/", 1)[0].split("@", 1)[0])

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def exists(self) -> bool:
        kind = "snapshot" if "@" in self.name else "filesystem,volume"
        try:
            run([ZFS, "list", "-H", "-t", kind, "-o", "name", self.name])
        except CommandError as err:
            if _missing(err):
                return False
            raise
        return True

    def create(self, *, parents: bool = False, **props: PropValue) -> Dataset:
        """``zfs create [-p] [-o prop=value]... name``."""
        run([ZFS, "create", *(["-p"] if parents else []), *_options(props), self.name])
        return self

    def snapshot(self, name: str) -> Dataset:
        """``zfs snapshot dataset@name``; returns the snapshot."""
        snap = Dataset(f"{self.name}@{name}")
        run([ZFS, "snapshot", snap.name])
        return snap

    def clone(self, snapshot: str, target: str | Dataset, **props: PropValue) -> Dataset:
        """``zfs clone [-o prop=value]... dataset@snapshot target``; returns the clone."""
        clone = target if isinstance(target, Dataset) else Dataset(target)
        run([ZFS, "clone", *_options(props), f"{self.name}@{snapshot}", clone.name])
        return clone

    def destroy(self, recursive: bool = False) -> None:
        """``zfs destroy [-r] name``. Fails while clones depend on its snapshots."""
        _run_retrying_busy([ZFS, "destroy", *(["-r"] if recursive else []), self.name])

    def rename(self, new: str | Dataset) -> Dataset:
        """``zfs rename name new``; returns the renamed dataset.

        zfs-fuse cannot rename a mounted file system ("dataset is busy"): unmount first.
        """
        target = new if isinstance(new, Dataset) else Dataset(new)
        _run_retrying_busy([ZFS, "rename", self.name, target.name])
        return target

    def set(self, prop: str, value: PropValue) -> None:
        run([ZFS, "set", f"{prop}={_format(value)}", self.name])

    def get(self, prop: str) -> str:
        """The property's value as ``zfs get -H -p`` prints it (``-`` when it has none)."""
        return output([ZFS, "get", "-H", "-p", "-o", "value", prop, self.name])

    def inherit(self, prop: str) -> None:
        run([ZFS, "inherit", prop, self.name])

    def mount(self) -> None:
        run([ZFS, "mount", self.name])

    def unmount(self) -> None:
        _run_retrying_busy([ZFS, "unmount", self.name])

    @property
    def mounted(self) -> bool:
        return self.get("mounted") == "yes"

    @property
    def mountpoint(self) -> Path | None:
        """Where the file system mounts; None for ``none``, ``legacy`` or a snapshot."""
        value = self.get("mountpoint")
        return Path(value) if value.startswith("/") else None

    @property
    def origin(self) -> Dataset | None:
        """The snapshot a clone was made from; None for a file system that is no clone."""
        value = self.get("origin")
        return None if value in ("", "-") else Dataset(value)

    def children(self) -> list[Dataset]:
        """The file systems directly below this one."""
        rows = list_datasets(self.name, depth=1)
        return [Dataset(row[0]) for row in rows if row[0] != self.name]

    def snapshots(self) -> list[str]:
        """Names (after the ``@``) of this file system's snapshots."""
        rows = list_datasets(self.name, depth=1, kind="snapshot")
        prefix = self.name + "@"
        return [row[0][len(prefix) :] for row in rows if row[0].startswith(prefix)]
