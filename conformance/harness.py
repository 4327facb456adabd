"""What every conformance check stands on: the report table, the workspace (a signing key,
a test CA, ``jetpack serve`` on a loopback address of its own, a private ``/etc/hosts``
that sends ``coreos.com`` there) and the commands run against it.

Nothing here is mocked: the key is a real GnuPG key, the server the real ``jetpack serve``
over HTTPS on port 443 of a random ``127.x.y.1``, so discovery uses the default port, as
it would on the Internet. Names resolve to it only inside a private mount namespace
(``unshare -m`` with ``/etc/hosts`` bound over): the host is never changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.net import Key

REPO = Path(__file__).resolve().parent.parent
JETPACK = [sys.executable, "-m", "jetpack"]  # this virtualenv's jetpack, not a pyenv shim
DOMAIN = "coreos.com"
PUSH_TOKEN = "conformance-push-token-0123456789"
TIMEOUT = 180.0  # seconds any one command may take


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    check: str
    result: str  # PASS, FAIL or SKIP
    detail: str


_LONG_ID = re.compile(r"\b(sha512-[0-9a-f]{12})[0-9a-f]{20,}")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    verbose: bool = False
    scratch: str = ""  # the workspace's path, shown as $WORK

    def add(self, check: str, ok: bool, detail: str) -> bool:
        self._record(Result(check, "PASS" if ok else "FAIL", detail))
        return ok

    def skip(self, check: str, reason: str) -> None:
        self._record(Result(check, "SKIP", reason))

    def _record(self, result: Result) -> None:
        detail = _LONG_ID.sub(r"\1…", result.detail)
        if self.scratch:
            detail = detail.replace(self.scratch, "$WORK")
        result = Result(result.check, result.result, detail)
        self.results.append(result)
        if self.verbose:
            print(f"{result.result}  {result.check}: {result.detail}", file=sys.stderr, flush=True)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.result == "FAIL"]

    @property
    def skipped(self) -> list[Result]:
        return [r for r in self.results if r.result == "SKIP"]

    def table(self) -> str:
        """check | result | detail, the detail's lines indented under their check."""
        width = max([len("check"), *(len(r.check) for r in self.results)])
        lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
        for r in self.results:
            first, *rest = r.detail.splitlines() or [""]
            lines.append(f"{r.check:<{width}}  {r.result:<6}  {first}")
            lines.extend(f"{'':<{width}}          {line}" for line in rest)
        passed = sum(r.result == "PASS" for r in self.results)
        lines.append(
            f"\n{passed} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
            f" of {len(self.results)} checks"
        )
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps([r.__dict__ for r in self.results], indent=2)


# -- running commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        """stdout then stderr, never run together on one line."""
        sep = "\n" if self.stdout and not self.stdout.endswith("\n") else ""
        return self.stdout + sep + self.stderr

    def last_line(self) -> str:
        """The last non-empty line of stderr (else stdout): what a failure said."""
        for text in (self.stderr, self.stdout):
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return f"exit status {self.returncode}, no output"


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Ran:
    """Run ``argv`` to its end; never raises for its status. Past ``timeout`` its whole
    process group is killed (a pod's or another executor's children too), not only
    ``argv[0]``. Its output goes to files, not pipes: a daemon it leaves behind holding
    them cannot keep the suite waiting."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            return Ran(argv, -1, "", f"cannot run {argv[0]}: {error.strerror}", 0.0)
        note = ""
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            note = f"\ntimed out after {timeout:.0f} s"
        except BaseException:  # ^C: its own session does not get the terminal's SIGINT
            _kill_group(proc)
            raise
        code = -1 if note else proc.returncode
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return Ran(argv, code, texts[0], texts[1] + note, time.monotonic() - start)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after 5 s."""
    for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# -- the workspace --------------------------------------------------------------------------


def _free_loopback_address() -> str:
    """A 127.x.y.1 whose port 443 nobody holds (checked by binding it)."""
    rng = random.SystemRandom()
    for _ in range(50):
        address = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 255)}.1"
        with socket.socket() as probe:
            try:
                probe.bind((address, 443))
            except OSError:
                continue
        return address
    raise RuntimeError(
        "port 443 is taken on every 127.x.y.1 tried: is a server listening on *:443? "
        "(the suite's image server needs 443 on one loopback address)"
    )


@dataclass
class Workspace:
    """A scratch directory and the image server, key and CA that live in it."""

    root: Path
    address: str = field(default_factory=_free_loopback_address)
    server: subprocess.Popen[bytes] | None = None
    fingerprint: str = ""
    gnupg: Path | None = None
    # made by prepare():
    cert: Path = field(init=False)
    key: Path = field(init=False)
    signer: Key = field(init=False)
    server_config: Path = field(init=False)

    @property
    def ca_file(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def public_key(self) -> Path:
        return self.root / "publisher.asc"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}"

    def prepare(self) -> None:
        """The signing key, the CA and a certificate, the hosts file, the server's config."""
        from tests.net import KeyMaker, TestCA  # the tests' own CA and key maker

        (self.root / "ca").mkdir(parents=True, exist_ok=True)
        ca = TestCA(self.root / "ca")
        self.cert, self.key = ca.issue((DOMAIN, "localhost", self.address))
        # gpg-agent's socket path must fit in 108 bytes: a home of its own under /tmp,
        # whatever $TMPDIR is
        self.gnupg = Path(tempfile.mkdtemp(prefix="jpc-gnupg-", dir="/tmp"))
        try:
            key = KeyMaker(self.gnupg).make("ACE conformance <conformance@example.com>")
        except AssertionError as err:  # what KeyMaker says when gpg fails
            raise RuntimeError(f"cannot make a GnuPG key: {err}") from err
        self.signer = key
        self.fingerprint = key.fingerprint
        self.public_key.write_bytes(key.public)
        original = Path("/etc/hosts").read_text(errors="replace")
        self.hosts.write_text(f"{self.address} {DOMAIN}\n{original}")
        (self.root / "vendor").mkdir(exist_ok=True)
        self.server_config = self.root / "server.toml"
        self.server_config.write_text(
            f"""[serve]
root = "{self.root / "repo"}"
tls-cert = "{self.cert}"
tls-key = "{self.key}"
public-url = "{self.url}"
trust = "{self.root / "server-trust"}"
[[serve.users]]
name = "conformance"
token = "{PUSH_TOKEN}"
prefixes = ["{DOMAIN}"]
[fetch]
ca-file = "{self.ca_file}"
[trust]
local = "{self.root / "server-trust"}"
vendor = "{self.root / "vendor"}"
"""
        )

    def close(self) -> None:
        """Stop the gpg-agent that signing started, remove the key's home."""
        if self.gnupg is not None:
            run(["gpgconf", "--homedir", str(self.gnupg), "--kill", "gpg-agent"], timeout=30)
            shutil.rmtree(self.gnupg, ignore_errors=True)

    def trust_on_server(self) -> Ran:
        """The server takes pushes signed by the run's key for coreos.com."""
        return self.jetpack(
            "trust",
            "--prefix",
            DOMAIN,
            "--skip-fingerprint-review",
            str(self.public_key),
            config=self.server_config,
        )

    def sign(self, aci: Path) -> Path:
        signature = aci.with_name(aci.name + ".asc")
        signature.write_bytes(self.signer.sign(aci.read_bytes()))
        return signature

    @staticmethod
    def argv(*argv: str, config: Path | None = None, data: Path | None = None) -> list[str]:
        """``jetpack [--dir DATA] [--config CONFIG] ARGV``, as this virtualenv runs it."""
        head = [*JETPACK]
        if data is not None:
            head += ["--dir", str(data)]
        if config is not None:
            head += ["--config", str(config)]
        return [*head, *argv]

    def jetpack(self, *argv: str, config: Path | None = None, data: Path | None = None) -> Ran:
        return run(self.argv(*argv, config=config, data=data))

    def in_names(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Ran:
        """``argv`` where coreos.com is this workspace's server (a private mount namespace
        with its own /etc/hosts)."""
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return run(["unshare", "-m", "sh", "-c", script, str(self.hosts), *argv], env=env)

    def shell_in_names(self, command: str, env: dict[str, str]) -> Ran:
        return self.in_names(["sh", "-c", command], env=env)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """``jetpack serve`` on ADDRESS:443 for coreos.com until the block ends."""
        log = (self.root / "serve.log").open("wb")
        argv = [
            *JETPACK,
            "--config",
            str(self.server_config),
            "serve",
            "--listen",
            f"{self.address}:443",
        ]
        self.server = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            self._wait_healthy()
            yield
        finally:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            log.close()

    def _wait_healthy(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))  # the IP is in the cert
        deadline = time.monotonic() + 30
        health = f"https://{self.address}/_jetpack/v1/health"
        while True:
            assert self.server is not None
            if self.server.poll() is not None:
                raise RuntimeError(f"jetpack serve exited: {self.serve_log_tail()}")
            try:
                with urllib.request.urlopen(health, context=context, timeout=2):
                    return
            except OSError as err:
                if time.monotonic() > deadline:
                    tail = self.serve_log_tail()
                    raise RuntimeError(f"jetpack serve did not answer ({err}): {tail}") from err
                time.sleep(0.1)

    def serve_log_tail(self) -> str:
        path = self.root / "serve.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return " / ".join(lines[-3:]) or "(no output)"

    def push(self, aci: Path) -> Ran:
        return self.jetpack(
            "push",
            "--server",
            f"https://{self.address}",
            "--token",
            PUSH_TOKEN,
            str(aci),
            config=self.server_config,
        )

    def client_config(self, name: str, extra: str = "") -> Path:
        """A client's configuration: the CA, a trust store of its own, a metadata service
        on a free port (so a system one on the default port is left alone)."""
        path = self.root / f"{name}.toml"
        path.write_text(
            f"""[fetch]
ca-file = "{self.ca_file}"
[trust]
local = "{self.root / f"trust-{name}"}"
vendor = "{self.root / "vendor"}"
[metadata]
listen = "127.0.0.1:0"
{extra}"""
        )
        return path


def ci() -> bool:
    return os.environ.get("CI") == "true"
