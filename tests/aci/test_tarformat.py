"""Our tar codec against the standard library's, in both directions."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetpack.aci.tarformat import DIRECTORY, REGULAR, SYMLINK, TarReader, encode_header, padding

names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=120,
).filter(lambda s: s not in (".", ".."))
paths = st.lists(names, min_size=1, max_size=4).map("/".join)


@settings(max_examples=60, deadline=None)
@given(
    path=paths,
    data=st.binary(max_size=3000),
    uid=st.integers(0, 2**32 - 1),
    mtime=st.integers(0, 2**33),  # inside int64 nanoseconds (the codec refuses more)
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    link=st.one_of(st.none(), paths),
)
def test_reads_what_tarfile_writes(
    path: str, data: bytes, uid: int, mtime: int, fmt: int, link: str | None
) -> None:
    info = tarfile.TarInfo(path)
    info.uid, info.mtime, info.mode = uid, mtime, 0o4755
    if link is None:
        info.size = len(data)
    else:
        info.type, info.linkname = tarfile.SYMTYPE, link
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tar:
        tar.addfile(info, io.BytesIO(data) if link is None else None)
    raw = buf.getvalue()
    # Any chunking of the stream must give the same result.
    chunks = iter([raw[i : i + 333] for i in range(0, len(raw), 333)])
    reader = TarReader(chunks)
    header = reader.next()
    assert header is not None
    assert header.name == path
    assert (header.uid, header.mtime_ns, header.mode) == (uid, mtime * 10**9, 0o4755)
    if link is None:
        assert header.typeflag == REGULAR
        assert reader.read_data() == data
    else:
        assert (header.typeflag, header.linkname) == (SYMLINK, link)
    assert reader.next() is None


@settings(max_examples=60, deadline=None)
@given(
    path=paths,
    size=st.integers(0, 2000),
    uid=st.integers(0, 2**32 - 1),  # what uid_t holds; more is refused when read
    mtime=st.integers(-(2**33), 2**33),  # inside int64 nanoseconds, ditto
    xattrs=st.dictionaries(st.from_regex(r"user\.[a-z]{1,8}", fullmatch=True), st.binary()),
    link=st.one_of(st.just(""), paths),
)
def test_tarfile_reads_what_we_write(
    path: str, size: int, uid: int, mtime: int, xattrs: dict[str, bytes], link: str
) -> None:
    header = encode_header(
        name=path,
        typeflag=SYMLINK if link else REGULAR,
        mode=0o640,
        uid=uid,
        size=0 if link else size,
        mtime=mtime,
        linkname=link,
        uname="someone",
        xattrs=xattrs,
    )
    body = b"" if link else b"z" * size + bytes(padding(size))
    raw = header + body + bytes(1024)
    assert len(raw) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8") as tar:
        (member,) = tar.getmembers()
        assert member.name == path
        assert (member.uid, member.mtime, member.mode, member.uname) == (
            uid,
            mtime,
            0o640,
            "someone",
        )
        assert member.linkname == link
        if not link:
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == b"z" * size
    got = TarReader(iter([raw])).next()
    assert got is not None
    assert got.xattrs == xattrs  # binary values survive, which tarfile cannot show us


def test_v7_directory_by_trailing_slash() -> None:
    info = tarfile.TarInfo("rootfs/dir/")
    info.type = tarfile.AREGTYPE
    raw = info.tobuf(format=tarfile.USTAR_FORMAT) + bytes(1024)
    header = TarReader(iter([raw])).next()
    assert header is not None and header.typeflag == DIRECTORY


@pytest.mark.parametrize("cut", [0, 10, 511])
def test_zero_block_ends_the_archive_and_rest_is_drained(cut: int) -> None:
    raw = encode_header(name="a", typeflag=REGULAR, mode=0o644) + bytes(1024) + b"tail"[:cut]
    seen: list[bytes] = []
    reader = TarReader(iter([raw]))
    assert reader.next() is not None
    assert reader.next() is None
    reader.drain(lambda view: seen.append(bytes(view)))
    assert b"".join(seen) == bytes(1024) + b"tail"[:cut]
