"""Reading the mount table and mounting/unmounting through :mod:`jetpack.command`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from jetpack.command import run
from jetpack.errors import CommandError

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    target: Path
    root: str
    fstype: str
    source: str
    options: dict[str, str]


def mounts() -> list[Mount]:
    """The mount table of this process's mount namespace, in mount order."""
    found: list[Mount] = []
    for line in MOUNTINFO.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        fstype, source, super_options = ([*right.split(" "), "", ""])[:3]
        options: dict[str, str] = {}
        for opt in super_options.split(","):
            name, _, value = opt.partition("=")
            options[name] = _unescape(value)
        found.append(
            Mount(
                target=Path(_unescape(fields[4])),
                root=_unescape(fields[3]),
                fstype=fstype,
                source=_unescape(source),
                options=options,
            )
        )
    return found


def is_mountpoint(path: Path) -> bool:
    return any(m.target == path for m in mounts())


def unmount(path: Path) -> None:
    """Unmount everything stacked on ``path``; a lazy detach only if a plain one fails."""
    while is_mountpoint(path):
        try:
            run(["umount", str(path)])
        except CommandError:
            run(["umount", "--lazy", str(path)])
