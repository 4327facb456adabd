"""The mount table of this process's mount namespace, from ``/proc/self/mountinfo``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
