"""Stage1 on Linux: the pod supervisor.

Stage0 (``jetpack run``) prepares everything a pod needs — rootfs, resolved users, mount
targets made safe inside each rootfs — writes it as one plain ``launch`` file (marshal:
a dict of strings, numbers and lists), moves the pod to ``run`` and execs this module with
the pod's lock on an inherited descriptor. Stage1 then:

1. The outer process unshares a PID namespace and forks: the child is PID 1 of the
   pod, the supervisor. The parent stays in the host's namespaces, writes the ``pid``
   file, forwards SIGINT/SIGTERM/SIGHUP to PID 1 as SIGTERM, relays an ``--interactive``
   app's terminal through a pty of its own (so the app never holds the caller's terminal:
   no TIOCSTI into the host shell), tells the metadata service the pod started, and exits
   with the pod's exit status.
2. PID 1 takes new mount, UTS, IPC (and, unless ``--net=host``, network) namespaces,
   names the host, brings up loopback, and builds the pod's root: a tmpfs with each app's
   rootfs at ``/apps/<app>`` (with /proc, /sys read-only, a /dev with its nodes, devpts,
   shm, mqueue and the volumes mounted in it; read-only when asked, volumes recursively)
   and the pod's directory at ``/pod``. It pivots (``pivot_root``) into it and detaches the
   host's tree, so the pod's mount namespace holds nothing else of the host (no other
   pod's rootfs or clone), and marks itself non-dumpable, so no app reaches its root.
   A pod with a network of its own and a metadata service: PID 1 listens on the pod's
   loopback at the service's port and hands each connection, with the pod's UUID, to
   the service's forwarding socket (bound at ``/mds`` in its root), never waiting on it.
3. Each app runs its ``pre-start`` handler, then its ``exec``, then its ``post-stop``
   handler (stage2: a forked child that takes its own mount namespace, pivots
   into ``/apps/<app>``, drops its capability bounding set to the app's, sets
   no-new-privileges if asked, drops to the app's user and execs). Output goes to the
   app's log file and, prefixed with the app's name, to the supervisor's stdout/stderr.
4. SIGTERM sends SIGTERM to every process of the pod. When every app is done, whatever
   they left running is killed, the final ``status`` written, and PID 1 exits; the
   kernel tears the namespaces and their mounts down.

This module imports only the standard library's C modules and :mod:`jetpack.syscalls`:
it runs on every pod start, so every import is paid for every pod
(see ``bench/run_bench.py``).
"""

from __future__ import annotations

import _socket  # C modules, imported up front: after pivot_root no module can be found
import errno
import fcntl
import marshal
import os
import select
import sys
import termios
import time

from jetpack import syscalls as sc

TYPE_CHECKING = False  # not typing's: importing typing costs 7 ms per pod start
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    import _signal as signal  # the C module: `signal` imports enum, 5 ms per pod start

EXIT_STAGE1_FAILED = 125  # like podman/docker: the runtime itself failed
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
STOPPED_BY = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
MAX_FD = 1 << 20
FORWARD_BATCH = 16  # metadata connections handed over per turn of PID 1's loop
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_marshal(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        marshal.dump(data, out)
    os.replace(tmp, path)


def _exit(code: int) -> None:
    """End stage1 now: nothing is left to clean up, and an interpreter's orderly shutdown
    would add milliseconds to every pod's exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _say(text: str) -> None:
    os.write(2, f"jetpack: {text}\n".encode(errors="replace"))


# -- the outside part -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``stage1 POD_DIR LOCK_FD`` (``run-prepared``), or ``stage1 --handoff SOCKET_FD
    STAGE0_PID`` (``run``: the pod comes through the socket once stage0 prepared it; see
    :mod:`jetpack.runtime.handoff`). Runs the pod and exits with its status."""
    args = sys.argv[1:] if argv is None else argv
    # Signals that arrive before the supervisor can take them are remembered and sent on.
    pending: list[int] = []
    if args[0] == "--handoff":
        pod_dir, lock_fd = _receive(int(args[1]), int(args[2]), pending)
    else:
        pod_dir, lock_fd = args[0], int(args[1])
    os.chdir("/")
    # Whatever the caller of jetpack left open stays out of the pod; the lock goes to the
    # supervisor by fork, never to an app.
    os.closerange(3, lock_fd)
    os.closerange(lock_fd + 1, MAX_FD)
    os.set_inheritable(lock_fd, False)
    with open(os.path.join(pod_dir, "launch"), "rb") as src:
        launch: dict[str, Any] = marshal.load(src)
    terminal = next((fd for fd in (0, 1, 2) if os.isatty(fd)), None)
    pty = os.openpty() if launch["interactive"] and terminal is not None else None
    try:
        sc.unshare(sc.CLONE_NEWPID)
    except OSError as err:
        _say(f"cannot start pod {launch['uuid']}: {err.strerror} (run jetpack as root)")
        sys.exit(EXIT_STAGE1_FAILED)
    for signum in STOPPED_BY:
        signal.signal(signum, lambda n, _f: pending.append(n))
    pid = os.fork()
    if pid == 0:
        for signum in STOPPED_BY:
            signal.signal(signum, signal.SIG_DFL)
        code = EXIT_STAGE1_FAILED
        try:
            # The pod lives as long as the `jetpack run` that started it: killed (even
            # with SIGKILL), it takes PID 1, and with it every process of the pod.
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if pty is not None:
                os.close(pty[0])
                for fd in (0, 1, 2):
                    os.dup2(pty[1], fd)
                os.close(pty[1])
            code = Supervisor(launch, pod_dir).run()
        except BaseException as err:  # PID 1 must report, never die with a traceback
            _say(f"pod {launch['uuid']} failed: {_why(err)}")
        finally:
            os._exit(code)
    with open(os.path.join(pod_dir, "pid"), "w") as out:
        out.write(f"{pid}\n")
    if launch.get("mds"):
        _confirm(launch["mds"]["control"], launch["uuid"], pid)

    status_file = os.path.join(pod_dir, "status")

    def forward(_signum: int, _frame: object) -> None:
        # PID 1 of a namespace gets only the signals it has a handler for: wait until it
        # has them (it writes its first status right after), or the stop would be lost.
        deadline = time.monotonic() + 2
        while not os.path.exists(status_file) and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for signum in STOPPED_BY:
        signal.signal(signum, forward)
    if pending:
        forward(pending[0], None)
    if pty is not None:
        os.close(pty[1])
        assert terminal is not None
        status = _relay(pty[0], terminal, pid)
    else:
        status = _wait(pid)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        _record_killed(pod_dir, launch, -code)
    _exit(128 - code if code < 0 else code)


def _receive(sock_fd: int, stage0: int, pending: list[int]) -> tuple[str, int]:
    """Wait for stage0 (our child) to hand the prepared pod over: its directory and its
    lock. If stage0 ends without doing so (an error it reported, Ctrl-C), exit with its
    status. A stop signal meanwhile reaches stage0 as SIGINT, which makes it clean up,
    and is kept in ``pending``: if the pod arrives all the same, it is stopped at once."""
    import _socket  # the C module: `socket` would import enum, selectors...

    receiving = True

    def interrupt(signum: int, _frame: object) -> None:
        pending.append(signum)
        if receiving:
            try:
                os.kill(stage0, signal.SIGINT)
            except ProcessLookupError:
                pass

    for signum in STOPPED_BY:
        signal.signal(signum, interrupt)
    sock = _socket.socket(fileno=sock_fd)
    try:
        data, ancillary, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
    except OSError:
        data, ancillary = b"", []
    receiving = False  # from here on stage0 is ending, or gone: never signal it again
    sock.close()
    status = _wait(stage0)
    fds = [
        int.from_bytes(payload[i : i + 4], sys.byteorder)
        for level, kind, payload in ancillary
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
        for i in range(0, len(payload) - len(payload) % 4, 4)
    ]
    if not data or len(fds) != 1:
        code = os.waitstatus_to_exitcode(status)
        _exit(128 - code if code < 0 else code or EXIT_STAGE1_FAILED)
    return os.fsdecode(data), fds[0]


def _confirm(control: str, uuid: str, pid: int) -> None:
    """Tell the metadata service the pod started (best effort, never waiting: the pod
    does not depend on it, and a service that is down reads the pods back from disk)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(control)
        sock.send(f'{{"op": "start", "uuid": "{uuid}", "pid": {pid}}}\n'.encode())
    except OSError:
        pass
    finally:
        sock.close()


def _why(err: BaseException) -> str:
    """An OSError from :mod:`jetpack.syscalls` carries its whole story in ``strerror``."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return EXIT_STAGE1_FAILED << 8


def _record_killed(pod_dir: str, launch: dict[str, Any], signum: int) -> None:
    """PID 1 was killed (``stop --force``, the OOM killer): say so in the pod's status,
    with the exit status a shell would report, 128 + the signal."""
    path = os.path.join(pod_dir, "status")
    try:
        with open(path, "rb") as src:
            status: dict[str, Any] = marshal.load(src)
    except (OSError, EOFError, ValueError, TypeError):
        status = {"apps": {}}
    for spec in launch["apps"]:
        app = status.setdefault("apps", {}).setdefault(spec["name"], {})
        if app.get("state") != "exited":
            app.update(state="killed", exit_code=128 + signum)
    status["finished"] = _now()
    try:
        _write_marshal(path, status)
    except OSError as err:
        _say(f"cannot record the status of pod {launch['uuid']}: {err}")


def _relay(master: int, terminal: int, pid: int) -> int:
    """Copy the caller's terminal to the pod's pty and back until PID 1 exits; return its
    wait status. The caller's terminal is raw meanwhile: Ctrl-C reaches the app as a byte
    its own pty turns into SIGINT."""
    import tty

    saved = termios.tcgetattr(terminal) if os.isatty(0) else None

    def resize(_signum: int = 0, _frame: object = None) -> None:
        try:
            termios.tcsetwinsize(master, termios.tcgetwinsize(terminal))
        except OSError:
            pass

    resize()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGWINCH, resize)
    if saved is not None:
        tty.setraw(0, termios.TCSANOW)
    inputs = [0, master, wake_r]
    try:
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                ready = []
            if 0 in ready:
                try:
                    data = os.read(0, 65536)
                except OSError:  # the terminal went away (EIO)
                    data = b""
                if data:
                    _write_all(master, data)
                else:  # end of input: the pty's end-of-file character tells the app
                    inputs.remove(0)
                    _write_all(master, b"\x04")
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: no process holds the pty any more
                    data = b""
                if data:
                    try:
                        _write_all(1, data)
                    except OSError:  # the terminal went away: the pod goes on unseen
                        pass
                else:
                    inputs.remove(master)
            if wake_r in ready:
                _drain(wake_r)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _copy_rest(master)
                return status
    finally:
        if saved is not None:
            try:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # no terminal left to restore


def _copy_rest(master: int) -> None:
    """What the pod wrote to its pty just before it ended, to the caller's terminal."""
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EAGAIN: nothing more; EIO: nobody holds the pty
            return
        if not data:
            return
        try:
            _write_all(1, data)
        except OSError:
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return


# -- PID 1 ----------------------------------------------------------------------------

PRE_START, MAIN, POST_STOP, DONE = "pre-start", "main", "post-stop", "done"


class App:
    """One app's progress through pre-start → main → post-stop."""

    def __init__(self, spec: dict[str, Any], log: str) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.phase = PRE_START
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.error: str | None = None
        self.started: str | None = None
        self.finished: str | None = None
        self.log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def record(self) -> dict[str, Any]:
        state = {PRE_START: "starting", MAIN: "running", POST_STOP: "stopping", DONE: "exited"}
        out: dict[str, Any] = {"state": state[self.phase]}
        for key in ("exit_code", "error", "started", "finished"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class Supervisor:
    """PID 1 of a pod: sets the pod up, runs its apps, reaps every process."""

    def __init__(self, launch: dict[str, Any], pod_dir: str) -> None:
        self.launch = launch
        self.pod_dir = pod_dir
        self.status_path = os.path.join(pod_dir, "status")  # /pod/status once pivoted
        self.apps = [
            App(spec, os.path.join(pod_dir, "logs", spec["name"] + ".log"))
            for spec in launch["apps"]
        ]
        self.by_pid: dict[int, tuple[App, str]] = {}
        self.outputs: dict[int, tuple[App, int, bytearray]] = {}  # pipe fd -> app, 1|2, tail
        self.stopping = False
        self.swept = False
        self.started = _now()
        self.interactive: bool = launch.get("interactive", False)
        self.last_cap = 40
        self.null_fd = -1
        self.mds_listener: Any = None  # the pod's metadata port, when it has its own network
        self.mds_sender: Any = None

    # -- set-up ----------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop if not self.interactive else signal.SIG_IGN)
        signal.signal(signal.SIGHUP, self._stop)
        self._write_status()
        try:
            self._set_up()
        except OSError as err:
            why = _why(err)
            _say(f"cannot set up pod {self.launch['uuid']}: {why}")
            for app in self.apps:
                app.phase, app.error = DONE, f"pod set-up failed: {why}"
            self._write_status(final=True)
            return EXIT_STAGE1_FAILED
        for app in self.apps:
            self._advance(app)
        self._loop(wake_r)
        self._write_status(final=True)
        return self._exit_code()

    def _set_up(self) -> None:
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
        if self.launch["net"] != "host":
            flags |= sc.CLONE_NEWNET
        sc.unshare(flags)
        # Nobody in the pod may read this process's memory or reach its root through /proc.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        sc.sethostname(self.launch["hostname"])
        if self.launch["net"] == "none":
            sc.loopback_up()
        mds = self.launch.get("mds")
        if mds and self.launch["net"] != "host":
            self._listen_for_metadata(mds["port"])
        with open(CAP_LAST_CAP, "rb") as src:
            self.last_cap = int(src.read())
        sc.make_private("/")
        self.null_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # stdin of the apps
        root = self.launch["stage1_root"]
        sc.mount("tmpfs", root, "tmpfs", "mode=755,size=1m", sc.MS_NOSUID | sc.MS_NODEV)
        os.mkdir(os.path.join(root, "apps"), 0o755)
        os.mkdir(os.path.join(root, "pod"), 0o700)
        sc.bind(self.pod_dir, os.path.join(root, "pod"), recursive=False)
        if self.mds_listener is not None:
            # The service's forwarding socket, for this process only: apps never see
            # this root (and the directory holds nothing else).
            os.mkdir(os.path.join(root, "mds"), 0o700)
            sc.bind(self.launch["mds"]["forward_dir"], os.path.join(root, "mds"), recursive=False)
        for app in self.apps:
            host_root = app.spec["root"]
            app_root = os.path.join(root, "apps", app.name)
            os.mkdir(app_root, 0o755)
            sc.bind(host_root, app_root, recursive=True)
            for m in app.spec["mounts"]:
                target = app_root + m["target"][len(host_root) :]
                self._mount(m, target)
            if app.spec["read_only"]:
                sc.remount_read_only(app_root)
        # The pod's root from now on: the apps and the pod's directory, nothing else of
        # the host (its tree, other pods' rootfs and clones) stays in this namespace.
        os.chdir(root)
        sc.pivot_root(".", ".")
        sc.detach(".")
        os.chdir("/")
        self.status_path = "/pod/status"

    def _listen_for_metadata(self, port: int) -> None:
        """Listen on the pod's loopback at the metadata service's port: the apps'
        ``AC_METADATA_URL`` points here (see :meth:`_forward`)."""
        listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.setblocking(False)
        sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        sender.setblocking(False)
        self.mds_listener, self.mds_sender = listener, sender

    def _forward(self) -> None:
        """Hand the connections accepted on the pod's metadata port to the service, each
        as a descriptor with the pod's UUID: it serves them as this pod's. Never waits:
        when the service is down or behind (its queue full), the connection is closed
        and the app sees its request fail; a few at a time, so a pod that floods its
        metadata port cannot keep PID 1 from its other work."""
        uuid = self.launch["uuid"].encode()
        for _ in range(FORWARD_BATCH):
            try:
                fd, _addr = self.mds_listener._accept()
            except OSError:  # nothing more to accept (EAGAIN), or the client left
                return
            rights = (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))
            try:
                self.mds_sender.sendmsg([uuid], [rights], 0, "/mds/forward.sock")
            except OSError:
                pass
            finally:
                os.close(fd)

    def _mount(self, m: dict[str, Any], target: str) -> None:
        kind = m["kind"]
        if kind == "bind":
            sc.bind(m["source"], target, recursive=m.get("recursive", True))
            if m.get("read_only"):
                if m.get("recursive", True):
                    sc.make_read_only_recursively(target)
                else:
                    sc.remount_read_only(target)
        elif kind == "proc":
            sc.mount("proc", target, "proc", flags=sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            # The pod may read the kernel's tunables but not change the host's.
            sys_dir = os.path.join(target, "sys")
            sc.bind(sys_dir, sys_dir, recursive=False)
            sc.remount_read_only(sys_dir)
        elif kind == "sysfs":
            sc.mount(
                "sysfs",
                target,
                "sysfs",
                flags=sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
            )
        elif kind == "dev":
            self._make_dev(target)
        else:
            raise OSError(errno.EINVAL, f"unknown mount kind {kind!r}")

    def _make_dev(self, dev: str) -> None:
        sc.mount("tmpfs", dev, "tmpfs", "mode=755,size=65536k", sc.MS_NOSUID | sc.MS_NOEXEC)
        for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
            path = os.path.join(dev, name)
            os.mknod(path, 0o666 | 0o020000, os.makedev(1, minor))
            os.chmod(path, 0o666)
        tty = os.path.join(dev, "tty")
        os.mknod(tty, 0o666 | 0o020000, os.makedev(5, 0))
        os.chmod(tty, 0o666)
        console = os.path.join(dev, "console")
        with open(console, "w"):
            pass
        # /dev/console is the pod's own pty when interactive (never the host's terminal).
        source = os.ttyname(0) if self.interactive and os.isatty(0) else "/dev/null"
        sc.bind(source, console, recursive=False)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(os.path.join(dev, name), 0o755)
        sc.mount(
            "devpts",
            os.path.join(dev, "pts"),
            "devpts",
            "newinstance,ptmxmode=0666,mode=0620",
            sc.MS_NOSUID | sc.MS_NOEXEC,
        )
        os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
        sc.mount("shm", os.path.join(dev, "shm"), "tmpfs", "mode=1777", sc.MS_NOSUID | sc.MS_NODEV)
        sc.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", "", sc.MS_NOSUID | sc.MS_NODEV)
        for name, link in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(link, os.path.join(dev, name))

    # -- running ---------------------------------------------------------------------

    def _stop(self, _signum: int, _frame: object) -> None:
        """Stop the pod: SIGTERM to every process in it (post-stop handlers still run)."""
        self.stopping = True
        try:
            os.kill(-1, signal.SIGTERM)  # every process of this PID namespace but PID 1
        except ProcessLookupError:
            pass

    def _advance(self, app: App) -> None:
        """Start the next phase of ``app`` that has something to run.

        The stop signals are blocked from the look at ``stopping`` to the fork: a stop in
        between is then handled after the fork, and its ``kill(-1)`` reaches the new
        process (which drops PID 1's handlers before it unblocks them).
        """
        while app.phase != DONE:
            argv: list[str] | None
            signal.pthread_sigmask(signal.SIG_BLOCK, STOPPED_BY)
            try:
                if app.phase == PRE_START:
                    argv = None if self.stopping else app.spec.get("pre_start")
                elif app.phase == MAIN:
                    argv = None if self.stopping else app.spec["exec"]
                    if argv is not None:
                        app.started = _now()
                    elif app.exit_code is None:  # stopped before it started
                        app.exit_code = 128 + signal.SIGTERM
                        app.error = "stopped before it started"
                else:
                    # post-stop follows a main that ran; a pod stopped before it skips it
                    argv = app.spec.get("post_stop") if app.started is not None else None
                if argv:
                    self._spawn(app, argv)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPED_BY)
            if argv:
                self._write_status()
                return
            app.phase = _NEXT[app.phase]
        app.finished = app.finished or _now()
        self._write_status()

    def _spawn(self, app: App, argv: list[str]) -> None:
        attach = self.interactive and app.phase == MAIN
        pipes: list[tuple[int, int]] = [] if attach else [os.pipe(), os.pipe()]
        pid = os.fork()
        if pid == 0:
            try:
                # PID 1's handlers are not the app's: a stop must end this process (the
                # signals are still blocked here, see _advance).
                for signum in STOPPED_BY | {signal.SIGCHLD, signal.SIGPIPE}:
                    signal.signal(signum, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPED_BY)
                if not attach:
                    os.dup2(self.null_fd, 0)
                    os.dup2(pipes[0][1], 1)
                    os.dup2(pipes[1][1], 2)
                _exec_app(app.spec, argv, attach, self.last_cap)
            except BaseException as err:
                os.write(2, f"jetpack: app {app.name}: {err}\n".encode(errors="replace"))
            os._exit(EXIT_STAGE1_FAILED)
        self.by_pid[pid] = (app, app.phase)
        app.pid = pid
        for stream, (r, w) in enumerate(pipes, start=1):
            os.close(w)
            self.outputs[r] = (app, stream, bytearray())

    def _loop(self, wake_r: int) -> None:
        while any(app.phase != DONE for app in self.apps) or self.outputs:
            if not self.swept and all(app.phase == DONE for app in self.apps):
                # What the apps left behind (daemons, background jobs) ends with them;
                # it would otherwise keep the pod, and its output pipes, open.
                self.swept = True
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            watched = [wake_r, *self.outputs]
            if self.mds_listener is not None:
                watched.append(self.mds_listener.fileno())
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                ready = []
            for fd in ready:
                if self.mds_listener is not None and fd == self.mds_listener.fileno():
                    self._forward()
                elif fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                else:
                    self._pump(fd)
            self._reap()

    def _pump(self, fd: int) -> None:
        app, stream, tail = self.outputs[fd]
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            os.close(fd)
            del self.outputs[fd]
            if tail:
                self._echo(app, stream, bytes(tail) + b"\n")
            return
        os.write(app.log_fd, data)
        tail += data
        cut = tail.rfind(b"\n")
        if cut >= 0:
            self._echo(app, stream, bytes(tail[: cut + 1]))
            del tail[: cut + 1]
        elif len(tail) > 65536:
            self._echo(app, stream, bytes(tail) + b"\n")
            tail.clear()

    def _echo(self, app: App, stream: int, data: bytes) -> None:
        prefix = f"[{app.name}] ".encode()
        lines = data.splitlines(keepends=True)
        try:
            os.write(stream, b"".join(prefix + line for line in lines))
        except OSError:
            pass  # nobody is watching (a detached run): the log file has it all

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.by_pid.pop(pid, None)
            if entry is None:
                continue  # an orphan the pod's PID 1 inherited
            app, phase = entry
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            if phase == MAIN:
                app.exit_code = code
                app.finished = _now()
                app.phase = POST_STOP
            elif phase == PRE_START:
                if code != 0:
                    app.exit_code = code
                    app.error = f"pre-start handler exited with status {code}"
                    app.phase = DONE
                else:
                    app.phase = MAIN
            else:
                if code != 0 and app.error is None:
                    app.error = f"post-stop handler exited with status {code}"
                app.phase = DONE
            self._advance(app)

    # -- status ----------------------------------------------------------------------

    def _exit_code(self) -> int:
        codes = [1 if app.exit_code is None else app.exit_code for app in self.apps]
        if len(codes) == 1:
            return codes[0]
        return next((code for code in codes if code != 0), 0)

    def _write_status(self, *, final: bool = False) -> None:
        status: dict[str, Any] = {
            "started": self.started,
            "apps": {app.name: app.record() for app in self.apps},
        }
        if final:
            status["finished"] = _now()
            status["exit_code"] = self._exit_code()
        try:
            _write_marshal(self.status_path, status)
        except OSError as err:
            _say(f"cannot record the status of pod {self.launch['uuid']}: {err}")


_NEXT = {PRE_START: MAIN, MAIN: POST_STOP, POST_STOP: DONE}


# -- stage2 ---------------------------------------------------------------------------


def _exec_app(spec: dict[str, Any], argv: list[str], attach: bool, last_cap: int) -> None:
    """In a fresh child of PID 1: enter the app's rootfs for good and exec ``argv``.

    Every app gets a session of its own; an attached (``--interactive``) one takes the
    pod's pty (see :func:`_relay`) as its controlling terminal, so Ctrl-C and job control
    work as for a program started from a shell.
    """
    os.setsid()
    if attach and os.isatty(0):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pod's own pty, never the caller's
    sc.unshare(sc.CLONE_NEWNS)
    os.chdir(f"/apps/{spec['name']}")
    sc.pivot_root(".", ".")  # the old root ends up stacked on the new one...
    sc.detach(".")  # ...and goes away here, so nothing outside the app stays reachable
    os.chdir("/")
    if spec.get("no_new_privs"):
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    sc.limit_capabilities(spec["caps"], last_cap)
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    env = dict(spec["env"])
    try:
        os.chdir(spec["cwd"])
    except OSError as err:
        _say(
            f"app {spec['name']}: cannot enter its working directory {spec['cwd']}: {err.strerror}"
        )
        os._exit(EXIT_NOT_FOUND)
    # Whatever the caller of jetpack left open and inheritable stays out of the pod.
    os.closerange(3, 1 << 20)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        _say(f"app {spec['name']}: cannot run {argv[0]}: {err.strerror}")
        code = EXIT_NOT_FOUND if err.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
        os._exit(code)


if __name__ == "__main__":
    main()
