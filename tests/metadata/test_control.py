"""The service as a process: its control socket, its command line, its life and restarts.

Every service these tests start is stopped in a finalizer, by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jetpack.errors import MetadataError
from jetpack.metadata.client import MetadataClient, ensure_running
from jetpack.metadata.paths import MetadataPaths
from jetpack.metadata.registry import Registration
from tests.metadata import UUID_A, UUID_B, UUID_C, PodSpec, names, pod_a, pod_b

ANNOUNCE = re.compile(r"jetpack metadata service on http://(\S+) for (\S+)")
NOBODY = 65534


@dataclass
class Env:
    """A data directory and a configuration file for one service."""

    data: Path
    config: Path

    @property
    def paths(self) -> MetadataPaths:
        return MetadataPaths.for_data_dir(self.data)

    @property
    def client(self) -> MetadataClient:
        return MetadataClient(self.paths, timeout=5)

    def make_pod_dir(self, uuid: str) -> Path:
        path = self.data / "pods" / "run" / uuid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def register(self, pod: PodSpec) -> str:
        """Register ``pod`` (making its directory first); its URL on the host's network."""
        self.make_pod_dir(pod.uuid)
        return self.client.register(pod.uuid, pod.manifest, pod.images, "host").url("host")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass
class Services:
    """Starts ``jetpack metadata-service`` processes and stops them all at the end."""

    root: Path
    command: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # started by others (ensure_running)
    count: int = 0

    def env(self, config_text: str = '[metadata]\nlisten = "127.0.0.1:0"\n') -> Env:
        self.count += 1
        base = self.root / f"env{self.count}"
        base.mkdir(parents=True)
        config = base / "jetpack.toml"
        config.write_text(config_text)
        return Env(base / "data", config)

    def argv(self, env: Env, *args: str) -> list[str]:
        return [
            *self.command, "--dir", str(env.data), "--config", str(env.config),
            "metadata-service", *args,
        ]  # fmt: skip

    def start(self, env: Env, *args: str) -> Running:
        log = env.config.parent / f"service{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self.argv(env, *args), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = ANNOUNCE.search(log.read_text())
            if found:
                assert found.group(2) == str(env.data)
                return Running(proc, found.group(1), log)
            if proc.poll() is not None:
                raise AssertionError(f"the service exited {proc.returncode}: {log.read_text()}")
            time.sleep(0.02)
        raise AssertionError(f"the service did not start: {log.read_text()}")

    def run(self, env: Env, *args: str) -> subprocess.CompletedProcess[str]:
        """The command (one that ends) run to its end (killed after 20 s)."""
        return subprocess.run(
            self.argv(env, *args), capture_output=True, text=True, timeout=20,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def adopt(self, env: Env) -> None:
        """Stop at the end the service of ``env`` that someone else started."""
        with contextlib.suppress(MetadataError):
            current = env.client.status()
            if current is not None:
                self.pids.append(int(current["pid"]))

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        for pid in self.pids:
            _stop_pid(pid)


def _stop_pid(pid: int) -> None:
    """Stop a service that is not our Popen's (ensure_running's), by its PID."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child, or reaped already
            if not Path(f"/proc/{pid}").exists():
                return
            reaped = 0
        if reaped:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@pytest.fixture
def services(tmp_path: Path, jetpack_cmd: list[str]) -> Iterator[Services]:
    manager = Services(tmp_path, jetpack_cmd)
    yield manager
    manager.cleanup()


# -- HTTP and raw control helpers -----------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, form: dict[str, str | bytes] | None = None) -> tuple[int, bytes]:
    data = None if form is None else urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data)
    try:
        with _OPENER.open(request, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def raw_control(paths: MetadataPaths, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(paths.control))
        with contextlib.suppress(BrokenPipeError):  # it may answer before reading all
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- registration through the control socket ------------------------------------------------


def test_register_status_start_unregister(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    client = env.client
    status = client.status()
    assert status is not None
    assert status["pid"] == running.proc.pid
    assert (status["listen"], status["pods"], status["running"]) == (running.address, 0, 0)

    registered = client.register(UUID_A, pod_a().manifest, pod_a().images, "host")
    assert (registered.host, registered.port) == ("127.0.0.1", running.port)
    url = registered.url("host")
    assert url == f"http://{running.address}/{registered.token}"
    assert registered.url("default") == f"http://127.0.0.1:{running.port}/{registered.token}"
    saved = env.paths.pods / f"{UUID_A}.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert Registration.from_json(json.loads(saved.read_bytes())).token == registered.token
    assert http(f"{url}/acMetadata/v1/pod/uuid") == (200, UUID_A.encode())

    url_b = env.register(pod_b())
    assert url_b != url
    status = client.status()
    assert status is not None and (status["pods"], status["running"]) == (2, 0)

    with pytest.raises(MetadataError, match="already registered"):
        client.register(UUID_A, pod_a().manifest, pod_a().images, "host")
    assert Registration.from_json(json.loads(saved.read_bytes())).token == registered.token

    assert client.request({"op": "start", "uuid": UUID_A, "pid": os.getpid()})["ok"] is True
    status = client.status()
    assert status is not None and status["running"] == 1
    with pytest.raises(MetadataError, match="refused start"):
        client.request({"op": "start", "uuid": UUID_C, "pid": os.getpid()})

    client.unregister(UUID_A)
    assert not saved.exists()
    assert http(f"{url}/acMetadata/v1/pod/uuid")[0] == 401
    assert http(f"{url_b}/acMetadata/v1/pod/uuid") == (200, UUID_B.encode())
    status = client.status()
    assert status is not None and (status["pods"], status["running"]) == (1, 0)
    client.unregister(UUID_A)  # again: nothing to do, no error
    assert names(env.paths.pods) == [f"{UUID_B}.json"]


def test_unregister_without_a_service_deletes_the_file(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    env.register(pod_a())
    assert env.client.stop() == running.proc.pid
    assert env.client.status() is None
    env.client.unregister(UUID_A)
    assert not (env.paths.pods / f"{UUID_A}.json").exists()


def test_a_second_service_for_the_same_data_dir_fails(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    second = services.run(env)
    assert second.returncode == 1
    line = one_line(second.stderr)
    assert line.startswith(f"jetpack: a metadata service already runs for {env.data}")
    assert second.stdout == ""
    status = env.client.status()
    assert status is not None and status["pid"] == running.proc.pid


def test_a_taken_address_is_a_one_line_error(services: Services) -> None:
    first = services.env()
    running = services.start(first)
    other = services.env(f'[metadata]\nlisten = "{running.address}"\n')
    result = services.run(other)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"jetpack: cannot listen on {running.address}")
    assert other.client.status() is None


def test_status_when_not_running(services: Services) -> None:
    env = services.env()
    result = services.run(env, "--status")
    assert result.returncode == 3
    assert one_line(result.stdout) == f"metadata service: not running (for {env.data})"
    result = services.run(env, "--status", "--format", "json")
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"running": False}


def test_status_when_running(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    env.register(pod_a())
    result = services.run(env, "--status")
    assert result.returncode == 0, result.stderr
    line = one_line(result.stdout)
    assert re.fullmatch(
        rf"metadata service: running \(pid {running.proc.pid}\) on "
        rf"http://{re.escape(running.address)}, serving 1 pods \(0 running\), "
        r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        line,
    ), line
    result = services.run(env, "--status", "--format", "json")
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status.pop("started"))
    assert status == {
        "running": True,
        "pid": running.proc.pid,
        "listen": running.address,
        "pods": 1,
        "running_pods": 0,
    }


def test_stop(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    result = services.run(env, "--stop")
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == f"stopped (pid {running.proc.pid})"
    assert running.proc.wait(5) == 0
    assert not env.paths.control.exists()
    assert not env.paths.forward.exists()
    assert "Traceback" not in running.log.read_text()
    result = services.run(env, "--stop")
    assert (result.returncode, result.stdout.strip()) == (0, "not running")
    assert services.run(env, "--status").returncode == 3


def test_status_and_stop_together_are_a_usage_error(services: Services) -> None:
    result = services.run(services.env(), "--status", "--stop")
    assert result.returncode == 2
    assert "not both" in one_line(result.stderr)


def test_sigterm_stops_it_cleanly(services: Services) -> None:
    env = services.env()
    running = services.start(env)
    os.kill(running.proc.pid, signal.SIGTERM)
    assert running.proc.wait(5) == 0
    assert not env.paths.control.exists()
    assert env.client.status() is None


# -- restarts --------------------------------------------------------------------------------


def test_restart_keeps_tokens_keys_and_port(services: Services) -> None:
    env = services.env()
    first = services.start(env)
    url = env.register(pod_a())
    url_b = env.register(pod_b())
    status, signature = http(f"{url}/acMetadata/v1/pod/hmac/sign", {"content": b"\xffbefore"})
    assert status == 200
    assert env.client.stop() == first.proc.pid
    assert first.proc.wait(5) == 0
    with pytest.raises(urllib.error.URLError):
        http(f"{url}/acMetadata/v1/pod/uuid")

    second = services.start(env)
    assert second.address == first.address  # port 0: the last one's port, pods were told it
    current = env.client.status()
    assert current is not None and current["pods"] == 2
    assert http(f"{url}/acMetadata/v1/pod/uuid") == (200, UUID_A.encode())
    form: dict[str, str | bytes] = {
        "content": b"\xffbefore",
        "uuid": UUID_A,
        "signature": signature,
    }
    assert http(f"{url_b}/acMetadata/v1/pod/hmac/verify", form) == (200, b"")
    assert http(f"{url}/acMetadata/v1/pod/hmac/sign", {"content": b"\xffbefore"}) == (
        200,
        signature,
    )


def test_registrations_of_gone_pods_are_dropped_at_start(services: Services) -> None:
    env = services.env()
    first = services.start(env)
    url_a = env.register(pod_a())
    url_b = env.register(pod_b())
    assert env.client.stop() == first.proc.pid
    shutil.rmtree(env.data / "pods" / "run" / UUID_B)
    corrupted = env.paths.pods / f"{UUID_C}.json"
    corrupted.write_text('{"uuid": "truncated')
    second = services.start(env)
    current = env.client.status()
    assert current is not None and current["pods"] == 1
    assert not (env.paths.pods / f"{UUID_B}.json").exists()
    assert http(f"{url_b}/acMetadata/v1/pod/uuid")[0] == 401
    assert http(f"{url_a}/acMetadata/v1/pod/uuid") == (200, UUID_A.encode())
    log = second.log.read_text()
    assert f"pod {UUID_B} is gone" in log
    assert "ignoring a registration" in log and str(corrupted) in log


def test_a_pod_in_another_state_directory_is_kept(services: Services) -> None:
    env = services.env()
    first = services.start(env)
    url = env.register(pod_a())
    assert env.client.stop() == first.proc.pid
    (env.data / "pods" / "exited-garbage").mkdir()
    (env.data / "pods" / "run" / UUID_A).rename(env.data / "pods" / "exited-garbage" / UUID_A)
    services.start(env)
    assert http(f"{url}/acMetadata/v1/pod/uuid") == (200, UUID_A.encode())


# -- malformed control requests: one service for them all ----------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Services, Env]]:
    # under /tmp itself, not pytest's 0700 directory: the non-root test needs a way in
    root = Path(tempfile.mkdtemp(prefix="jetpack-mds-test-"))
    root.chmod(0o711)
    script = Path(sys.executable).parent / "jetpack"
    manager = Services(
        root, [str(script)] if script.exists() else [sys.executable, "-m", "jetpack"]
    )
    try:
        env = manager.env()
        manager.start(env)
        yield manager, env
    finally:
        manager.cleanup()
        shutil.rmtree(root)


def _register_line(**fields: object) -> bytes:
    pod = pod_a()
    request: dict[str, object] = {
        "op": "register",
        "uuid": UUID_A,
        "manifest": pod.manifest.decode(),
        "apps": [
            {"name": name, "image_id": image_id, "image_manifest": data.decode()}
            for name, image_id, data in pod.images
        ],
    }
    request.update(fields)
    request = {k: v for k, v in request.items() if v is not None}
    return json.dumps(request).encode() + b"\n"


_LIST_NAME = json.dumps({"apps": [{"name": ["web"]}]})

CONTROL_MALFORMED = [
    pytest.param(b"not json\n", id="not json"),
    pytest.param(b"\xff\xfe\n", id="not utf-8"),
    pytest.param(b"\n", id="empty line"),
    pytest.param(b"", id="nothing"),
    pytest.param(b"[1, 2]\n", id="not an object"),
    pytest.param(b'{"op": "frobnicate"}\n', id="unknown op"),
    pytest.param(b'{"no": "op"}\n', id="no op"),
    pytest.param(_register_line(apps=None), id="register without apps"),
    pytest.param(_register_line(manifest=None), id="register without manifest"),
    pytest.param(_register_line(manifest=3), id="register manifest not a string"),
    pytest.param(_register_line(manifest="{not json"), id="register manifest not json"),
    pytest.param(_register_line(apps=[]), id="register no app of the manifest"),
    pytest.param(_register_line(apps=["web", 3]), id="register apps not objects"),
    pytest.param(_register_line(uuid="../../etc"), id="register bad uuid"),
    pytest.param(_register_line(uuid=None), id="register without uuid"),
    pytest.param(_register_line(uuid=[UUID_A]), id="register uuid a list"),
    pytest.param(
        _register_line(manifest=_LIST_NAME, apps=[{"name": "web"}]),
        id="register app name a list",
    ),
]


@pytest.mark.parametrize("line", CONTROL_MALFORMED)
def test_malformed_control_requests_get_an_error(shared: tuple[Services, Env], line: bytes) -> None:
    _manager, env = shared
    reply = raw_control(env.paths, line)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    answer = json.loads(reply)
    assert answer["ok"] is False
    assert isinstance(answer["error"], str) and answer["error"]
    # still running, nothing registered
    status = env.client.status()
    assert status is not None and status["pods"] == 0
    assert names(env.paths.pods) == []


def test_a_non_root_peer_is_refused(shared: tuple[Services, Env]) -> None:
    _manager, env = shared
    paths = env.paths
    saved = {p: stat.S_IMODE(p.stat().st_mode) for p in (paths.root, paths.run_dir)}
    for path in (env.data, paths.root, paths.run_dir):
        path.chmod(0o711)
    paths.control.chmod(0o666)
    try:
        refusal, attempt = _as_nobody(paths, _register_line())
    finally:
        paths.control.chmod(0o600)
        for path, mode in saved.items():
            path.chmod(mode)
    # even a harmless request (status) is refused, and a registration with the reason
    assert json.loads(refusal) == {"ok": False, "error": "only root may register pods"}
    assert json.loads(attempt) == {"ok": False, "error": "only root may register pods"}
    assert names(paths.pods) == []
    status = env.client.status()
    assert status is not None and status["pods"] == 0


def _as_nobody(paths: MetadataPaths, line: bytes) -> tuple[bytes, bytes]:
    """From a child process running as nobody: what the control socket says to a status
    request, and what it says to ``line`` (or the error met)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only os._exit
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if os.geteuid() != NOBODY:
                raise RuntimeError("still root")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(paths.control))
                sock.sendall(b'{"op": "status"}\n')
                refusal = b""
                while chunk := sock.recv(65536):
                    refusal += chunk
            try:
                attempt = raw_control(paths, line)
            except OSError as err:
                attempt = repr(err).encode()
            os.write(write_end, refusal.replace(b"\n", b" ") + b"\n" + attempt)
        except BaseException as err:
            with contextlib.suppress(BaseException):
                os.write(write_end, f"child: {err!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as src:
        reply = src.read()
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, reply
    refusal, _, attempt = reply.partition(b"\n")
    return refusal, attempt


# -- ensure_running and the configuration ------------------------------------------------------


def test_ensure_running_starts_one_then_finds_it(services: Services) -> None:
    env = services.env()
    assert env.client.status() is None
    started = time.monotonic()
    try:
        client = ensure_running(env.paths, env.data, env.config)
    finally:
        services.adopt(env)  # whatever happens, its PID is stopped at the end
    assert time.monotonic() - started < 10
    first = client.status()
    assert first is not None
    assert stat.S_IMODE(env.paths.log.stat().st_mode) == 0o600
    assert "jetpack metadata service on http://127.0.0.1:" in env.paths.log.read_text()
    started = time.monotonic()
    again = ensure_running(env.paths, env.data, env.config)
    assert time.monotonic() - started < 0.5
    second = again.status()
    assert second is not None and second["pid"] == first["pid"]
    assert int(first["pid"]) in services.pids


def test_ensure_running_reports_why_it_cannot_start(services: Services) -> None:
    env = services.env('[metadata]\nlisten = "127.0.0.1:0"\n')
    env.config.write_text('[metadata]\nlisten = "not-an-ip:18112"\n')
    with pytest.raises(MetadataError, match="cannot start the metadata service") as caught:
        ensure_running(env.paths, env.data, env.config)
    assert "metadata.listen" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert env.client.status() is None


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("localhost:18112", "the host must be an IP address"),
        ("18112", "is not HOST:PORT"),
        ("127.0.0.1:99999", "is not HOST:PORT"),
        ("::1:18112", "IPv6 address in brackets"),
    ],
)
def test_a_bad_listen_in_the_config_is_a_one_line_error(
    services: Services, listen: str, message: str
) -> None:
    env = services.env(f'[metadata]\nlisten = "{listen}"\n')
    for args in ((), ("--status",)):
        result = services.run(env, *args)
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert line.startswith(f"jetpack: invalid configuration {env.config}")
        assert "metadata.listen" in line and message in line
    assert not env.paths.control.exists()


def test_a_bad_listen_option_is_a_usage_error(services: Services) -> None:
    env = services.env()
    result = services.run(env, "--listen", "localhost:1")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "--listen" in line and "the host must be an IP address" in line
    assert not env.paths.control.exists()


def test_listen_option_beats_the_config(services: Services) -> None:
    env = services.env('[metadata]\nlisten = "127.0.0.1:1"\n')
    running = services.start(env, "--listen", "127.0.0.1:0")
    assert running.address.startswith("127.0.0.1:") and running.port not in (0, 1)


def test_mds_alias_and_ipv6(services: Services) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    env = services.env('[metadata]\nlisten = "[::1]:0"\n')
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as err:
        pytest.skip(f"no IPv6 loopback: {err}")
    command = services.command
    running = services.start(env)
    assert running.address.startswith("[::1]:")
    env.make_pod_dir(UUID_A)
    registered = env.client.register(UUID_A, pod_a().manifest, pod_a().images, "host")
    assert registered.url("host") == f"http://{running.address}/{registered.token}"
    assert http(f"{registered.url('host')}/acMetadata/v1/pod/uuid") == (200, UUID_A.encode())
    result = subprocess.run(
        [*command, "--dir", str(env.data), "--config", str(env.config), "mds", "--status"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0
    assert f"on http://{running.address}," in result.stdout
