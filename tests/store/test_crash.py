"""Concurrency and crash safety of imports, with real processes and real SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.config import Config, StorageConfig
from jetpack.errors import StoreError
from jetpack.store import open_store
from jetpack.store.locks import FileLock
from jetpack.store.store import Store
from tests.fixtures import image_manifest

MakeACI = Callable[..., Path]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    conf = tmp_path / "jetpack.toml"
    conf.write_text('[storage]\nbackend = "copy"\n')
    return conf


def _fetch_argv(jetpack_cmd: list[str], data_dir: Path, config_file: Path, aci: Path) -> list[str]:
    return [
        *jetpack_cmd,
        "--dir",
        str(data_dir),
        "--config",
        str(config_file),
        "fetch",
        "--insecure-options=image",
        str(aci),
    ]


def _open(data_dir: Path) -> Store:
    return open_store(Config(data_dir=data_dir, storage=StorageConfig(backend="copy")))


def assert_consistent(store: Store) -> None:
    """The index and the disk agree, nothing is pending, and no lock is held.

    Every image row has its blob and layer and nothing on disk lacks a row; the trees the
    index lists are exactly those the backend has, each rendering stored images; no
    staging area or temporary file is left, no one-time lock is held; ``verify`` finds
    nothing.
    """
    ids = {r.id for r in store.images()}
    assert sorted(p.name for p in store.layers.iterdir()) == sorted(ids)
    assert sorted(p.name for p in store.blobs.glob("*/*")) == sorted(ids)
    assert list(store.tmp.iterdir()) == []
    assert store.db.execute("SELECT count(*) FROM pending").fetchone()[0] == 0  # type: ignore[index]
    trees = store.trees()
    assert sorted(t.key for t in trees) == store.backend.tree_keys()
    assert all(set(t.chain) <= ids for t in trees)
    assert store.backend.staging_tokens() == []
    # A kill between creating a one-time lock file and recording the pending row leaves the
    # empty file (harmless; gc sweeps it once it is a minute old): nobody may still hold it.
    for lock in store.locks.iterdir():
        if lock.name.startswith(("import-", "render-")):
            probe = FileLock(lock)
            assert probe.acquire(blocking=False), f"{lock.name} is held by a dead process?"
            probe.release()
    assert store.verify() == []


@pytest.fixture(scope="module")
def big_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~24 MiB of mostly incompressible files: an import takes a few hundred ms."""
    from jetpack.aci import build_aci

    layout = tmp_path_factory.mktemp("big") / "layout"
    rootfs = layout / "rootfs"
    rng = random.Random(7)
    for n in range(300):
        path = rootfs / f"d{n % 17}" / f"f{n}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1, 160_000)))
    import json

    (layout / "manifest").write_text(json.dumps(image_manifest("example.com/big")))
    out = layout.parent / "big.aci"
    build_aci(layout, out)
    return out


def test_four_processes_import_the_same_image(
    jetpack_cmd: list[str], data_dir: Path, config_file: Path, big_aci: Path
) -> None:
    argv = _fetch_argv(jetpack_cmd, data_dir, config_file, big_aci)
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e.decode() for _, e in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    with _open(data_dir) as store:
        assert len(store.images()) == 1
        assert_consistent(store)


def test_four_processes_import_different_images(
    jetpack_cmd: list[str], data_dir: Path, config_file: Path, make_aci: MakeACI
) -> None:
    acis = [
        make_aci(image_manifest(f"example.com/p{n}"), {"f": os.urandom(1 << 20)}) for n in range(4)
    ]
    procs = [
        subprocess.Popen(
            _fetch_argv(jetpack_cmd, data_dir, config_file, aci),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for aci in acis
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e.decode() for _, e in outputs]
    with _open(data_dir) as store:
        assert sorted(r.name for r in store.images()) == [f"example.com/p{n}" for n in range(4)]
        assert_consistent(store)


def test_kill_9_at_random_points_of_an_import(
    jetpack_cmd: list[str], data_dir: Path, config_file: Path, big_aci: Path
) -> None:
    argv = _fetch_argv(jetpack_cmd, data_dir, config_file, big_aci)
    start = time.monotonic()
    ident = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    full = time.monotonic() - start
    with _open(data_dir) as store:
        store.remove(ident)
    rng = random.Random(int(os.environ.get("JETPACK_CRASH_SEED", "12345")))
    outcomes = {"killed": 0, "finished": 0}
    for _ in range(24):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, full * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes["killed" if proc.returncode == -signal.SIGKILL else "finished"] += 1
        with _open(data_dir) as store:  # opening recovers
            assert_consistent(store)
        # the retry succeeds, and leaves a consistent store with the image
        assert subprocess.run(argv, capture_output=True, text=True).stdout.strip() == ident
        with _open(data_dir) as store:
            assert [r.id for r in store.images()] == [ident]
            assert_consistent(store)
            store.remove(ident)
    assert outcomes["killed"] >= 15, outcomes


def test_kill_9_at_random_points_of_a_render(
    jetpack_cmd: list[str], data_dir: Path, config_file: Path, big_aci: Path, tmp_path: Path
) -> None:
    argv = _fetch_argv(jetpack_cmd, data_dir, config_file, big_aci)
    ident = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    out = tmp_path / "out"
    render = [*argv[: argv.index("fetch")], "image", "render", "--overwrite", ident, str(out)]
    start = time.monotonic()
    subprocess.run(render, check=True, capture_output=True)
    full = time.monotonic() - start
    rng = random.Random(int(os.environ.get("JETPACK_CRASH_SEED", "54321")))
    killed = 0
    for _ in range(12):
        with _open(data_dir) as store:
            for tree in store.trees():
                store._remove_tree(tree.key)
        proc = subprocess.Popen(render, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, full))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        with _open(data_dir) as store:
            assert sorted(t.key for t in store.trees()) == store.backend.tree_keys()
            assert store.backend.staging_tokens() == []
            assert_consistent(store)
        subprocess.run(render, check=True, capture_output=True)
        with _open(data_dir) as store:
            assert len(store.trees()) == 1
            assert_consistent(store)
    assert killed >= 6


def test_a_tree_missing_behind_the_index_is_rendered_again(
    data_dir: Path, make_aci: MakeACI
) -> None:
    with _open(data_dir) as store:
        with open(make_aci(image_manifest("example.com/a"), {"f": b"f"}), "rb") as src:
            ident = store.import_aci(src, source="test").image.id
        tree = store.render(ident)
        store.backend.remove_tree(tree.key)  # damage: the index still lists it
        again = store.render(ident)
        assert again.key == tree.key and (again.rootfs / "f").read_bytes() == b"f"
        assert_consistent(store)


# -- deterministic crash points ------------------------------------------------------------

# Run in a child process: performs one store operation with a function patched to die
# (os._exit, as abrupt as SIGKILL for the store) at one point. No seam in the store itself.
_CHILD = r"""
import os, sys
from pathlib import Path

import jetpack.store.backends._dirtrees as dirtrees
import jetpack.store.store as S
from jetpack.config import Config, StorageConfig
from jetpack.errors import StoreError
from jetpack.store import open_store

data, point, aci = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
store = open_store(Config(data_dir=data, storage=StorageConfig(backend="copy")))
backend = store.backend


def die(*args, **kwargs):
    os._exit(9)


def then_die(fn):
    def wrapper(*args, **kwargs):
        fn(*args, **kwargs)
        os._exit(9)
    return wrapper


def die_after_rename_into(directory):
    rename = Path.rename
    def wrapper(self, target):
        result = rename(self, target)
        if directory in Path(target).parents:
            os._exit(9)
        return result
    Path.rename = wrapper


def die_on_pending(kind):
    pending = S.Store._pending
    def wrapper(self, k, key):
        if k == kind:
            os._exit(9)
        pending(self, k, key)
    S.Store._pending = wrapper


patches = {
    "import:token-locked": lambda: die_on_pending("import"),
    "import:extracted": lambda: setattr(S, "syncfs", die),
    "import:blob-renamed": lambda: die_after_rename_into(store.blobs),
    "import:layer-renamed": lambda: die_after_rename_into(store.layers),
    "import:before-commit": lambda: setattr(S.Store, "_insert_image", die),
    "rm:row-deleted": lambda: setattr(S.Store, "_remove_image_files", die),
    "drop:before-removal": lambda: setattr(backend, "remove_tree", die),
    "drop:mid-removal": lambda: setattr(dirtrees, "remove_tree_dir", die),
    "drop:tree-removed": lambda: setattr(backend, "remove_tree", then_die(backend.remove_tree)),
    "render:staging": lambda: setattr(backend, "staging_tree", then_die(backend.staging_tree)),
    "render:mid-render": lambda: setattr(S, "render_layers", die),
    "render:published": lambda: setattr(backend, "publish_tree", then_die(backend.publish_tree)),
}
patches[point]()
op = point.split(":")[0]
if op == "import":
    with open(aci, "rb") as src:
        store.import_aci(src, source="test")
elif op == "rm":
    store.remove(store.resolve("example.com/top").id)
elif op == "drop":
    store._remove_tree(store.trees()[0].key)
elif op == "render":
    store.render(store.resolve("example.com/top").id)
sys.exit("the crash point was never reached")
"""

_POINTS = [
    "import:token-locked",
    "import:extracted",
    "import:blob-renamed",
    "import:layer-renamed",
    "import:before-commit",
    "rm:row-deleted",
    "drop:before-removal",
    "drop:mid-removal",
    "drop:tree-removed",
    "render:staging",
    "render:mid-render",
    "render:published",
]


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """example.com/base and example.com/top, which depends on it."""
    import json

    from jetpack.aci import build_aci

    out = []
    root = tmp_path_factory.mktemp("two")
    for name, deps in (("base", []), ("top", [{"imageName": "example.com/base"}])):
        layout = root / name
        for n in range(50):
            path = layout / "rootfs" / name / f"f{n}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(2000))
        manifest = image_manifest(f"example.com/{name}", dependencies=deps)
        (layout / "manifest").write_text(json.dumps(manifest))
        build_aci(layout, root / f"{name}.aci")
        out.append(root / f"{name}.aci")
    return out[0], out[1]


def _child(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _import_file(store: Store, aci: Path) -> str:
    with open(aci, "rb") as src:
        return store.import_aci(src, source="test").image.id


@pytest.mark.parametrize("point", _POINTS)
def test_a_crash_at_each_point_is_recovered(
    point: str, data_dir: Path, two_images: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, top = two_images
    op = point.split(":")[0]
    with _open(data_dir) as store:
        _import_file(store, base)
        if op != "import":
            _import_file(store, top)
        if op == "drop":
            store.render(store.resolve("example.com/top").id)
    proc = _child(data_dir, point, str(top))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 9, err.decode()
    with _open(data_dir) as store:  # opening recovers
        if point == "import:token-locked":  # no pending row yet: only GC finds the lock
            import jetpack.store.store as store_module

            monkeypatch.setattr(store_module, "_LOCK_SWEEP_AGE", -1.0)
            assert [s.split("-")[0] for s in store.gc(grace_seconds=10**6).swept] == [
                "locks/import"
            ]
        assert_consistent(store)
        # and the operation, done again, succeeds
        if op == "import":
            _import_file(store, top)
            assert len(store.images()) == 2
        elif op == "rm":
            if store.find("example.com/top", {}) is not None:
                store.remove(store.resolve("example.com/top").id)
            assert [r.name for r in store.images()] == ["example.com/base"]
        elif op == "drop":
            for tree in store.trees():
                store._remove_tree(tree.key)
            assert store.backend.tree_keys() == []
        else:
            store.render(store.resolve("example.com/top").id)
            assert len(store.trees()) == 1
        assert_consistent(store)


# -- concurrency ---------------------------------------------------------------------------

# A child that does one operation slowly, printing "ready" once it holds its locks.
_SLOW = r"""
import sys, time
from pathlib import Path

import jetpack.store.store as S
from jetpack.config import Config, StorageConfig
from jetpack.errors import StoreError
from jetpack.store import open_store

data, op, arg = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = open_store(Config(data_dir=data, storage=StorageConfig(backend="copy")))


def slow(fn):
    def wrapper(*args, **kwargs):
        print("ready", flush=True)
        time.sleep(1.0)
        return fn(*args, **kwargs)
    return wrapper


try:
    if op == "import":  # ready: extracted, pending, staging and token lock live
        S.syncfs = slow(S.syncfs)
        with open(arg, "rb") as src:
            print(store.import_aci(src, source="test").image.id, flush=True)
    elif op == "render":  # ready: holding shared image locks and the tree lock
        S.render_layers = slow(S.render_layers)
        print(store.render(store.resolve(arg).id).key, flush=True)
    elif op == "rm":  # ready: holding the image lock, its row deleted
        S.Store._remove_image_files = slow(S.Store._remove_image_files)
        store.remove(store.resolve(arg).id)
        print("removed", flush=True)
except Exception as err:
    print(f"{type(err).__name__}: {err}", flush=True)
"""


def _slow(data_dir: Path, op: str, arg: str) -> subprocess.Popen[str]:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW, str(data_dir), op, arg],
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def _rest(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return out.strip()


def test_gc_and_rm_while_an_import_is_in_flight(
    data_dir: Path, two_images: tuple[Path, Path], make_aci: MakeACI
) -> None:
    base, _ = two_images
    with _open(data_dir) as store:
        other = _import_file(store, make_aci(image_manifest("example.com/other")))
    proc = _slow(data_dir, "import", str(base))
    with _open(data_dir) as store:  # recovery must leave the live import alone
        report = store.gc(grace_seconds=0, now=10**12)
        assert report.images == [other] and report.swept == []
    ident = _rest(proc)
    with _open(data_dir) as store:
        assert [r.id for r in store.images()] == [ident]
        assert_consistent(store)


def test_rm_waits_for_a_render_of_its_image(data_dir: Path, two_images: tuple[Path, Path]) -> None:
    base, top = two_images
    with _open(data_dir) as store:
        base_id, _ = _import_file(store, base), _import_file(store, top)
    proc = _slow(data_dir, "render", "example.com/top")
    with _open(data_dir) as store:
        store.remove(base_id)  # blocks until the render is done, then removes its tree too
    assert _rest(proc).startswith("deps-")
    with _open(data_dir) as store:
        assert [r.name for r in store.images()] == ["example.com/top"]
        assert_consistent(store)


def test_a_render_during_rm_fails_cleanly(data_dir: Path, two_images: tuple[Path, Path]) -> None:
    base, top = two_images
    with _open(data_dir) as store:
        _import_file(store, base)
        top_id = _import_file(store, top)
    proc = _slow(data_dir, "rm", "example.com/base")
    with _open(data_dir) as store, pytest.raises(StoreError, match="missing dependency"):
        store.render(top_id)
    assert _rest(proc) == "removed"
    with _open(data_dir) as store:
        assert_consistent(store)
