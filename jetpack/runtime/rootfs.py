"""Preparing an app's rootfs from outside it, without being fooled by the image's symlinks.

Theory of operation. The runtime works on an untrusted image's tree as root, before any
chroot: a symlink such as ``/etc -> /host/etc`` or ``/etc -> ../../../etc`` would make a
naive ``open(rootfs / "etc/hosts", "w")`` write to the host. Two lines of defence:

1. :func:`resolve` walks a path the way the kernel would after ``chroot(root)``, component
   by component with ``lstat``/``readlink``: absolute link targets restart at the root,
   ``..`` never climbs above it, at most 40 links are followed (the kernel's MAXSYMLINKS),
   like Go's ``securejoin``. What comes out names no symlink inside ``root`` — at the time
   of the walk.
2. Everything that creates, writes or reads then walks the resolved components again from
   a descriptor of ``root``, opening each directory with ``O_NOFOLLOW | O_DIRECTORY`` and
   acting relative to its parent's descriptor (``mkdirat``, ``openat``, ``renameat``). A
   symlink swapped in since step 1 makes the kernel refuse instead of follow.

New directories and files are created private (0700 / 0600), given to the caller (root in
the runtime), then ``fchmod``-ed to the mode asked for, so the umask never changes it and
nobody sees a half-made one with a wider mode. Existing ones are left as they are.

Users and groups (:func:`resolve_user`, :func:`resolve_group`) follow appc: a number, an
absolute path whose owner is taken, or a name in the image's ``/etc/passwd`` or
``/etc/group``, read with :func:`read_file` — never the host's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path

from jetpack.errors import PodError

MAX_SYMLINKS = 40  # as Linux: the 41st link followed in one lookup is ELOOP
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown(2): never a real ID

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the root is the caller's path
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_HINT = "the image is broken or hostile: check its symlinks and directories"
_ID_HINT = "use a number, or add the {kind} to the image"
_PATH_HINT = "use a number, a name, or a path that exists in the image"
_DECIMAL = re.compile(r"[0-9]+")


# -- resolution ---------------------------------------------------------------------------


def resolve(root: Path, path: str) -> Path:
    """The host path of ``path`` inside ``root``, symlinks followed as if ``root`` were ``/``.

    Components that do not exist (and whatever follows them) are joined as given, so the
    result may name something to create.

    Raises:
        PodError: more than 40 symlinks, a non-directory followed by more components, or
            a NUL in ``path``.
    """
    return _host(root, _resolve_parts(root, path))


def _resolve_parts(root: Path, path: str) -> list[str]:
    """The components, relative to ``root``, of ``path`` resolved inside it."""
    todo = _components(path)
    todo.reverse()  # a stack: the next component last
    done: list[str] = []
    links = 0
    after_file = False  # ``done`` names something that exists and is not a directory
    while todo:
        name = todo.pop()
        if after_file:
            raise PodError(
                _cannot("resolve", path, root), f"{_show(done)!r} is not a directory", _HINT
            )
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        done.append(name)
        host = root.joinpath(*done)
        try:
            st = host.lstat()
        except FileNotFoundError:
            continue  # missing: joined as given, like everything after it
        except OSError as err:
            raise PodError(_cannot("resolve", path, root), _strerror(err)) from err
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise PodError(
                    _cannot("resolve", path, root), "too many levels of symbolic links", _HINT
                )
            try:
                target = os.fspath(host.readlink())
            except OSError as err:
                raise PodError(_cannot("resolve", path, root), _strerror(err)) from err
            done.pop()
            if target.startswith("/"):
                done.clear()
            todo.extend(reversed(_components(target)))
        elif not stat.S_ISDIR(st.st_mode):
            after_file = True
    return done


def _components(path: str) -> list[str]:
    if "\0" in path:
        raise PodError(f"invalid path {path!r}", "it contains a NUL character")
    return [name for name in path.split("/") if name]


def _host(root: Path, parts: list[str]) -> Path:
    return root.joinpath(*parts)


def _show(parts: list[str]) -> str:
    """How a path looks from inside the image."""
    return "/" + "/".join(parts)


def _cannot(verb: str, path: str, root: Path) -> str:
    return f"cannot {verb} {path!r} in {root}"


def _strerror(err: OSError) -> str:
    return err.strerror or str(err)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return "a regular file"


# -- the descriptor walk ------------------------------------------------------------------


def _open_dir(root: Path, parts: list[str], *, create: int | None, what: str) -> int:
    """A descriptor of directory ``root/parts``, opened one O_NOFOLLOW component at a time.

    Missing directories are created with mode ``create``; with ``create=None`` a missing
    one raises FileNotFoundError. A symlink or a non-directory on the way is a PodError,
    and so is any other failure.
    """
    try:
        fd = os.open(root, _ROOT_FLAGS)
    except OSError as err:
        raise PodError(what, f"cannot open {root}: {_strerror(err)}") from err
    depth = 0  # parts[depth] is being opened
    try:
        while depth < len(parts):
            child = _open_child(fd, parts[depth], create)
            os.close(fd)
            fd = child
            depth += 1
    except FileNotFoundError as err:
        os.close(fd)
        if create is None:
            raise
        # Removed between our mkdir and open: a race not worth a retry.
        shown = _show(parts[: depth + 1])
        raise PodError(what, f"{shown!r} vanished while being created") from err
    except OSError as err:
        shown = _show(parts[: depth + 1])
        why = f"{shown!r}: {_strerror(err)}"
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            # Refused by O_NOFOLLOW | O_DIRECTORY: say what is there instead.
            with contextlib.suppress(OSError):
                mode = os.stat(parts[depth], dir_fd=fd, follow_symlinks=False).st_mode
                why = f"{shown!r} is {_kind(mode)}, not a directory"
        os.close(fd)
        raise PodError(what, why, _HINT) from err
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(parent: int, name: str, create: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if create is None:
            raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        # Created meanwhile by someone else: use it as it is, if it is a directory.
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        _own(fd, create)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _own(fd: int, mode: int) -> None:
    """The caller's, with exactly ``mode`` (chown first: it may clear setuid/setgid)."""
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, mode)


# -- creating, writing, reading -----------------------------------------------------------


def make_dirs(root: Path, path: str, mode: int = 0o755) -> Path:
    """Create ``path`` inside ``root`` and its missing parents; its host path.

    New directories get exactly ``mode`` whatever the umask; existing ones are untouched.

    Raises:
        PodError: as :func:`resolve`, or a component is (or became) a symlink or a file.
    """
    parts = _resolve_parts(root, path)
    os.close(_open_dir(root, parts, create=mode, what=_cannot("create directory", path, root)))
    return _host(root, parts)


def make_file(root: Path, path: str, mode: int = 0o644) -> Path:
    """Make sure a regular file exists at ``path`` inside ``root`` (a bind-mount target).

    Missing parents are created 0755. A new file is empty with exactly ``mode``; an
    existing regular file is left as it is. A symlink at ``path`` is followed inside
    ``root`` (by :func:`resolve`), so its target is the file made.

    Raises:
        PodError: as :func:`make_dirs`, or something other than a regular file is there.
    """
    what = _cannot("create file", path, root)
    parts = _resolve_parts(root, path)
    if not parts:
        raise PodError(what, "it is the image's root directory")
    fd = _open_dir(root, parts[:-1], create=0o755, what=what)
    try:
        try:
            new = os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=fd)
        except FileExistsError:
            kind = _kind(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode)
            if kind != "a regular file":
                raise PodError(what, f"{_show(parts)!r} is {kind}", _HINT) from None
            return _host(root, parts)
        try:
            _own(new, mode)
        finally:
            os.close(new)
    except OSError as err:
        raise PodError(what, _strerror(err)) from err
    finally:
        os.close(fd)
    return _host(root, parts)


def write_file(root: Path, path: str, data: bytes, mode: int = 0o644) -> Path:
    """Replace (or create) the file at ``path`` inside ``root`` with ``data``, atomically.

    The data goes to a new temporary file beside the target, which is then renamed over
    it, both relative to the parent's descriptor: readers see the old or the new file,
    never a part. A symlink at ``path`` is followed inside ``root``; it stays a symlink.
    The file gets exactly ``mode``. Missing parents are created 0755.

    Raises:
        PodError: as :func:`make_dirs`, or a directory is at ``path``.
    """
    what = _cannot("write", path, root)
    parts = _resolve_parts(root, path)
    if not parts:
        raise PodError(what, "it is the image's root directory")
    leaf = parts[-1]
    fd = _open_dir(root, parts[:-1], create=0o755, what=what)
    temp = f".jetpack-{os.urandom(8).hex()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
                raise PodError(what, f"{_show(parts)!r} is a directory")
        out = os.open(temp, _NEW_FILE_FLAGS, 0o600, dir_fd=fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            _own(out, mode)
        finally:
            os.close(out)
        os.rename(temp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=fd)
        if isinstance(err, OSError):
            raise PodError(what, _strerror(err)) from err
        raise
    finally:
        os.close(fd)
    return _host(root, parts)


def read_file(root: Path, path: str, limit: int = 1 << 20) -> bytes | None:
    """The content of the regular file at ``path`` inside ``root``; None if it is missing.

    Raises:
        PodError: as :func:`resolve`, the file is not a regular file, or it is larger
            than ``limit`` bytes.
    """
    what = _cannot("read", path, root)
    parts = _resolve_parts(root, path)
    if not parts:
        raise PodError(what, "it is a directory")
    try:
        fd = _open_dir(root, parts[:-1], create=None, what=what)
    except FileNotFoundError:
        return None
    try:
        # Checked before opening: opening a device node may do something (rewind a tape).
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise PodError(what, f"{_show(parts)!r} is {_kind(st.st_mode)}, not a regular file")
        f = os.open(parts[-1], _READ_FLAGS, dir_fd=fd)
        try:
            again = os.fstat(f)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                raise PodError(what, f"{_show(parts)!r} changed while being opened", _HINT)
            return _read_at_most(f, limit, what)
        finally:
            os.close(f)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PodError(what, _strerror(err)) from err
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PodError(what, f"it is larger than {limit} bytes")


def exists(root: Path, path: str) -> bool:
    """Whether ``path`` exists inside ``root``, as ``os.path.lexists`` would say in a chroot.

    The parent is resolved inside ``root``, the last component is not followed: a dangling
    symlink exists. Anything that stops the lookup (a loop, a file where a directory
    should be) means False, as for ``lexists``.
    """
    names = _components(path)
    try:
        if not names or names[-1] in (".", ".."):
            parent, leaf = _resolve_parts(root, path), None
        else:
            parent, leaf = _resolve_parts(root, "/".join(names[:-1])), names[-1]
        fd = _open_dir(root, parent, create=None, what=_cannot("look up", path, root))
    except (PodError, OSError):
        return False
    try:
        if leaf is not None:
            os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _stat(root: Path, path: str, what: str) -> os.stat_result | None:
    """``stat`` of ``path`` resolved inside ``root``, last symlink followed; None if missing."""
    parts = _resolve_parts(root, path)
    try:
        fd = _open_dir(root, parts[:-1], create=None, what=what)
    except FileNotFoundError:
        return None
    try:
        if not parts:
            return os.fstat(fd)
        return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PodError(what, _strerror(err)) from err
    finally:
        os.close(fd)


# -- users and groups ---------------------------------------------------------------------


def resolve_user(root: Path, user: str) -> int:
    """The uid for an appc ``user``: a number, an absolute path (its owner), or a name.

    Names are looked up in ``root``'s ``/etc/passwd``, never the host's.

    Raises:
        PodError: an ID out of range, a missing path, no ``/etc/passwd``, an unknown name.
    """
    return _resolve_id(root, user, "user")


def resolve_group(root: Path, group: str) -> int:
    """The gid for an appc ``group``: a number, an absolute path (its group), or a name.

    Names are looked up in ``root``'s ``/etc/group``, never the host's.

    Raises:
        PodError: an ID out of range, a missing path, no ``/etc/group``, an unknown name.
    """
    return _resolve_id(root, group, "group")


def _resolve_id(root: Path, value: str, kind: str) -> int:
    hint = _ID_HINT.format(kind=kind)
    if not value:
        raise PodError(f"invalid {kind} {value!r}", "it is empty", "use a number, a name or a path")
    if _DECIMAL.fullmatch(value):
        number = int(value)
        if number > MAX_ID:
            raise PodError(f"invalid {kind} {value!r}", f"IDs go from 0 to {MAX_ID}")
        return number
    if value.startswith("/"):
        what = f'cannot find the {kind} of "{value}"'
        st = _stat(root, value, what)
        if st is None:
            raise PodError(what, f"{value} does not exist in the image", _PATH_HINT)
        return st.st_uid if kind == "user" else st.st_gid
    database = "/etc/passwd" if kind == "user" else "/etc/group"
    data = read_file(root, database)
    if data is None:
        raise PodError(f'cannot find {kind} "{value}"', f"the image has no {database}", hint)
    found = _lookup(data, value, fields=7 if kind == "user" else 4)
    if found is None:
        raise PodError(f'{kind} "{value}" is not in the image\'s {database}', None, hint)
    return found


def _lookup(data: bytes, name: str, fields: int) -> int | None:
    """The ID (third field) of ``name`` in a passwd or group file; the first match wins.

    Lines that are blank, comments, NIS (``+``/``-``) entries, or that have fewer than
    ``fields`` fields or an invalid ID are skipped, as musl does.
    """
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", "surrogateescape").removesuffix("\r")
        if not line.strip() or line.startswith(("#", "+", "-")):
            continue
        parts = line.split(":")
        if len(parts) < fields or parts[0] != name or not _DECIMAL.fullmatch(parts[2]):
            continue
        number = int(parts[2])
        if number <= MAX_ID:
            return number
    return None
