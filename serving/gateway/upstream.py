"""A minimal HTTP/1.1 client for talking to replicas: pooled keep-alive connections on asyncio
protocols, responses parsed by httptools.

Why not httpx: per request it costs several hundred microseconds of Python on this path (measured in
docs/gateway.md), more than everything else the gateway does. Replicas are our own model server on a
trusted network, so the client needs only what it speaks: a request with a body, a response with
Content-Length or chunked encoding, keep-alive.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import httptools

from serving.replica_key import HEADER_BYTES as _REPLICA_KEY_HEADER

IDLE_TIMEOUT_S = 30.0  # below the model server's keep-alive (75 s), so it never closes one first
MAX_IDLE_PER_REPLICA = 64


class UpstreamError(Exception):
    """The exchange failed. `sent` is False when no byte of the request reached the replica, so another
    replica may safely take the request."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class Response:
    """A replica's complete answer."""

    __slots__ = ("status", "reason", "headers", "body", "keep_alive")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.keep_alive = True


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._chunks: list[bytes] = []
        self._header: bytes = b""

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the stream is out of step; never reuse it.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the replica sent a malformed response ({exc})", sent=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError("the replica closed the connection before answering", sent=True))

    # --- httptools callbacks -----------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        assert self._response is not None
        self._response.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        response = self._response
        waiter = self._waiter
        if response is None or waiter is None:
            return
        response.status = self._parser.get_status_code()
        response.keep_alive = self._parser.should_keep_alive()
        response.body = b"".join(self._chunks)
        self._chunks = []
        self._response = None
        self._waiter = None
        if not waiter.done():
            waiter.set_result(response)

    # --- client side -------------------------------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> asyncio.Future[Response]:
        """Write one request; the future resolves with the whole response."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._response = Response()
        self._chunks = []
        if body and len(body) < 65536:
            self.transport.write(head + body)  # one segment for small requests
        else:
            self.transport.write(head)
            if body:
                self.transport.write(body)
        return self._waiter

    def _fail(self, error: UpstreamError) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Idle connections to one replica, most recently used first (warm sockets, and idle ones age out)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.closed = False
        self._idle: deque[Connection] = deque()

    async def acquire(self, connect_timeout_s: float) -> Connection:
        """An open connection: an idle one if any is still good, else a new one.

        Raises UpstreamError(sent=False) when the replica cannot be reached.
        """
        now = time.monotonic()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT_S:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, conn = await loop.create_connection(Connection, self.host, self.port)
        except TimeoutError:
            raise UpstreamError("connecting to the replica timed out", sent=False) from None
        except OSError as exc:
            raise UpstreamError(f"the replica refused the connection ({exc.strerror})", sent=False) from None
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
        """Give a connection back after a complete exchange; anything else is closed."""
        if not reusable or conn.closed or self.closed or len(self._idle) >= MAX_IDLE_PER_REPLICA:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when they come back."""
        self.closed = True
        while self._idle:
            self._idle.pop().close()


def request_head(
    method: bytes,
    path: bytes,
    host: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int,
    replica_key: bytes = b"",
) -> bytes:
    """Serialise a request line and headers; `headers` must not hold Host, Content-Length, hop-by-hop
    headers or `X-Studio-Replica-Key`. A `replica_key` is sent first of the headers, so it is the one
    the replica checks."""
    parts = [method, b" ", path, b" HTTP/1.1\r\nhost: ", host, b"\r\ncontent-length: ", str(length).encode()]
    if replica_key:
        parts += (b"\r\n", _REPLICA_KEY_HEADER, b": ", replica_key)
    for name, value in headers:
        parts += (b"\r\n", name, b": ", value)
    parts.append(b"\r\n\r\n")
    return b"".join(parts)
