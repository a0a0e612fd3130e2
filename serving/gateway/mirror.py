"""Mirrored traffic: copies of live requests sent to a mirror deployment in the background.

A copy is queued only after the live request was written to its replica, and is sent by a small pool of
worker tasks; its answer is discarded. The queue is bounded: when it is full, or the mirror deployment is
at its concurrency limit, the copy is dropped and counted. Nothing here can delay or fail a live request.
Copies go through `Proxy.forward`, so they present the mirror deployment's own replica key.
A copy sampled for shadow comparison (serving/gateway/compare.py) carries its live answer's slot; the
worker hands the copy's outcome to `compared` once sent, and every copy it will never send to `unsent`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from serving.gateway.balancer import Balancer
from serving.gateway.compare import LiveAnswer
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.proxy import Proxy
from serving.gateway.table import Deployment


class MirrorCopy:
    __slots__ = ("deployment", "method", "target", "headers", "body", "request_id", "live", "token", "origin")

    def __init__(
        self,
        deployment: Deployment,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        request_id: str,
        live: LiveAnswer | None = None,
        token: int | None = None,
        origin: Deployment | None = None,
    ) -> None:
        self.deployment = deployment
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.request_id = request_id
        self.live = live  # set when the copy's answer is compared with the live one
        self.token = token  # its place among the comparisons pending (compare.Pending)
        self.origin = origin  # the deployment that answered the client


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
        compared: Callable[[MirrorCopy, Any], Awaitable[None]] | None = None,
        unsent: Callable[[MirrorCopy, str], None] | None = None,
    ) -> None:
        self.proxy = proxy
        self.balancer = balancer
        self.metrics = metrics
        self.record = record  # writes the copy's telemetry event, given the copy and its Outcome
        self.queue: asyncio.Queue[MirrorCopy] = asyncio.Queue(size)
        self.workers = workers
        self.compared = compared  # given a compared copy and its Outcome, once sent
        self.unsent = unsent  # given a compared copy that was dropped, and why
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
            self._drop(copy, "the mirror queue was full")

    def _drop(self, copy: MirrorCopy, reason: str) -> None:
        self.metrics.drop_mirror(copy.deployment.endpoint, copy.deployment.name)
        if copy.live is not None and self.unsent is not None:
            self.unsent(copy, reason)

    async def _work(self) -> None:
        while True:
            copy = await self.queue.get()
            deployment = copy.deployment
            if not self.balancer.enter(deployment):
                self._drop(copy, "the mirror deployment was at its in-flight limit")
                continue
            try:
                outcome = await self.proxy.forward(
                    deployment, copy.method, copy.target, copy.headers, copy.body
                )
            except Exception:  # a copy's trouble is never anyone's problem but its counter's
                self._drop(copy, "the copy could not be sent")
                continue
            finally:
                self.balancer.leave(deployment)
            self.record(copy, outcome)
            if copy.live is not None and self.compared is not None:
                try:
                    await self.compared(copy, outcome)
                except Exception as exc:  # not compared after all: recorded as such
                    if self.unsent is not None:
                        self.unsent(copy, f"the comparison failed: {type(exc).__name__}")
