"""The store: import, lookup, dependency chains, rendering, removal, export, verify, GC."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jetpack.config import Config, StorageConfig
from jetpack.errors import ACIError, DiscoveryError, StoreError
from jetpack.store import open_store
from jetpack.store.store import Store, tree_key
from tests.fixtures import image_manifest

MakeACI = Callable[..., Path]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config = Config(data_dir=tmp_path / "data", storage=StorageConfig(backend="copy"))
    with open_store(config) as s:
        yield s


def _import(store: Store, aci: Path, **kw: object) -> str:
    with open(aci, "rb") as src:
        return store.import_aci(src, source=aci.as_uri(), **kw).image.id  # type: ignore[arg-type]


def _leftovers(store: Store) -> list[str]:
    """Everything on disk the index does not account for."""
    ids = {r.id for r in store.images()}
    out = [f"tmp/{p.name}" for p in store.tmp.iterdir()]
    out += [f"layers/{p.name}" for p in store.layers.iterdir() if p.name not in ids]
    out += [f"blobs/{p.name}" for p in store.blobs.glob("*/*") if p.name not in ids]
    out += [f"pending {r[0]} {r[1]}" for r in store.db.execute("SELECT kind, key FROM pending")]
    return out


def test_import_publishes_blob_layer_and_row(store: Store, make_aci: MakeACI) -> None:
    aci = make_aci(image_manifest("example.com/a"), {"etc/hello": b"hi\n"})
    with open(aci, "rb") as src:
        result = store.import_aci(src, source="file:///x.aci")
    record = result.image
    assert result.new
    assert record.id == "sha512-" + hashlib.sha512(gzip.decompress(aci.read_bytes())).hexdigest()
    assert record.name == "example.com/a"
    assert record.label("version") == "1.0.0"
    assert record.compression == "gzip"
    assert record.compressed_size == aci.stat().st_size
    assert record.uncompressed_size == len(gzip.decompress(aci.read_bytes()))
    assert record.source == "file:///x.aci"
    assert store.blob_path(record.id).read_bytes() == aci.read_bytes()
    assert (store.layer_path(record.id) / "rootfs" / "etc" / "hello").read_bytes() == b"hi\n"
    assert [r.id for r in store.images()] == [record.id]
    assert _leftovers(store) == []


def test_import_twice_changes_nothing(store: Store, make_aci: MakeACI) -> None:
    aci = make_aci(image_manifest("example.com/a"))
    with open(aci, "rb") as one, open(aci, "rb") as two:
        first = store.import_aci(one, source="one")
        second = store.import_aci(two, source="two")
    assert not second.new
    assert second.image == first.image
    assert len(store.images()) == 1
    assert _leftovers(store) == []


def test_invalid_archive_publishes_nothing(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.aci"
    bad.write_bytes(gzip.compress(b"not a tar" * 100))
    with pytest.raises(ACIError), open(bad, "rb") as src:
        store.import_aci(src, source="x")
    assert store.images() == []
    assert _leftovers(store) == []


def test_lookup_by_id_and_prefix(store: Store, make_aci: MakeACI) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a")))
    assert store.by_prefix(ident).id == ident
    assert store.by_prefix(ident[:9]).id == ident
    assert store.resolve(ident[:19]).id == ident
    with pytest.raises(StoreError, match="too short: give sha512- and at least 2 hex digits"):
        store.by_prefix("sha512-a")
    with pytest.raises(StoreError, match="invalid image ID"):
        store.by_prefix("sha512-zz")
    other = "0" if ident[7] != "0" else "1"
    with pytest.raises(StoreError, match="no stored image has this ID"):
        store.by_prefix(f"sha512-{other}{other}")


def test_ambiguous_prefix_is_an_error(store: Store, make_aci: MakeACI) -> None:
    seen: dict[str, str] = {}
    for n in range(400):
        ident = _import(store, make_aci(image_manifest(f"example.com/n{n}")))
        if ident[7:9] in seen:
            break
        seen[ident[7:9]] = ident
    else:
        pytest.fail("no two IDs shared 2 hex digits in 400 images")
    with pytest.raises(StoreError, match=rf"ambiguous image ID sha512-{ident[7:9]}: it matches"):
        store.by_prefix(ident[:9])
    assert store.by_prefix(ident[:40]).id == ident


def test_find_by_name_and_labels(store: Store, make_aci: MakeACI) -> None:
    old = _import(store, make_aci(image_manifest("example.com/a", version="1.0.0")))
    new = _import(store, make_aci(image_manifest("example.com/a", version="2.0.0")))
    assert store.resolve("example.com/a").id == new  # newest import
    assert store.resolve("example.com/a:1.0.0").id == old
    assert store.resolve("example.com/a,version=1.0.0").id == old
    with pytest.raises(StoreError, match=r"no image example\.com/a:3 in the store"):
        store.resolve("example.com/a:3")
    with pytest.raises(StoreError, match="fetch it first"):
        store.resolve("example.com/a,os=freebsd")
    with pytest.raises(DiscoveryError):
        store.resolve("Example.com/a")
    # marked latest beats newer imports
    latest = _import(store, make_aci(image_manifest("example.com/a", version="0.9.0")), latest=True)
    assert store.resolve("example.com/a").id == latest


def test_host_os_arch_must_match_when_the_image_has_them(store: Store, make_aci: MakeACI) -> None:
    foreign = image_manifest("example.com/f")
    foreign["labels"] = [{"name": "os", "value": "freebsd"}, {"name": "arch", "value": "amd64"}]
    _import(store, make_aci(foreign))
    with pytest.raises(StoreError):
        store.resolve("example.com/f")
    assert store.resolve("example.com/f,os=freebsd").name == "example.com/f"
    agnostic = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/any"}
    _import(store, make_aci(agnostic))
    assert store.resolve("example.com/any").name == "example.com/any"


def _layered(make_aci: MakeACI, store: Store) -> str:
    """A→[B, C], C→[D]: each layer writes the files named after the layers up to it."""

    def dep(name: str) -> dict[str, object]:
        return {
            "imageName": f"example.com/{name}",
            "labels": [{"name": "version", "value": "1.0.0"}],
        }

    files = {
        "b": ["b", "bd", "bdc", "bdca"],
        "d": ["bd", "bdc", "bdca"],
        "c": ["bdc", "bdca"],
        "a": ["bdca"],
    }
    deps = {"a": [dep("b"), dep("c")], "c": [dep("d")], "b": [], "d": []}
    ident = ""
    for name in ("b", "d", "c", "a"):
        manifest = image_manifest(f"example.com/{name}", dependencies=deps[name])
        if not deps[name]:
            del manifest["dependencies"]
        ident = _import(
            store, make_aci(manifest, {f"order/{f}": name.encode() for f in files[name]})
        )
    return ident


def test_render_order_is_depth_first_then_the_image(store: Store, make_aci: MakeACI) -> None:
    top = _layered(make_aci, store)
    assert [r.name for r in store.chain(top)] == [
        "example.com/b",
        "example.com/d",
        "example.com/c",
        "example.com/a",
    ]
    tree = store.render(top)
    order = tree.rootfs / "order"
    assert {p.name: p.read_text() for p in order.iterdir()} == {
        "b": "b",
        "bd": "d",
        "bdc": "c",
        "bdca": "a",
    }
    assert tree.key == tree_key(list(tree.chain))
    assert (tree.path / "manifest").read_bytes() == store.get(top).manifest_bytes  # type: ignore[union-attr]
    # rendered once, shared afterwards
    again = store.render(top)
    assert again.key == tree.key and again.created_at == tree.created_at
    assert again.last_used_at >= tree.last_used_at


def test_missing_dependencies_are_all_named(store: Store, make_aci: MakeACI) -> None:
    manifest = image_manifest(
        "example.com/top",
        dependencies=[
            {"imageName": "example.com/base", "labels": [{"name": "version", "value": "2"}]},
            {"imageName": "example.com/extra"},
        ],
    )
    top = _import(store, make_aci(manifest))
    with pytest.raises(
        StoreError,
        match=r"missing dependencies: example.com/base,version=2, example.com/extra \(fetch",
    ):
        store.render(top)
    assert store.trees() == []


def test_dependency_image_id_must_match(store: Store, make_aci: MakeACI) -> None:
    base = _import(store, make_aci(image_manifest("example.com/base")))
    other = _import(store, make_aci(image_manifest("example.com/other")))
    good = image_manifest(
        "example.com/good", dependencies=[{"imageName": "example.com/base", "imageID": base}]
    )
    assert store.chain(_import(store, make_aci(good)))[0].id == base
    bad = image_manifest(
        "example.com/bad", dependencies=[{"imageName": "example.com/base", "imageID": other}]
    )
    with pytest.raises(StoreError, match=r"which is example\.com/other"):
        store.chain(_import(store, make_aci(bad)))


def test_dependency_cycle_is_refused(store: Store, make_aci: MakeACI) -> None:
    a = image_manifest("example.com/a", dependencies=[{"imageName": "example.com/b"}])
    b = image_manifest("example.com/b", dependencies=[{"imageName": "example.com/a"}])
    ident = _import(store, make_aci(a))
    _import(store, make_aci(b))
    with pytest.raises(StoreError, match="dependency cycle"):
        store.render(ident)


def test_whitelist_applies_to_the_rendered_tree(store: Store, make_aci: MakeACI) -> None:
    _import(
        store, make_aci(image_manifest("example.com/base"), {"bin/sh": b"sh", "etc/passwd": b"p"})
    )
    top = image_manifest(
        "example.com/top",
        dependencies=[{"imageName": "example.com/base"}],
        pathWhitelist=["/bin/sh", "/app"],
    )
    tree = store.render(_import(store, make_aci(top, {"app": b"app", "junk": b"j"})))
    files = sorted(str(p.relative_to(tree.rootfs)) for p in tree.rootfs.rglob("*"))
    assert files == ["app", "bin", "bin/sh"]


def test_remove_deletes_blob_layer_and_trees(store: Store, make_aci: MakeACI) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a")))
    tree = store.render(ident)
    store.remove(ident)
    assert store.get(ident) is None
    assert not store.blob_path(ident).exists()
    assert not store.layer_path(ident).exists()
    assert not tree.path.exists()
    assert store.trees() == []
    assert _leftovers(store) == []
    with pytest.raises(StoreError, match="not in the store"):
        store.remove(ident)


def test_export_keeps_the_bytes_and_id(
    store: Store, make_aci: MakeACI, tmp_path: Path, actool: str
) -> None:
    aci = make_aci(image_manifest("example.com/a"), {"x": b"x"})
    ident = _import(store, aci)
    out = tmp_path / "out.aci"
    store.export(ident, out)
    assert out.read_bytes() == aci.read_bytes()
    subprocess.run([actool, "validate", str(out)], check=True)
    with pytest.raises(StoreError, match="already exists"):
        store.export(ident, out)


def test_verify_finds_damage(store: Store, make_aci: MakeACI) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"content"}))
    tree = store.render(ident)
    assert store.verify() == []
    (tree.rootfs / "f").unlink()
    (tree.rootfs / "f").write_bytes(b"changed")
    assert [p.problem for p in store.verify([ident])] == ["rendered tree was modified"]
    blob = store.blob_path(ident)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = [p.problem for p in store.verify()]
    assert any(p.startswith("blob") for p in problems)


def test_gc_keeps_what_pods_hold_and_what_is_recent(store: Store, make_aci: MakeACI) -> None:
    old = _import(store, make_aci(image_manifest("example.com/old")))
    held = _import(store, make_aci(image_manifest("example.com/held")))
    fresh = _import(store, make_aci(image_manifest("example.com/fresh")))
    t_old, t_held = store.render(old), store.render(held)
    now = store.get(fresh).last_used_at + 100  # type: ignore[union-attr]
    report = store.gc(grace_seconds=50, in_use=lambda: {t_held.key}, now=now)
    assert report.trees == [t_old.key]
    assert sorted(report.images) == sorted([old, fresh])
    assert [r.id for r in store.images()] == [held]
    assert [t.key for t in store.trees()] == [t_held.key]
    assert store.gc(grace_seconds=10**6).images == []


def test_unusable_data_dir_is_one_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = Config(data_dir=blocker / "data", storage=StorageConfig(backend="copy"))
    with pytest.raises(StoreError, match="cannot use the data directory"):
        open_store(config)


def test_damaged_index_is_one_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "store.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="cannot open the image index"):
        open_store(Config(data_dir=data, storage=StorageConfig(backend="copy")))


def test_many_openers_of_a_new_index_all_succeed(tmp_path: Path) -> None:
    # A new file's switch to WAL answered SQLITE_BUSY at once (no busy handler) to a second
    # opener doing the same; threads show it (separate connections lock as processes do):
    # about 8 failures in this loop before set-up took turns under a flock.
    from jetpack.store.db import connect

    errors: list[BaseException] = []
    for round_ in range(100):
        index = tmp_path / f"{round_}.db"
        barrier = threading.Barrier(6)

        def open_index(index: Path = index, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                db = connect(index)
                db.execute("SELECT count(*) FROM images")
                db.close()
            except StoreError as err:
                errors.append(err)

        threads = [threading.Thread(target=open_index) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_store_files_are_private(store: Store) -> None:
    for directory in (store.blobs, store.layers, store.tmp, store.locks):
        assert directory.stat().st_mode & 0o077 == 0, directory


# -- dependency graphs -------------------------------------------------------------------


def _dep(name: str, **labels: str) -> dict[str, object]:
    dep: dict[str, object] = {"imageName": f"example.com/{name}"}
    if labels:
        dep["labels"] = [{"name": k, "value": v} for k, v in labels.items()]
    return dep


def test_diamond_renders_each_image_once_at_its_first_place(
    store: Store, make_aci: MakeACI
) -> None:
    """A→[B, C], B→[D], C→[D]: D, B, C, A — D is not rendered again over B."""
    _import(store, make_aci(image_manifest("example.com/d"), {"f": b"d", "g": b"d"}))
    _import(store, make_aci(image_manifest("example.com/b", dependencies=[_dep("d")]), {"f": b"b"}))
    _import(store, make_aci(image_manifest("example.com/c", dependencies=[_dep("d")]), {"h": b"c"}))
    top = _import(
        store, make_aci(image_manifest("example.com/a", dependencies=[_dep("b"), _dep("c")]))
    )
    assert [r.name[-1] for r in store.chain(top)] == ["d", "b", "c", "a"]
    tree = store.render(top)
    assert {n: (tree.rootfs / n).read_bytes() for n in "fgh"} == {"f": b"b", "g": b"d", "h": b"c"}


def test_a_20_level_ladder_resolves_in_linear_time(
    store: Store, make_aci: MakeACI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """X0→[X1, X1], X1→[X2, X2] …: without a visited set this chain has 2^21 entries."""
    levels = 20
    _import(store, make_aci(image_manifest(f"example.com/x{levels}")))
    top = ""
    for n in range(levels - 1, -1, -1):
        deps = [_dep(f"x{n + 1}"), _dep(f"x{n + 1}", version="1.0.0")]
        top = _import(store, make_aci(image_manifest(f"example.com/x{n}", dependencies=deps)))
    lookups = 0
    find = store.find

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal lookups
        lookups += 1
        return find(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "find", counting)
    chain = store.chain(top)
    assert [r.name for r in chain] == [f"example.com/x{n}" for n in range(levels, -1, -1)]
    assert lookups == 2 * levels


def test_dependencies_prefer_the_hosts_os_and_arch(store: Store, make_aci: MakeACI) -> None:
    native = _import(store, make_aci(image_manifest("example.com/base"), {"f": b"native"}))
    foreign = image_manifest("example.com/base", version="2.0.0")
    foreign["labels"][1]["value"] = "freebsd"
    _import(store, make_aci(foreign, {"f": b"foreign"}))  # newer, but for another OS
    top = _import(store, make_aci(image_manifest("example.com/top", dependencies=[_dep("base")])))
    assert store.chain(top)[0].id == native


def test_version_latest_means_no_version(store: Store, make_aci: MakeACI) -> None:
    _import(store, make_aci(image_manifest("example.com/a", version="1.0.0")))
    new = _import(store, make_aci(image_manifest("example.com/a", version="2.0.0")))
    assert store.resolve("example.com/a:latest").id == new
    assert store.resolve("example.com/a,version=latest").id == new


# -- verification ------------------------------------------------------------------------


def test_verify_sees_damage_to_layers_tree_manifests_and_missing_rootfs(
    store: Store, make_aci: MakeACI
) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"content", "g": b""}))
    record = store.get(ident)
    assert record is not None and record.layer_digest is not None
    tree = store.render(ident)
    assert store.verify() == []
    layer = store.layer_path(ident)
    # Damage to a layer file that is not in the tree (hard links share the rest).
    (layer / "rootfs" / "extra").write_bytes(b"x")
    (tree.path / "manifest").write_bytes(b"{}")
    problems = {p.problem for p in store.verify([ident])}
    assert problems == {"extracted layer was modified", "rendered tree's manifest was modified"}
    # A re-render would copy the damage: verify still reports the layer afterwards.
    store._remove_tree(tree.key)
    store.render(ident)
    assert [p.problem for p in store.verify()] == ["extracted layer was modified"]
    (layer / "manifest").unlink()
    assert "extracted layer's manifest is missing" in {p.problem for p in store.verify()}
    store.remove(ident)
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"content"}))
    tree = store.render(ident)
    from jetpack.aci import remove_tree

    remove_tree(tree.rootfs)
    assert [(p.subject, p.problem) for p in store.verify()] == [
        (f"tree {tree.short_key}", "rendered tree's rootfs is missing")
    ]


def test_images_from_before_layer_digests_still_verify(store: Store, make_aci: MakeACI) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"content"}))
    store.db.execute("UPDATE images SET layer_digest = NULL")
    (store.layer_path(ident) / "rootfs" / "f").write_bytes(b"changed")
    assert store.verify() == []  # nothing to compare with; the blob is still checked
    assert store.get(ident).layer_digest is None  # type: ignore[union-attr]


def test_schema_v2_index_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from jetpack.store import db

    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "store.db", isolation_level=None)
    for version in (1, 2):
        conn.executescript(db._MIGRATIONS[version])
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with open_store(Config(data_dir=data, storage=StorageConfig(backend="copy"))) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION  # type: ignore[index]
        assert s.images() == []


# -- export, copy-out --------------------------------------------------------------------


def test_export_of_a_missing_blob_names_it(store: Store, make_aci: MakeACI, tmp_path: Path) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a")))
    store.blob_path(ident).unlink()
    with pytest.raises(StoreError) as info:
        store.export(ident, tmp_path / "out.aci")
    assert str(info.value) == (
        f"cannot export image {ident[:19]}: its blob {store.blob_path(ident)} is missing"
        " (run 'jetpack image verify')"
    )
    assert not (tmp_path / "out.aci").exists()


def test_copy_out_stages_and_replaces_only_when_complete(
    store: Store, make_aci: MakeACI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"new"}))
    with pytest.raises(StoreError, match="its parent directory does not exist"):
        store.copy_out(ident, tmp_path / "no" / "dir", rendered=True, rootfs_only=False,
                       overwrite=False)  # fmt: skip
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old").write_text("old")
    with pytest.raises(StoreError, match="already exists"):
        store.copy_out(ident, dest, rendered=False, rootfs_only=False, overwrite=False)

    import jetpack.store.store as store_module
    from jetpack.errors import CommandError

    def failing_cp(argv: list[str]) -> None:
        Path(argv[-1]).mkdir(exist_ok=True)
        (Path(argv[-1]) / "half").write_text("half")
        raise CommandError(argv, 1, "cp: write error: No space left on device\n")

    monkeypatch.setattr(store_module, "run", failing_cp)
    with pytest.raises(StoreError, match="No space left on device"):
        store.copy_out(ident, dest, rendered=True, rootfs_only=True, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")] == []
    assert [p.name for p in dest.iterdir()] == ["old"]
    monkeypatch.undo()

    assert store.copy_out(ident, dest, rendered=True, rootfs_only=True, overwrite=True) == dest
    assert (dest / "f").read_bytes() == b"new" and not (dest / "old").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # not hard-linked to the store: a user's changes stay in their copy
    assert (dest / "f").stat().st_nlink == 1


# -- removal, GC, leftovers --------------------------------------------------------------


def test_remove_if_unused_decides_on_the_row_as_it_is_now(store: Store, make_aci: MakeACI) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a")))
    used = store.get(ident).last_used_at  # type: ignore[union-attr]
    assert not store.remove_if_unused(ident, cutoff=used - 1)  # used since the cutoff
    assert store.remove_if_unused(ident, cutoff=used)
    assert not store.remove_if_unused(ident, cutoff=used)  # already gone: no error


def test_gc_keeps_the_dependencies_of_a_held_tree(store: Store, make_aci: MakeACI) -> None:
    base = _import(store, make_aci(image_manifest("example.com/base")))
    top = _import(store, make_aci(image_manifest("example.com/top", dependencies=[_dep("base")])))
    tree = store.render(top)
    report = store.gc(grace_seconds=0, in_use=lambda: {tree.key}, now=10**12)
    assert report.trees == [] and report.images == []
    assert sorted(r.id for r in store.images()) == sorted([base, top])
    assert store.gc(grace_seconds=0, now=10**12).images != []
    assert store.images() == []


def test_gc_sweeps_leaked_token_locks_and_stale_downloads(store: Store) -> None:
    import os

    from jetpack.store.locks import FileLock

    old = 1_000_000_000
    leaked = store.locks / "import-0123456789abcdef"
    live = store.locks / "render-fedcba9876543210"
    stale = store.download_path("aaaa")
    stale_meta = stale.with_name(stale.name + ".json")
    resuming = store.download_path("bbbb")
    recent = store.download_path("cccc")
    for path in (leaked, live, stale, stale_meta, resuming, recent):
        path.write_bytes(b"")
        if path is not recent:
            os.utime(path, (old, old))
    with FileLock(live), FileLock(store.locks / "download-bbbb"):
        report = store.gc(grace_seconds=3600)
    assert sorted(report.swept) == [
        f"locks/{leaked.name}",
        "tmp/download-aaaa",
        "tmp/download-aaaa.json",
    ]
    assert live.exists() and resuming.exists() and recent.exists()
    assert not leaked.exists() and not stale.exists() and not stale_meta.exists()


def test_an_interrupt_after_publishing_leaves_no_tree(
    store: Store, make_aci: MakeACI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"f"}))
    publish = store.backend.publish_tree

    def publish_then_interrupt(token: str, key: str) -> Path:
        publish(token, key)
        raise KeyboardInterrupt

    monkeypatch.setattr(store.backend, "publish_tree", publish_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.render(ident)
    assert store.backend.tree_keys() == [] and store.trees() == []
    assert _leftovers(store) == []
    monkeypatch.undo()
    assert (store.render(ident).rootfs / "f").read_bytes() == b"f"


def test_recovery_keeps_what_it_cannot_undo_and_the_store_opens(
    tmp_path: Path,
    make_aci: MakeACI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Config(data_dir=tmp_path / "data", storage=StorageConfig(backend="copy"))
    with open_store(config) as store:
        tree = store.render(_import(store, make_aci(image_manifest("example.com/a"))))
        store.db.execute("DELETE FROM trees")  # a render that died after publishing
        store.db.execute("INSERT INTO pending VALUES ('tree', ?, 0)", (tree.key,))

    from jetpack.store.backends import CopyBackend

    def refuse(self: CopyBackend, key: str) -> None:
        raise StoreError(f"cannot remove tree {key}", "app rootfs still mounted over it")

    monkeypatch.setattr(CopyBackend, "remove_tree", refuse)
    with open_store(config) as store:
        assert store.images() != []
        assert [tuple(r) for r in store.db.execute("SELECT kind FROM pending")] == [("tree",)]
    monkeypatch.undo()
    assert "cannot recover tree" in caplog.text
    with open_store(config) as store:  # once it can, it does
        assert store.backend.tree_keys() == []
        assert _leftovers(store) == []


# -- the index and the data directory ----------------------------------------------------


def test_sqlite_errors_say_what_happened(tmp_path: Path) -> None:
    import sqlite3

    from jetpack.store.db import store_error

    def err(name: str) -> str:
        error = sqlite3.OperationalError("boom")
        error.sqlite_errorname = name
        return str(store_error(error, "cannot use the image index", tmp_path / "store.db"))

    assert "restore it from a backup" in err("SQLITE_CORRUPT")
    assert "restore it from a backup" in err("SQLITE_NOTADB")
    for name, says in [
        ("SQLITE_FULL", "the disk is full"),
        ("SQLITE_IOERR_WRITE", "I/O error (SQLITE_IOERR_WRITE)"),
        ("SQLITE_READONLY", "the image store is read-only"),
        ("SQLITE_READONLY_DBMOVED", "the image store is read-only"),
        ("SQLITE_CANTOPEN", "cannot open"),
        ("SQLITE_BUSY", "locked by another process"),
    ]:
        assert says in err(name) and "backup" not in err(name), name


def test_a_missing_store_is_not_created_by_readers(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", storage=StorageConfig(backend="copy"))
    with pytest.raises(StoreError) as info:
        open_store(config, create=False)
    assert (
        str(info.value) == f"no store at {tmp_path / 'data'} (run jetpack init, or fetch an image)"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.root
def test_a_read_only_store_can_be_listed_not_changed(tmp_path: Path, make_aci: MakeACI) -> None:
    data, view = tmp_path / "data", tmp_path / "view"
    aci = make_aci(image_manifest("example.com/a"), {"f": b"f"})
    with open_store(Config(data_dir=data, storage=StorageConfig(backend="copy"))) as store:
        ident = _import(store, aci)
        store.render(ident)
    view.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(data), str(view)], check=True)
    try:
        config = Config(data_dir=view, storage=StorageConfig(backend="copy"))
        with open_store(config, create=False) as store:
            assert store.readonly
            assert [r.id for r in store.images()] == [ident]
            assert store.verify() == []
            store.export(ident, tmp_path / "out.aci")
            with pytest.raises(StoreError, match="read-only"), open(aci, "rb") as src:
                store.import_aci(src, source="x")
            with pytest.raises(StoreError, match="read-only"):
                store.remove(ident)
            with pytest.raises(StoreError, match="read-only"):
                store.record_remote("http://x", ident, etag=None, max_age=0, no_store=False,
                                    downloaded=True)  # fmt: skip
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_store_size_counts_trees_that_are_copies(
    store: Store, make_aci: MakeACI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = _import(store, make_aci(image_manifest("example.com/a"), {"f": b"x" * 1000}))
    tree = store.render(ident)
    shared = store.summary().size
    monkeypatch.setattr(store.backend, "trees_share_layers", False)
    assert store.summary().size == shared + tree.size
