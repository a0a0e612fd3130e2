"""uvicorn's httptools protocol with one change: the writes of one event-loop turn go out as one.

uvicorn writes a response's status line and headers as soon as the app sends `http.response.start`,
then the body on `http.response.body`: two write(2) calls, two TCP segments, two wake-ups of the client
for every answer. On a proxy's hot path the kernel's loopback work for a write costs more than the
Python around it, so the gateway coalesces: writes are buffered and flushed together at the next loop
turn (the app sends start and body back to back, so they meet in one buffer).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Wraps a transport: `write` buffers until the next loop turn; everything else is delegated, and
    `close` flushes first so nothing written is lost."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http=`; behaves as "httptools" but with coalesced writes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
