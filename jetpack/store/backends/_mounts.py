"""The mount table, and mount(2)/umount2(2) through ctypes.

Python 3.11 has no binding for these syscalls. Calling them directly rather than running
``mount``/``umount`` matters for per-app rootfs: util-linux re-reads the whole mount table
on every call, so its cost grows with the number of pods, while the syscall's does not.
"""

from __future__ import annotations

import ctypes
import errno
import os
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


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2
MS_BIND = 4096


def mount(source: str, target: Path, fstype: str, options: str = "", flags: int = 0) -> None:
    """mount(2). Raises OSError (errno, with the target) when the kernel refuses."""
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, options.encode()):
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} on {target}: {os.strerror(err)}")


def unmount(path: Path) -> None:
    """Unmount everything stacked on ``path``; a lazy detach only if a plain one fails."""
    target = os.fsencode(path)
    while True:
        if _libc.umount2(target, 0) == 0:
            continue  # there may be another mount below
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not (or no longer) a mount point
        if err == errno.EBUSY and _libc.umount2(target, MNT_DETACH) == 0:
            continue
        raise OSError(err, f"umount {path}: {os.strerror(ctypes.get_errno() or err)}")
