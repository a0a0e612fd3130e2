"""Shadow comparison: the live answer and the mirror's answer of one request, side by side.

Off the client's path by construction: the live side is handed over (`LiveAnswer.settle`) only after the
client's answer was sent, and the comparison runs in the mirror worker that sent the copy. What is kept is
bounded: a body longer than the endpoint's `max_body_bytes` is kept as its sha256 only (compared exactly),
and only a `sample_rate` share of mirrored copies is compared at all.

Every comparison becomes one spool line of kind `comparisons` under the mirror deployment, and the gateway
appends a `watermarks` line about once a second: `through` is a time before which every comparison this
gateway will ever record is already in the spool (the oldest live request whose comparison is pending, or
now). Segments ship in order, so once a watermark is archived every comparison before its `through` is
too: that is what the control plane's `comparisons_complete` reads (docs/safe-rollout.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

COMPARISONS = "comparisons"
WATERMARKS = "watermarks"
DEFAULT_RTOL = 1e-6
DEFAULT_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ComparePolicy:
    """How an endpoint's mirrored answers are compared (the route table's `comparison`)."""

    rtol: float = DEFAULT_RTOL  # numbers agree when |a - b| <= atol + rtol * max(|a|, |b|)
    atol: float = 0.0
    sample_rate: float = 1.0  # share of mirrored copies compared
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a longer body is kept as its digest only


DEFAULT_POLICY = ComparePolicy()


def compile_policy(raw: Any) -> ComparePolicy:
    """The policy a route table's `comparison` describes; the defaults for anything missing or malformed
    (the control plane validates what users set)."""
    if not isinstance(raw, dict):
        return DEFAULT_POLICY

    def number(key: str, default: float, low: float, high: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            return default
        return float(value)

    return ComparePolicy(
        rtol=number("rtol", DEFAULT_RTOL, 0.0, 1.0),
        atol=number("atol", 0.0, 0.0, math.inf),
        sample_rate=number("sample_rate", 1.0, 0.0, 1.0),
        max_body_bytes=int(number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 0, 16 * 1024 * 1024)),
    )


class Body:
    """An answer's body as kept for comparison: the bytes up to the cap, else their digest."""

    __slots__ = ("data", "digest", "size")

    def __init__(self, raw: bytes, cap: int) -> None:
        self.size = len(raw)
        if len(raw) <= cap:
            self.data: bytes | None = raw
            self.digest = ""
        else:
            self.data = None
            self.digest = hashlib.sha256(raw).hexdigest()

    def text(self, cap: int) -> str:
        if self.data is None:
            return f"<{self.size} bytes, sha256 {self.digest}>"
        return self.data[:cap].decode("utf-8", "replace")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def difference(live: Any, shadow: Any, rtol: float, atol: float) -> str | None:
    """Where two decoded JSON documents first differ, or None when they agree: same structure, same
    strings, booleans and nulls, and numbers within the tolerance."""
    found = _difference(live, shadow, rtol, atol)
    if found is None:
        return None
    steps, message = found
    return "$" + "".join(reversed(steps)) + ": " + message


def _difference(live: Any, shadow: Any, rtol: float, atol: float) -> tuple[list[str], str] | None:
    # The path is built only on the way back from a difference: agreeing answers cost no strings.
    if _number(live) and _number(shadow):
        if live == shadow:
            return None
        a, b = float(live), float(shadow)
        if math.isnan(a) and math.isnan(b) or abs(a - b) <= atol + rtol * max(abs(a), abs(b)):
            return None
        return [], f"{live!r} != {shadow!r}"
    if isinstance(live, dict) and isinstance(shadow, dict):
        if live.keys() != shadow.keys():
            missing = sorted(map(str, set(live) ^ set(shadow)))[:3]
            return [], f"keys differ ({', '.join(missing)})"
        for key, value in live.items():
            found = _difference(value, shadow[key], rtol, atol)
            if found is not None:
                found[0].append(f".{key}")
                return found
        return None
    if isinstance(live, list) and isinstance(shadow, list):
        if len(live) != len(shadow):
            return [], f"{len(live)} items != {len(shadow)} items"
        for i, (a, b) in enumerate(zip(live, shadow, strict=True)):
            if a is b or type(a) is type(b) and type(a) is not float and a == b:
                continue
            found = _difference(a, b, rtol, atol)
            if found is not None:
                found[0].append(f"[{i}]")
                return found
        return None
    if type(live) is type(shadow) and live == shadow:
        return None
    return [], f"{_short(live)} != {_short(shadow)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def compare(
    live_status: int, live: Body, shadow_status: int, shadow: Body, policy: ComparePolicy
) -> str | None:
    """Why the two answers disagree, or None when they agree: the same status, and bodies that agree as
    JSON (structurally, numbers within the tolerance), or byte for byte when either is not JSON."""
    if live_status != shadow_status:
        return f"status {live_status} != {shadow_status}"
    if live.data is None or shadow.data is None:
        if live.data is None and shadow.data is None and live.digest == shadow.digest:
            return None
        if live.data is not None and shadow.data is None or live.data is None and shadow.data is not None:
            return f"body of {live.size} bytes != body of {shadow.size} bytes"
        return "bodies differ"
    if live.data == shadow.data:
        return None
    try:
        a, b = orjson.loads(live.data), orjson.loads(shadow.data)
    except orjson.JSONDecodeError:
        return "bodies differ"
    return difference(a, b, policy.rtol, policy.atol)


def timestamp(wall: float) -> str:
    """A Unix time as the spool's `ts` strings: UTC, milliseconds, `Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


class LiveAnswer:
    """The live side of a compared request, filled in once its client has been answered."""

    __slots__ = ("started", "policy", "status", "ms", "body", "_done")

    def __init__(self, started: float, policy: ComparePolicy) -> None:
        self.started = started  # wall time the live request was forwarded
        self.policy = policy
        self.status = 0
        self.ms: float | None = None
        self.body: Body | None = None
        self._done = asyncio.Event()

    def settle(self, status: int, ms: float | None, body: bytes, cap: int) -> None:
        self.status, self.ms, self.body = status, ms, Body(body, cap)
        self._done.set()

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            return False
        return True


class Pending:
    """Start times of comparisons promised but not yet spooled: the watermark stays before the oldest."""

    def __init__(self) -> None:
        self._starts: dict[int, float] = {}
        self._tokens = itertools.count()

    def add(self, started: float) -> int:
        token = next(self._tokens)
        self._starts[token] = started
        return token

    def done(self, token: int | None) -> None:
        if token is not None:
            self._starts.pop(token, None)

    def __len__(self) -> int:
        return len(self._starts)

    def through(self, now: float) -> float:
        return min(self._starts.values(), default=now)


def watermark_line(gateway_id: str, through: float, now: float) -> dict[str, Any]:
    return {"kind": WATERMARKS, "ts": timestamp(now), "gateway": gateway_id, "through": timestamp(through)}
