"""Starting stage1 while stage0 still prepares the pod: ``jetpack run``'s fast start.

Stage1 is a fresh interpreter (lean, so the pod's supervisor stays small), and booting one
takes ~15 ms on a small VM; stage0 spends far longer importing the schema and the store
and preparing the pod. ``jetpack run`` therefore forks as soon as it knows it will run a
pod: the **parent** — the process the shell waits for — execs stage1 at once, which boots
and then waits on a socket; the **child** carries on as stage0 and, once the pod is
prepared and moved to ``run``, sends stage1 the pod's directory and, as SCM_RIGHTS, the
descriptor holding the pod's lock, then exits. The lock never has a moment without a
holder.

If stage0 fails (or is interrupted) it prints its one-line error and exits without
sending anything: stage1 sees the end of the socket and exits with stage0's status.

Only stdlib modules are imported here; :func:`stage1_argv` is shared with
``run-prepared``, which simply execs stage1 with the lock descriptor inherited.
"""

from __future__ import annotations

import _socket  # the C module: `socket` costs 4 ms (enum, selectors) before the fork
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from jetpack.runtime.pods import Pod


def stage1_argv(*args: str) -> list[str]:
    """The command that becomes stage1: this interpreter in isolated mode, without site
    (its import costs milliseconds per pod), finding jetpack where this one was found.

    ``-I``: no environment variables, no user site, and no current directory on
    ``sys.path`` (stage1 runs as root: a select.py where jetpack was started must never
    be imported).
    """
    package_parent = os.path.realpath(__file__).rsplit(os.sep, 3)[0]  # .../jetpack/runtime/x.py
    boot = (
        f"import sys; sys.path.insert(0, {package_parent!r}); "
        "from jetpack.runtime.stage1 import main; main()"
    )
    return [sys.executable, "-I", "-S", "-c", boot, *args]


class Handoff:
    """Stage0's end of the socket to the stage1 that :func:`fork_stage1` started."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock

    def send(self, pod: Pod, discard: Callable[[], None]) -> NoReturn:
        """Move the prepared pod (locked by us) to ``run``, hand it to stage1, and end
        this process (the store is left open on purpose: see ``cli/pod.py``).

        Interrupts wait until this is done. If stage1 is gone (killed meanwhile), the pod
        is ``discard``-ed and :class:`PodError` says so, instead of a pod that never ran.
        """
        import signal

        from jetpack.errors import PodError
        from jetpack.runtime.pods import PodState

        assert pod.lock_fd is not None
        stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pod.move(PodState.RUN)
            rights = pod.lock_fd.to_bytes(4, sys.byteorder)
            self._sock.sendmsg(
                [os.fsencode(pod.path)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)]
            )
        except OSError as err:
            discard()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            raise PodError(
                f"cannot start pod {pod.uuid}",
                f"stage1 is gone ({err.strerror or err})",
                "was jetpack run killed? the pod was removed",
            ) from err
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def fork_stage1() -> Handoff:
    """Fork: the parent becomes stage1 now; the child returns, to prepare the pod."""
    theirs, ours = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child != 0:
        ours.close()
        fd = theirs.detach()
        os.set_inheritable(fd, True)
        argv = stage1_argv("--handoff", str(fd), str(child))
        try:
            os.execv(argv[0], argv)
        except OSError as err:  # the child finds the socket closed and gives up
            os.write(2, f"jetpack: cannot start stage1 ({argv[0]}): {err.strerror}\n".encode())
            os._exit(125)
    theirs.close()
    return Handoff(ours)
