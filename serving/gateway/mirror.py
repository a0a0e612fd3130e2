"""Mirrored traffic: copies of live requests sent to a mirror deployment in the background.

A copy is queued only after the live request was written to its replica, and is sent by a small pool of
worker tasks; its answer is discarded. The queue is bounded: when it is full, or the mirror deployment is
at its concurrency limit, the copy is dropped and counted. Nothing here can delay or fail a live request.
Copies go through `Proxy.forward`, so they present the mirror deployment's own replica key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from serving.gateway.balancer import Balancer
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.proxy import Proxy
from serving.gateway.table import Deployment


class MirrorCopy:
    __slots__ = ("deployment", "method", "target", "headers", "body", "request_id")

    def __init__(
        self,
        deployment: Deployment,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        request_id: str,
    ) -> None:
        self.deployment = deployment
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.request_id = request_id


class Mirror:
    """The bounded queue of copies and the workers that send them."""

    def __init__(
        self,
        proxy: Proxy,
        balancer: Balancer,
        metrics: GatewayMetrics,
        record: Callable[[MirrorCopy, Any], None],
        size: int,
        workers: int,
    ) -> None:
        self.proxy = proxy
        self.balancer = balancer
        self.metrics = metrics
        self.record = record  # writes the copy's telemetry event, given the copy and its Outcome
        self.queue: asyncio.Queue[MirrorCopy] = asyncio.Queue(size)
        self.workers = workers
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def offer(self, copy: MirrorCopy) -> None:
        """Queue a copy, or drop and count it when the queue is full."""
        try:
            self.queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.metrics.drop_mirror(copy.deployment.endpoint, copy.deployment.name)

    async def _work(self) -> None:
        while True:
            copy = await self.queue.get()
            deployment = copy.deployment
            if not self.balancer.enter(deployment):
                self.metrics.drop_mirror(deployment.endpoint, deployment.name)
                continue
            try:
                outcome = await self.proxy.forward(
                    deployment, copy.method, copy.target, copy.headers, copy.body
                )
            except Exception:  # a copy's trouble is never anyone's problem but its counter's
                self.metrics.drop_mirror(deployment.endpoint, deployment.name)
                continue
            finally:
                self.balancer.leave(deployment)
            self.record(copy, outcome)
