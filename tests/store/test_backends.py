"""One suite for every storage backend: copy, overlay and zfs (for real, on zfs-fuse).

The ``backend`` fixture is parametrized over the three; each test runs against each, with
a fresh data directory (and, for ZFS, a fresh dataset in the session's pool).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetpack.command import run
from jetpack.config import Config, StorageConfig
from jetpack.errors import StoreError
from jetpack.mountinfo import is_mountpoint, mounts
from jetpack.store.backend import Backend
from jetpack.store.backends import (
    CopyBackend,
    OverlayBackend,
    ZFSBackend,
    default_backend,
    kernel_has_overlay,
    make_backend,
)
from jetpack.store.zfs import Dataset
from tests.fixtures import xattrs_supported
from tests.store.zfs_fixture import unmount_under

pytestmark = pytest.mark.root

_dataset_numbers = itertools.count()


def _config(tmp_path: Path, backend: str, dataset: str | None = None) -> Config:
    return Config(data_dir=tmp_path / "data", storage=StorageConfig(backend, dataset))


@pytest.fixture(
    params=["copy", "overlay", pytest.param("zfs", marks=pytest.mark.zfs)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, initialised backend of each kind; everything it made is gone afterwards."""
    dataset = None
    if request.param == "zfs":
        pool = request.getfixturevalue("zfs_pool")
        dataset = f"{pool}/t{next(_dataset_numbers)}/jetpack"
    made = make_backend(_config(tmp_path, request.param, dataset))
    made.init()
    try:
        yield made
    finally:
        unmount_under(tmp_path)
        if dataset is not None:
            run(["zfs", "destroy", "-R", dataset.rsplit("/", 1)[0]], check=False)
            unmount_under(tmp_path)


# -- helpers ---------------------------------------------------------------------------


def write_tree(root: Path) -> None:
    """A small rootfs with every kind of entry and metadata a backend must keep."""
    root.mkdir(mode=0o755)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("tree\n")
    suid = root / "bin-su"
    suid.write_bytes(b"#!/bin/sh\n")
    os.chown(suid, 1000, 1000)
    suid.chmod(0o4755)  # after chown, which clears setuid
    os.utime(suid, (1_500_000_000, 1_500_000_000))
    os.link(suid, root / "hardlink")
    (root / "link").symlink_to("etc/hostname")
    os.lchown(root / "link", 1000, 1000)
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    private = root / "private"
    private.mkdir()
    private.chmod(0o700)
    (private / "secret").write_text("s")
    if xattrs_supported(root):
        os.setxattr(root / "etc/hostname", "user.jetpack", b"value")


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything about every entry below ``root`` that a rootfs must reproduce."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if name == "" and path != root:
                continue
            st = path.lstat()
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = str(path.readlink())
            try:
                xattrs = sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                    if k.startswith("user.")
                )
            except OSError:
                xattrs = []
            hard = st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode)
            if hard:
                inodes.setdefault(st.st_ino, []).append(rel)
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
            found[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_nlink if not stat.S_ISDIR(st.st_mode) else None,
                st.st_rdev,
                mtime,
                content,
                tuple(xattrs),
                st.st_ino if hard else None,
            )
    # Hard links: which entries share an inode, named by the first of them.
    for rel, entry in found.items():
        if entry[-1] is not None:
            found[rel] = (*entry[:-1], min(inodes[int(entry[-1])]))  # type: ignore[call-overload]
    return found


def publish(backend: Backend, key: str = "deps-abc", token: str = "tok1") -> Path:
    staging = backend.staging_tree(token)
    write_tree(staging / "rootfs")
    (staging / "manifest").write_text("{}")
    return backend.publish_tree(token, key)


def mounted_below(path: Path) -> list[Path]:
    return [m.target for m in mounts() if m.target == path or path in m.target.parents]


# -- the shared suite ------------------------------------------------------------------


def test_init_is_idempotent(backend: Backend) -> None:
    backend.init()
    backend.init()
    assert backend.tree_keys() == []
    assert backend.staging_tokens() == []


def test_publish_makes_the_tree_visible(backend: Backend) -> None:
    staging = backend.staging_tree("tok1")
    assert staging.is_dir()
    assert list(staging.iterdir()) == []
    assert backend.staging_tokens() == ["tok1"]
    write_tree(staging / "rootfs")
    (staging / "manifest").write_text("{}")
    expected = snapshot(staging / "rootfs")
    assert not backend.has_tree("deps-abc")

    path = backend.publish_tree("tok1", "deps-abc")

    assert path == backend.tree_path("deps-abc")
    assert backend.has_tree("deps-abc")
    assert backend.tree_keys() == ["deps-abc"]
    assert backend.staging_tokens() == []
    assert (path / "manifest").read_text() == "{}"
    assert snapshot(path / "rootfs") == expected
    got = snapshot(path / "rootfs")
    assert got["bin-su"][0] == stat.S_IFREG | 0o4755
    assert got["bin-su"][1:3] == (1000, 1000)
    assert got["hardlink"][-1] == "bin-su"
    assert got["private"][0] == stat.S_IFDIR | 0o700
    assert stat.S_ISFIFO(int(got["fifo"][0])) and stat.S_ISCHR(int(got["null"][0]))  # type: ignore[call-overload]


def test_publish_twice_under_one_key_fails(backend: Backend) -> None:
    publish(backend)
    staging = backend.staging_tree("tok2")
    (staging / "rootfs").mkdir()
    with pytest.raises(StoreError, match="deps-abc"):
        backend.publish_tree("tok2", "deps-abc")
    assert backend.tree_keys() == ["deps-abc"]


def test_discard_staging(backend: Backend) -> None:
    for token in ("a1", "b2"):
        staging = backend.staging_tree(token)
        write_tree(staging / "rootfs")
    assert backend.staging_tokens() == ["a1", "b2"]
    backend.discard_staging("a1")
    backend.discard_staging("a1")
    backend.discard_staging("never-made")
    assert backend.staging_tokens() == ["b2"]
    backend.discard_staging("b2")
    assert backend.staging_tokens() == []
    assert backend.tree_keys() == []


def test_app_rootfs_are_private_copies_of_the_tree(backend: Backend, tmp_path: Path) -> None:
    tree = publish(backend) / "rootfs"
    expected = snapshot(tree)
    apps = [tmp_path / "pod" / f"app{i}" for i in range(3)]
    roots = []
    for app in apps:
        app.mkdir(parents=True)
        roots.append(backend.create_rootfs("deps-abc", app))
    assert roots == [app / "rootfs" for app in apps]
    for root in roots:
        assert snapshot(root) == expected

    (roots[0] / "etc/hostname").write_text("app0\n")
    (roots[0] / "new").write_text("only in app0")
    (roots[1] / "bin-su").unlink()
    (roots[1] / "private/secret").unlink()
    (roots[1] / "private").rmdir()

    assert (roots[0] / "etc/hostname").read_text() == "app0\n"
    assert (roots[1] / "etc/hostname").read_text() == "tree\n"
    assert not (roots[1] / "new").exists()
    assert (roots[0] / "bin-su").exists()
    assert snapshot(roots[2]) == expected
    assert snapshot(tree) == expected


def test_release_rootfs(backend: Backend, tmp_path: Path) -> None:
    publish(backend)
    app = tmp_path / "pod" / "app"
    app.mkdir(parents=True)
    root = backend.create_rootfs("deps-abc", app)
    (root / "scratch").write_text("x")
    backend.release_rootfs(app)
    assert mounted_below(app) == []
    assert not root.exists()
    backend.release_rootfs(app)  # idempotent
    backend.release_rootfs(tmp_path / "never-made")
    # ... and the app can get a rootfs again.
    root = backend.create_rootfs("deps-abc", app)
    assert not (root / "scratch").exists()
    backend.release_rootfs(app)
    assert mounted_below(app) == []
    assert list(app.iterdir()) == []


def test_remove_tree(backend: Backend) -> None:
    publish(backend, "deps-one", "t1")
    publish(backend, "deps-two", "t2")
    backend.remove_tree("deps-one")
    backend.remove_tree("deps-one")
    backend.remove_tree("never-made")
    assert backend.tree_keys() == ["deps-two"]
    assert not backend.has_tree("deps-one")
    assert not backend.tree_path("deps-one").exists()
    assert backend.staging_tokens() == []


def test_remove_tree_in_use(backend: Backend, tmp_path: Path) -> None:
    publish(backend)
    app = tmp_path / "pod" / "app"
    app.mkdir(parents=True)
    assert not backend.tree_in_use("deps-abc")
    root = backend.create_rootfs("deps-abc", app)
    expected = snapshot(root)
    assert backend.tree_in_use("deps-abc") == (not isinstance(backend, CopyBackend))
    assert not backend.tree_in_use("deps-other")
    if isinstance(backend, CopyBackend):
        backend.remove_tree("deps-abc")
        assert not backend.has_tree("deps-abc")
    else:  # the tree is the app's lower layer / clone origin: it stays
        with pytest.raises(StoreError, match=r"release those apps"):
            backend.remove_tree("deps-abc")
        assert backend.has_tree("deps-abc")
    assert snapshot(root) == expected
    backend.release_rootfs(app)
    assert not backend.tree_in_use("deps-abc")
    backend.remove_tree("deps-abc")
    assert backend.tree_keys() == []


def test_create_rootfs_of_a_missing_tree(backend: Backend, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    with pytest.raises(StoreError, match="deps-none"):
        backend.create_rootfs("deps-none", app)
    assert mounted_below(app) == []
    assert list(app.iterdir()) == []


# -- per backend -----------------------------------------------------------------------


def test_overlay_rootfs_is_an_overlay_mount(tmp_path: Path) -> None:
    backend = OverlayBackend(tmp_path / "data")
    backend.init()
    publish(backend)
    app = tmp_path / "app"
    app.mkdir()
    try:
        root = backend.create_rootfs("deps-abc", app)
        (mount,) = [m for m in mounts() if m.target == root]
        assert mount.fstype == "overlay"
        assert mount.options["lowerdir"] == str(backend.tree_path("deps-abc") / "rootfs")
        assert mount.options["upperdir"] == str(app / "upper")
        (root / "written").write_text("x")
        assert (app / "upper/written").exists()
    finally:
        backend.release_rootfs(app)
    assert not is_mountpoint(app / "rootfs")


@pytest.mark.zfs
def test_zfs_tree_is_sealed_and_rootfs_is_a_clone(zfs_pool: str, tmp_path: Path) -> None:
    dataset = f"{zfs_pool}/seal{next(_dataset_numbers)}"
    backend = ZFSBackend(dataset, tmp_path / "zfs")
    backend.init()
    app = tmp_path / "app"
    app.mkdir()
    try:
        path = publish(backend)
        tree = Dataset(f"{dataset}/trees/deps-abc")
        assert tree.mountpoint == path
        assert tree.snapshots() == ["seal"]
        with pytest.raises(OSError) as raised:
            (path / "rootfs/new").write_text("x")
        assert raised.value.errno == errno.EROFS
        # zfs-fuse shows readonly=off ("temporary") while mounted; the property is set:
        tree.unmount()
        assert tree.get("readonly") == "on"
        tree.mount()
        backend.create_rootfs("deps-abc", app)
        (clone,) = Dataset(f"{dataset}/rootfs").children()
        assert clone.origin == Dataset(f"{tree.name}@seal")
        assert clone.get("jetpack:app_dir") == str(app)
        assert clone.get("readonly") == "off"
        (mount,) = [m for m in mounts() if m.target == app / "rootfs"]
        assert (mount.source, mount.root) == (clone.name, "/rootfs")
        with pytest.raises(StoreError, match=str(app)):
            backend.remove_tree("deps-abc")
        backend.release_rootfs(app)
        assert not clone.exists()
    finally:
        unmount_under(tmp_path)
        Dataset(dataset).destroy(recursive=True)


@pytest.mark.zfs
def test_zfs_init_refuses_a_missing_pool(tmp_path: Path, zfs_pool: str) -> None:
    with pytest.raises(StoreError, match="pool 'nosuchpool' does not exist"):
        ZFSBackend("nosuchpool/jetpack", tmp_path).init()


@pytest.mark.zfs
def test_zfs_interrupted_publish_is_not_a_tree(zfs_pool: str, tmp_path: Path) -> None:
    dataset = f"{zfs_pool}/crash{next(_dataset_numbers)}"
    backend = ZFSBackend(dataset, tmp_path / "zfs")
    backend.init()
    try:
        staging = backend.staging_tree("t1")
        (staging / "rootfs").mkdir()
        Dataset(f"{dataset}/tmp/t1").unmount()
        Dataset(f"{dataset}/tmp/t1").rename(f"{dataset}/trees/deps-abc")  # crash before @seal
        assert not backend.has_tree("deps-abc")
        assert backend.tree_keys() == []
        publish(backend, token="t2")
        assert backend.tree_keys() == ["deps-abc"]
    finally:
        unmount_under(tmp_path)
        Dataset(dataset).destroy(recursive=True)


# -- choosing ----------------------------------------------------------------------------


def test_make_backend(tmp_path: Path) -> None:
    assert isinstance(make_backend(_config(tmp_path, "copy")), CopyBackend)
    assert isinstance(make_backend(_config(tmp_path, "overlay")), OverlayBackend)
    zfs = make_backend(_config(tmp_path, "zfs", "tank/jp"))
    assert isinstance(zfs, ZFSBackend)
    assert zfs.mountpoint == tmp_path / "data/zfs"
    with pytest.raises(StoreError, match=r"storage.zfs.dataset is not set \(set it"):
        make_backend(_config(tmp_path, "zfs"))


def test_default_backend(tmp_path: Path) -> None:
    assert default_backend(euid=0, has_overlay=True) == "overlay"
    assert default_backend(euid=0, has_overlay=False) == "copy"
    assert default_backend(euid=1000, has_overlay=True) == "copy"
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tsysfs\nnodev\toverlay\n\text4\n")
    assert kernel_has_overlay(filesystems)
    filesystems.write_text("nodev\tsysfs\n\text4\n")
    assert not kernel_has_overlay(filesystems)
    assert not kernel_has_overlay(tmp_path / "missing")
    chosen = make_backend(_config(tmp_path, None))  # type: ignore[arg-type]
    assert chosen.name == default_backend()
    assert chosen.name == ("overlay" if os.geteuid() == 0 and kernel_has_overlay() else "copy")
