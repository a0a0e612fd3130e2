"""JSON-lines logging on stdout: one line per request, per server event, and per line user code prints.

Every process of the server writes whole lines with a single `os.write` on file descriptor 1, so lines
from several workers never interleave (up to the pipe's atomic-write size) and any target can collect
them from the container's or process's stdout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson

_STDOUT_FD = 1


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class JsonLog:
    """Writes one JSON object per line to stdout; `fields` given at construction go on every line."""

    def __init__(self, fd: int = _STDOUT_FD, **fields: Any) -> None:
        self._fd = fd
        self._fields = fields

    def write(self, level: str, message: str, **fields: Any) -> None:
        record = {"ts": _timestamp(), "level": level, "message": message, **self._fields, **fields}
        line = orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        # stdout closed (supervisor gone): losing a log line must never fail a request
        with contextlib.suppress(OSError):
            os.write(self._fd, line)

    def info(self, message: str, **fields: Any) -> None:
        self.write("info", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.write("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.write("error", message, **fields)


class _LineCapture(io.TextIOBase):
    """A text stream that turns each complete line written to it into a JSON log line."""

    def __init__(self, log: JsonLog, stream: str, level: str) -> None:
        self._log = log
        self._stream = stream
        self._level = level
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._log.write(self._level, line, source="user", stream=self._stream)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._log.write(self._level, line, source="user", stream=self._stream)

    def isatty(self) -> bool:
        return False


class _JsonHandler(logging.Handler):
    def __init__(self, log: JsonLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["traceback"] = logging.Formatter().formatException(record.exc_info)
        self._log.write(record.levelname.lower(), record.getMessage(), **fields)


def capture_output(log: JsonLog) -> None:
    """Send `print` output, stderr writes and the `logging` module through `log`, one JSON line each."""
    sys.stdout = _LineCapture(log, "stdout", "info")
    sys.stderr = _LineCapture(log, "stderr", "warning")
    root = logging.getLogger()
    root.handlers[:] = [_JsonHandler(log)]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
