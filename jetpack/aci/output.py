"""Writing archives: a hashing, compressing tar sink and atomic publication of the file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jetpack.aci.compression import Compression, encoder
from jetpack.aci.tarformat import END_OF_ARCHIVE
from jetpack.errors import ACIError

_BATCH = 1 << 20  # small writes (headers) are gathered so the encoder sees big buffers


class OutputError(ACIError):
    """Writing the output failed; ``err.__cause__`` is the :class:`OSError`."""


class TarSink:
    """Takes the uncompressed tar stream; hashes, counts, compresses and writes it.

    An :class:`OSError` writing ``dst`` becomes :class:`OutputError` ("cannot write <name>").
    """

    def __init__(self, dst: BinaryIO, compression: Compression) -> None:
        self._dst = dst
        name = getattr(dst, "name", None)
        self._label = name if isinstance(name, str) else "the output"
        self._encoder = encoder(compression)
        self._hash = hashlib.sha512()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.compression = compression
        self.uncompressed_size = 0
        self.compressed_size = 0
        self.entries = 0

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.uncompressed_size += len(data)
        if len(data) >= _BATCH:
            self._flush_pending()
            self._emit(self._encoder.compress(bytes(data)))
            return
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= _BATCH:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending:
            self._emit(self._encoder.compress(b"".join(self._pending)))
            self._pending.clear()
            self._pending_size = 0

    def _emit(self, data: bytes) -> None:
        if data:
            try:
                self._dst.write(data)
            except OSError as err:
                raise OutputError(f"cannot write {self._label}", err.strerror or str(err)) from err
            self.compressed_size += len(data)

    def close(self, *, end_marker: bool = True) -> None:
        """Finish the stream: end-of-archive blocks (unless already written), encoder flush."""
        if end_marker:
            self.write(END_OF_ARCHIVE)
        self._flush_pending()
        self._emit(self._encoder.flush())

    @property
    def image_id(self) -> str:
        return "sha512-" + self._hash.hexdigest()


@contextlib.contextmanager
def atomic_output(out: Path, *, overwrite: bool) -> Iterator[BinaryIO]:
    """A file that appears at ``out`` complete, or not at all.

    Written to a temporary file in the same directory, fsynced, then published: with
    ``os.replace`` when overwriting, else with ``os.link``, which fails instead of
    replacing a file that appeared meanwhile.

    Raises:
        ACIError: ``out`` exists and ``overwrite`` is false, or it cannot be written (its
            directory is missing, not a directory or not writable, the disk is full...).
            Errors reading the input must reach here as :class:`ACIError` already: any
            other :class:`OSError` from the ``with`` body is taken for a write error.
    """
    if not overwrite and os.path.lexists(out):
        raise ACIError(f"cannot write {out}", "it already exists", "use --overwrite to replace it")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except FileNotFoundError:
        raise ACIError(f"cannot write {out}", "its directory does not exist") from None
    except OSError as err:
        raise _write_error(out, err) from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        if overwrite:
            tmp.replace(out)
        else:
            try:
                os.link(tmp, out)
            except FileExistsError:
                raise ACIError(
                    f"cannot write {out}", "it already exists", "use --overwrite to replace it"
                ) from None
            tmp.unlink()
    except OutputError as err:
        tmp.unlink(missing_ok=True)
        raise ACIError(f"cannot write {out}", err.why, err.hint) from err.__cause__
    except ACIError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_error(out, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_error(out: Path, err: OSError) -> ACIError:
    return ACIError(f"cannot write {out}", err.strerror or str(err))
