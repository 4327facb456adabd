"""A bounded pipe from the event loop (the download) to a thread (the import).

The store's import is synchronous — it decompresses, hashes and extracts with blocking calls
in a worker thread — while the download is a coroutine. :class:`Bridge` carries the bytes
between them without a copy per byte and without blocking the loop: the producer awaits
room when the buffer is full; the consumer blocks on a condition until data arrives.

Every byte handed to the consumer is first appended to ``sink`` (the download file that
becomes the stored blob and lets a broken download resume), so the bytes on disk and the
bytes imported are the same bytes, written once; ``observers`` (gpg checking the signature
as the data streams) see the same bytes, the resumed prefix included.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Sequence
from typing import BinaryIO, Protocol


class Observer(Protocol):
    """Also sees every byte the reader gets (a streaming signature check)."""

    def write(self, data: bytes) -> object: ...


class Bridge:
    """Async producer → blocking ``read()``; ``prefix`` is served first (a resumed download)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: BinaryIO | None,
        *,
        prefix: BinaryIO | None = None,
        observers: Sequence[Observer] = (),
        high_water: int = 16 << 20,
        name: str = "download",
    ) -> None:
        self.name = name  # how the archive is named in error messages
        self._loop = loop
        self._sink = sink
        self._prefix = prefix
        self._observers = tuple(observers)
        self._high = high_water
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._cond = threading.Condition()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._error: BaseException | None = None
        self._abandoned = False
        self.consumed = 0  # bytes handed to the reader, prefix included

    # -- producer side (event loop) ---------------------------------------------------

    async def put(self, data: bytes) -> None:
        if self._abandoned:
            raise BrokenPipeError("the reader stopped")
        while self._buffered >= self._high and not self._abandoned:
            self._room.clear()
            await self._room.wait()
        with self._cond:
            self._chunks.append(data)
            self._buffered += len(data)
            self._cond.notify()

    def close(self, error: BaseException | None = None) -> None:
        """No more data; ``error`` makes the reader raise it after the buffered bytes."""
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify()

    # -- consumer side (worker thread) ------------------------------------------------

    def _wake_producer(self) -> None:
        self._loop.call_soon_threadsafe(self._room.set)

    def abandon(self) -> None:
        """The reader gives up (the import failed): the producer stops at its next put."""
        self._abandoned = True
        self._wake_producer()

    def read(self, size: int = -1) -> bytes:
        if self._prefix is not None:
            data = self._prefix.read(size if size > 0 else -1)
            if data:
                for observer in self._observers:
                    observer.write(data)
                self.consumed += len(data)
                return data
            self._prefix = None
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                if self._sink is not None:
                    self._sink.flush()  # the whole download is on disk before EOF is seen
                return b""
            chunk = self._chunks.popleft()
            if 0 < size < len(chunk):
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            self._buffered -= len(chunk)
        self._wake_producer()
        if self._sink is not None:
            self._sink.write(chunk)
        for observer in self._observers:
            observer.write(chunk)
        self.consumed += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True
