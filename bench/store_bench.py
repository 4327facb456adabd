"""Benchmark: store import and per-app rootfs creation, each beside its floor.

Run: ``.venv/bin/python bench/store_bench.py [--runs 3] [--pods 100] [--no-zfs]``.

1. Import of the ~256 MiB bench ACI (``aci_bench.py`` generates and caches it) as a user
   runs it — ``jetpack fetch --insecure-options=image FILE`` in a fresh process, into an
   empty store — on tmpfs and on disk, against two floors:

   - the issue's single-pass shell floor (the target: ≤ 1.1x on tmpfs, ≤ 1.2x on disk)
     ``tee blob < x.aci | gunzip | tee >(sha512sum) | tar -x``;
   - a stronger one, printed beside it: the same pipeline with ``pigz -dc`` (its
     decompression is single-threaded too, but reading, writing and the CRC run on
     threads of their own) when pigz is installed, and a minimal single-pass Python
     import (zlib + hashlib + tarfile, one process, the blob written as read).

   Both our figure and the floors also as MB/s of compressed input. The store does more
   than any floor: it digests the extracted layer (for ``verify``) and flushes blob and
   layer to disk (``syncfs``) before publishing.
2. Per-app rootfs creation for N pods from one rendered tree, per backend, against the
   bare command the backend stands on (``cp -a``, ``mount -t overlay``, ``zfs clone``),
   with the first and last tenth shown apart, and a verdict for overlay and zfs: under
   50 ms per pod, and flat (last tenth within 1.5x of the first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from aci_bench import best, image, row  # noqa: E402

from jetpack.config import Config, StorageConfig  # noqa: E402
from jetpack.store import open_store  # noqa: E402
from jetpack.store.store import Store  # noqa: E402

JETPACK = str(REPO / ".venv" / "bin" / "jetpack")
PYTHON = str(REPO / ".venv" / "bin" / "python")
TARGET_PER_POD = 0.050  # seconds, for overlay and zfs
FLAT_RATIO = 1.5
FLOOR_IMPORT = 'tee "$2/blob" < "$1" | gunzip | tee >(sha512sum > /dev/null) | tar -x -C "$2/root"'
PIGZ_IMPORT = FLOOR_IMPORT.replace("gunzip", "pigz -dc")
# One process, one pass: the blob written as read, zlib inflating, SHA-512 over the tar
# stream, tarfile extracting from it — what a plain Python import costs at best.
PYTHON_IMPORT = """
import hashlib, sys, tarfile, zlib
src, work = sys.argv[1], sys.argv[2]
class Stream:
    def __init__(self):
        self.f, self.blob = open(src, "rb"), open(work + "/blob", "wb")
        self.z, self.h, self.buf = zlib.decompressobj(31), hashlib.sha512(), b""
    def read(self, n):
        while len(self.buf) < n and not self.z.eof:
            chunk = self.f.read(1 << 20)
            self.blob.write(chunk)
            out = self.z.decompress(chunk)
            self.h.update(out)
            self.buf += out
        data, self.buf = self.buf[:n], self.buf[n:]
        return data
with tarfile.open(fileobj=Stream(), mode="r|") as tar:
    tar.extractall(work + "/root", filter="fully_trusted")
"""


def bench_import(aci: Path, runs: int) -> None:
    mb = aci.stat().st_size / 1e6
    for where in (Path("/dev/shm"), Path("/var/tmp")):
        work = where / "jetpack-bench-import"
        conf = where / "jetpack-bench-import.toml"
        conf.write_text('[storage]\nbackend = "copy"\n')

        def fresh(work: Path = work) -> None:
            shutil.rmtree(work, ignore_errors=True)
            (work / "root").mkdir(parents=True)

        ours = best(
            runs,
            fresh,
            [JETPACK, "--dir", str(work), "--config", str(conf), "fetch",
             "--insecure-options=image", str(aci)],
        )  # fmt: skip
        floor = best(runs, fresh, ["bash", "-c", FLOOR_IMPORT, "bash", str(aci), str(work)])
        row(f"import on {where}", ours, floor)
        strong = {"python 1-pass": [PYTHON, "-c", PYTHON_IMPORT, str(aci), str(work)]}
        if shutil.which("pigz"):
            strong["pigz -dc"] = ["bash", "-c", PIGZ_IMPORT, "bash", str(aci), str(work)]
        else:
            print(f"{'':<28} (pigz not installed: apt-get install pigz for its floor)")
        figures = {name: best(runs, fresh, argv) for name, argv in strong.items()}
        shown = ", ".join(
            f"{name} {t:.3f} s = {ours / t:.2f}x, {mb / t:.0f} MB/s" for name, t in figures.items()
        )
        print(
            f"{'':<28} ours {mb / ours:.0f} MB/s, floor {mb / floor:.0f} MB/s; "
            f"stronger floors: {shown}",
            flush=True,
        )
        shutil.rmtree(work, ignore_errors=True)
        conf.unlink()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_rootfs(
    store: Store, key: str, pods: int, floor_cmd: Callable[[Path], list[str]], floor_name: str
) -> None:
    backend = store.backend
    work = store.data_dir / "pods"
    work.mkdir(exist_ok=True)
    apps = [work / f"app{n:03d}" for n in range(pods)]
    for app in apps:
        app.mkdir()
    os.sync()  # not timing the write-back of what earlier phases wrote and deleted
    created = [_timed(lambda app=app: backend.create_rootfs(key, app)) for app in apps]
    released = [_timed(lambda app=app: backend.release_rootfs(app)) for app in apps]
    floors = []
    for app in apps[: max(5, pods // 10)]:
        target = app / "floor"
        target.mkdir(exist_ok=True)
        floors.append(_timed(lambda t=target: subprocess.run(floor_cmd(t), check=True)))
        subprocess.run(["umount", str(target)], capture_output=True)
        shutil.rmtree(target, ignore_errors=True)
    tenth = max(1, pods // 10)
    name = f"{backend.name} rootfs (median)"
    row(name, statistics.median(created), statistics.median(floors))
    first, last = statistics.mean(created[:tenth]), statistics.mean(created[-tenth:])
    print(
        f"{'':<28} first {tenth}: {first * 1000:.1f} ms, last {tenth}: {last * 1000:.1f} ms, "
        f"release median {statistics.median(released) * 1000:.1f} ms; floor: {floor_name}",
        flush=True,
    )
    if backend.name in ("overlay", "zfs"):
        p95 = statistics.quantiles(created, n=20)[-1]
        fast = p95 < TARGET_PER_POD
        flat = last <= FLAT_RATIO * first
        print(
            f"{'':<28} target: < {TARGET_PER_POD * 1000:.0f} ms per pod "
            f"({'met' if fast else 'MISSED'}: p95 {p95 * 1000:.1f} ms, "
            f"max {max(created) * 1000:.1f} ms), flat (last tenth <= {FLAT_RATIO}x first: "
            f"{'met' if flat else 'MISSED'}, {last / first:.2f}x)",
            flush=True,
        )


@contextmanager
def prepared(config: Config, aci: Path) -> Iterator[tuple[Store, str]]:
    with open_store(config) as store:
        store.backend.init()
        with open(aci, "rb") as src:
            ident = store.import_aci(src, source=aci.as_uri()).image.id
        yield store, store.render(ident).key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--no-zfs", action="store_true", help="skip the zfs backend")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jetpack-bench")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("store_bench.py: run as root (overlay mounts, zfs)")
    args.cache.mkdir(parents=True, exist_ok=True)
    aci = image(args.cache)
    print(f"image: {aci} ({aci.stat().st_size / 2**20:.0f} MiB gzip), best of {args.runs} runs")
    print(f"{'measure':<28} {'figure':>10} {'floor':>10} {'ratio':>8}")
    bench_import(aci, args.runs)

    base = Path("/var/tmp/jetpack-bench-store")
    shutil.rmtree(base, ignore_errors=True)
    for backend in ("copy", "overlay"):
        config = Config(data_dir=base / backend, storage=StorageConfig(backend=backend))
        with prepared(config, aci) as (store, key):
            tree = store.backend.tree_path(key) / "rootfs"
            if backend == "copy":

                def floor(t: Path, tree: Path = tree) -> list[str]:
                    return ["cp", "-a", "--reflink=auto", str(tree), str(t / "rootfs")]

            else:

                def floor(t: Path, tree: Path = tree) -> list[str]:
                    (t / "u").mkdir(exist_ok=True)
                    (t / "w").mkdir(exist_ok=True)
                    opts = f"lowerdir={tree},upperdir={t}/u,workdir={t}/w"
                    return ["mount", "-t", "overlay", "overlay", "-o", opts, str(t)]

            pods = args.pods if backend != "copy" else min(args.pods, 10)
            bench_rootfs(
                store, key, pods, floor, "cp -a" if backend == "copy" else "mount -t overlay"
            )
        shutil.rmtree(base / backend, ignore_errors=True)

    if not args.no_zfs:
        sys.path.insert(0, str(REPO))
        from tests.store.zfs_fixture import zfs_pool_on_file, zfs_unavailable

        reason = zfs_unavailable()
        if reason:
            print(f"zfs: skipped ({reason})")
            return
        work = base / "zfs-pool"
        work.mkdir(parents=True)
        with zfs_pool_on_file(work, size=2 << 30) as pool:
            config = Config(
                data_dir=base / "zfs",
                storage=StorageConfig(backend="zfs", zfs_dataset=f"{pool}/jetpack"),
            )
            with prepared(config, aci) as (store, key):
                seal = f"{pool}/jetpack/trees/{key}@seal"

                def floor(t: Path, seal: str = seal, pool: str = pool) -> list[str]:
                    return [
                        "zfs",
                        "clone",
                        "-o",
                        f"mountpoint={t}",
                        seal,
                        f"{pool}/floor{t.parent.name}",
                    ]

                bench_rootfs(store, key, args.pods, floor, "zfs clone")
                for n in range(args.pods):
                    subprocess.run(
                        ["zfs", "destroy", f"{pool}/floorapp{n:03d}"], capture_output=True
                    )
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
