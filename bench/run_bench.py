"""Benchmark: `jetpack run` of a trivial app beside its floors; pod RSS, `list` and `gc`.

Run: ``.venv/bin/python bench/run_bench.py [--runs 30] [--pods 200]`` (as root).

A tiny image — a static busybox (Debian's busybox-static) with its applets, exec
``/bin/true`` as root, this host's os/arch labels — is built once (cached under
``$TMPDIR/jetpack-bench/run/``), imported into a fresh data directory there, and run once
to warm its rendered tree. Then, each figure printed beside its floor or target and their
ratio (``figure  floor/target  ratio``):

1. ``jetpack run NAME:VERSION`` (exit 0, output to /dev/null): median and p90 of N runs,
   with ``jetpack gc`` between batches of 10, outside the timed region. Beside it, the same
   rootfs run by ``unshare --mount --pid --uts --ipc --net --fork chroot ROOTFS /bin/true``
   (the floor), ``systemd-nspawn`` and ``podman run`` (each on a copy of the rootfs: nspawn
   wants an OS tree, so its copy gets an empty ``/usr`` and a one-line
   ``/etc/os-release``; podman writes ``/etc/hosts`` and friends into its copy), and the
   interpreter alone (``python -S -c pass``, ``python -c pass``). Target: a median under
   100 ms; aim: systemd-nspawn's. A tool that cannot run here is shown "n/a" with why.
2. Per-pod supervisor RSS: a pod running ``/bin/sleep 5``; VmRSS of its PID 1 (``pid`` of
   ``jetpack status --format=json``) against 20 MiB; the outer stage1 process (the pod's
   PID 1's parent, outside the namespaces) and the Pss of both beside it.
3. ``jetpack list`` with 200 exited pods (median of 10) against 300 ms, and ``jetpack gc``
   removing 20 pods out of 200 against removing 20 out of 20 (median of 5 each): the work
   should follow what it removes, not what exists — in wall time and in CPU time (user +
   system, which a busy machine disturbs less). All pods are marked (``gc --mark-only``)
   first; 20 of them get a mark dated two hours back and ``gc --grace-period=1h`` removes
   exactly those.

Missed targets are reported, not failed: the exit status is non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jetpack.discovery import host_labels  # noqa: E402
from jetpack.runtime.gc import MARK_FILE  # noqa: E402
from jetpack.runtime.pods import PodState  # noqa: E402

JETPACK = str(REPO / ".venv" / "bin" / "jetpack")
PYTHON = str(REPO / ".venv" / "bin" / "python")
NAME, VERSION = "localhost/bench-true", "1.0.0"
IMAGE = f"{NAME}:{VERSION}"
APPLETS = ("true", "sh", "sleep", "echo", "cat", "ls")
TARGET_RUN = 0.100  # seconds, median
NSPAWN_AS_MEASURED = 0.040  # the aim when systemd-nspawn cannot run here
TARGET_RSS = 20 * 2**20
TARGET_LIST = 0.300
GC_BATCH = 10  # runs between two `jetpack gc` in the run measure
GC_REMOVED = 20
GC_REPEATS = 5
LIST_RUNS = 10
PROPORTIONAL = 1.5  # gc of 20 among 200 within this factor of gc of 20 among 20
UNSHARE = ["unshare", "--mount", "--pid", "--uts", "--ipc", "--net", "--fork", "chroot"]
PODMAN_FLAGS = [
    "--rm", "--runtime", "runc", "--ulimit", "nofile=20000:20000",
    "--ulimit", "nproc=32768:32768", "--network=none", "--cgroup-manager", "cgroupfs",
]  # fmt: skip


class BenchError(Exception):
    pass


# -- helpers -----------------------------------------------------------------------------


def _last_line(data: bytes | str | None) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def sh(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (not timed); with ``check``, a failure is a :class:`BenchError`."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise BenchError(
            f"{shlex.join(argv)}: exit status {done.returncode}: {_last_line(done.stderr)}"
        )
    return done


def jp(data: Path, *args: str) -> list[str]:
    return [JETPACK, "--dir", str(data), *args]


def timed(
    argv: Sequence[str],
    runs: int,
    *,
    between: Callable[[], object] | None = None,
    every: int = 0,
) -> list[float]:
    """Wall times of ``runs`` runs of ``argv``, each a fresh process (output to /dev/null,
    stderr kept for the error message); ``between`` runs every ``every`` runs, untimed."""
    times = []
    for n in range(runs):
        if between is not None and every and n and n % every == 0:
            between()
        start = time.perf_counter()
        done = subprocess.run(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
        )
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise BenchError(
                f"{shlex.join(argv)}: exit status {done.returncode}: {_last_line(done.stderr)}"
            )
    return times


def p90(times: Sequence[float]) -> float:
    return (
        statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else max(times)
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:6.1f} MiB"


def row(name: str, figure: str, floor: str, ratio: float, note: str = "") -> None:
    print(f"{name:<36} {figure:>10} {floor:>12} {ratio:7.2f}x  {note}".rstrip(), flush=True)


def na(name: str, reason: str) -> None:
    print(f"{name:<36} {'n/a':>10} {'':>12} {'':>8}  {reason}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                found.append(point)
    return found


# -- the image and its data directory ------------------------------------------------------


def build_image(work: Path) -> tuple[Path, Path]:
    """The cached ACI and its layout's rootfs (built once)."""
    aci, layout = work / "bench-true.aci", work / "layout"
    if aci.exists() and (layout / "rootfs" / "bin" / "busybox").exists():
        return aci, layout / "rootfs"
    busybox = Path("/bin/busybox")
    static = busybox.exists() and sh(["ldd", str(busybox)], check=False).returncode != 0
    if not static:
        raise BenchError(f"{busybox} is missing or not static (apt-get install busybox-static)")
    print(f"building {aci} (once) ...", flush=True)
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy2(busybox, layout / "rootfs" / "bin" / "busybox")
    for applet in APPLETS:
        (layout / "rootfs" / "bin" / applet).symlink_to("busybox")
    labels = host_labels()
    manifest = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": NAME,
        "labels": [
            {"name": "version", "value": VERSION},
            {"name": "os", "value": labels["os"]},
            {"name": "arch", "value": labels["arch"]},
        ],
        "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
    }
    (layout / "manifest").write_text(json.dumps(manifest, indent=2) + "\n")
    sh([JETPACK, "aci", "build", "--owner-root", "--overwrite", str(layout), str(aci)])
    return aci, layout / "rootfs"


def clear_data(data: Path) -> None:
    """Remove what a previous run left: its pods (by gc), stray mounts, the directory."""
    if not data.exists():
        return
    sh(jp(data, "gc", "--grace-period=0s", "--expire-prepared=0s"), check=False)
    sh(jp(data, "metadata-service", "--stop"), check=False)
    for point in sorted(mounts_under(data), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(data)


def gc(data: Path) -> None:
    sh(jp(data, "gc", "--grace-period=0s"))


def make_pods(data: Path, count: int) -> None:
    """``count`` exited pods, from parallel `jetpack run`s."""
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        for done in pool.map(lambda _: sh(jp(data, "run", IMAGE), check=False), range(count)):
            if done.returncode != 0:
                raise BenchError(f"jetpack run {IMAGE} failed: {_last_line(done.stderr)}")


# -- 1. jetpack run beside its floors ------------------------------------------------------


def compare(argv: list[str], runs: int, package: str) -> list[float] | str:
    """The times of ``argv``, or why it cannot run here."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not installed (apt-get install {package})"
    try:
        timed(argv, 1)  # warm-up (and the check that it works here)
        return timed(argv, runs)
    except BenchError as err:
        return str(err)
    except subprocess.TimeoutExpired:
        return f"{shlex.join(argv)}: timed out"


def bench_run(data: Path, work: Path, rootfs: Path, runs: int) -> None:
    ours = timed(jp(data, "run", IMAGE), runs, between=lambda: gc(data), every=GC_BATCH)
    gc(data)
    median = statistics.median(ours)

    nspawn_root = work / "nspawn" / "rootfs"
    podman_root = work / "podman" / "rootfs"
    for copy in (nspawn_root, podman_root):
        shutil.rmtree(copy.parent, ignore_errors=True)
        copy.parent.mkdir(parents=True)
        shutil.copytree(rootfs, copy, symlinks=True)
    (nspawn_root / "usr").mkdir()
    (nspawn_root / "etc").mkdir()
    (nspawn_root / "etc" / "os-release").write_text("ID=jetpack-bench\n")

    floor = compare([*UNSHARE, str(rootfs), "/bin/true"], runs, "util-linux")
    if isinstance(floor, str):
        raise BenchError(f"the floor cannot run: {floor}")
    others = {
        "systemd-nspawn": compare(
            ["systemd-nspawn", "-q", "-D", str(nspawn_root), "--register=no", "--keep-unit",
             "/bin/true"], runs, "systemd-container",
        ),
        # Podman 4's --rootfs is a flag: the rootfs is the first argument, and whatever
        # follows it is the container's command, so every option goes before it.
        "podman run": compare(
            ["podman", "run", *PODMAN_FLAGS, "--rootfs", str(podman_root), "/bin/true"],
            runs, "podman runc",
        ),
        "python -S -c pass": compare([PYTHON, "-S", "-c", "pass"], runs, "python3"),
        "python -c pass": compare([PYTHON, "-c", "pass"], runs, "python3"),
    }  # fmt: skip

    row(
        f"jetpack run, median of {runs}",
        ms(median),
        ms(statistics.median(floor)),
        median / statistics.median(floor),
        "floor: unshare ... chroot ROOTFS /bin/true",
    )
    row(
        "jetpack run, p90",
        ms(p90(ours)),
        ms(p90(floor)),
        p90(ours) / p90(floor),
        f"floor's p90; ours min {ms(min(ours)).strip()}, max {ms(max(ours)).strip()}",
    )
    for name, times in others.items():
        if isinstance(times, str):
            na(f"  vs {name}", times)
        else:
            theirs = statistics.median(times)
            row(
                f"  vs {name}",
                ms(median),
                ms(theirs),
                median / theirs,
                f"its median; its p90 {ms(p90(times)).strip()}",
            )
    row(
        "  target: median < 100 ms",
        ms(median),
        ms(TARGET_RUN),
        median / TARGET_RUN,
        verdict(median < TARGET_RUN),
    )
    nspawn = others["systemd-nspawn"]
    aim = statistics.median(nspawn) if not isinstance(nspawn, str) else NSPAWN_AS_MEASURED
    source = "measured here" if not isinstance(nspawn, str) else "as measured on the issue's VM"
    row(
        "  aim: systemd-nspawn's median",
        ms(median),
        ms(aim),
        median / aim,
        f"{verdict(median <= aim)} ({source})",
    )


# -- 2. supervisor RSS ---------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def _pss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    found = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def bench_rss(data: Path, work: Path) -> None:
    uuid_file = work / "rss.uuid"
    uuid_file.unlink(missing_ok=True)
    argv = jp(
        data, "run", "--uuid-file-save", str(uuid_file), IMAGE, "--exec", "/bin/sleep", "--", "5"
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uuid = ""
    try:
        deadline = time.monotonic() + 10
        pid = 0
        while time.monotonic() < deadline and not pid:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else b""
                raise BenchError(f"{shlex.join(argv)} ended early: {_last_line(err)}")
            uuid = uuid_file.read_text().strip() if uuid_file.exists() else ""
            if uuid:
                status = json.loads(sh(jp(data, "status", "--format=json", uuid)).stdout)
                apps = list((status.get("apps") or {}).values())
                if status.get("state") == "running" and all(
                    app.get("state") == "running" for app in apps
                ):
                    pid = int(status.get("pid") or 0)
            if not pid:
                time.sleep(0.05)
        if not pid:
            raise BenchError(f"the pod of {shlex.join(argv)} was not running after 10 s")
        time.sleep(0.2)  # let it settle
        rss = _status_kib(pid, "VmRSS") * 1024
        outer = _status_kib(pid, "PPid")
        outer_rss = _status_kib(outer, "VmRSS") * 1024
        pss = (_pss_kib(pid) + _pss_kib(outer)) * 1024
        row(
            "pod supervisor RSS (PID 1)",
            mib(rss),
            mib(TARGET_RSS),
            rss / TARGET_RSS,
            f"{verdict(rss < TARGET_RSS)}; outer stage1 (its parent) {mib(outer_rss).strip()}, "
            f"Pss of both {mib(pss).strip()}",
        )
    finally:
        if uuid and proc.poll() is None:
            sh(jp(data, "stop", uuid), check=False)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        gc(data)


# -- 3. list and gc with many pods ---------------------------------------------------------


def _exited_garbage(data: Path) -> list[Path]:
    return sorted((data / "pods" / PodState.EXITED_GARBAGE.value).iterdir())


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_gc(data: Path) -> tuple[float, float]:
    """Mark every exited pod, date back the mark of 20, and time the gc that removes them:
    wall and CPU (user + system) seconds."""
    sh(jp(data, "gc", "--mark-only"))
    old = f"{time.time() - 7200}\n"
    for pod in _exited_garbage(data)[:GC_REMOVED]:
        (pod / MARK_FILE).write_text(old)
    argv = jp(data, "gc", "--grace-period=1h")
    cpu, start = _cpu_of_children(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    elapsed, cpu = time.perf_counter() - start, _cpu_of_children() - cpu
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)}: {_last_line(done.stderr)}")
    removed = sum(line.startswith("removed pod") for line in done.stdout.splitlines())
    if removed != GC_REMOVED:
        raise BenchError(f"{shlex.join(argv)} removed {removed} pods, not {GC_REMOVED}")
    return elapsed, cpu


def bench_list_gc(data: Path, pods: int) -> None:
    few = []
    for _ in range(GC_REPEATS):
        make_pods(data, GC_REMOVED)
        few.append(_timed_gc(data))
    make_pods(data, pods)
    listed = timed(jp(data, "list"), LIST_RUNS)
    many = []
    for n in range(GC_REPEATS):
        if n:
            make_pods(data, GC_REMOVED)  # back to `pods` pods
        many.append(_timed_gc(data))
    gc(data)
    median = statistics.median(listed)
    row(
        f"jetpack list, {pods} exited pods",
        ms(median),
        ms(TARGET_LIST),
        median / TARGET_LIST,
        f"{verdict(median < TARGET_LIST)} (median of {LIST_RUNS})",
    )
    ours, floor = statistics.median(t for t, _ in many), statistics.median(t for t, _ in few)
    row(
        f"jetpack gc, {GC_REMOVED} of {pods} pods",
        ms(ours),
        ms(floor),
        ours / floor,
        f"floor: {GC_REMOVED} of {GC_REMOVED}; proportional (<= {PROPORTIONAL}x): "
        f"{verdict(ours <= PROPORTIONAL * floor)}",
    )
    # CPU time is what a loaded machine disturbs least: the work itself.
    ours, floor = statistics.median(c for _, c in many), statistics.median(c for _, c in few)
    row(
        "  the same, CPU time",
        ms(ours),
        ms(floor),
        ours / floor,
        f"user + system; proportional: {verdict(ours <= PROPORTIONAL * floor)}",
    )


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pods", type=int, default=200, help="exited pods for list and gc")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jetpack-bench")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_bench.py: run as root (namespaces, mounts)")
    if args.runs < 1 or args.pods < GC_REMOVED:
        sys.exit(f"run_bench.py: --runs must be at least 1 and --pods at least {GC_REMOVED}")
    # Measure what an installed Jetpack does: with its bytecode compiled. Under
    # PYTHONDONTWRITEBYTECODE every start would compile the modules it imports again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    package = Path(__file__).resolve().parents[1] / "jetpack"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    work = args.cache / "run"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    failed = False
    try:
        aci, layout_rootfs = build_image(work)
        clear_data(data)
        sh(jp(data, "fetch", "--insecure-options=image", "--quiet", str(aci)))
        sh(jp(data, "run", IMAGE))  # warms the rendered tree
        gc(data)
        trees = list(data.glob("trees/*/rootfs"))
        rootfs = trees[0] if len(trees) == 1 else layout_rootfs
        print(f"image: {aci} ({aci.stat().st_size / 2**20:.1f} MiB), rootfs: {rootfs}")
        load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
        print(f"{os.cpu_count()} CPUs, load average {load} (other work skews the figures)")
        print(f"{'measure':<36} {'figure':>10} {'floor/target':>12} {'ratio':>8}", flush=True)
        bench_run(data, work, rootfs, args.runs)
        bench_rss(data, work)
        bench_list_gc(data, args.pods)
    except (BenchError, subprocess.TimeoutExpired) as err:
        print(f"run_bench.py: {err}", file=sys.stderr)
        failed = True
    finally:
        if data.exists():
            sh(jp(data, "gc", "--grace-period=0s"), check=False)
            sh(jp(data, "metadata-service", "--stop"), check=False)  # `run` started it
            left = mounts_under(data)
            if left:
                print(
                    f"run_bench.py: jetpack left {len(left)} mounts under {data} "
                    f"after gc, e.g. {left[0]}; unmounting them",
                    file=sys.stderr,
                )
                for point in sorted(left, key=len, reverse=True):
                    subprocess.run(["umount", "-l", point], capture_output=True)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
