"""A TCP proxy on loopback with cut, stall and delay controls, for network-fault tests.

The proxy runs its own event loop in a thread, so that the code driving a fault
(a pytest test that polls with ``time.sleep``, the soak's scheduler) never
starves it. Three faults:

- :meth:`TcpProxy.cut`: every open connection is reset and new ones are closed
  at once, until :meth:`TcpProxy.resume` (a link or a host that went away);
- :meth:`TcpProxy.stall`: connections stay open but no byte moves either way
  until :meth:`TcpProxy.resume` (a partition that heals before TCP gives up);
- :meth:`TcpProxy.delay`: every chunk is held for that long before it is
  forwarded (a slow link; order is kept).

Example:
    >>> import socket
    >>> srv = socket.create_server(("127.0.0.1", 0))
    >>> with TcpProxy("127.0.0.1", srv.getsockname()[1]) as proxy:
    ...     proxy.port > 0
    True
    >>> srv.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Final, Self

import structlog

__all__ = ["TcpProxy"]

log = structlog.get_logger(__name__)

_CHUNK: Final = 65_536
_START_TIMEOUT: Final = 10.0
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``; a context manager."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Prepare the proxy; it listens once entered (`port` 0: any free port).

        With `tls` (a server context) it terminates TLS in front of a plaintext target, as a
        broker's TLS listener or a load balancer does; the context decides whether a client
        certificate is required.
        """
        self.target = (target_host, target_port)
        self._tls = tls
        self.port = port
        self.connections = 0  # forwarded since start, for the record
        self.refused = 0  # reset at once because the link was cut
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # cleared while stalled
        self._cut = False
        self._delay = 0.0

    def __enter__(self) -> Self:
        """Start the loop thread and listen."""
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close every connection and the listener, stop the thread."""
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_START_TIMEOUT)
        self._loop.close()

    # --- controls (any thread) ------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`resume`."""
        self._call(self._set(cut=True))
        log.info("proxy cut", target=self.target, port=self.port)

    def stall(self) -> None:
        """Hold every byte, both ways, until :meth:`resume`; connections stay open."""
        self._call(self._set(stall=True))
        log.info("proxy stalled", target=self.target, port=self.port)

    def delay(self, seconds: float) -> None:
        """Forward each chunk `seconds` late (0: no delay)."""
        self._call(self._set(delay=seconds))
        log.info("proxy delay", target=self.target, port=self.port, seconds=seconds)

    def resume(self) -> None:
        """Undo :meth:`cut` and :meth:`stall` (a delay stays until set to 0)."""
        self._call(self._set(cut=False, stall=False))
        log.info("proxy resumed", target=self.target, port=self.port)

    # --- the loop side --------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(_START_TIMEOUT)

    async def _listen(self) -> None:
        self._flowing.set()
        sock = socket.create_server(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=self._tls)
        self.port = int(sock.getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _set(
        self, *, cut: bool | None = None, stall: bool | None = None, delay: float | None = None
    ) -> None:
        if cut is not None:
            self._cut = cut
            if cut:
                self._reset_all()
        if stall is not None:
            if stall:
                self._flowing.clear()
            else:
                self._flowing.set()
        if delay is not None:
            self._delay = max(0.0, delay)

    def _reset_all(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, up_writer))
                tg.create_task(self._pipe(up_reader, writer))
        except* (OSError, EOFError):
            pass
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                _reset(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF, honouring stall and delay."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await pending.get()
                if not data:
                    writer.close()
                    return
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self._flowing.wait()
                if self._cut:
                    raise EOFError
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while not sender.done():
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if self._cut:
                    raise EOFError
                await pending.put((loop.time() + self._delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, EOFError):
                await sender


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a vanished peer or a firewall reject would."""
    try:
        sock = writer.get_extra_info("socket")
    except AttributeError:  # a TLS transport whose protocol is already gone
        sock = None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()
