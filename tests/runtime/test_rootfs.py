"""Rootfs preparation: hostile trees are resolved inside the root, never followed out of it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetpack.errors import PodError
from jetpack.runtime import rootfs
from jetpack.runtime.rootfs import (
    MAX_ID,
    exists,
    make_dirs,
    make_file,
    read_file,
    resolve,
    resolve_group,
    resolve_user,
    write_file,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")

Snapshot = dict[str, tuple[int, int, int, bytes]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The image's rootfs, empty."""
    path = tmp_path / "rootfs"
    path.mkdir()
    return path


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory playing the host: symlinks in the image point at it; it must not change."""
    path = tmp_path / "host"
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_bytes(b"daemon:x:666:666::/:/bin/sh\n")
    (path / "etc" / "group").write_bytes(b"daemon:x:666:\n")
    (path / "secret").write_bytes(b"host secret")
    return path


@pytest.fixture
def umask() -> Iterator[None]:
    """A strict umask for the test, restored after it."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def snapshot(top: Path) -> Snapshot:
    """Every entry under ``top``: mode, uid, mtime and content (or link target)."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                data = os.fsencode(path.readlink())
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            out[str(path.relative_to(top))] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    st = top.lstat()
    out["."] = (st.st_mode, st.st_uid, st.st_mtime_ns, b"")
    return out


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- resolve ------------------------------------------------------------------------------


def test_resolve_plain_and_missing_components(root: Path) -> None:
    (root / "usr" / "lib").mkdir(parents=True)
    assert resolve(root, "/usr/lib") == root / "usr/lib"
    assert resolve(root, "usr/lib/") == root / "usr/lib"
    assert resolve(root, "/usr/lib/missing/deeper") == root / "usr/lib/missing/deeper"
    assert resolve(root, "/") == root
    assert resolve(root, "") == root


def test_resolve_dot_and_dotdot_stay_inside(root: Path) -> None:
    (root / "usr" / "lib").mkdir(parents=True)
    assert resolve(root, "/usr/./lib/..") == root / "usr"
    assert resolve(root, "/../../../etc") == root / "etc"
    assert resolve(root, "../usr/../../../usr/lib") == root / "usr/lib"


def test_resolve_absolute_symlink_restarts_at_root(root: Path, host: Path) -> None:
    (root / "etc").symlink_to(host / "etc")
    inside = root / str(host / "etc").lstrip("/")
    assert resolve(root, "/etc/passwd") == inside / "passwd"


def test_resolve_relative_escape_is_clamped(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "up").symlink_to("../../../../../../../../etc")
    assert resolve(root, "/a/b/up/passwd") == root / "etc/passwd"
    (root / "dotdot").symlink_to("..")
    assert resolve(root, "/dotdot/dotdot/a") == root / "a"


def test_resolve_follows_chains_within_root(root: Path) -> None:
    (root / "real" / "dir").mkdir(parents=True)
    (root / "one").symlink_to("two")
    (root / "two").symlink_to("/three/")
    (root / "three").symlink_to("./real/../real/dir")
    assert resolve(root, "/one/file") == root / "real/dir/file"
    (root / "real" / "dir" / "sibling").symlink_to("../dir/x")
    assert resolve(root, "/one/sibling") == root / "real/dir/x"


def test_resolve_follows_a_dangling_final_symlink(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "resolv.conf").symlink_to("/run/systemd/resolve/resolv.conf")
    assert resolve(root, "/etc/resolv.conf") == root / "run/systemd/resolve/resolv.conf"


def test_resolve_symlink_loops(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/a")
    with pytest.raises(PodError, match="too many levels of symbolic links") as info:
        resolve(root, "/a/x")
    assert str(info.value).startswith(f"cannot resolve '/a/x' in {root}: ")
    (root / "etc").symlink_to("/etc")  # under chroot, a link to itself
    with pytest.raises(PodError, match="too many levels of symbolic links"):
        resolve(root, "/etc/passwd")


def test_resolve_at_most_40_links(root: Path) -> None:
    (root / "target").mkdir()
    for i in range(41):
        (root / f"l{i}").symlink_to(f"l{i + 1}" if i < 40 else "target")
    assert resolve(root, "/l1/x") == root / "target/x"  # 40 links
    with pytest.raises(PodError, match="too many levels of symbolic links"):
        resolve(root, "/l0/x")  # 41 links


def test_resolve_file_in_the_middle(root: Path) -> None:
    (root / "etc").write_bytes(b"not a directory")
    with pytest.raises(PodError, match=r"'/etc' is not a directory"):
        resolve(root, "/etc/passwd")
    with pytest.raises(PodError, match=r"'/etc' is not a directory"):
        resolve(root, "/etc/..")
    assert resolve(root, "/etc") == root / "etc"
    (root / "link").symlink_to("etc")
    with pytest.raises(PodError, match=r"'/etc' is not a directory"):
        resolve(root, "/link/x")


def test_resolve_refuses_nul(root: Path) -> None:
    with pytest.raises(PodError, match="NUL"):
        resolve(root, "/etc\0/passwd")


# -- make_dirs ----------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_make_dirs_exact_modes_whatever_the_umask(root: Path) -> None:
    assert make_dirs(root, "/a/b/c") == root / "a/b/c"
    for path in (root / "a", root / "a/b", root / "a/b/c"):
        assert path.is_dir()
        assert mode_of(path) == 0o755
        assert path.stat().st_uid == os.geteuid()
    make_dirs(root, "/wide/open", 0o777)
    assert mode_of(root / "wide") == 0o777
    assert mode_of(root / "wide/open") == 0o777
    make_dirs(root, "/sticky", 0o1777)
    assert mode_of(root / "sticky") == 0o1777


def test_make_dirs_leaves_existing_directories_alone(root: Path) -> None:
    (root / "usr").mkdir(0o700)
    (root / "usr").chmod(0o711)
    make_dirs(root, "/usr/share", 0o750)
    assert mode_of(root / "usr") == 0o711
    assert mode_of(root / "usr/share") == 0o750
    assert make_dirs(root, "/usr/share") == root / "usr/share"


def test_make_dirs_through_absolute_symlink_stays_inside(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "etc").symlink_to(host / "etc")
    made = make_dirs(root, "/etc/jetpack/conf.d")
    assert made == root / str(host / "etc/jetpack/conf.d").lstrip("/")
    assert made.is_dir()
    assert snapshot(host) == before


def test_make_dirs_through_relative_escape_stays_inside(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("../../host")  # what would be the host from rootfs/var
    made = make_dirs(root, "/var/run/escaped")
    assert made == root / "host/escaped"
    assert made.is_dir()
    assert not (host / "escaped").exists()
    assert snapshot(host) == before


def test_make_dirs_never_touches_the_real_etc(root: Path) -> None:
    name = f"jetpack-rootfs-test-{os.getpid()}"
    (root / "hostetc").symlink_to("/etc")
    (root / "deep").mkdir()
    (root / "deep" / "up").symlink_to("../../../../../../../../../../etc")
    make_dirs(root, f"/hostetc/{name}")
    make_dirs(root, f"/deep/up/{name}-2")
    assert not Path("/etc", name).exists()
    assert not Path("/etc", f"{name}-2").exists()
    assert (root / "etc" / name).is_dir()
    assert (root / "etc" / f"{name}-2").is_dir()


def test_make_dirs_refuses_a_file_on_the_way(root: Path) -> None:
    (root / "etc").write_bytes(b"")
    with pytest.raises(PodError, match=r"'/etc' is not a directory"):
        make_dirs(root, "/etc/ssl")
    with pytest.raises(PodError) as info:
        make_dirs(root, "/etc")
    assert info.value.why == "'/etc' is a regular file, not a directory"
    assert str(info.value).startswith(f"cannot create directory '/etc' in {root}: ")


def test_make_dirs_loop_is_refused(root: Path) -> None:
    (root / "loop").symlink_to("loop")
    with pytest.raises(PodError, match="too many levels of symbolic links"):
        make_dirs(root, "/loop/x")


def test_walk_refuses_a_symlink_swapped_in_after_resolution(root: Path, host: Path) -> None:
    """The second line: if a resolved directory became a symlink, O_NOFOLLOW refuses it."""
    before = snapshot(host)
    (root / "etc").symlink_to(host / "etc")
    with pytest.raises(PodError) as info:
        rootfs._open_dir(root, ["etc", "new"], create=0o755, what="swapped")
    assert info.value.why == "'/etc' is a symlink, not a directory"
    assert snapshot(host) == before


# -- make_file ----------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_make_file_creates_empty_file_with_exact_mode(root: Path) -> None:
    made = make_file(root, "/etc/hosts")
    assert made == root / "etc/hosts"
    assert made.read_bytes() == b""
    assert mode_of(made) == 0o644
    assert mode_of(root / "etc") == 0o755
    assert mode_of(make_file(root, "/etc/shadow", 0o600)) == 0o600
    assert mode_of(make_file(root, "/etc/wide", 0o666)) == 0o666


def test_make_file_keeps_an_existing_file(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "etc" / "hosts").chmod(0o600)
    make_file(root, "/etc/hosts", 0o644)
    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert mode_of(root / "etc/hosts") == 0o600


def test_make_file_follows_symlinks_inside_root(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").symlink_to(host / "etc" / "passwd")
    (root / "etc" / "resolv.conf").symlink_to("../run/resolv.conf")
    made = make_file(root, "/etc/passwd")
    assert made == root / str(host / "etc/passwd").lstrip("/")
    assert made.read_bytes() == b""
    assert make_file(root, "/etc/resolv.conf") == root / "run/resolv.conf"
    assert (root / "run/resolv.conf").is_file()
    assert (root / "etc" / "resolv.conf").is_symlink()
    assert snapshot(host) == before


def test_make_file_refuses_directories_and_others(root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(PodError) as info:
        make_file(root, "/dir")
    assert str(info.value).startswith(f"cannot create file '/dir' in {root}: '/dir' is a directory")
    os.mkfifo(root / "fifo")
    with pytest.raises(PodError, match="'/fifo' is a FIFO"):
        make_file(root, "/fifo")
    with pytest.raises(PodError, match="root directory"):
        make_file(root, "/..")
    (root / "file").write_bytes(b"")
    with pytest.raises(PodError, match="'/file' is not a directory"):
        make_file(root, "/file/x")


# -- write_file ---------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_write_file_creates_and_replaces(root: Path) -> None:
    made = write_file(root, "/etc/hostname", b"pod\n")
    assert made == root / "etc/hostname"
    assert made.read_bytes() == b"pod\n"
    assert mode_of(made) == 0o644
    assert mode_of(root / "etc") == 0o755
    inode = made.stat().st_ino
    write_file(root, "/etc/hostname", b"other\n", 0o640)
    assert made.read_bytes() == b"other\n"
    assert mode_of(made) == 0o640
    assert made.stat().st_ino != inode  # a new file renamed over: readers never see half
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["hostname"]  # no temp left


def test_write_file_follows_the_final_symlink_inside_root(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "etc").mkdir()
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")
    (root / "etc" / "passwd").symlink_to(host / "etc" / "passwd")
    (root / "escape").symlink_to("../../../../../../../../" + str(host / "secret"))
    assert write_file(root, "/etc/resolv.conf", b"nameserver 10.0.0.1\n") == (
        root / "run/resolv.conf"
    )
    assert (root / "run/resolv.conf").read_bytes() == b"nameserver 10.0.0.1\n"
    assert (root / "etc/resolv.conf").is_symlink()
    write_file(root, "/etc/passwd", b"root:x:0:0::/:/bin/sh\n")
    write_file(root, "/escape", b"pwned")
    inside = root / str(host).lstrip("/")
    assert (inside / "etc/passwd").read_bytes() == b"root:x:0:0::/:/bin/sh\n"
    assert (inside / "secret").read_bytes() == b"pwned"
    assert snapshot(host) == before


def test_write_file_refuses_a_directory(root: Path) -> None:
    (root / "etc" / "hosts").mkdir(parents=True)
    with pytest.raises(PodError) as info:
        write_file(root, "/etc/hosts", b"")
    assert str(info.value) == f"cannot write '/etc/hosts' in {root}: '/etc/hosts' is a directory"
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["hosts"]
    (root / "file").write_bytes(b"")
    with pytest.raises(PodError, match="'/file' is not a directory"):
        write_file(root, "/file/x", b"")


# -- read_file ----------------------------------------------------------------------------


def test_read_file(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_bytes(b"ID=test\n")
    (root / "etc" / "link").symlink_to("os-release")
    assert read_file(root, "/etc/os-release") == b"ID=test\n"
    assert read_file(root, "/etc/link") == b"ID=test\n"
    assert read_file(root, "/etc/missing") is None
    assert read_file(root, "/missing/dir/file") is None


def test_read_file_limit(root: Path) -> None:
    (root / "big").write_bytes(b"x" * 100)
    assert read_file(root, "/big", limit=100) == b"x" * 100
    with pytest.raises(PodError, match="larger than 99 bytes"):
        read_file(root, "/big", limit=99)


def test_read_file_refuses_what_is_not_a_regular_file(root: Path) -> None:
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")  # opening it would block: it must be refused before that
    with pytest.raises(PodError, match="'/dir' is a directory, not a regular file"):
        read_file(root, "/dir")
    with pytest.raises(PodError, match="'/fifo' is a FIFO, not a regular file"):
        read_file(root, "/fifo")
    with pytest.raises(PodError, match="is a directory"):
        read_file(root, "/")


def test_read_file_never_reads_the_host(root: Path, host: Path) -> None:
    (root / "abs").symlink_to(host / "secret")
    (root / "rel").symlink_to("../host/secret")
    (root / "etc").symlink_to(host / "etc")
    assert read_file(root, "/abs") is None
    assert read_file(root, "/rel") is None
    assert read_file(root, "/etc/passwd") is None


# -- exists -------------------------------------------------------------------------------


def test_exists(root: Path, host: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_bytes(b"")
    (root / "dangling").symlink_to("/nowhere")
    (root / "hostdir").symlink_to(host)
    (root / "loop").symlink_to("loop")
    assert exists(root, "/etc/hosts")
    assert exists(root, "/etc")
    assert exists(root, "/")
    assert exists(root, "/etc/..")
    assert exists(root, "/dangling")  # lexists: the link itself is there
    assert exists(root, "/hostdir")
    assert not exists(root, "/hostdir/secret")  # the host has it, the image does not
    assert not exists(root, "/etc/missing")
    assert not exists(root, "/missing/x")
    assert not exists(root, "/etc/hosts/x")
    assert exists(root, "/loop")
    assert not exists(root, "/loop/x")


# -- users and groups ---------------------------------------------------------------------

PASSWD = b"""\
# a comment
+nisuser:x:500:500::/:/bin/sh
-daemon:x:501:501::/:/bin/sh

short:x:7
root:x:0:0:root:/root:/bin/sh
bad:x:notanumber:1::/:/bin/sh
huge:x:4294967295:1::/:/bin/sh
daemon:x:2:2:daemon:/sbin:/sbin/nologin\r
daemon:x:3:3:second entry:/:/bin/sh
"""

GROUP = b"""\
# groups
+:::
root:x:0:
wheel:x:10:root,daemon
short:x
"""


def test_user_and_group_numbers(root: Path) -> None:
    assert resolve_user(root, "0") == 0
    assert resolve_user(root, "1000") == 1000
    assert resolve_group(root, "0042") == 42
    assert resolve_user(root, str(MAX_ID)) == 2**32 - 2
    with pytest.raises(PodError) as info:
        resolve_user(root, "4294967295")
    assert str(info.value) == "invalid user '4294967295': IDs go from 0 to 4294967294"
    with pytest.raises(PodError, match="it is empty"):
        resolve_group(root, "")


def test_user_and_group_names(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(PASSWD)
    (root / "etc" / "group").write_bytes(GROUP)
    assert resolve_user(root, "root") == 0
    assert resolve_user(root, "daemon") == 2  # the first valid entry; CRLF tolerated
    assert resolve_group(root, "wheel") == 10
    assert resolve_group(root, "root") == 0
    for name in ("nisuser", "short", "bad", "huge", "nobody", "+nisuser", "x:500"):
        with pytest.raises(PodError, match="is not in the image's /etc/passwd"):
            resolve_user(root, name)
    with pytest.raises(PodError) as info:
        resolve_user(root, "nobody")
    assert str(info.value) == (
        'user "nobody" is not in the image\'s /etc/passwd'
        " (use a number, or add the user to the image)"
    )
    with pytest.raises(PodError) as info:
        resolve_group(root, "short")
    assert str(info.value) == (
        'group "short" is not in the image\'s /etc/group'
        " (use a number, or add the group to the image)"
    )


def test_names_without_passwd_or_group(root: Path) -> None:
    with pytest.raises(PodError) as info:
        resolve_user(root, "daemon")
    assert str(info.value) == (
        'cannot find user "daemon": the image has no /etc/passwd'
        " (use a number, or add the user to the image)"
    )
    with pytest.raises(PodError, match=r'cannot find group "daemon": the image has no /etc/group'):
        resolve_group(root, "daemon")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").mkdir()
    with pytest.raises(PodError, match="'/etc/passwd' is a directory, not a regular file"):
        resolve_user(root, "daemon")


def test_names_are_never_looked_up_on_the_host(root: Path, host: Path) -> None:
    (root / "etc").symlink_to(host / "etc")
    with pytest.raises(PodError, match="the image has no /etc/passwd"):
        resolve_user(root, "daemon")
    with pytest.raises(PodError, match="the image has no /etc/group"):
        resolve_group(root, "daemon")


@root_only
@pytest.mark.root
def test_user_and_group_from_a_path(root: Path, host: Path) -> None:
    (root / "srv").mkdir()
    (root / "srv" / "data").write_bytes(b"")
    os.chown(root / "srv" / "data", 123, 456)
    (root / "link").symlink_to("/srv/data")
    os.chown(host / "secret", 777, 888)
    (root / "hostlink").symlink_to(host / "secret")
    assert resolve_user(root, "/srv/data") == 123
    assert resolve_group(root, "/srv/data") == 456
    assert resolve_user(root, "/link") == 123  # followed inside the root
    assert resolve_group(root, "/srv/../link") == 456
    os.chown(root, 5, 6)
    assert resolve_user(root, "/") == 5
    with pytest.raises(PodError) as info:
        resolve_user(root, "/hostlink")
    assert str(info.value) == (
        'cannot find the user of "/hostlink": /hostlink does not exist in the image'
        " (use a number, a name, or a path that exists in the image)"
    )
    with pytest.raises(PodError, match='cannot find the group of "/missing/x"'):
        resolve_group(root, "/missing/x")
