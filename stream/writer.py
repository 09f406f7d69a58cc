"""The readings writer: a sink on an event loop of its own, in a thread.

A chunk's insert must proceed while the worker scores the next chunk. On the
worker's own loop it would not: scoring a chunk runs without an await, so the
insert's query (a megabyte or more of arrays) would sit half sent in the socket
buffer until scoring yields. In a thread, the send and the wait for the server
release the GIL; the database works while this process scores.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from stream.sink import ReadingsSink, RejectedRow
from tmiot.config import DatabaseSettings
from tmiot.events import ScoredBatch

__all__ = ["RowWriter"]

_T = TypeVar("_T")


class RowWriter:
    """Inserts scored batches through a :class:`ReadingsSink` running in its own thread."""

    def __init__(self, db: DatabaseSettings) -> None:
        """Start on ``__aenter__``."""
        self._db = db
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="stream-writer", daemon=True)
        self._sink: ReadingsSink | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def __aenter__(self) -> Self:
        """Start the thread and connect (retrying while the database is unreachable)."""
        self._thread.start()
        sink = ReadingsSink(self._db)
        try:
            self._sink = await self._call(sink.__aenter__())
        except BaseException:
            self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection and stop the thread."""
        try:
            if self._sink is not None:
                await self._call(self._sink.__aexit__(None, None, None))
                self._sink = None
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def write(self, batch: ScoredBatch) -> tuple[int, list[RejectedRow]]:
        """:meth:`ReadingsSink.write` in the writer's thread: (rows inserted, rows refused)."""
        assert self._sink is not None  # noqa: S101 - used inside `async with` only
        return await self._call(self._sink.write(batch))
