"""Adaptive batching: requests that arrive while the model is busy are answered by one model call.

While a batch is being predicted in the model thread, the event loop keeps reading requests; when the
model is free, everything waiting (up to `max_size`) goes in the next call. With `max_delay` > 0 a batch
also waits up to that long for more requests when it is not full. Under light load a request is predicted
at once on its own, so batching never adds latency unless a delay is asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from serving.metrics import WorkerMetrics


class Batcher:
    """Queues parsed requests and resolves each caller's future with its own result, in order."""

    def __init__(
        self,
        score_many: Callable[[list[Any]], list[Any]],
        executor: Executor,
        metrics: WorkerMetrics,
        max_size: int,
        max_delay_s: float,
    ) -> None:
        self._score_many = score_many
        self._executor = executor
        self._metrics = metrics
        self._max_size = max_size
        self._max_delay = max_delay_s
        self._pending: deque[tuple[Any, asyncio.Future]] = deque()
        self._running = False
        self._filled: asyncio.Future | None = None

    async def submit(self, item: Any) -> tuple[Any, float]:
        """The result for `item` and how long its batch's model call took, in seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        self._metrics.queued(1)
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        elif self._filled is not None and len(self._pending) >= self._max_size and not self._filled.done():
            self._filled.set_result(None)
        return await future

    def _take(self) -> list[tuple[Any, asyncio.Future]]:
        batch = []
        while self._pending and len(batch) < self._max_size:
            item, future = self._pending.popleft()
            self._metrics.queued(-1)
            if not future.done():  # the caller may have timed out meanwhile
                batch.append((item, future))
        return batch

    async def _wait_for_more(self) -> None:
        loop = asyncio.get_running_loop()
        self._filled = loop.create_future()
        timer = loop.call_later(self._max_delay, lambda f: f.done() or f.set_result(None), self._filled)
        try:
            await self._filled
        finally:
            timer.cancel()
            self._filled = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self._max_delay > 0 and len(self._pending) < self._max_size:
                    await self._wait_for_more()
                batch = self._take()
                if not batch:
                    continue
                self._metrics.batch(len(batch))
                items = [item for item, _ in batch]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self._score_many, items)
                except Exception as exc:  # score_many isolates failures; this guards against its own bugs
                    results = [exc] * len(batch)
                elapsed = time.perf_counter() - started
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result((result, elapsed))
        finally:
            self._running = False
