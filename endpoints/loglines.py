"""Log lines as people read them: a replica's JSON lines and a build's plain text, one shape for both.

A model server writes one JSON object per line (serving/logs.py: `ts`, `level`, `message`, and fields
such as `event`, `request_id`, `traceback`); a build tool or a crashing interpreter writes plain text.
Pages show both as time, level and message, with a JSON line's other fields kept apart, and a failure
is explained by the first line that says what went wrong rather than by the lines before it.
"""

import json
import re
from dataclasses import dataclass, field

LEVELS = ("debug", "info", "warning", "error")
LEVEL_ALIASES = {
    "warn": "warning",
    "critical": "error",
    "fatal": "error",
    "exception": "error",
    "err": "error",
    "trace": "debug",
}
# The keys a JSON line's time, level and message come under, in the order they are looked for.
TIME_KEYS = ("ts", "time", "timestamp", "@timestamp", "asctime")
LEVEL_KEYS = ("level", "levelname", "severity")
MESSAGE_KEYS = ("message", "msg", "event")
# A plain line that starts with its level: `INFO  serving: ready`, `ERROR:root:...`, `[warning] ...`.
PLAIN_LEVEL_RE = re.compile(r"^\s*\[?(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\]?[\s:]", re.IGNORECASE)
# A plain line that states an error: `error: ...` (uv, pip), `  × No solution found` (uv), and the last
# line of a Python traceback (`ModuleNotFoundError: No module named 'x'`).
PLAIN_ERROR_RES = (
    re.compile(r"^\s*(error|fatal|fatal error)\s*[:\]]", re.IGNORECASE),
    re.compile(r"^\s*[×✗]\s+\S"),
    re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::\s.*)?$"),
)
TRACEBACK_START = "Traceback (most recent call last):"


@dataclass
class LogLine:
    """One line: `raw` as written, and what it means (`fields` are a JSON line's other keys)."""

    raw: str
    time: str = ""
    level: str = ""
    message: str = ""
    fields: dict = field(default_factory=dict)
    structured: bool = False

    @property
    def is_error(self) -> bool:
        """Whether the line says something went wrong (its level, or an error's words in plain text)."""
        if self.level == "error":
            return True
        if self.structured:
            return False
        return any(pattern.match(self.raw) for pattern in PLAIN_ERROR_RES)

    @property
    def shown_level(self) -> str:
        """The level a filter sorts the line by: its own, else "error" for a plain line stating one."""
        return self.level or ("error" if self.is_error else "")

    @property
    def extra(self) -> list[tuple[str, str]]:
        """The other fields, each as text (nested values as compact JSON), for a folded part."""
        return [
            (key, value if isinstance(value, str) else json.dumps(value, default=str))
            for key, value in self.fields.items()
        ]


def normal_level(value) -> str:
    text = str(value or "").strip().lower()
    text = LEVEL_ALIASES.get(text, text)
    return text if text in LEVELS else ""


def _first(record: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
    for key in keys:
        if key in record:
            return key, record[key]
    return None, None


def parse_line(raw: str) -> LogLine:
    """A line as time, level, message and fields; a line that is not a JSON object stays plain text."""
    raw = raw.rstrip("\r\n")
    text = raw.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            time_key, time = _first(record, TIME_KEYS)
            level_key, level = _first(record, LEVEL_KEYS)
            message_key, message = _first(record, MESSAGE_KEYS)
            used = {time_key, level_key, message_key}
            return LogLine(
                raw=raw,
                time=_short_time(str(time or "")),
                level=normal_level(level),
                message=str(message) if message is not None else "",
                fields={key: value for key, value in record.items() if key not in used},
                structured=True,
            )
    match = PLAIN_LEVEL_RE.match(raw)
    return LogLine(raw=raw, level=normal_level(match.group(1)) if match else "", message=raw)


def _short_time(value: str) -> str:
    """`2026-01-05T10:00:01.123Z` as `10:00:01.123`: a log is read within a day."""
    match = re.match(r"^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d(?:\.\d+)?)", value)
    return match.group(1) if match else value


def parse(text: str) -> list[LogLine]:
    return [parse_line(raw) for raw in text.splitlines() if raw.strip()]


def first_error(lines: list[LogLine]) -> LogLine | None:
    """The line that says what went wrong: the first error line, where a Python traceback counts as its
    last line (the exception and its message), not as the `Traceback (most recent call last):` above."""
    for index, line in enumerate(lines):
        if line.raw.strip() == TRACEBACK_START:
            for following in lines[index + 1 :]:
                if not following.raw.startswith((" ", "\t")) and following.is_error:
                    return following
            continue
        if line.is_error:
            return line
    return None


# The word a plain error line starts with, which the page's "Cause:" already says.
ERROR_PREFIX_RE = re.compile(r"^\[?(?:error|fatal error|fatal|critical)\]?\s*:\s*", re.IGNORECASE)


def cause_of(line: LogLine) -> str:
    """What an error line says, in words: its message (a JSON line's), else the line itself without its
    `error:` or `×` marker."""
    text = (line.message or line.raw).strip().lstrip("×✗ ").strip()
    return text if line.structured else ERROR_PREFIX_RE.sub("", text)
