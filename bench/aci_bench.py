"""Benchmark: image ID and safe extraction against the shell pipelines they replace.

Run: ``.venv/bin/python bench/aci_bench.py [--runs 3] [--cache DIR]``. The test image
(~256 MiB gzip, ~5,000 files) is generated once, deterministically, and cached.
Each figure is the best of N fresh-process runs with warm caches, printed next to its
floor (the classic shell pipeline) and their ratio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jetpack.aci import build_aci  # noqa: E402  (after the path tweak above)

PYTHON = str(REPO / ".venv" / "bin" / "python")
FILES = 5_000
SEED = 20260528
MANIFEST = (
    b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench",'
    b'"labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}'
)


def _words(rng: random.Random) -> bytes:
    """1 MiB of text-like bytes (compresses ~3x, like source code or config)."""
    vocab = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(2_000)
    ]
    out = bytearray()
    while len(out) < 1 << 20:
        out += rng.choice(vocab) + rng.choice([b" ", b" ", b" ", b"\n", b", ", b"(", b");\n"])
    return bytes(out)


def make_layout(root: Path) -> None:
    rng = random.Random(SEED)
    text = _words(rng)
    rootfs = root / "rootfs"
    rootfs.mkdir(parents=True)
    (root / "manifest").write_bytes(MANIFEST)
    dirs = [rootfs]
    for i in range(200):
        parent = rng.choice(dirs)
        child = parent / f"dir{i:03d}"
        child.mkdir()
        dirs.append(child)
    for i in range(FILES):
        parent = rng.choice(dirs)
        if i % 50 == 0:
            target = rng.choice(dirs)
            (parent / f"link{i:04d}").symlink_to(target.relative_to(rootfs))
            continue
        # Mostly small files, a few large ones carry most of the bytes.
        size = rng.randint(6 << 20, 20 << 20) if i % 250 == 7 else int(rng.expovariate(1 / 24_000))
        if rng.random() < 0.5:
            start = rng.randrange(len(text))
            data = (text[start:] + text[:start]) * (size // len(text) + 1)
            data = data[:size]
        else:
            data = rng.randbytes(size)
        path = parent / f"file{i:04d}"
        path.write_bytes(data)
        path.chmod(rng.choice([0o644, 0o755, 0o600]))


def image(cache: Path) -> Path:
    out = cache / f"bench-{SEED}-{FILES}.aci"
    if not out.exists():
        layout = cache / "layout"
        shutil.rmtree(layout, ignore_errors=True)
        print(f"generating {out} (once) ...", flush=True)
        make_layout(layout)
        build_aci(layout, out, owner_root=True)
        shutil.rmtree(layout)
    return out


def best(runs: int, setup: Callable[[], None], argv: list[str]) -> float:
    times = []
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def row(name: str, figure: float, floor: float) -> None:
    print(f"{name:<28} {figure:8.3f} s {floor:8.3f} s {figure / floor:7.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jetpack-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    aci = image(args.cache)
    size = aci.stat().st_size
    print(f"image: {aci} ({size / 2**20:.0f} MiB gzip), best of {args.runs} runs")
    print(f"{'measure':<28} {'figure':>10} {'floor':>10} {'ratio':>8}")

    cli = REPO / ".venv" / "bin" / "jetpack"
    id_cmd = [PYTHON, "-c", "import sys; from jetpack.aci import image_id; "
              "print(image_id(open(sys.argv[1], 'rb')))", str(aci)]  # fmt: skip
    if (
        cli.exists()
        and subprocess.run([str(cli), "aci", "id", str(aci)], capture_output=True).returncode == 0
    ):
        id_cmd, id_name = [str(cli), "aci", "id", str(aci)], "jetpack aci id"
    else:
        id_name = "image_id() (fresh process)"
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    ours = best(args.runs, nothing, id_cmd)
    floor = best(args.runs, nothing, ["sh", "-c", 'gunzip -c "$1" | sha512sum', "sh", str(aci)])
    row(id_name, ours, floor)

    extract = ("import sys; from pathlib import Path; from jetpack.aci import extract_aci; "
               "extract_aci(open(sys.argv[1], 'rb'), Path(sys.argv[2]))")  # fmt: skip
    for where in (Path("/dev/shm"), Path("/var/tmp")):
        dest = where / "jetpack-bench-extract"

        def fresh(dest: Path = dest) -> None:
            shutil.rmtree(dest, ignore_errors=True)

        def fresh_dir(dest: Path = dest) -> None:
            fresh(dest)
            dest.mkdir()

        ours = best(args.runs, fresh, [PYTHON, "-c", extract, str(aci), str(dest)])
        floor = best(
            args.runs,
            fresh_dir,
            ["sh", "-c", 'gunzip -c "$1" | tar -x -C "$2"', "sh", str(aci), str(dest)],
        )
        fresh()
        row(f"extract_aci on {where}", ours, floor)


if __name__ == "__main__":
    main()
