"""The telemetry spool: request events appended as JSON lines to local segment files.

Durability promise: `append` returns after one write(2) of the whole line to a file opened O_APPEND. The
bytes are then in the kernel's page cache, which outlives the process: a crash or `kill -9` of the
gateway loses no event that was appended, and the gateway appends before it answers. (A power loss can
lose the last seconds; no fsync per request: it would cost milliseconds. Segments are fsynced when
closed.) Layout and hand-over to the shipper are in docs/gateway.md.

Open segment:   {spool}/{gateway_id}-{seq:012d}.jsonl.open
Closed segment: {spool}/{gateway_id}-{seq:012d}.jsonl     (renamed when closed; never written again)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

OPEN_SUFFIX = ".jsonl.open"
CLOSED_SUFFIX = ".jsonl"


class Spool:
    """Appends events for one gateway id; rotates segments by size and age."""

    def __init__(self, directory: Path, gateway_id: str, max_bytes: int, max_seconds: float) -> None:
        self.directory = directory
        self.gateway_id = gateway_id
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.errors = 0
        self._fd = -1
        self._size = 0
        self._opened_at = 0.0
        self._path: Path | None = None
        # How a full segment is finished (fsync, close, rename). The app runs it in a thread so the event
        # loop never waits on the disk; the default finishes in the calling thread.
        self.finisher: Callable[[int, Path], None] = finish_segment
        directory.mkdir(parents=True, exist_ok=True)
        self._seq = self._recover()

    def _recover(self) -> int:
        """Close segments a previous process of this gateway left open (it crashed or was killed), and
        return the next sequence number: sequences only grow, so the shipper's order is the write order."""
        pattern = re.compile(re.escape(self.gateway_id) + r"-(\d{12})\.jsonl(\.open)?$")
        last = 0
        for entry in os.scandir(self.directory):
            match = pattern.match(entry.name)
            if not match:
                continue
            last = max(last, int(match.group(1)))
            if match.group(2):
                path = Path(entry.path)
                os.replace(path, path.with_name(path.name[: -len(".open")]))
        return last + 1

    def _open(self) -> None:
        name = f"{self.gateway_id}-{self._seq:012d}{OPEN_SUFFIX}"
        self._seq += 1
        self._path = self.directory / name
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0
        self._opened_at = time.monotonic()

    def append(self, event: dict[str, Any]) -> None:
        """Write one event as one line. Never raises: telemetry trouble must not fail scoring (counted)."""
        line = orjson.dumps(event) + b"\n"
        try:
            if self._fd < 0 or self._size >= self.max_bytes:
                self.rotate()
            written = os.write(self._fd, line)
            self._size += written
        except OSError:
            self.errors += 1

    def rotate(self) -> None:
        """Close the open segment (if it holds anything) and open the next."""
        if self._fd >= 0:
            if self._size == 0:
                return  # an empty segment is kept open: nothing to hand over
            fd, path = self._fd, self._path
            assert path is not None
            self._open()
            self.finisher(fd, path)
            return
        self._open()

    def tick(self) -> None:
        """Called about once a second: closes a segment that has been open longer than max_seconds."""
        if self._fd >= 0 and self._size and time.monotonic() - self._opened_at >= self.max_seconds:
            try:
                self.rotate()
            except OSError:
                self.errors += 1

    def close(self) -> None:
        """Close for good: a non-empty segment is handed over, an empty one removed."""
        if self._fd < 0:
            return
        if self._size:
            assert self._path is not None
            finish_segment(self._fd, self._path)
            self._fd, self._path = -1, None
        else:
            os.close(self._fd)
            assert self._path is not None
            self._path.unlink(missing_ok=True)
            self._fd, self._path = -1, None


def finish_segment(fd: int, path: Path) -> None:
    """Flush a full segment to disk, close it, and rename it to its closed name for the shipper."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(path, path.with_name(path.name[: -len(".open")]))
