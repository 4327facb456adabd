"""A real ZFS pool for the tests, through zfs-fuse.

``zfs_pool`` (session scope) yields the name of a fresh pool on a 512 MiB sparse file:

1. installs zfs-fuse with apt-get if ``zfs``/``zfs-fuse`` are missing (skips, with apt's
   message, if that fails; skips if ``/dev/fuse`` is missing — ``modprobe fuse`` is not
   possible in a container, but the device is usually there);
2. starts the daemon unless one already answers (``zpool list``): ``zfs-fuse --no-daemon
   --no-kstat-mount`` as our child, so its PID is known without a pidfile (``--pidfile``
   is only written when it daemonizes). Debian's package tries to start it from its init
   script; with no init system here that is refused, harmlessly;
3. ``zpool create -m none jptest<pid> <file>``, and at the end ``zpool destroy``, the file
   removed, and the daemon stopped by its PID if (and only if) we started it.

zfs-fuse quirks found (0.7.0, Debian bookworm, pool version 23):

- Each mounted dataset is its own FUSE mount (``fuse.zfs`` in mountinfo), mounted and
  unmounted by the daemon; no extended attributes (``setxattr`` fails with EOPNOTSUPP).
- ``zfs list`` has no ``-p``; ``zfs get -H -p`` works.
- A mounted file system cannot be renamed ("dataset is busy"); right after ``zfs
  unmount`` it stays busy for ~50 ms (the FUSE teardown is asynchronous), so
  :mod:`jetpack.store.zfs` retries busy renames/destroys for a few seconds.
- The daemon takes several seconds to exit on SIGTERM; it starts in well under a second.
- Without ``--no-kstat-mount`` it mounts its statistics on ``/zfs-kstat``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetpack.command import run
from jetpack.errors import CommandError
from jetpack.mountinfo import mounts

ZFS_FUSE = "/usr/sbin/zfs-fuse"
POOL_SIZE = 512 << 20


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _install() -> str | None:
    """Install zfs-fuse; the reason it failed, or None."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "zfs-fuse"]
    for attempt in range(2):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode == 0:
            return None
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    return f"apt-get install zfs-fuse failed: {proc.stderr.strip()[-500:]}"


def _daemon_answers() -> bool:
    return subprocess.run(["zpool", "list", "-H"], capture_output=True).returncode == 0


def _start_daemon(log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ZFS_FUSE, "--no-daemon", "--no-kstat-mount"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not _daemon_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_daemon(proc)
            raise RuntimeError(f"zfs-fuse did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.1)
    return proc


def _stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def unmount_under(path: Path, *, source_prefix: str | None = None) -> None:
    """Unmount (lazily if need be) every mount at or below ``path``, deepest first.

    With ``source_prefix``, also every ``fuse.zfs`` mount of a dataset with that prefix.
    """
    for m in reversed(mounts()):
        below = m.target == path or path in m.target.parents
        ours = source_prefix is not None and m.source.startswith(source_prefix)
        if below or ours:
            try:
                run(["umount", str(m.target)])
            except CommandError:
                run(["umount", "--lazy", str(m.target)], check=False)


def zfs_unavailable() -> str | None:
    """Why a zfs-fuse pool cannot be had here (after trying to install it), or None."""
    if _which("zfs") is None or not Path(ZFS_FUSE).exists():
        reason = _install()
        if reason:
            return reason
    if not Path("/dev/fuse").exists():
        return "zfs-fuse needs /dev/fuse"
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return None


@contextlib.contextmanager
def zfs_pool_on_file(work: Path, size: int = POOL_SIZE) -> Iterator[str]:
    """A fresh pool on a sparse file in ``work`` (daemon started if none answers)."""
    daemon = None if _daemon_answers() else _start_daemon(work / "zfs-fuse.log")
    pool = f"jptest{os.getpid()}"
    image = work / "pool.img"
    try:
        with image.open("wb") as f:
            f.truncate(size)
        run(["zpool", "create", "-m", "none", pool, str(image)])
        try:
            yield pool
        finally:
            unmount_under(work, source_prefix=pool + "/")
            run(["zpool", "destroy", "-f", pool], check=False)
    finally:
        if daemon is not None:
            _stop_daemon(daemon)
            unmount_under(work, source_prefix=pool)
        image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def zfs_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The name of a fresh ZFS pool (zfs-fuse), destroyed at the end of the session."""
    reason = zfs_unavailable()
    if reason:
        pytest.skip(reason)
    with zfs_pool_on_file(tmp_path_factory.mktemp("zfs")) as pool:
        yield pool
