"""The Linux platform driver: what the runtime does to a pod from the outside.

Stage1 (:mod:`jetpack.runtime.stage1`) builds a pod from namespaces; this module joins
them later. A FreeBSD driver would do the same with ``jail_attach(2)``; the interface is
these functions' signatures: ``enter(pod, pid, app, argv) -> exit status``.
"""

from __future__ import annotations

import marshal
import os

from jetpack import syscalls as sc
from jetpack.errors import PodError
from jetpack.runtime.pods import Pod


def enter(pod: Pod, pid: int, app: str | None, argv: list[str]) -> int:
    """Run ``argv`` as root inside running pod ``pod`` (PID 1 is ``pid`` on the host), in
    the rootfs of ``app`` (default: the pod's only app), with the app's environment.
    Returns its exit status (128 + N when killed by signal N)."""
    launch = marshal.loads((pod.path / "launch").read_bytes())
    apps = {spec["name"]: spec for spec in launch["apps"]}
    if app is None:
        if len(apps) != 1:
            raise PodError(
                f"pod {pod.uuid} has several apps", None, f"pick one with --app: {', '.join(apps)}"
            )
        app = next(iter(apps))
    spec = apps.get(app)
    if spec is None:
        raise PodError(f"pod {pod.uuid} has no app {app}", None, f"its apps: {', '.join(apps)}")
    fds = []
    try:
        for name, _flag in sc.NAMESPACES:
            fds.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as err:
        for fd in fds:
            os.close(fd)
        raise PodError(
            f"cannot enter pod {pod.uuid}", f"its PID 1 is gone ({err.strerror})"
        ) from err
    child = os.fork()
    if child == 0:
        code = 125
        try:
            for fd, (_name, flag) in zip(fds, sc.NAMESPACES, strict=True):
                sc.setns(fd, flag)
            # Joining a PID namespace takes effect for children: fork once more.
            inner = os.fork()
            if inner == 0:
                os.closerange(3, 1 << 20)
                os.chroot(f"/apps/{spec['name']}")  # where stage1 put it in the pod's root
                try:
                    os.chdir(spec["cwd"])
                except OSError:
                    os.chdir("/")
                os.execvpe(argv[0], argv, dict(spec["env"]))
            _, status = os.waitpid(inner, 0)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
        except OSError as err:
            what = f"cannot run {argv[0]}" if err.filename == argv[0] else "cannot enter it"
            why = err.strerror or str(err)
            os.write(2, f"jetpack: pod {pod.uuid}: {what}: {why}\n".encode())
            code = 127 if isinstance(err, FileNotFoundError) else 126
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)
