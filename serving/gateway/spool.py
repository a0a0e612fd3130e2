"""The telemetry spool: request events appended as JSON lines to local segment files.

Durability promise: `append` returns after one write(2) of the whole line to a file opened O_APPEND. The
bytes are then in the kernel's page cache, which outlives the process: a crash or `kill -9` of the
gateway loses no event that was appended, and the gateway appends before it answers. (A power loss can
lose the last seconds; no fsync per request: it would cost milliseconds. Segments are fsynced when
closed.) Layout and hand-over to the shipper are in docs/gateway.md.

Whole lines or nothing: a write the disk cuts short (full) is taken back, so only whole lines are ever in
a segment, and the event is counted as dropped (`dropped`, and the health says so).

Names are unique forever, because the archive keys shipped objects by them: a sequence number persisted
in `{spool}/{gateway_id}.seq` before a segment of that number is opened (so no restart ever reuses one,
even after every shipped segment was deleted), and a random boot id per process (so even a lost or
copied spool directory cannot repeat a name). Sorting a gateway's segments by name sorts them by time.

Open segment:   {spool}/{gateway_id}-{seq:012d}-{boot}.jsonl.open
Closed segment: {spool}/{gateway_id}-{seq:012d}-{boot}.jsonl     (renamed when closed; never written again)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
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
        self.dropped = 0
        self.last_drop: float | None = None  # monotonic time of the last dropped event
        self.boot = secrets.token_hex(4)
        self._fd = -1
        self._size = 0
        self._opened_at = 0.0
        self._path: Path | None = None
        # How a full segment is finished (fsync, close, rename). The app runs it in a thread so the event
        # loop never waits on the disk; the default finishes in the calling thread.
        self.finisher: Callable[[int, Path], None] = finish_segment
        directory.mkdir(parents=True, exist_ok=True)
        self._seq = self._recover()

    @property
    def _counter(self) -> Path:
        return self.directory / f"{self.gateway_id}.seq"

    def _recover(self) -> int:
        """Close segments a previous process of this gateway left open (it crashed or was killed), and
        return the next sequence number: past both the persisted counter and every segment still here."""
        pattern = re.compile(re.escape(self.gateway_id) + r"-(\d{12})(?:-[0-9a-f]{8})?\.jsonl(\.open)?$")
        last = 0
        for entry in os.scandir(self.directory):
            match = pattern.match(entry.name)
            if not match:
                continue
            last = max(last, int(match.group(1)))
            if match.group(2):
                path = Path(entry.path)
                os.replace(path, path.with_name(path.name[: -len(".open")]))
        # A counter lost or corrupt leaves the boot id to keep names unique.
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = max(last, int(self._counter.read_text().strip() or 0))
        return last + 1

    def _reserve(self, seq: int) -> None:
        """Persist `seq` as used before a segment of it exists: a restart continues after it."""
        partial = self._counter.with_name(f".{self._counter.name}.{os.getpid()}")
        partial.write_text(f"{seq}\n")
        os.replace(partial, self._counter)

    def _open(self) -> None:
        seq = self._seq
        self._reserve(seq)
        self._seq += 1
        self._path = self.directory / f"{self.gateway_id}-{seq:012d}-{self.boot}{OPEN_SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0
        self._opened_at = time.monotonic()

    def append(self, event: dict[str, Any]) -> bool:
        """Write one event as one whole line, or nothing; False when it was dropped (a full disk, an I/O
        error), which is counted. Never raises: telemetry trouble must not fail scoring."""
        line = orjson.dumps(event) + b"\n"
        try:
            if self._fd < 0 or self._size >= self.max_bytes:
                self.rotate()
            written = os.write(self._fd, line)
        except OSError:
            self._drop()
            return False
        if written < len(line):
            # A full disk took part of the line: take it back, so the next line does not glue onto it.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self.errors += 1
            self._drop()
            return False
        self._size += written
        return True

    @property
    def holding(self) -> bool:
        """Whether the open segment holds lines not handed over yet."""
        return self._fd >= 0 and self._size > 0

    def closing(self) -> bool:
        """Whether the next `tick()` closes the open segment, and a line appended before it still goes
        into that segment (it is not full)."""
        return (
            self.holding
            and self._size < self.max_bytes
            and time.monotonic() - self._opened_at >= self.max_seconds
        )

    def _drop(self) -> None:
        self.errors += 1
        self.dropped += 1
        self.last_drop = time.monotonic()

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
