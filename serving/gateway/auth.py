"""Scoring credentials: endpoint keys (HMAC digests from the route table) and signed tokens, checked
locally; and a brake on repeated failures.

What is guaranteed:
- A token is accepted only for the endpoint it was issued for: its name (`aud`), its identity (the
  `endpoint_id` claim: an endpoint deleted and created again under the same name has another) and its key
  generation (`key_generation`: bumped by every key regeneration and auth-mode switch).
- A valid key or token is never refused because of failures, its own client's or anyone else's: the
  credential is checked first, and the throttle only turns a refusal (401) into a slower one (429). Keys
  are 256-bit random values and tokens are signed, so there is nothing to guess; the throttle tells a
  failing client to back off, and cannot be used to lock a legitimate one out.
- Failures are counted per client address and per presented credential, over a sliding window: at most
  `limit` refusals (401) in any `window_s` seconds per client and per credential.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import jwt

from serving.gateway.table import Endpoint, TokenSettings

_TOKEN_CACHE_SIZE = 4096
# Claims that bind a token to one endpoint's identity and key generation (endpoints/credentials.py).
ENDPOINT_ID_CLAIM = "endpoint_id"
KEY_GENERATION_CLAIM = "key_generation"
_REQUIRED_CLAIMS = ["exp", "iat", "aud", "iss", ENDPOINT_ID_CLAIM, KEY_GENERATION_CLAIM]
_EXPIRED = "The token has expired: get a new one from the endpoint's credentials."


class Authenticator:
    """Checks the bearer credential a request presents for an endpoint."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # Verified tokens -> (exp, endpoint id, key generation), so a client reusing its token pays for one
        # signature check, not one per request. Keyed by the token key's fingerprint: a new signing key
        # invalidates every entry. The binding is compared with the current table on every request.
        self._verified: OrderedDict[tuple[str, str, str, str], tuple[float, object, object]] = OrderedDict()

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
        return self._check_token(endpoint, token, bearer)

    def _check_token(self, endpoint: Endpoint, token: TokenSettings | None, bearer: str) -> str | None:
        if token is None:
            return "This endpoint takes tokens but the gateway has no token key yet."
        cache_key = (token.fingerprint, token.issuer, endpoint.name, bearer)
        verified = self._verified.get(cache_key)
        if verified is not None and verified[0] <= time.time():
            del self._verified[cache_key]
            return _EXPIRED
        if verified is None:
            try:
                claims = jwt.decode(
                    bearer,
                    token.public_key,
                    algorithms=[token.algorithm],
                    audience=endpoint.name,
                    issuer=token.issuer,
                    options={"require": _REQUIRED_CLAIMS},
                    leeway=0,
                )
            except jwt.ExpiredSignatureError:
                return _EXPIRED
            except jwt.InvalidAudienceError:
                return "The token was issued for another endpoint."
            except jwt.PyJWTError:
                return "The token is not valid."
            verified = (float(claims["exp"]), claims[ENDPOINT_ID_CLAIM], claims[KEY_GENERATION_CLAIM])
            self._verified[cache_key] = verified
            if len(self._verified) > _TOKEN_CACHE_SIZE:
                self._verified.popitem(last=False)
        return _binding_refusal(endpoint, verified[1], verified[2])


def _binding_refusal(endpoint: Endpoint, endpoint_id: object, generation: object) -> str | None:
    """Why a token with these binding claims may not score on `endpoint` as the table has it now."""
    if endpoint.id is None:
        return (
            "The route table gives this endpoint no id to bind tokens to, so no token is accepted: "
            "upgrade the control plane that publishes it."
        )
    if endpoint_id != endpoint.id:
        return (
            "The token was issued for an endpoint of this name that has since been deleted: get a new "
            "token from the endpoint's credentials."
        )
    if not isinstance(generation, int) or isinstance(generation, bool):
        return "The token is not valid."
    if generation < endpoint.key_generation:
        return (
            "The token was issued before the endpoint's keys were regenerated or its auth mode changed: "
            "get a new one from the endpoint's credentials."
        )
    if generation > endpoint.key_generation:
        return "The token is newer than this gateway's route table: retry in a moment."
    return None


def credential_fingerprint(credential: str) -> str:
    """What the throttle counts a presented credential under: a digest, so no credential is kept."""
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class FailureThrottle:
    """Counts failures per key (a client, or a credential) over a sliding window: a key with `limit`
    failures in the last `window_s` seconds waits until the oldest of them is `window_s` old. Memory is
    bounded: at most `max_keys` keys of at most `limit` timestamps each."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}  # key -> its failure times within the window

    def retry_after(self, key: str) -> float:
        """Seconds `key` must wait before a failure of its counts again, or 0.0 when it need not."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        now = self._clock()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window_s - now

    def failed(self, key: str) -> None:
        """Record one failure of `key`."""
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_keys:
                self._prune(now)
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if now - times[-1] >= self.window_s]:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            # Still full of live keys: forget the half that failed least recently rather than grow.
            by_last = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in by_last[: self.max_keys // 2]:
                del self._failures[key]
