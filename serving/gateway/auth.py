"""Scoring credentials: endpoint keys (HMAC digests from the route table) and signed tokens, checked
locally; and a per-client brake on repeated failures.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict

import jwt

from serving.gateway.table import Endpoint, TokenSettings

_TOKEN_CACHE_SIZE = 4096


class Authenticator:
    """Checks the bearer credential a request presents for an endpoint."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # Verified tokens, so a client reusing its token pays for one signature check, not one per request.
        # Keyed by the token settings object too: a new table with a new key invalidates every entry.
        self._verified: OrderedDict[tuple[int, str, str], float] = OrderedDict()

    def key_digest(self, key: str) -> str:
        """What the control plane publishes for a key: HMAC-SHA256(gateway secret, key), lower-case hex."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def check(self, endpoint: Endpoint, token: TokenSettings | None, bearer: str | None) -> str | None:
        """None when `bearer` may score on `endpoint`; otherwise why not (safe to show the caller)."""
        if not bearer:
            return "Missing credentials: send 'Authorization: Bearer <key or token>'."
        if endpoint.auth_mode == "key":
            digest = self.key_digest(bearer)
            # Compare against every digest, always: the time taken does not reveal which one matched.
            matched = False
            for candidate in endpoint.key_digests:
                matched |= hmac.compare_digest(digest, candidate)
            return None if matched else "The key is not valid for this endpoint."
        return self._check_token(endpoint.name, token, bearer)

    def _check_token(self, audience: str, token: TokenSettings | None, bearer: str) -> str | None:
        if token is None:
            return "This endpoint takes tokens but the gateway has no token key yet."
        now = time.time()
        cache_key = (id(token), audience, bearer)
        expires = self._verified.get(cache_key)
        if expires is not None:
            if expires > now:
                return None
            del self._verified[cache_key]
            return "The token has expired: get a new one from the endpoint's credentials."
        try:
            claims = jwt.decode(
                bearer,
                token.public_key,
                algorithms=[token.algorithm],
                audience=audience,
                issuer=token.issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            return "The token has expired: get a new one from the endpoint's credentials."
        except jwt.InvalidAudienceError:
            return "The token was issued for another endpoint."
        except jwt.PyJWTError:
            return "The token is not valid."
        self._verified[cache_key] = float(claims["exp"])
        if len(self._verified) > _TOKEN_CACHE_SIZE:
            self._verified.popitem(last=False)
        return None


class FailureThrottle:
    """Counts authentication failures per client address in fixed windows; a client over the limit is
    refused (429) until its window ends, without its credentials being checked at all."""

    def __init__(self, limit: int, window_s: float, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._windows: dict[str, list[float]] = {}  # client -> [window start, failures]

    def retry_after(self, client: str) -> float:
        """Seconds the client must wait, or 0.0 when it may try."""
        window = self._windows.get(client)
        if window is None or window[1] < self.limit:
            return 0.0
        left = window[0] + self.window_s - time.monotonic()
        if left <= 0:
            del self._windows[client]
            return 0.0
        return left

    def failed(self, client: str) -> None:
        """Record one failure by `client`."""
        now = time.monotonic()
        window = self._windows.get(client)
        if window is None or now - window[0] >= self.window_s:
            if len(self._windows) >= self.max_clients:
                self._prune(now)
            self._windows[client] = [now, 1.0]
        else:
            window[1] += 1

    def _prune(self, now: float) -> None:
        for client in [c for c, w in self._windows.items() if now - w[0] >= self.window_s]:
            del self._windows[client]
        if len(self._windows) >= self.max_clients:
            # Still full of live windows: forget the oldest half rather than grow without bound.
            for client in sorted(self._windows, key=lambda c: self._windows[c][0])[: self.max_clients // 2]:
                del self._windows[client]
