"""Which replica takes a request: least outstanding requests among the ready, not-ejected replicas of a
deployment; passive ejection of replicas that refuse connections or time out.

Runtime state (outstanding counts, ejections, connection pools) is keyed by replica URL, not held in the
route table, so it survives table swaps: a new table version does not forget that a replica is down.
"""

from __future__ import annotations

import random
import time

from serving.gateway.table import Deployment, Replica
from serving.gateway.upstream import Pool

EJECT_BASE_S = 1.0
EJECT_MAX_S = 10.0
EJECT_MAX_DOUBLINGS = 16  # far past EJECT_MAX_S already


class ReplicaState:
    """What the gateway has observed about one replica address."""

    __slots__ = ("pool", "outstanding", "ejected_until", "failures")

    def __init__(self, host: str, port: int) -> None:
        self.pool = Pool(host, port)
        self.outstanding = 0
        self.ejected_until = 0.0
        self.failures = 0

    def eject(self) -> None:
        """Take the replica out for a while; repeated failures double the while, up to EJECT_MAX_S."""
        self.failures += 1
        # The exponent is capped: an outage fails thousands of times a second, and 2.0 ** 1024 overflows.
        pause = min(EJECT_MAX_S, EJECT_BASE_S * 2.0 ** min(self.failures - 1, EJECT_MAX_DOUBLINGS))
        self.ejected_until = time.monotonic() + pause

    def succeeded(self) -> None:
        if self.failures:
            self.failures = 0
            self.ejected_until = 0.0


class Balancer:
    """Picks replicas and counts requests in flight per deployment."""

    def __init__(self) -> None:
        self._replicas: dict[str, ReplicaState] = {}
        self._in_flight: dict[tuple[str, str], int] = {}

    def state(self, replica: Replica) -> ReplicaState:
        """The runtime state of a replica address (created on first use)."""
        state = self._replicas.get(replica.url)
        if state is None:
            state = self._replicas[replica.url] = ReplicaState(replica.host, replica.port)
        return state

    def pick(self, deployment: Deployment, exclude: Replica | None = None) -> Replica | None:
        """The ready replica with the fewest outstanding requests, ties broken at random; ejected ones
        only when every replica is ejected (better to try than to refuse outright); None if none is ready."""
        candidates = [r for r in deployment.replicas if r is not exclude]
        if not candidates:
            return None
        now = time.monotonic()
        best: Replica | None = None
        best_load = 0
        fallback: Replica | None = None
        fallback_until = 0.0
        # Random start so equal loads do not always land on the first replica.
        offset = random.randrange(len(candidates)) if len(candidates) > 1 else 0
        for i in range(len(candidates)):
            replica = candidates[(i + offset) % len(candidates)]
            state = self.state(replica)
            if state.ejected_until > now:
                if fallback is None or state.ejected_until < fallback_until:
                    fallback, fallback_until = replica, state.ejected_until
                continue
            if best is None or state.outstanding < best_load:
                best, best_load = replica, state.outstanding
        return best if best is not None else fallback

    def enter(self, deployment: Deployment) -> bool:
        """Count a request in flight for the deployment; False (nothing counted) when it is at its limit."""
        key = (deployment.endpoint, deployment.name)
        count = self._in_flight.get(key, 0)
        if count >= deployment.max_in_flight:
            return False
        self._in_flight[key] = count + 1
        return True

    def leave(self, deployment: Deployment) -> None:
        key = (deployment.endpoint, deployment.name)
        self._in_flight[key] -= 1

    def in_flight(self) -> dict[tuple[str, str], int]:
        return dict(self._in_flight)

    def retain(self, urls: set[str]) -> None:
        """Forget replicas no longer in the table, closing their idle connections."""
        for url in [u for u in self._replicas if u not in urls]:
            state = self._replicas.pop(url)
            state.pool.close()

    def close(self) -> None:
        for state in self._replicas.values():
            state.pool.close()
