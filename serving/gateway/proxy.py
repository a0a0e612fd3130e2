"""Forwarding one request to a deployment: replica choice, deadline, ejection and the single retry.

`forward` never raises for upstream trouble: it returns an `Outcome` the app turns into an answer. Every
request it sends (live, mirrored, swagger) presents the deployment's replica key from the route table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from serving.gateway.balancer import Balancer, ReplicaState
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.table import Deployment, Replica
from serving.gateway.upstream import Connection, Response, UpstreamError, request_head

CONNECT_TIMEOUT_S = 1.0

# What went wrong, when the replica did not answer.
TIMEOUT = "timeout"  # no answer within request_timeout_ms
UNAVAILABLE = "unavailable"  # no replica could take it (none ready, all refused, all not ready)
BROKEN = "broken"  # the replica dropped the connection after the request was sent


class Outcome:
    """What happened to a forwarded request: the replica's response, or an error kind."""

    __slots__ = ("response", "replica", "error", "upstream_ms")

    def __init__(
        self, response: Response | None, replica: Replica | None, error: str | None, upstream_ms: float
    ) -> None:
        self.response = response
        self.replica = replica
        self.error = error
        self.upstream_ms = upstream_ms


class Proxy:
    """Sends requests to the replicas the balancer picks."""

    def __init__(self, balancer: Balancer, metrics: GatewayMetrics) -> None:
        self.balancer = balancer
        self.metrics = metrics

    async def forward(
        self,
        deployment: Deployment,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        on_sent: Callable[[], None] | None = None,
    ) -> Outcome:
        """Send the request to one replica of `deployment`, or to a second one when the first could not
        take it without having received it (refused, unreachable, or not ready: the model did not run).
        `on_sent` is called once, right after the request was written to a replica."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deployment.timeout_s
        tried: Replica | None = None
        for attempt in range(2):
            replica = self.balancer.pick(deployment, exclude=tried)
            if replica is None:
                break
            state = self.balancer.state(replica)
            address = f"{replica.host}:{replica.port}".encode()
            head = request_head(method, target, address, headers, len(body), deployment.replica_key)
            state.outstanding += 1
            started = time.perf_counter()
            conn: Connection | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await state.pool.acquire(min(CONNECT_TIMEOUT_S, deadline - loop.time()))
                    pending = conn.send(head, body)
                    if on_sent is not None:
                        on_sent()
                        on_sent = None
                    response = await pending
            except TimeoutError:
                if conn is not None:
                    conn.close()  # an answer may still come on it: never reuse
                self._eject(state)
                return Outcome(None, replica, TIMEOUT, _ms(started))
            except UpstreamError as exc:
                if conn is not None:
                    conn.close()
                if exc.sent:
                    return Outcome(None, replica, BROKEN, _ms(started))
                self._eject(state)
                tried = replica
                if attempt == 0:
                    self.metrics.retries += 1
                continue
            except BaseException:
                if conn is not None:
                    conn.close()  # cancelled (client gone, shutdown): the stream is mid-exchange
                raise
            finally:
                state.outstanding -= 1
            state.pool.release(conn, response.keep_alive)
            if response.status == 503 and attempt == 0 and len(deployment.replicas) > 1:
                # The model server says 503 only before its model is loaded: nothing ran, try another.
                self._eject(state)
                tried = replica
                self.metrics.retries += 1
                continue
            state.succeeded()
            return Outcome(response, replica, None, _ms(started))
        return Outcome(None, tried, UNAVAILABLE, 0.0)

    def _eject(self, state: ReplicaState) -> None:
        state.eject()
        self.metrics.ejections += 1


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
