"""Benchmark: the metadata service's throughput and p99 beside a bare aiohttp handler.

Run: ``.venv/bin/python bench/mds_bench.py [--duration 5] [--runs 3]`` (as root).

1. A real pod that stays up: the tiny busybox image of ``run_bench.py`` (built once, cached
   under ``$TMPDIR/jetpack-bench/run/``) imported into a fresh data directory under
   ``$TMPDIR/jetpack-bench/mds/``, run with ``--net=host`` and a configuration whose
   ``[metadata] listen`` is ``127.0.0.1:0``: ``jetpack run`` starts the service (one
   process, the default asyncio loop), registers the pod and gives its app
   ``AC_METADATA_URL``, which the app echoes. So the token and the registration are
   real.
2. Bare handlers returning a fixed 40-byte body, each in its own process on a free port
   of 127.0.0.1, with one process, the default loop and no access log as the service: a
   ``web.Application`` with one GET route (the issue's "bare aiohttp handler": the floor
   the ratio is taken against) and a low-level ``web.Server`` handler (what the service
   is built on), measured with GET and with the POST sign gets (it reads the body): both
   printed beside the service's figures.
3. ``wrk -t2 -c32 --latency`` (Debian's ``wrk``) on each: GET ``pod/uuid``, POST
   ``pod/hmac/sign`` (``content=hello``, form-encoded, through a Lua script), and the bare
   handlers; 1 s of warm-up, then ``--duration`` seconds measured; ``--runs`` rounds, the
   order rotated each round (the machine is noisy), the median of the rounds printed with
   their range. Requests/s, p99, and the server's CPU time (user + system, from
   ``/proc/PID/stat``) per request, which other work on the machine disturbs less. Any
   non-2xx answer or socket error fails the run: a benchmark of 401s is worthless. Each
   target's answer is checked once before (the signature with ``hmac/verify``).

Targets (the issue's): the service ≥ 0.8x the bare ``web.Application``'s requests per
second, and a p99 under 10 ms. Missed targets are reported ("MISSED"), not failed: the
exit status is non-zero only on errors. The pod and the service are stopped at the end,
and the pods collected.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import IMAGE, PYTHON, BenchError, build_image, clear_data, jp, sh

CLIENTS = 32
THREADS = 2
WARM_UP = 1  # seconds, before every measure
TARGET_RATIO = 0.8  # of the bare web.Application's requests per second
TARGET_P99 = 0.010  # seconds
BARE_BODY = b"jetpack-bench: a fixed 40-byte body....\n"
SIGN_CONTENT = b"hello"
# The bare measures, and which of them each measure of the service is shown beside; its
# ratio is always taken against the bare web.Application (the floor).
BARES = {
    "app": "web.Application",
    "server": "web.Server",
    "post": "web.Server POST",
    "hmac": "web.Server signing POST",
}
SERVICE = (("uuid", "/pod/uuid", ("server",)), ("sign", "hmac/sign", ("server", "post", "hmac")))
POST_LUA = """\
wrk.method = "POST"
wrk.body = "content=hello"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""

# The bare handlers: one process, the default loop, no access log (as the service).
# argv: "app" (web.Application, one route) or "server" (low-level web.Server, as the
# service's). Prints its port once it listens; SIGTERM stops it.
BARE = """\
import asyncio, binascii, hmac, signal, socket, sys
from aiohttp import web

BODY = @BODY@
assert len(BODY) == 40
KEYED = hmac.new(b"k" * 64, digestmod="sha512")
KEYED = getattr(KEYED, "_hmac", KEYED)  # OpenSSL's object, as the service copies


async def handler(request):
    if request.method == "POST":
        body = await request.read()  # as the service reads a form
        if request.path == "/sign":  # the least a signing handler does: HMAC of content=
            mac = KEYED.copy()
            mac.update(body.partition(b"=")[2])
            signature = binascii.b2a_base64(mac.digest(), newline=False)
            return web.Response(body=signature, content_type="text/plain")
    return web.Response(body=BODY, content_type="text/plain")


async def main(kind):
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    if kind == "app":
        app = web.Application()
        app.router.add_get("/bare", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
    else:
        server = web.Server(handler, access_log=None, handler_cancellation=True)
        runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    print(sock.getsockname()[1], flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


asyncio.run(main(sys.argv[1]))
"""


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pid: int  # the server's process, whose CPU time is taken
    lua: Path | None = None  # a wrk script (the POST)


@dataclass(frozen=True)
class Measure:
    rps: float
    p99: float  # seconds
    requests: int = 0
    cpu: float = 0.0  # the server's CPU time (user + system) per request, seconds


# -- wrk --------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(out: str, what: str) -> Measure:
    """Requests/s and p99 of ``wrk --latency``'s report.

    Raises:
        BenchError: it reports non-2xx answers or socket errors, or cannot be read.
    """
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad and int(bad.group(1)):
        raise BenchError(f"{what}: wrk got {bad.group(1)} non-2xx answers:\n{out}")
    errors = re.search(r"Socket errors: (.*)", out)
    if errors and any(int(n) for n in re.findall(r"\d+", errors.group(1))):
        raise BenchError(f"{what}: wrk had socket errors ({errors.group(1).strip()}):\n{out}")
    done = re.search(r"^\s*(\d+) requests in", out, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    if not (done and rps and p99):
        raise BenchError(f"{what}: cannot read wrk's report:\n{out}")
    if not int(done.group(1)):
        raise BenchError(f"{what}: wrk completed no request:\n{out}")
    return Measure(
        float(rps.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)], int(done.group(1))
    )


def cpu_seconds(pid: int) -> float:
    """User + system time of process ``pid`` so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as err:
        raise BenchError(f"the server (pid {pid}) is gone: {err}") from err
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(wrk_bin: str, target: Target, seconds: int) -> Measure:
    argv = [wrk_bin, f"-t{THREADS}", f"-c{CLIENTS}", f"-d{seconds}s", "--latency"]
    if target.lua is not None:
        argv += ["-s", str(target.lua)]
    argv.append(target.url)
    cpu = cpu_seconds(target.pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(target.pid) - cpu
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)}: exit status {done.returncode}: {done.stderr}")
    got = parse_wrk(done.stdout, target.name)
    return Measure(got.rps, got.p99, got.requests, cpu / got.requests)


# -- what is measured -------------------------------------------------------------------------


def fetch(url: str, form: dict[str, bytes] | None = None) -> bytes:
    """The body of a 200 answer to GET (or POST of ``form``) ``url``."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as got:
            if got.status != 200:
                raise BenchError(f"{url}: HTTP {got.status}")
            body: bytes = got.read()
            return body
    except urllib.error.HTTPError as err:
        raise BenchError(f"{url}: HTTP {err.code}: {err.read()[:200]!r}") from err
    except OSError as err:
        raise BenchError(f"{url}: {err}") from err


def start_pod(data: Path, config: Path, work: Path, seconds: int) -> subprocess.Popen[bytes]:
    """A pod that echoes its ``AC_METADATA_URL`` and sleeps ``seconds``, started in the
    background: the process of its ``jetpack run`` (output to ``pod.out``, UUID to
    ``pod.uuid``)."""
    (work / "pod.uuid").unlink(missing_ok=True)
    script = f"echo URL=$AC_METADATA_URL; sleep {seconds}"
    argv = jp(
        data, "--config", str(config), "run", "--net=host", "--uuid-file-save",
        str(work / "pod.uuid"), IMAGE, "--exec", "/bin/sh", "--", "-c", script,
    )  # fmt: skip
    with open(work / "pod.out", "wb") as sink:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)


def pod_uuid(work: Path) -> str:
    uuid_file = work / "pod.uuid"
    return uuid_file.read_text().strip() if uuid_file.exists() else ""


def pod_url(pod: subprocess.Popen[bytes], work: Path) -> str:
    """The ``AC_METADATA_URL`` the pod echoes, once it has (and its UUID is saved)."""
    out = work / "pod.out"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"URL=(\S*)", out.read_text(errors="replace"))
        if found and pod_uuid(work):
            if not found.group(1).startswith("http://127.0.0.1:"):
                raise BenchError(f"the pod got AC_METADATA_URL={found.group(1)!r}")
            return found.group(1)
        if pod.poll() is not None:
            raise BenchError(f"jetpack run ended: {out.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise BenchError(f"the pod printed no URL in 30 s: {out.read_text(errors='replace')[-2000:]}")


def start_bare(script: Path, kind: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([PYTHON, "-I", str(script), kind], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the port, once it listens (or EOF if it failed)
    if not line.strip().isdigit():
        stop_proc(proc)
        raise BenchError(f"the bare {kind} handler did not start (exit status {proc.returncode})")
    return proc, int(line)


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def check_answers(targets: dict[str, Target], uuid: str, base: str) -> None:
    """Each target answers what it should, once, before the load."""
    got = fetch(targets["uuid"].url)
    if got.decode(errors="replace") != uuid:
        raise BenchError(f"pod/uuid answered {got[:100]!r}, not the pod's UUID {uuid}")
    signature = fetch(targets["sign"].url, {"content": SIGN_CONTENT})
    if len(base64.b64decode(signature, validate=True)) != 64:
        raise BenchError(f"hmac/sign answered {signature[:100]!r}, not an HMAC-SHA512")
    form = {"content": SIGN_CONTENT, "uuid": uuid.encode(), "signature": signature}
    fetch(base + "/acMetadata/v1/pod/hmac/verify", form)  # 200: the signature is the pod's
    for key in BARES:
        posted = {"content": SIGN_CONTENT} if key in ("post", "hmac") else None
        got = fetch(targets[key].url, posted)
        signed = key == "hmac" and len(base64.b64decode(got, validate=True)) == 64
        if got != BARE_BODY and not signed:
            raise BenchError(f"bare {BARES[key]} answered {got[:100]!r}")


# -- printing ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"


def rate(rps: float) -> str:
    return f"{rps:.0f}"


def row(name: str, figure: str, floor: str, ratio: str, note: str = "") -> None:
    print(f"{name:<30} {figure:>9} {floor:>14} {ratio:>6}  {note}".rstrip(), flush=True)


def spread(values: list[float], unit: str = "") -> str:
    """The range of the runs' figures, when there are several."""
    if len(values) < 2:
        return ""
    digits = 0 if not unit else 1
    return f"runs {min(values):.{digits}f}-{max(values):.{digits}f}{unit}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def median(measures: list[Measure]) -> Measure:
    return Measure(
        statistics.median(m.rps for m in measures),
        statistics.median(m.p99 for m in measures),
        cpu=statistics.median(m.cpu for m in measures),
    )


def note(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def report(results: dict[str, list[Measure]]) -> None:
    med = {key: median(measures) for key, measures in results.items()}
    app = med["app"]
    row("measure", "figure", "floor", "ratio")
    for key, label in BARES.items():
        got, runs = med[key], results[key]
        row(f"bare {label} req/s", rate(got.rps), "", "", spread([m.rps for m in runs]))
        row(f"bare {label} p99", ms(got.p99), "", "", spread([m.p99 * 1e3 for m in runs], " ms"))
        row(
            f"bare {label} CPU/req", us(got.cpu), "", "", spread([m.cpu * 1e6 for m in runs], " us")
        )
    for key, label, others in SERVICE:
        got, runs = med[key], results[key]
        ratio = got.rps / app.rps
        row(
            f"mds {label} req/s",
            rate(got.rps),
            f"bare {rate(app.rps)}",
            f"{ratio:.2f}x",
            note(
                f"(target >= {TARGET_RATIO}x: {verdict(ratio >= TARGET_RATIO)})",
                *(
                    f"vs bare {BARES[o]} {rate(med[o].rps)}: {got.rps / med[o].rps:.2f}x"
                    for o in others
                ),
                spread([m.rps for m in runs]),
            ),
        )
        row(
            f"mds {label} p99",
            ms(got.p99),
            f"bare {ms(app.p99)}",
            "",
            note(
                f"(target < {TARGET_P99 * 1e3:.0f} ms: {verdict(got.p99 < TARGET_P99)})",
                *(f"bare {BARES[o]} {ms(med[o].p99)}" for o in others),
                spread([m.p99 * 1e3 for m in runs], " ms"),
            ),
        )
        row(
            f"mds {label} CPU/req",
            us(got.cpu),
            f"bare {us(app.cpu)}",
            f"{got.cpu / app.cpu:.2f}x",
            note(
                "the server's user + system time per request",
                *(f"bare {BARES[o]} {us(med[o].cpu)}: {got.cpu / med[o].cpu:.2f}x" for o in others),
                spread([m.cpu * 1e6 for m in runs], " us"),
            ),
        )


# -- main -------------------------------------------------------------------------------------


def service_pid(data: Path, config: Path) -> int:
    """The PID of the data directory's metadata service."""
    argv = jp(data, "--config", str(config), "metadata-service", "--status", "--format", "json")
    try:
        return int(json.loads(sh(argv).stdout)["pid"])
    except (ValueError, KeyError, TypeError) as err:
        raise BenchError(f"{shlex.join(argv)}: no PID in its answer") from err


def stop_service(data: Path, config: Path) -> None:
    """Stop the data directory's metadata service (``--stop``; by its PID if that fails)."""
    done = sh(jp(data, "--config", str(config), "metadata-service", "--stop"), check=False)
    if done.returncode == 0:
        return
    print(f"mds_bench.py: metadata-service --stop: {done.stderr.strip()}", file=sys.stderr)
    try:
        os.kill(service_pid(data, config), signal.SIGTERM)
    except (BenchError, OSError) as err:
        print(f"mds_bench.py: cannot stop the metadata service: {err}", file=sys.stderr)


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measure")
    parser.add_argument("--runs", type=int, default=3, help="rounds; the median is printed")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jetpack-bench")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mds_bench.py: run as root (jetpack run)")
    if args.duration < 1 or args.runs < 1:
        sys.exit("mds_bench.py: --duration and --runs must be at least 1")
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        sys.exit("mds_bench.py: wrk is not installed (apt-get install wrk, or scripts/bench mds)")

    work = args.cache.resolve() / "mds"
    work.mkdir(parents=True, exist_ok=True)
    data, config = work / "data", work / "jetpack.toml"
    config.write_text('[metadata]\nlisten = "127.0.0.1:0"\n')
    (work / "post.lua").write_text(POST_LUA)
    (work / "bare.py").write_text(BARE.replace("@BODY@", repr(BARE_BODY)))
    # Long enough for every measure, with room; the pod is stopped at the end anyway.
    pod_seconds = args.runs * 6 * (args.duration + WARM_UP + 5) + 300

    # Killed (a timeout, kill PID): still stop the pod and the service (the finally below).
    signal.signal(signal.SIGTERM, _terminated)
    failed = False
    pod: subprocess.Popen[bytes] | None = None
    bare: list[subprocess.Popen[bytes]] = []
    try:
        aci, _rootfs = build_image(args.cache.resolve() / "run")
        if data.exists():
            stop_service(data, config)  # one a previous run left behind
        clear_data(data)
        sh(jp(data, "fetch", "--insecure-options=image", "--quiet", str(aci)))
        pod = start_pod(data, config, work, pod_seconds)
        base = pod_url(pod, work)
        uuid = pod_uuid(work)
        app, app_port = start_bare(work / "bare.py", "app")
        bare.append(app)
        server, server_port = start_bare(work / "bare.py", "server")
        bare.append(server)
        service = service_pid(data, config)
        targets = {
            "uuid": Target("mds /pod/uuid", base + "/acMetadata/v1/pod/uuid", service),
            "sign": Target(
                "mds hmac/sign", base + "/acMetadata/v1/pod/hmac/sign", service, work / "post.lua"
            ),
            "app": Target("bare web.Application", f"http://127.0.0.1:{app_port}/bare", app.pid),
            "server": Target("bare web.Server", f"http://127.0.0.1:{server_port}/bare", server.pid),
            "post": Target(
                "bare web.Server POST",
                f"http://127.0.0.1:{server_port}/bare",
                server.pid,
                work / "post.lua",
            ),
            "hmac": Target(
                "bare web.Server signing POST",
                f"http://127.0.0.1:{server_port}/sign",
                server.pid,
                work / "post.lua",
            ),
        }
        check_answers(targets, uuid, base)

        load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
        print(f"image: {aci}; pod {uuid}; service at {base.rsplit('/', 1)[0]}")
        print(f"{os.cpu_count()} CPUs, load average {load} (other work skews the figures)")
        print(
            f"wrk -t{THREADS} -c{CLIENTS} -d{args.duration}s --latency, {WARM_UP} s warm-up, "
            f"median of {args.runs} runs (targets in rotated order)",
            flush=True,
        )
        order = list(targets)
        results: dict[str, list[Measure]] = {key: [] for key in order}
        for n in range(args.runs):
            for key in order[n % len(order) :] + order[: n % len(order)]:
                wrk(wrk_bin, targets[key], WARM_UP)
                results[key].append(wrk(wrk_bin, targets[key], args.duration))
        report(results)
    except (BenchError, subprocess.TimeoutExpired) as err:
        print(f"mds_bench.py: {err}", file=sys.stderr)
        failed = True
    finally:
        for proc in bare:
            stop_proc(proc)
        if pod is not None:
            uuid = pod_uuid(work)
            if uuid and pod.poll() is None:
                done = sh(jp(data, "--config", str(config), "stop", uuid), check=False)
                if done.returncode != 0:
                    print(f"mds_bench.py: jetpack stop {uuid}: {done.stderr.strip()}",
                          file=sys.stderr)  # fmt: skip
                    failed = True
            try:
                pod.wait(30)
            except subprocess.TimeoutExpired:
                print("mds_bench.py: the pod's jetpack run did not end", file=sys.stderr)
                stop_proc(pod)
                failed = True
        if data.exists():
            done = sh(
                jp(data, "--config", str(config), "gc", "--grace-period=0s",
                   "--expire-prepared=0s"), check=False,
            )  # fmt: skip
            if done.returncode != 0:
                print(f"mds_bench.py: jetpack gc: {done.stderr.strip()}", file=sys.stderr)
                failed = True
            stop_service(data, config)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
