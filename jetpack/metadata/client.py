"""Talking to the metadata service from the runtime and the CLI, without aiohttp.

The control socket speaks one JSON object per line each way: ``{"op": ...}`` in,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}`` out. Only root reaches it (the
socket is 0600 in a 0700 directory, and the service checks the peer's credentials).

:func:`ensure_running` starts the service in the background when none answers, as
``jetpack run`` and ``prepare`` do; a start race between two of them is settled by the
service's lock (the loser exits, both clients find the winner).
"""

from __future__ import annotations

import _socket  # the C module: `socket` costs 4 ms of every pod start (enum, selectors)
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jetpack.errors import MetadataError
from jetpack.metadata.paths import MetadataPaths, metadata_url
from jetpack.store.locks import held_elsewhere

START_TIMEOUT = 15.0
REPLY_LIMIT = 1 << 20


class NotRunning(MetadataError):
    """No metadata service answers on the control socket."""


class Registered:
    """What a pod needs of its registration."""

    __slots__ = ("host", "port", "token")  # not a dataclass: 1 ms of every pod start

    def __init__(self, token: str, host: str, port: int) -> None:
        self.token = token
        self.host = host  # the service's listening address
        self.port = port

    def url(self, net: str) -> str:
        return metadata_url(self.host, self.port, self.token, net)


class MetadataClient:
    """The control socket of one data directory's metadata service."""

    def __init__(
        self,
        paths: MetadataPaths,
        *,
        timeout: float = 10.0,
        start: Callable[[], object] | None = None,
    ) -> None:
        """``start`` starts the service: :meth:`register` calls it when none answers
        (asking first would cost every pod start a round trip)."""
        self.paths = paths
        self.timeout = timeout
        self.start = start
        self.answering = True  # until a request times out or fails

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request; the reply.

        Raises:
            NotRunning: nothing listens on the control socket.
            MetadataError: the service failed the request or did not answer in time.
        """
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.paths.control))
            except (FileNotFoundError, ConnectionRefusedError) as err:
                raise NotRunning(
                    "the metadata service is not running",
                    None,
                    "start it: jetpack metadata-service",
                ) from err
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = bytearray()
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if len(reply) > REPLY_LIMIT:
                    break
        except OSError as err:
            raise MetadataError(
                f"cannot ask the metadata service ({message.get('op')})",
                err.strerror or str(err) or type(err).__name__,
                f"see {self.paths.log}",
            ) from err
        finally:
            sock.close()
        try:
            answer = json.loads(reply)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise MetadataError(
                f"the metadata service gave no answer to {message.get('op')}",
                None,
                f"see {self.paths.log}",
            )
        if not answer.get("ok"):
            raise MetadataError(
                f"the metadata service refused {message.get('op')}",
                str(answer.get("error") or "no reason given"),
            )
        return answer

    def register(
        self, uuid: str, manifest: bytes, images: list[tuple[str, str, bytes]], net: str
    ) -> Registered:
        """Register a pod: its reified manifest, (app, image ID, image manifest) of each
        app, and its network mode. Its token and the service's address."""
        message = {
            "op": "register",
            "uuid": uuid,
            "net": net,
            "manifest": manifest.decode(),
            "apps": [
                {"name": name, "image_id": image_id, "image_manifest": data.decode()}
                for name, image_id, data in images
            ],
        }
        try:
            answer = self.request(message)
        except NotRunning:
            if self.start is None:
                raise
            self.start()
            answer = self.request(message)
        return Registered(str(answer["token"]), str(answer["host"]), int(answer["port"]))

    def unregister(self, uuid: str) -> None:
        """Forget a pod: through the service when it answers, else by deleting its
        registration (the service forgets on its own the pods whose directory is gone).
        A service that did not answer in time is not asked again by this client: ``gc``
        of many pods must not wait on it once per pod."""
        if self.answering:
            try:
                self.request({"op": "unregister", "uuid": uuid})
                return
            except NotRunning:
                pass
            except MetadataError:
                self.answering = False
        self.paths.registration(uuid).unlink(missing_ok=True)

    def status(self) -> dict[str, Any] | None:
        """The service's ``pid``, ``listen``, ``started``, ``pods`` and ``running``; None
        when it does not run."""
        try:
            return self.request({"op": "status"})
        except NotRunning:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the service and wait until it is gone; its PID, None if none ran."""
        current = self.status()
        if current is None:
            return None
        pid = int(current["pid"])
        self.request({"op": "stop"})
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() > deadline:
                raise MetadataError(f"the metadata service (pid {pid}) did not stop in time")
            time.sleep(0.02)
        return pid


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", "rb") as src:
            return src.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def service_argv(data_dir: Path, config_file: Path | None) -> list[str]:
    """The command that runs the service for ``data_dir`` in the foreground.

    ``-I``: the service runs as root for a long time; nothing of the caller's environment
    or current directory may change which Python code it imports.
    """
    # absolute: the service runs in /
    argv = [sys.executable, "-I", "-m", "jetpack", "--dir", str(data_dir.absolute())]
    if config_file is not None:
        argv += ["--config", str(config_file.absolute())]
    return [*argv, "metadata-service"]


def ensure_running(
    paths: MetadataPaths, data_dir: Path, config_file: Path | None
) -> MetadataClient:
    """A client of the running service, started in the background first if needed.

    The service is started through ``sh``, which puts it in the background and exits:
    it is nobody's child here (``jetpack prepare`` ends while it runs on), in a session of
    its own (Ctrl-C at the caller's terminal is not for it), with no descriptor of ours
    (the pod's lock among them) and ``/`` as its working directory.

    Raises:
        MetadataError: it could not be started (the reason from its log).
    """
    client = MetadataClient(paths)
    if client.status() is not None:
        return client
    import subprocess

    paths.ensure()
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    with open(paths.log, "ab") as log:
        paths.log.chmod(0o600)
        launcher = subprocess.run(
            ["/bin/sh", "-c", script, "sh", str(paths.log), *service_argv(data_dir, config_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd="/",
            start_new_session=True,
            check=False,
        )
    try:
        pid = int(launcher.stdout)
    except ValueError:
        raise MetadataError(
            "cannot start the metadata service", _last_line(paths.log), f"see {paths.log}"
        ) from None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if client.status() is not None:
            return client
        if not process_alive(pid) and not held_elsewhere(paths.lock):
            # It may have lost a start race to another one, which then answers (the
            # winner holds the lock while it loads its registrations: wait for it).
            if client.status() is not None:
                return client
            break
        time.sleep(0.01)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    raise MetadataError(
        "cannot start the metadata service",
        _last_line(paths.log) or "it did not answer in time",
        f"see {paths.log}, or run jetpack with --no-mds-register",
    )


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as src:
            src.seek(max(0, src.seek(0, os.SEEK_END) - 4096))
            lines = src.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    last = lines[-1].strip() if lines else ""
    return last.removeprefix("jetpack: ")
