"""The single pass over an archive: read, tee, decompress, count, check limits, hash.

:class:`ArchiveStream` turns a compressed file object into bounded chunks of the
uncompressed tar stream; the image ID and the sizes fall out of the same pass. With
:func:`prefetch`, that work runs in a helper thread while the caller parses tar headers
and writes files: ISA-L, bz2/lzma, hashlib and file writes all release the GIL, so the
two halves really overlap on a multi-core machine.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO, TypeVar

from jetpack.aci.compression import DETECT_BYTES, Compression, decoder, detect_compression
from jetpack.aci.options import ExtractLimits
from jetpack.errors import ACIError

#: Bytes asked of the source per read; big reads keep per-call overhead negligible.
READ_SIZE = 1 << 20
#: Most uncompressed bytes produced per decoder call: bounds memory on a bomb.
CHUNK_SIZE = 1 << 20


def archive_label(src: object) -> str:
    """How to name ``src`` in messages: its file name when it has one."""
    name = getattr(src, "name", None)
    return name if isinstance(name, str) else "image archive"


class SourceReadError(ACIError):
    """Reading the archive itself failed (an I/O error, not a bad archive).

    Its message already names the archive, so callers must not prefix it again.
    """


def read_source(src: BinaryIO, size: int) -> bytes:
    """``src.read(size)``, with an :class:`OSError` turned into :class:`SourceReadError`."""
    try:
        return src.read(size)
    except OSError as err:
        raise SourceReadError(
            f"cannot read {archive_label(src)}", err.strerror or str(err)
        ) from err


def _read_head(src: BinaryIO) -> bytes:
    """At least :data:`DETECT_BYTES` (unless the file is shorter): pipes return short reads."""
    parts: list[bytes] = []
    have = 0
    while have < DETECT_BYTES:
        data = read_source(src, READ_SIZE)
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


class ArchiveStream:
    """Decompresses ``src`` once, hashing (optionally) and counting as it goes.

    Args:
        src: the archive, positioned at its start; read to its end.
        limits: decompression-bomb limits, or None for none (hashing only).
        tee: receives every byte read from ``src``, as read.
        hash_chunks: hash here; when False the consumer hashes, so decoding and hashing
            can run in different threads.
    """

    def __init__(
        self,
        src: BinaryIO,
        *,
        limits: ExtractLimits | None,
        tee: BinaryIO | None = None,
        hash_chunks: bool = True,
    ) -> None:
        self._src = src
        self._limits = limits
        self._tee = tee
        self._head = _read_head(src)
        self.compression = detect_compression(self._head)
        self.compressed_size = 0
        self.uncompressed_size = 0
        self._hash = hashlib.sha512() if hash_chunks else None

    @property
    def image_id(self) -> str:
        """``sha512-<hex>`` of every uncompressed byte produced so far."""
        if self._hash is None:
            raise RuntimeError("this stream was created with hash_chunks=False")
        return "sha512-" + self._hash.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        """The uncompressed stream, in chunks of at most :data:`CHUNK_SIZE` bytes."""
        dec = decoder(self.compression)
        data = self._head
        self._head = b""
        while data:
            self.compressed_size += len(data)
            if self._tee is not None:
                self._tee.write(data)
            for out in dec.feed(data, CHUNK_SIZE):
                self._account(out)
                yield out
            data = read_source(self._src, READ_SIZE)
        dec.finish()

    def _account(self, out: bytes) -> None:
        self.uncompressed_size += len(out)
        if self._hash is not None:
            self._hash.update(out)
        limits = self._limits
        if limits is None:
            return
        if self.uncompressed_size > limits.max_size:
            raise ACIError(
                "image too large",
                f"it expands to more than {limits.max_size} bytes",
                "raise the size limit only if you trust this image",
            )
        if (
            self.compression is not Compression.NONE
            and self.uncompressed_size > limits.ratio_floor
            and self.uncompressed_size > limits.max_ratio * self.compressed_size
        ):
            raise ACIError(
                "suspected decompression bomb",
                f"{self.compressed_size} compressed bytes expand to more than "
                f"{self.uncompressed_size} (over {limits.max_ratio:g}x)",
                "raise the ratio limit only if you trust this image",
            )


_T = TypeVar("_T")
_END = object()


def prefetch(source: Iterator[_T], depth: int = 8) -> Iterator[_T]:
    """Run ``source`` in a helper thread, ``depth`` items ahead of the consumer.

    Exceptions raised by ``source`` are re-raised in the consumer. Closing the returned
    generator (or an exception in the consumer, KeyboardInterrupt included) stops the
    helper at its next item and waits for it, so no thread outlives the call.
    """
    items: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object, err: BaseException | None) -> bool:
        while not stop.is_set():
            try:
                items.put((item, err), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in source:
                if not put(item, None):
                    return
            put(_END, None)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(None, err)

    worker = threading.Thread(target=run, name="jetpack-aci-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, err = items.get()
            if err is not None:
                raise err
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def image_id(src: BinaryIO) -> str:
    """The image ID of the archive in ``src``: ``sha512-`` + SHA-512 of its uncompressed tar.

    Only decompresses and hashes, without parsing the tar: decoding runs in a helper
    thread while this one hashes. No bomb limits apply, since nothing is kept in memory.

    Raises:
        ACIError: ``src`` is not a (complete) gzip, bzip2, xz or tar stream.
    """
    try:
        stream = ArchiveStream(src, limits=None, hash_chunks=False)
        digest = hashlib.sha512()
        chunks = stream.chunks()
        if stream.compression is not Compression.NONE:
            chunks = prefetch(chunks)
        for chunk in chunks:
            digest.update(chunk)
    except SourceReadError:
        raise
    except ACIError as err:
        name = getattr(src, "name", None)
        if not isinstance(name, str):
            raise
        raise ACIError(f"{name}: {err.what}", err.why, err.hint) from err.__cause__
    return "sha512-" + digest.hexdigest()
