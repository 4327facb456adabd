"""Stage1 on Linux: the pod supervisor.

Stage0 (``jetpack run``) prepares everything a pod needs — rootfs, resolved users, mount
targets made safe inside each rootfs — writes it as one plain ``launch`` file (marshal:
a dict of strings, numbers and lists), moves the pod to ``run`` and execs this module with
the pod's lock on an inherited descriptor. Stage1 then:

1. ``unshare``\\s mount, UTS, IPC, PID (and, unless ``--net=host``, network) namespaces
   and forks: the child is PID 1 of the pod, the supervisor. The parent stays outside,
   forwards SIGINT/SIGTERM/SIGHUP to it as SIGTERM, writes the ``pid`` file, and exits
   with the pod's exit status.
2. The supervisor names the host, brings up loopback, and for each app mounts, inside the
   pod's mount namespace only: the rootfs on itself, /proc, /sys (read-only), a /dev with
   its nodes, /dev/pts, /dev/shm, /dev/mqueue, the volumes; then the rootfs read-only if
   asked.
3. Each app runs its ``pre-start`` handler, then its ``exec``, then its ``post-stop``
   handler (stage2: a forked child that takes its own mount namespace, ``pivot_root``\\s
   into the app's rootfs, drops to the app's user and execs). Output goes to the app's
   log file and, prefixed with the app's name, to the supervisor's stdout/stderr.
4. SIGTERM stops the apps (SIGTERM to each); when every app is done the supervisor writes
   the final ``status`` and exits; the kernel tears the namespaces and their mounts down.

This module imports only the standard library and :mod:`jetpack.syscalls`: it runs on
every pod start, so every import is paid for every pod (see ``bench/run_bench.py``).
"""

from __future__ import annotations

import errno
import marshal
import os
import select
import sys
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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_marshal(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        marshal.dump(data, out)
    os.replace(tmp, path)


def _say(text: str) -> None:
    os.write(2, f"jetpack: {text}\n".encode(errors="replace"))


# -- the outside part -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``stage1 POD_DIR LOCK_FD``: run the pod prepared in POD_DIR; exit with its status."""
    args = sys.argv[1:] if argv is None else argv
    pod_dir, lock_fd = args[0], int(args[1])
    os.set_inheritable(lock_fd, False)  # the supervisor inherits it by fork, apps never
    with open(os.path.join(pod_dir, "launch"), "rb") as src:
        launch: dict[str, Any] = marshal.load(src)
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
    if launch["net"] != "host":
        flags |= sc.CLONE_NEWNET
    try:
        sc.unshare(flags)
    except OSError as err:
        _say(f"cannot start pod {launch['uuid']}: {err.strerror} (run jetpack as root)")
        sys.exit(EXIT_STAGE1_FAILED)
    # Signals that arrive before the supervisor can take them are remembered and sent on.
    pending: list[int] = []
    for signum in STOPPED_BY:
        signal.signal(signum, lambda n, _f: pending.append(n))
    pid = os.fork()
    if pid == 0:
        for signum in STOPPED_BY:
            signal.signal(signum, signal.SIG_DFL)
        code = EXIT_STAGE1_FAILED
        try:
            code = Supervisor(launch, pod_dir).run()
        except BaseException as err:  # PID 1 must report, never die with a traceback
            _say(f"pod {launch['uuid']} failed: {err}")
        finally:
            os._exit(code)
    with open(os.path.join(pod_dir, "pid"), "w") as out:
        out.write(f"{pid}\n")

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for signum in STOPPED_BY:
        signal.signal(signum, forward)
    if launch.get("interactive"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the app's to handle
    if pending:
        forward(pending[0], None)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = EXIT_STAGE1_FAILED << 8
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)


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
        self.status_path = os.path.join(pod_dir, "status")
        self.apps = [
            App(spec, os.path.join(pod_dir, "logs", spec["name"] + ".log"))
            for spec in launch["apps"]
        ]
        self.by_pid: dict[int, tuple[App, str]] = {}
        self.outputs: dict[int, tuple[App, int, bytearray]] = {}  # pipe fd -> app, 1|2, tail
        self.stopping = False
        self.started = _now()
        self.interactive: bool = launch.get("interactive", False)

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
            _say(f"cannot set up pod {self.launch['uuid']}: {err}")
            for app in self.apps:
                app.phase, app.error = DONE, f"pod set-up failed: {err}"
            self._write_status(final=True)
            return EXIT_STAGE1_FAILED
        for app in self.apps:
            self._advance(app)
        self._loop(wake_r)
        self._write_status(final=True)
        return self._exit_code()

    def _set_up(self) -> None:
        sc.sethostname(self.launch["hostname"])
        if self.launch["net"] == "none":
            sc.loopback_up()
        sc.make_private("/")
        for app in self.apps:
            for m in app.spec["mounts"]:
                self._mount(m)
            if app.spec["read_only"]:
                sc.remount_read_only(app.spec["root"])

    def _mount(self, m: dict[str, Any]) -> None:
        kind, target = m["kind"], m["target"]
        if kind == "bind":
            sc.bind(m["source"], target, recursive=m.get("recursive", True))
            if m.get("read_only"):
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
        # /dev/console is the terminal the pod was started on, if any (never the host's).
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
        self.stopping = True
        for pid, (_app, phase) in list(self.by_pid.items()):
            if phase in (PRE_START, MAIN):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _advance(self, app: App) -> None:
        """Start the next phase of ``app`` that has something to run."""
        while app.phase != DONE:
            argv: list[str] | None
            if app.phase == PRE_START:
                argv = None if self.stopping else app.spec.get("pre_start")
            elif app.phase == MAIN:
                argv = None if self.stopping else app.spec["exec"]
                if argv is not None:
                    app.started = _now()
            else:
                argv = app.spec.get("post_stop")
            if argv:
                self._spawn(app, argv)
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
                if not attach:
                    null = os.open("/dev/null", os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(pipes[0][1], 1)
                    os.dup2(pipes[1][1], 2)
                _exec_app(app.spec, argv, attach)
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
            try:
                ready, _, _ = select.select([wake_r, *self.outputs], [], [])
            except InterruptedError:
                ready = []
            for fd in ready:
                if fd == wake_r:
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


def _exec_app(spec: dict[str, Any], argv: list[str], attach: bool) -> None:
    """In a fresh child of PID 1: enter the app's rootfs for good and exec ``argv``.

    An attached (``--interactive``) app stays in the terminal's foreground process group,
    so Ctrl-C and job control reach it as they would a program started from the shell;
    any other app gets a session of its own, out of the terminal's reach.
    """
    if not attach:
        os.setsid()
    sc.unshare(sc.CLONE_NEWNS)
    root = spec["root"]
    os.chdir(root)
    sc.pivot_root(".", ".")  # the old root ends up stacked on the new one...
    sc.detach(".")  # ...and goes away here, so nothing of the host stays reachable
    os.chdir("/")
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
    for signum in STOPPED_BY | {signal.SIGCHLD, signal.SIGPIPE}:
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
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
