"""The replica key: a replica answers only the callers its deployment's secret was given to.

A model server listens on a port that any local user (or anyone on its network) can reach. Unchecked, a
caller could score a replica directly and so bypass the gateway's keys, limits and telemetry. Each
deployment therefore has a random secret that the control plane hands to its replicas when it starts them
(STUDIO_REPLICA_KEY) and to the gateway in the route table. The caller presents it in the
`X-Studio-Replica-Key` header.

What is guaranteed:
- With a key configured, a request without the header, or with any other value, is refused with 401
  before it reaches the model. Only the bare liveness probe (`GET /`, `GET /health/live`) answers
  anyone, and it says no more than the open port does.
- Keys are compared with `hmac.compare_digest`, so the comparison takes the same time whatever the
  presented value has in common with the key. The first header of that name is the one checked.
- The header is never handed to a scoring script, and the model server removes the variable from its
  environment before any user code runs (workers, and whatever they start, do not inherit it).

A model server started without the variable (by hand, for development) checks nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from serving.envparse import ConfigError

VARIABLE = "STUDIO_REPLICA_KEY"
HEADER = "x-studio-replica-key"
HEADER_BYTES = HEADER.encode()
MIN_LENGTH = 16


def parse(name: str, value: str) -> bytes:
    """A configured key as the bytes a header carries; ConfigError naming `name` when it cannot be one.

    The key travels in an HTTP header, so it must be printable ASCII without spaces; it must be long
    enough not to be guessed."""
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ConfigError(f"{name}: use printable ASCII characters without spaces.")
    if len(value) < MIN_LENGTH:
        raise ConfigError(f"{name} is too short: use at least {MIN_LENGTH} characters.")
    return value.encode()


def headers(key: str) -> dict[str, str]:
    """The header a direct caller of a replica sends (with httpx, urllib)."""
    return {HEADER: key}


def admits(raw_headers: Iterable[tuple[bytes, bytes]], key: bytes) -> bool:
    """Whether the first `X-Studio-Replica-Key` among ASGI `raw_headers` is `key` (constant time)."""
    for name, value in raw_headers:
        if name == HEADER_BYTES:
            return hmac.compare_digest(value, key)
    return False
