r"""Recordings of Kafka topics, as `tmiot record` writes them and `tmiot replay` reads them.

Every record is kept with its topic, partition, offset, timestamp, key, value and
headers. The format is framed binary, so that a million records read and write at the speed of
the disk rather than of a text codec::

    b"TMIOTREC1\n"
    per record:  topic length (u16) + topic, partition (i32), offset (i64),
                 timestamp ms (i64), key length (i32, -1: none) + key,
                 value length (i32, -1: none) + value, header count (u16),
                 per header: name length (u16) + name, value length (i32, -1: none) + value

All integers little-endian. A path ending in ``.gz`` is gzip-compressed.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.tmrec"
    >>> with RecordingWriter(path) as out:
    ...     out.write(Recorded("t", 0, 7, 1_700_000_000_000, b"k", b"v", (("h", b"1"),)))
    >>> list(read_recording(path))[0].value
    b'v'
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self, cast

from tmiot.errors import TmiotError

__all__ = ["Recorded", "RecordingError", "RecordingWriter", "read_recording"]

MAGIC: Final = b"TMIOTREC1\n"
_U16: Final = struct.Struct("<H")
_I32: Final = struct.Struct("<i")
_PLACE: Final = struct.Struct("<iqq")  # partition, offset, timestamp ms


class RecordingError(TmiotError):
    """A file that is not a recording, or one cut short."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One Kafka record as it was recorded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        # mtime 0: the same records make the same file (golden recordings stay put in git).
        return cast("IO[bytes]", gzip.GzipFile(path, mode + "b", compresslevel=3, mtime=0))
    return path.open(mode + "b", buffering=1 << 20)


def _blob(data: bytes | None) -> bytes:
    return _I32.pack(-1) if data is None else _I32.pack(len(data)) + data


class RecordingWriter:
    """Append records to a new recording file; a context manager."""

    def __init__(self, path: Path) -> None:
        """Create (or truncate) `path` on ``__enter__``."""
        self.path = path
        self.count = 0
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Self:
        """Open the file and write the header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _open(self.path, "w")
        self._file.write(MAGIC)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Flush and close."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: Recorded) -> None:
        """Append one record."""
        assert self._file is not None  # noqa: S101 - only inside the context
        topic = record.topic.encode()
        parts = [
            _U16.pack(len(topic)),
            topic,
            _PLACE.pack(record.partition, record.offset, record.timestamp_ms),
            _blob(record.key),
            _blob(record.value),
            _U16.pack(len(record.headers)),
        ]
        for name, value in record.headers:
            encoded = name.encode()
            parts += (_U16.pack(len(encoded)), encoded, _blob(value))
        self._file.write(b"".join(parts))
        self.count += 1


class _Reader:
    def __init__(self, file: IO[bytes], path: Path) -> None:
        self._file = file
        self._path = path

    def exact(self, n: int) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            msg = f"{self._path}: recording cut short"
            raise RecordingError(msg)
        return data

    def blob(self) -> bytes | None:
        (n,) = _I32.unpack(self.exact(4))
        return None if n < 0 else self.exact(n)

    def text(self) -> str:
        (n,) = _U16.unpack(self.exact(2))
        return self.exact(n).decode()


def read_recording(path: Path) -> Iterator[Recorded]:
    """The records of a recording, in the order they were written.

    Raises:
        RecordingError: not a recording, or it ends in the middle of a record.
    """
    with _open(path, "r") as file:
        if file.read(len(MAGIC)) != MAGIC:
            msg = f"{path}: not a tmiot recording"
            raise RecordingError(msg)
        reader = _Reader(file, path)
        while head := file.read(2):
            if len(head) != 2:  # noqa: PLR2004 - the u16 topic length
                msg = f"{path}: recording cut short"
                raise RecordingError(msg)
            (n,) = _U16.unpack(head)
            topic = reader.exact(n).decode()
            partition, offset, timestamp = _PLACE.unpack(reader.exact(_PLACE.size))
            key = reader.blob()
            value = reader.blob()
            (count,) = _U16.unpack(reader.exact(2))
            headers = tuple((reader.text(), reader.blob()) for _ in range(count))
            yield Recorded(topic, partition, offset, timestamp, key, value, headers)
