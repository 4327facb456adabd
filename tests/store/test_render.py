"""Tests for jetpack.store.render: merging layers into a tree, the whitelist, the digest.

Layers are real directories built by :func:`make_layer` from a spec dict; every mtime is
set explicitly so that equal specs give equal trees.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from jetpack.errors import StoreError
from jetpack.store.render import TreeDigest, render_layers, tree_digest

T0 = 1_500_000_000_123_456_789  # ns, with a sub-second part on purpose
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (owners, devices, mounts)")


# -- building layers --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class F:
    """A regular file."""

    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = T0
    xattrs: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class D:
    """A directory (created implicitly with these defaults when a child needs it)."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = T0
    xattrs: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class L:
    """A symlink."""

    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = T0


@dataclasses.dataclass(frozen=True)
class H:
    """A hard link to an earlier path of the same layer."""

    to: str


@dataclasses.dataclass(frozen=True)
class Node:
    """A FIFO (``kind=stat.S_IFIFO``) or a device node."""

    kind: int = stat.S_IFIFO
    major: int = 0
    minor: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = T0


Spec = Mapping[str, "F | D | L | H | Node | str"]


def build(root: Path, spec: Spec) -> Path:
    """Create ``root`` and the entries of ``spec`` (relative paths; "" is the root itself)."""
    root.mkdir(parents=True)
    dirs: dict[str, D] = {"": D()}
    for path, entry in spec.items():
        if isinstance(entry, str):
            entry = F(entry.encode())
        parts = path.split("/") if path else []
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in dirs:
                dirs[parent] = D()
                (root / parent).mkdir(exist_ok=True)
        target = root / path
        if isinstance(entry, D):
            dirs[path] = entry
            if path:
                target.mkdir(exist_ok=True)
        elif isinstance(entry, F):
            target.write_bytes(entry.data)
            _finish(target, entry.uid, entry.gid, entry.mode, entry.mtime, entry.xattrs)
        elif isinstance(entry, L):
            target.symlink_to(entry.target)
            os.chown(target, entry.uid, entry.gid, follow_symlinks=False)
            os.utime(target, ns=(entry.mtime, entry.mtime), follow_symlinks=False)
        elif isinstance(entry, H):
            os.link(root / entry.to, target)
        else:
            if entry.kind == stat.S_IFIFO:
                os.mkfifo(target)
            else:
                os.mknod(target, entry.kind | 0o600, os.makedev(entry.major, entry.minor))
            _finish(target, entry.uid, entry.gid, entry.mode, entry.mtime, {})
    for path in sorted(dirs, key=lambda p: -len(p.split("/")) if p else 0):
        meta = dirs[path]
        _finish(root / path, meta.uid, meta.gid, meta.mode, meta.mtime, meta.xattrs)
    return root


def _finish(
    path: Path, uid: int, gid: int, mode: int, mtime: int, xattrs: Mapping[str, bytes]
) -> None:
    if ROOT:
        os.chown(path, uid, gid)
    path.chmod(mode)
    for key, value in xattrs.items():
        os.setxattr(path, key, value)
    os.utime(path, ns=(mtime, mtime))


@pytest.fixture
def make_layer(tmp_path: Path) -> Callable[[str, Spec], Path]:
    """``make_layer(name, spec)`` builds ``tmp_path/layers/name/rootfs``."""

    def make(name: str, spec: Spec) -> Path:
        return build(tmp_path / "layers" / name / "rootfs", spec)

    return make


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "tree" / "rootfs"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted for the test: another file system, so link(2) fails EXDEV."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything render_layers preserves, per path (the root included as "")."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        rel = str(path.relative_to(root)) if path != root else ""
        if stat.S_ISREG(st.st_mode):
            extra: Any = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            extra = str(path.readlink())
        else:
            extra = st.st_rdev
        xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in _xattr_names(path)}
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, extra, xattrs)
    return out


def _xattr_names(path: Path) -> list[str]:
    return sorted(os.listxattr(path, follow_symlinks=False))


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- order and overwrite rules ----------------------------------------------------------


def test_layers_are_applied_in_the_given_order(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    # A->[B,C], C->[D]: the store hands us B, D, C, A.
    b = make_layer("b", {"etc/who": "B", "etc/b": "b", "etc/bd": "B"})
    d = make_layer("d", {"etc/who": "D", "etc/bd": "D", "etc/dc": "D"})
    c = make_layer("c", {"etc/who": "C", "etc/dc": "C", "etc/c": "c"})
    a = make_layer("a", {"etc/who": "A", "etc/a": "a"})
    render_layers([b, d, c, a], dest)
    etc = dest / "etc"
    assert {p.name: p.read_text() for p in etc.iterdir()} == {
        "who": "A",
        "a": "a",
        "b": "b",
        "c": "c",
        "bd": "D",
        "dc": "C",
    }


def test_reversed_order_gives_the_first_layer_the_last_word(
    make_layer: Callable[[str, Spec], Path], tmp_path: Path
) -> None:
    one = make_layer("one", {"f": "1"})
    two = make_layer("two", {"f": "2"})
    for order, expected in (([one, two], "2"), ([two, one], "1")):
        out = tmp_path / f"out-{expected}"
        out.mkdir()
        render_layers(order, out)
        assert (out / "f").read_text() == expected


def test_file_over_file_unlinks_and_never_writes_into_the_old_inode(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    old = make_layer("old", {"f": F(b"old", mode=0o600)})
    new = make_layer("new", {"f": F(b"new", mode=0o640)})
    render_layers([old, new], dest)
    assert (dest / "f").read_bytes() == b"new"
    assert stat.S_IMODE((dest / "f").stat().st_mode) == 0o640
    assert (old / "f").read_bytes() == b"old"
    assert stat.S_IMODE((old / "f").stat().st_mode) == 0o600


def test_directory_over_file(make_layer: Callable[[str, Spec], Path], dest: Path) -> None:
    file = make_layer("file", {"x": "a file"})
    tree = make_layer("tree", {"x/y": "inside"})
    render_layers([file, tree], dest)
    assert (dest / "x").is_dir()
    assert (dest / "x/y").read_text() == "inside"
    assert (file / "x").read_text() == "a file"


def test_file_over_directory_replaces_the_whole_subtree(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    tree = make_layer("tree", {"x/y/z": "deep", "x/w": "w", "keep": "k"})
    file = make_layer("file", {"x": "now a file"})
    render_layers([tree, file], dest)
    assert (dest / "x").read_text() == "now a file"
    assert listing(dest) == {"x", "keep"}
    assert (tree / "x/y/z").read_text() == "deep"


def test_symlink_over_directory_replaces_it(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    tree = make_layer("tree", {"lib/libc.so": "libc", "usr/lib/libm.so": "libm"})
    link = make_layer("link", {"lib": L("usr/lib")})
    render_layers([tree, link], dest)
    assert (dest / "lib").is_symlink()
    assert str((dest / "lib").readlink()) == "usr/lib"
    assert listing(dest) == {"lib", "usr", "usr/lib", "usr/lib/libm.so"}


@pytest.mark.parametrize("how", ["absolute", "relative-escape", "inside"])
def test_symlink_to_directory_is_replaced_never_followed(
    make_layer: Callable[[str, Spec], Path], dest: Path, tmp_path: Path, how: str
) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "untouched").write_text("s")
    target = {
        "absolute": str(sentinel),
        "relative-escape": "../../sentinel",  # dest is tmp_path/tree/rootfs
        "inside": "usr/lib",
    }[how]
    base = make_layer("base", {"lib": L(target), "usr/lib/libm.so": "libm"})
    assert (dest / target).resolve() == sentinel or how == "inside"
    top = make_layer("top", {"lib/libc.so": "libc", "lib/sub/x": "x"})
    render_layers([base, top], dest)
    lib = dest / "lib"
    assert lib.is_dir()
    assert not lib.is_symlink()
    assert listing(lib) == {"libc.so", "sub", "sub/x"}
    assert listing(sentinel) == {"untouched"}
    assert listing(dest / "usr/lib") == {"libm.so"}
    assert str((base / "lib").readlink()) == target


def test_directory_metadata_comes_from_the_last_layer(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    uid = 1000 if ROOT else os.getuid()
    old = make_layer(
        "old",
        {
            "": D(mode=0o700, mtime=T0 - 5),
            "d": D(mode=0o755, mtime=T0 - 10, xattrs={"user.old": b"1"}),
            "d/old": "o",
        },
    )
    new = make_layer(
        "new",
        {
            "": D(mode=0o755, mtime=T0 + 5),
            "d": D(mode=0o1750, uid=uid, gid=uid, mtime=T0 + 10, xattrs={"user.new": b"2"}),
            "d/new": "n",
        },
    )
    render_layers([old, new], dest)
    st = (dest / "d").stat()
    assert stat.S_IMODE(st.st_mode) == 0o1750
    assert (st.st_uid, st.st_gid) == (uid, uid)
    assert st.st_mtime_ns == T0 + 10  # set after both layers added children
    assert _xattr_names(dest / "d") == ["user.new"]
    assert listing(dest / "d") == {"old", "new"}
    root = dest.stat()
    assert (stat.S_IMODE(root.st_mode), root.st_mtime_ns) == (0o755, T0 + 5)


def test_directory_metadata_of_a_directory_only_an_earlier_layer_had(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    old = make_layer("old", {"ro": D(mode=0o555, mtime=T0 - 1), "ro/f": "f"})
    new = make_layer("new", {"other": "x"})
    render_layers([old, new], dest)
    st = (dest / "ro").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o555, T0 - 1)


# -- whitelist --------------------------------------------------------------------------

WHITELIST_SPEC: Spec = {
    "etc/ca/crt": "crt",
    "etc/ca/other": "other",
    "etc/passwd": "root:x:0:0",
    "etc/systemd/system/a.service": "a",
    "etc/systemd/system/sub/b": "b",
    "usr/bin/worker": "bin",
    "usr/bin/sh": "sh",
    "bin": L("usr/bin"),
    "lib": L("usr/lib"),
    "usr/lib/libc.so": "libc",
    "var/empty": D(mode=0o711),
}


def test_whitelist_keeps_listed_paths_and_their_ancestors_only(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    base = make_layer("base", WHITELIST_SPEC)
    top = make_layer("top", {"opt/libs/tool.so": "tool", "opt/junk": "junk"})
    whitelist = [
        "/etc/ca/crt",
        "/usr/bin/worker",
        "/opt/libs/tool.so",
        "/etc/systemd/system/",  # a directory: kept, its unlisted children are not
        "/bin",  # a symlink: kept as a symlink, not resolved
        "/lib/libc.so",  # through a symlink: names are not resolved, nothing to keep
        "/does/not/exist",
        "/var/empty",
    ]
    render_layers([base, top], dest, whitelist)
    assert listing(dest) == {
        "etc",
        "etc/ca",
        "etc/ca/crt",
        "etc/systemd",
        "etc/systemd/system",
        "usr",
        "usr/bin",
        "usr/bin/worker",
        "opt",
        "opt/libs",
        "opt/libs/tool.so",
        "bin",
        "var",
        "var/empty",
    }
    assert str((dest / "bin").readlink()) == "usr/bin"
    assert stat.S_IMODE((dest / "var/empty").stat().st_mode) == 0o711
    # pruning changed the directories' mtimes; their metadata is set afterwards
    assert (dest / "etc/ca").stat().st_mtime_ns == T0
    assert (dest / "etc/systemd/system").stat().st_mtime_ns == T0


def test_empty_whitelist_keeps_everything(
    make_layer: Callable[[str, Spec], Path], tmp_path: Path
) -> None:
    base = make_layer("base", WHITELIST_SPEC)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert render_layers([base], a, []) == render_layers([base], b)
    assert listing(a) == listing(base)


def test_whitelist_with_relative_path_is_refused(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    base = make_layer("base", {"f": "f"})
    with pytest.raises(StoreError, match=r"'etc/passwd'.*not an absolute path"):
        render_layers([base], dest, ["etc/passwd"])


# -- hard links, copies and metadata -----------------------------------------------------


def rich_spec() -> dict[str, F | D | L | H | Node | str]:
    """A layer with every kind of entry and metadata that must survive rendering."""
    uid = 1000 if ROOT else os.getuid()
    spec: dict[str, F | D | L | H | Node | str] = {
        "": D(mode=0o755, mtime=T0 - 100),
        "bin": D(mode=0o755, mtime=T0 - 7),
        "bin/su": F(b"#!su", mode=0o4755, mtime=T0 - 1),
        "bin/wall": F(b"#!wall", mode=0o2755, gid=5 if ROOT else os.getgid()),
        "tmp": D(mode=0o1777, mtime=T0 - 3),
        "home/user": D(mode=0o700, uid=uid, gid=uid, xattrs={"user.dir": b"d"}),
        "home/user/notes": F(b"n" * 100_000, mode=0o600, uid=uid, gid=uid, mtime=T0 + 1),
        "home/user/tagged": F(b"t", xattrs={"user.tag": b"\x00\xffbinary"}),
        "usr/bin/python3.11": F(b"py", mode=0o755),
        "usr/bin/python3": H("usr/bin/python3.11"),
        "usr/bin/python": H("usr/bin/python3.11"),
        "lib": L("usr/lib", mtime=T0 + 2),
        "etc/link-out": L("/nonexistent/abs/target"),
        "run/fifo": Node(stat.S_IFIFO, mode=0o620),
        "empty": F(b""),
    }
    if ROOT:
        spec["dev/null"] = Node(stat.S_IFCHR, 1, 3, mode=0o666)
        spec["dev/loop0"] = Node(stat.S_IFBLK, 7, 0, mode=0o660, gid=6)
    return spec


def test_hard_links_share_the_layer_inodes_on_one_file_system(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    layer = make_layer("rich", rich_spec())
    render_layers([layer], dest)
    for path in ("bin/su", "usr/bin/python", "lib", "run/fifo", "home/user/notes"):
        assert (dest / path).lstat().st_ino == (layer / path).lstat().st_ino, path
    assert (dest / "home/user").stat().st_ino != (layer / "home/user").stat().st_ino
    assert snapshot(dest) == snapshot(layer)


def test_copies_across_file_systems_keep_everything(
    make_layer: Callable[[str, Spec], Path], dest: Path, tmpfs: Path
) -> None:
    layer = make_layer("rich", rich_spec())
    over = make_layer("over", {"usr/bin/python3.11": F(b"py3", mode=0o700)})
    linked = render_layers([layer, over], dest)
    copy = tmpfs / "rootfs"
    copy.mkdir()
    copied = render_layers([layer, over], copy)
    assert copied == linked  # the digest does not care how the tree was made
    assert snapshot(copy) == snapshot(dest)
    for path in ("bin/su", "home/user/notes", "lib", "run/fifo"):
        assert (copy / path).lstat().st_ino != (layer / path).lstat().st_ino, path
    # hard links within the layer are hard links between the copies
    ino = (copy / "usr/bin/python").stat().st_ino
    assert (copy / "usr/bin/python3").stat().st_ino == ino
    assert (copy / "usr/bin/python3.11").stat().st_ino != ino  # overwritten by "over"
    assert (copy / "usr/bin/python3.11").read_bytes() == b"py3"


def test_hardlink_false_copies_on_one_file_system(
    make_layer: Callable[[str, Spec], Path], tmp_path: Path
) -> None:
    layer = make_layer("rich", rich_spec())
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    linked.mkdir()
    copied.mkdir()
    assert render_layers([layer], copied, hardlink=False) == render_layers([layer], linked)
    assert snapshot(copied) == snapshot(layer)
    for path in ("bin/su", "home/user/notes", "lib", "run/fifo"):
        assert (copied / path).lstat().st_ino != (layer / path).lstat().st_ino, path
    assert (copied / "usr/bin/python").stat().st_ino == (copied / "usr/bin/python3").stat().st_ino


@needs_root
def test_owners_setuid_devices_and_fifos(
    make_layer: Callable[[str, Spec], Path], dest: Path
) -> None:
    layer = make_layer("rich", rich_spec())
    render_layers([layer], dest)
    su = (dest / "bin/su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert stat.S_IMODE((dest / "bin/wall").stat().st_mode) == 0o2755
    assert (dest / "bin/wall").stat().st_gid == 5
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert (dest / "home/user").stat().st_uid == 1000
    null = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode)
    assert null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK((dest / "dev/loop0").lstat().st_mode)
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode)
    assert (dest / "lib").lstat().st_mtime_ns == T0 + 2
    assert (dest / "home/user/notes").stat().st_mtime_ns == T0 + 1
    assert os.getxattr(dest / "home/user/tagged", "user.tag") == b"\x00\xffbinary"


def test_layers_are_left_unchanged(make_layer: Callable[[str, Spec], Path], dest: Path) -> None:
    base = make_layer("base", rich_spec())
    top = make_layer("top", {"bin": "not a dir", "lib/x": "x", "home": L("/")})
    before = snapshot(base), snapshot(top)
    render_layers([base, top], dest, ["/lib/x", "/bin"])
    assert (snapshot(base), snapshot(top)) == before


# -- tree_digest ------------------------------------------------------------------------


def test_digest_is_deterministic_and_returned_by_render(
    make_layer: Callable[[str, Spec], Path], tmp_path: Path
) -> None:
    layer = make_layer("rich", rich_spec())
    results = []
    for name in ("one", "two"):
        out = tmp_path / name
        out.mkdir()
        results.append(render_layers([layer], out))
        assert tree_digest(out) == results[-1]
    assert results[0] == results[1]
    digest = results[0]
    assert isinstance(digest, TreeDigest)
    assert digest.digest.startswith("sha512-")
    assert len(digest.digest) == len("sha512-") + 128
    assert digest.files == len(listing(tmp_path / "one"))
    inodes = {p.lstat().st_ino: p.lstat() for p in (tmp_path / "one").rglob("*")}
    assert digest.size == sum(st.st_size for st in inodes.values() if stat.S_ISREG(st.st_mode))
    # su 4 + wall 6 + notes 100000 + tagged 1 + python3.11 2 (its two hard links not again)
    assert digest.size == 100_013


def _unlink_and_write(path: Path, data: bytes) -> None:
    st = path.stat()
    path.unlink()  # never write into an inode shared with the layer
    path.write_bytes(data)
    path.chmod(stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _retarget(path: Path, target: str) -> None:
    mtime = path.lstat().st_mtime_ns
    path.unlink()
    path.symlink_to(target)
    os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


CHANGES: dict[str, Callable[[Path], None]] = {
    "content": lambda t: _unlink_and_write(t / "usr/bin/python3.11", b"pz"),
    "mode": lambda t: (t / "empty").chmod(0o640),
    "owner": lambda t: os.chown(t / "empty", 0, 1 if ROOT else os.getgid()),
    "dir mode": lambda t: (t / "bin").chmod(0o750),
    "mtime": lambda t: os.utime(t / "empty", ns=(T0, T0 + 1)),
    "root mtime": lambda t: os.utime(t, ns=(T0, T0 + 1)),
    "symlink target": lambda t: _retarget(t / "lib", "usr/lib64"),
    "xattr": lambda t: os.setxattr(t / "home/user/tagged", "user.tag", b"other"),
    "added file": lambda t: (t / "tmp/new").touch(),
    "removed file": lambda t: (t / "empty").unlink(),
    "hard link broken": lambda t: _unlink_and_write(t / "usr/bin/python", b"py"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_digest_changes_with_any_single_change(
    make_layer: Callable[[str, Spec], Path], tmp_path: Path, change: str
) -> None:
    # each case gets its own layer: some changes (mode, owner) reach the shared inodes
    layer = make_layer("rich", rich_spec())
    out = tmp_path / "out"
    out.mkdir()
    rendered = render_layers([layer], out)
    if change == "owner" and not ROOT:
        pytest.skip("changing owners needs root")
    CHANGES[change](out)
    assert tree_digest(out).digest != rendered.digest


def test_digest_of_an_empty_tree(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        path.mkdir()
        os.utime(path, ns=(T0, T0))
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a).files == 0


# -- errors -----------------------------------------------------------------------------


def test_missing_layer(make_layer: Callable[[str, Spec], Path], dest: Path) -> None:
    layer = make_layer("base", {"f": "f"})
    missing = layer.parent.parent / "gone" / "rootfs"
    with pytest.raises(StoreError, match=f"cannot render layer {missing}: it does not exist"):
        render_layers([layer, missing], dest)


def test_layer_that_is_not_a_directory(tmp_path: Path, dest: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(dest)
    for path in (tmp_path / "file", tmp_path / "link"):
        with pytest.raises(StoreError, match=f"{path}: it is not a directory"):
            render_layers([path], dest)


def test_destination_must_exist_and_be_empty(
    make_layer: Callable[[str, Spec], Path], dest: Path, tmp_path: Path
) -> None:
    layer = make_layer("base", {"f": "f"})
    with pytest.raises(StoreError, match="it does not exist"):
        render_layers([layer], tmp_path / "nowhere")
    (dest / "leftover").write_text("x")
    with pytest.raises(StoreError, match=f"cannot render into {dest}: it is not empty"):
        render_layers([layer], dest)


def test_os_error_names_the_path(
    make_layer: Callable[[str, Spec], Path], tmpfs: Path, tmp_path: Path
) -> None:
    small = tmpfs / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        layer = make_layer("big", {"data/big": F(b"x" * (1 << 20))})
        with pytest.raises(StoreError, match=r"cannot render /data/big from layer .*: No space"):
            render_layers([layer], small)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_too_deep_nesting_is_refused(
    make_layer: Callable[[str, Spec], Path], dest: Path, tmp_path: Path
) -> None:
    deep = "/".join(["d"] * 300)
    layer = make_layer("deep", {f"{deep}/f": "f"})
    with pytest.raises(StoreError, match="nested deeper than 256 levels"):
        render_layers([layer], dest)
    with pytest.raises(StoreError, match="nested deeper than 256 levels"):
        tree_digest(layer)
    ok = make_layer("ok", {"/".join(["d"] * 200) + "/f": "f"})
    out = tmp_path / "ok-out"
    out.mkdir()
    assert render_layers([ok], out).files == 201


def test_tree_digest_of_a_missing_tree(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot digest tree .*: it does not exist"):
        tree_digest(tmp_path / "nothing")
