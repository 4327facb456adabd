"""Concurrency and crash safety of imports, with real processes and real SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.config import Config, StorageConfig
from jetpack.store import open_store
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
    """Every row has its blob and layer, nothing on disk lacks a row, nothing is pending."""
    ids = {r.id for r in store.images()}
    assert sorted(p.name for p in store.layers.iterdir()) == sorted(ids)
    assert sorted(p.name for p in store.blobs.glob("*/*")) == sorted(ids)
    assert list(store.tmp.iterdir()) == []
    assert store.db.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
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
