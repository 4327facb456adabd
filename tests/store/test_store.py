"""The store: import, lookup, dependency chains, rendering, removal, export, verify, GC."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
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


def test_store_files_are_private(store: Store) -> None:
    for directory in (store.blobs, store.layers, store.tmp, store.locks):
        assert directory.stat().st_mode & 0o077 == 0, directory
