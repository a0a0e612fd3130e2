"""Load reports: how many requests each deployment had in flight at this gateway, sent to the control plane.

The autoscaler (endpoints.autoscale) sizes deployments with `scale_settings.type: target_utilization` by
the requests in flight per replica, and only gateways see them. Each gateway samples its balancer's
in-flight counts several times a second and posts, every report interval, the mean and the peak of each
deployment's count over that interval to `{control plane}/internal/gateway-load/`, authenticated by the
gateway secret. A report names every deployment of the route table, idle ones with zeros, so the load
falling to nothing is reported too.

Reports are best effort and never touch the scoring path: a control plane that does not answer costs a
log line, and the autoscaler treats a gateway whose report is stale as carrying no load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import httpx

from serving.logs import JsonLog

SAMPLES_PER_REPORT = 10


class LoadReporter:
    """Samples `in_flight()` ({(endpoint, deployment): count}) and posts the means and peaks."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        gateway_id: str,
        in_flight: Callable[[], dict[tuple[str, str], int]],
        deployments: Callable[[], Iterable[tuple[str, str]]],
        log: JsonLog,
        interval_s: float = 1.0,
    ) -> None:
        self.url = f"{url}/internal/gateway-load/"
        self.headers = {"authorization": f"Bearer {secret.decode()}", "x-studio-gateway": gateway_id}
        self.gateway_id = gateway_id
        self.in_flight = in_flight
        self.deployments = deployments
        self.log = log
        self.interval_s = interval_s
        self._failing = False

    def report(self, samples: list[dict[tuple[str, str], int]], window_s: float) -> dict:
        """The report body for `samples` taken over `window_s` seconds."""
        keys = set(self.deployments())
        for sample in samples:
            keys.update(sample)
        rows = []
        for endpoint, deployment in sorted(keys):
            counts = [sample.get((endpoint, deployment), 0) for sample in samples] or [0]
            rows.append(
                {
                    "endpoint": endpoint,
                    "deployment": deployment,
                    "in_flight": round(sum(counts) / len(counts), 3),
                    "peak": max(counts),
                }
            )
        return {"gateway": self.gateway_id, "window_s": round(window_s, 3), "deployments": rows}

    async def run(self) -> None:
        """Sample and report forever (cancel to stop)."""
        pause = self.interval_s / SAMPLES_PER_REPORT
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0)) as client:
            while True:
                started = time.monotonic()
                samples = []
                for _ in range(SAMPLES_PER_REPORT):
                    samples.append(self.in_flight())
                    await asyncio.sleep(pause)
                await self._send(client, self.report(samples, time.monotonic() - started))

    async def _send(self, client: httpx.AsyncClient, body: dict) -> None:
        try:
            answer = await client.post(self.url, json=body, headers=self.headers)
            ok = answer.status_code == 204
            problem = f"status {answer.status_code}"
        except httpx.HTTPError as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        if not ok and not self._failing:
            self.log.warning(f"Load report not accepted ({problem}); retrying", event="load_report_error")
        elif ok and self._failing:
            self.log.info("Load reports accepted again", event="load_report")
        self._failing = not ok
