"""Benchmark `jetpack serve` beside nginx and a bare aiohttp handler (issue 5's targets).

    .venv/bin/python bench/server_bench.py [--duration 10] [--clients 32]

Everything runs on 127.0.0.1 over plain http (so both servers can use sendfile(2)):

1. a repository with one 10 MiB ACI (incompressible content), published as a push would;
2. ``jetpack serve`` on it (access log to /dev/null), nginx (``nginx-light``, our own
   temporary config and prefix, stopped by PID) serving the same directory, and a bare
   aiohttp app answering a small constant body;
3. ``wrk`` (installed with apt-get if missing) with ``--clients`` connections for the ACI
   on jetpack and nginx, and for the discovery page on jetpack vs the bare handler;
4. jetpack's RSS before, at the peak of, and after 100 concurrent ACI downloads.

Targets: ACI ≥ 0.9x nginx; discovery ≥ 0.5x bare aiohttp with p99 < 5 ms; RSS flat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAUNCH = (
    "from jetpack.cli.main import cli, main; from jetpack.cli.serve import serve, push; "
    "cli.add_command(serve); cli.add_command(push); main()"
)
BARE = """
import sys
from aiohttp import web
body = b"<html><head><meta name='ac-discovery' content='x y'></head></html>\\n" * 4
async def h(request):
    return web.Response(body=body, content_type="text/html")
app = web.Application()
app.router.add_get("/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def ensure(tool: str, package: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, check=True)
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeError(f"{tool} not found after installing {package}")
    return found


def make_repository(root: Path, work: Path) -> str:
    """Publish one 10 MiB ACI into ``root``; its URL path."""
    from jetpack.aci import ExtractLimits, build_aci, read_aci
    from jetpack.discovery import host_labels
    from jetpack.fetch.server.catalog import Entry, etag_of, quote_etag
    from jetpack.fetch.server.repository import RootRepository

    labels = host_labels()
    layout = work / "layout"
    (layout / "rootfs").mkdir(parents=True)
    manifest = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "localhost/app",
        "labels": [
            {"name": "version", "value": "1.0.0"},
            {"name": "os", "value": labels["os"]},
            {"name": "arch", "value": labels["arch"]},
        ],
    }
    (layout / "manifest").write_text(json.dumps(manifest))
    (layout / "rootfs" / "blob").write_bytes(os.urandom(10 << 20))
    aci = work / "app.aci"
    build_aci(layout, aci)
    with open(aci, "rb") as f:
        info = read_aci(f, limits=ExtractLimits())
    repo = RootRepository(root)
    asc = work / "app.aci.asc"
    asc.write_bytes(b"-----BEGIN PGP SIGNATURE-----\nbench\n-----END PGP SIGNATURE-----\n")
    entry = Entry(
        name="localhost/app",
        version="1.0.0",
        os=labels["os"],
        arch=labels["arch"],
        id=info.image_id,
        size=aci.stat().st_size,
        etag=quote_etag("sha256-bench"),
        aci=aci,
        pushed_at=time.time(),
        asc_etag=etag_of(asc.read_bytes()),
        compression=info.compression.value,
    )
    published = repo.publish(
        entry,
        staged_aci=aci,
        staged_asc=asc,
        key=None,
        allow_overwrite=True,
        conflict=lambda e: RuntimeError("exists"),
    )
    print(f"ACI: {published.size / (1 << 20):.1f} MiB ({published.compression})")
    return published.url_path()


def wrk(wrk_bin: str, url: str, clients: int, duration: int) -> tuple[float, float]:
    """(requests/s, p99 ms)."""
    out = subprocess.run(
        [wrk_bin, "-t2", f"-c{clients}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_nginx(nginx: str, root: Path, work: Path, port: int) -> subprocess.Popen[bytes]:
    conf = work / "nginx.conf"
    conf.write_text(
        f"""
daemon off; worker_processes auto; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  access_log {work}/nginx.access; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types {{ application/octet-stream aci; }}
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
    )
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    wrk_bin = ensure("wrk", "wrk")
    nginx = ensure("nginx", "nginx-light")
    work = Path(tempfile.mkdtemp(prefix="jetpack-serve-bench-"))
    work.chmod(0o755)  # nginx's workers run unprivileged: they must reach the files
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root = work / "root"
        path = make_repository(root, work)
        jp_port, ng_port, bare_port = free_port(), free_port(), free_port()
        config = work / "jetpack.toml"
        config.write_text(f'[serve]\nlisten = "127.0.0.1:{jp_port}"\nroot = "{root}"\n')
        jetpack = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--config", str(config), "--dir", str(work / "d"),
             "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(jetpack)
        procs.append(start_nginx(nginx, root, work, ng_port))
        procs.append(subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)]))
        for port in (jp_port, ng_port, bare_port):
            wait_port(port)
        for port in (jp_port, ng_port):  # both must really send the file, not an error
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as got:
                assert got.status == 200 and len(got.read()) == (root / path[1:]).stat().st_size

        def run(url: str, clients: int = args.clients) -> tuple[float, float]:
            wrk(wrk_bin, url, clients, 2)  # warm-up
            return wrk(wrk_bin, url, clients, args.duration)

        results = {
            "aci jetpack": run(f"http://127.0.0.1:{jp_port}{path}"),
            "aci nginx": run(f"http://127.0.0.1:{ng_port}{path}"),
            "discovery jetpack": run(f"http://127.0.0.1:{jp_port}/app?ac-discovery=1"),
            "bare aiohttp": run(f"http://127.0.0.1:{bare_port}/app?ac-discovery=1"),
        }
        print(f"{'':20} {'req/s':>10} {'p99 ms':>8}   ({args.clients} clients, {args.duration}s)")
        for name, (rps, p99) in results.items():
            print(f"{name:20} {rps:10.1f} {p99:8.2f}")
        aci_ratio = results["aci jetpack"][0] / results["aci nginx"][0]
        disc_ratio = results["discovery jetpack"][0] / results["bare aiohttp"][0]
        disc_p99 = results["discovery jetpack"][1]
        print(f"ACI: {aci_ratio:.2f}x nginx (target >= 0.9)")
        print(f"discovery: {disc_ratio:.2f}x bare aiohttp (target >= 0.5), p99 {disc_p99:.2f} ms "
              "(target < 5)")  # fmt: skip

        before = rss_kib(jetpack.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_kib(jetpack.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        heavy = wrk(wrk_bin, f"http://127.0.0.1:{jp_port}{path}", 100, args.duration)
        done.set()
        sampler.join()
        after = rss_kib(jetpack.pid)
        print(
            f"RSS with 100 concurrent downloads ({heavy[0]:.0f} req/s): before {before / 1024:.1f} "
            f"MiB, peak {max(peak) / 1024:.1f} MiB, after {after / 1024:.1f} MiB"
        )
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
