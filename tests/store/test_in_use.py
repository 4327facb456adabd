"""A tree an app rootfs uses (overlay lower layer, ZFS clone origin) is never removed.

``image rm`` and ``image gc`` must refuse it up front, leave the index untouched, and
every later command must still work; once the app is released, removal succeeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jetpack.command import run
from jetpack.config import Config, StorageConfig
from jetpack.errors import StoreError
from jetpack.store import open_store
from tests.fixtures import image_manifest
from tests.store.test_crash import assert_consistent
from tests.store.zfs_fixture import unmount_under

pytestmark = pytest.mark.root

MakeACI = Callable[..., Path]
_numbers = itertools.count()


@pytest.fixture(params=["overlay", pytest.param("zfs", marks=pytest.mark.zfs)])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Config]:
    dataset = None
    if request.param == "zfs":
        dataset = f"{request.getfixturevalue('zfs_pool')}/u{next(_numbers)}/jetpack"
    yield Config(data_dir=tmp_path / "data", storage=StorageConfig(request.param, dataset))
    unmount_under(tmp_path)
    if dataset is not None:
        run(["zfs", "destroy", "-R", dataset.rsplit("/", 1)[0]], check=False)
        unmount_under(tmp_path)


def test_a_tree_in_use_is_kept_by_rm_and_gc(
    config: Config, make_aci: MakeACI, tmp_path: Path
) -> None:
    app = tmp_path / "pod" / "app"
    app.mkdir(parents=True)
    with open_store(config) as store:
        with open(make_aci(image_manifest("example.com/a"), {"f": b"f"}), "rb") as src:
            ident = store.import_aci(src, source="test").image.id
        tree = store.render(ident)
        store.backend.create_rootfs(tree.key, app)
        try:
            with pytest.raises(StoreError) as info:
                store.remove(ident)
            assert str(info.value) == (
                f"cannot remove image {ident[:19]}: its rendered tree {tree.key[:17]} is in use"
                " by an app rootfs (remove the pods using it first)"
            )
            report = store.gc(grace_seconds=0, now=10**12)
            assert report.trees == [] and report.images == []
            assert [k.split(":")[0] for k in report.kept] == [f"tree {tree.short_key}"]
            assert [t.key for t in store.trees()] == [tree.key]
        finally:
            with open_store(config, create=False) as again:  # a later command still works
                assert [r.id for r in again.images()] == [ident]
                assert again.db.execute("SELECT count(*) FROM pending").fetchone()[0] == 0  # type: ignore[index]
            store.backend.release_rootfs(app)
        store.remove(ident)
        assert store.images() == [] and store.backend.tree_keys() == []
        assert_consistent(store)


def test_a_tree_in_use_cannot_be_rendered_afresh(
    config: Config, make_aci: MakeACI, tmp_path: Path
) -> None:
    """The index lost the tree's row (damage) while an app uses it: render refuses."""
    app = tmp_path / "app"
    app.mkdir()
    with open_store(config) as store:
        with open(make_aci(image_manifest("example.com/a"), {"f": b"f"}), "rb") as src:
            ident = store.import_aci(src, source="test").image.id
        tree = store.render(ident)
        store.backend.create_rootfs(tree.key, app)
        try:
            store.db.execute("DELETE FROM trees")
            with pytest.raises(StoreError, match="an app rootfs made from it still exists"):
                store.render(ident)
            assert store.backend.has_tree(tree.key)
        finally:
            store.backend.release_rootfs(app)
        assert store.render(ident).key == tree.key
        assert_consistent(store)
