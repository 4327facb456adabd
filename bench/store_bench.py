"""Benchmark: store import and per-app rootfs creation, each beside its floor.

Run: ``.venv/bin/python bench/store_bench.py [--runs 3] [--pods 100] [--no-zfs]``.

1. Import of the ~256 MiB bench ACI (``aci_bench.py`` generates and caches it) as a user
   runs it — ``jetpack fetch --insecure-options=image FILE`` in a fresh process, into an
   empty store — against the single-pass shell floor
   ``tee blob < x.aci | gunzip | tee >(sha512sum) | tar -x``, on tmpfs and on disk.
2. Per-app rootfs creation for N pods from one rendered tree, per backend, against the
   bare command the backend stands on (``cp -a``, ``mount -t overlay``, ``zfs clone``),
   with the first and last tenth shown apart: overlay and zfs must stay flat.
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
FLOOR_IMPORT = 'tee "$2/blob" < "$1" | gunzip | tee >(sha512sum > /dev/null) | tar -x -C "$2/root"'


def bench_import(aci: Path, runs: int) -> None:
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
    print(
        f"{'':<28} first {tenth}: {statistics.mean(created[:tenth]) * 1000:.1f} ms, "
        f"last {tenth}: {statistics.mean(created[-tenth:]) * 1000:.1f} ms, "
        f"release median {statistics.median(released) * 1000:.1f} ms; floor: {floor_name}",
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
