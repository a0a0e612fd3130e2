"""Closed-loop HTTP load on one model server: N connections, each sending its next request as soon as
the previous answer is in, for a bounded time.

Plain HTTP/1.1 over keep-alive connections on one asyncio loop, so the load generator costs the host
as little CPU as a loader written in Python can: on a small host it shares the CPUs with the replica it
measures. A level's figures count only answers that arrived before its deadline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

CONNECT_TIMEOUT_S = 5.0
# An answer slower than this ends its connection's loop: the level's figures are already meaningless.
ANSWER_TIMEOUT_S = 30.0


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """The latency under which `fraction` of the answers came (nearest rank), in ms."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

    def figures(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": round(self.throughput, 1),
            "latency_p50_ms": round(self.percentile(0.50), 2),
            "latency_p99_ms": round(self.percentile(0.99), 2),
        }


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _connection(host: str, port: int, payload: bytes, deadline: float, level: Level) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
    try:
        while (started := time.perf_counter()) < deadline:
            writer.write(payload)
            status, body = await asyncio.wait_for(_answer(reader), ANSWER_TIMEOUT_S)
            finished = time.perf_counter()
            if finished > deadline:
                return
            if status == 200:
                level.latencies_ms.append((finished - started) * 1000)
            else:
                level.errors += 1
                level.first_error = (
                    level.first_error or f"HTTP {status}: {body[:300].decode(errors='replace')}"
                )
    finally:
        writer.close()


async def _run(host: str, port: int, payload: bytes, concurrency: int, seconds: float) -> Level:
    level = Level(concurrency, seconds)
    deadline = time.perf_counter() + seconds
    results = await asyncio.gather(
        *(_connection(host, port, payload, deadline, level) for _ in range(concurrency)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            level.errors += 1
            level.first_error = level.first_error or f"{type(result).__name__}: {result}"
    return level


def run_level(host: str, port: int, payload: bytes, concurrency: int, seconds: float) -> Level:
    """`concurrency` connections sending `payload` (a whole HTTP request) for `seconds`."""
    return asyncio.run(_run(host, port, payload, concurrency, seconds))
