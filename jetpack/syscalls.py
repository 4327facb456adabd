"""The one module for Linux namespace and mount syscalls: mount(2), umount2(2),
unshare(2), setns(2), pivot_root(2), and the mount table.

Python 3.11 has no binding for these calls, so they go through ctypes, here and nowhere
else. Calling them directly rather than running ``mount``/``umount``/``unshare`` matters:
util-linux re-reads the whole mount table on every call, so its cost grows with the number
of pods, and every command started costs milliseconds a pod start cannot afford.
Each function raises :class:`OSError` (errno and the operation) when the kernel refuses.
Stage1 imports this module, so it imports nothing beyond ctypes and os: every
millisecond of import is a millisecond of every pod start. The mount table is in
:mod:`jetpack.mountinfo`.
"""

from __future__ import annotations

import ctypes
import errno
import os

TYPE_CHECKING = False  # not typing's: stage1 must not import typing (7 ms)
if TYPE_CHECKING:
    from typing import TypeAlias

    StrPath: TypeAlias = str | os.PathLike[str]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

MNT_DETACH = 2
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000

# /proc/PID/ns/<name> for each namespace flag, in the order setns(2) must join them:
# the mount namespace last, since joining it changes what /proc/PID/ns/* resolves to.
NAMESPACES = (
    ("ipc", CLONE_NEWIPC),
    ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET),
    ("pid", CLONE_NEWPID),
    ("mnt", CLONE_NEWNS),
)

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces (a new PID namespace takes its
    next child, not itself)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace open at ``fd``."""
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: StrPath, put_old: StrPath) -> None:
    """pivot_root(2); ``new_root`` must be a mount point."""
    if _SYS_PIVOT_ROOT is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unsupported machine {os.uname().machine}")
    result = _libc.syscall(_SYS_PIVOT_ROOT, os.fsencode(new_root), os.fsencode(put_old))
    _check(int(result), f"pivot_root {new_root}")


def make_private(path: StrPath) -> None:
    """Stop mount events under ``path`` (recursively) from propagating to or from the
    parent namespace."""
    _check(
        _libc.mount(b"none", os.fsencode(path), None, MS_REC | MS_PRIVATE, None),
        f"make {path} private",
    )


def bind(
    source: StrPath, target: StrPath, *, recursive: bool = True, read_only: bool = False
) -> None:
    """Bind-mount ``source`` on ``target``, read-only if asked (which takes a remount: the
    kernel ignores MS_RDONLY on the bind itself)."""
    flags = MS_BIND | (MS_REC if recursive else 0)
    mount(os.fsdecode(source), target, "none", flags=flags)
    if read_only:
        remount_read_only(target)


def remount_read_only(target: StrPath, extra: int = 0) -> None:
    """Make the bind mount at ``target`` read-only (that mount only, not ones below)."""
    mount("none", target, "none", flags=MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def detach(path: StrPath) -> None:
    """umount2(path, MNT_DETACH): lazily take the mount (and those below) away."""
    _check(_libc.umount2(os.fsencode(path), MNT_DETACH), f"umount {path}")


def mount(source: str, target: StrPath, fstype: str, options: str = "", flags: int = 0) -> None:
    """mount(2). Raises OSError (errno, with the target) when the kernel refuses."""
    data = options.encode() if options else None
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data):
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} on {target}: {os.strerror(err)}")


def unmount(path: StrPath) -> None:
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


def sethostname(name: str) -> None:
    """sethostname(2), for this process's UTS namespace."""
    data = name.encode()
    _check(_libc.sethostname(data, len(data)), f"sethostname {name}")


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up() -> None:
    """Bring ``lo`` up in this process's network namespace (a new one starts with it down)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    """prctl(2) with up to two arguments."""
    _check(_libc.prctl(option, arg, arg3, 0, 0), f"prctl {option}")


def limit_capabilities(keep: list[int] | tuple[int, ...], last: int) -> None:
    """Drop every capability but ``keep`` from the bounding set, and clear the ambient set:
    what this process execs (even a setuid-root program) never holds more than ``keep``."""
    kept = set(keep)
    for cap in range(last + 1):
        if cap not in kept:
            prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


_SYS_MOUNT_SETATTR = 442  # the same on x86_64 and aarch64 (since Linux 5.12)
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1


def make_read_only_recursively(target: StrPath) -> None:
    """mount_setattr(2): the mount at ``target`` and every mount below it read-only, in
    one step (a remount of the top one alone would leave submounts writable)."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    result = _libc.syscall(
        _SYS_MOUNT_SETATTR,
        ctypes.c_int(_AT_FDCWD),
        os.fsencode(target),
        ctypes.c_uint(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(int(result), f"make {os.fsdecode(target)} read-only")
