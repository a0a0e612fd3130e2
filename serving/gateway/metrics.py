"""The gateway's own Prometheus metrics: plain dicts of counters, rendered as text on demand.

One process, one event loop: no locks. Labels come only from the route table (never from a request's
URL), so a client cannot grow the series without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


class GatewayMetrics:
    """Counters the app updates on every request; `render` formats them with the live gauges."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.mirrored: dict[tuple[str, str, str], int] = {}
        self.mirror_dropped: dict[tuple[str, str], int] = {}
        self.ejections = 0
        self.retries = 0
        self.in_flight = 0

    def observe(self, endpoint: str, deployment: str, status: int, seconds: float) -> None:
        """Count one answered client request and its latency."""
        key = (endpoint, deployment, _CLASSES[min(status // 100, 5)])
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((endpoint, deployment))
        if histogram is None:
            histogram = self.latency[(endpoint, deployment)] = Histogram()
        histogram.observe(seconds)

    def observe_mirror(self, endpoint: str, deployment: str, status: int) -> None:
        key = (endpoint, deployment, _CLASSES[min(status // 100, 5)])
        self.mirrored[key] = self.mirrored.get(key, 0) + 1

    def drop_mirror(self, endpoint: str, deployment: str) -> None:
        key = (endpoint, deployment)
        self.mirror_dropped[key] = self.mirror_dropped.get(key, 0) + 1

    def render(
        self,
        gauges: Iterable[tuple[str, str, str, float]],
        counters: Iterable[tuple[str, str, float]] = (),
    ) -> str:
        """Prometheus text format. `gauges`: (name, help, labels text, value) and `counters`: (name, help,
        value), counted by the caller."""
        lines: list[str] = []
        family = _family(lines)
        family("studio_gateway_requests_total", "counter", "Scoring requests answered, by status class.")
        for (endpoint, deployment, code), value in sorted(self.requests.items()):
            lines.append(
                f"studio_gateway_requests_total{{{_labels(endpoint, deployment)},code={_q(code)}}} {value}"
            )
        family("studio_gateway_request_duration_seconds", "histogram", "Time to answer a scoring request.")
        for (endpoint, deployment), hist in sorted(self.latency.items()):
            labels = _labels(endpoint, deployment)
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'studio_gateway_request_duration_seconds_bucket{{{labels},le="{le}"}} {running}'
                )
            lines.append(f"studio_gateway_request_duration_seconds_sum{{{labels}}} {hist.total}")
            lines.append(f"studio_gateway_request_duration_seconds_count{{{labels}}} {hist.count}")
        family(
            "studio_gateway_mirrored_requests_total", "counter", "Mirrored copies answered, by status class."
        )
        for (endpoint, deployment, code), value in sorted(self.mirrored.items()):
            labels = f"{_labels(endpoint, deployment)},code={_q(code)}"
            lines.append(f"studio_gateway_mirrored_requests_total{{{labels}}} {value}")
        family(
            "studio_gateway_mirror_dropped_total", "counter", "Mirrored copies dropped: queue full or busy."
        )
        for (endpoint, deployment), value in sorted(self.mirror_dropped.items()):
            lines.append(f"studio_gateway_mirror_dropped_total{{{_labels(endpoint, deployment)}}} {value}")
        family("studio_gateway_replica_ejections_total", "counter", "Replicas taken out after a failure.")
        lines.append(f"studio_gateway_replica_ejections_total {self.ejections}")
        family("studio_gateway_retries_total", "counter", "Requests retried on another replica.")
        lines.append(f"studio_gateway_retries_total {self.retries}")
        family("studio_gateway_in_flight", "gauge", "Scoring requests being handled now.")
        lines.append(f"studio_gateway_in_flight {self.in_flight}")
        for name, help_text, value in counters:
            family(name, "counter", help_text)
            lines.append(f"{name} {value}")
        for name, help_text, labels, value in gauges:
            family(name, "gauge", help_text)
            lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _family(lines: list[str]) -> Callable[[str, str, str], None]:
    seen: set[str] = set()

    def add(name: str, kind: str, help_text: str) -> None:
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

    return add


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _labels(endpoint: str, deployment: str) -> str:
    return f"endpoint={_q(endpoint)},deployment={_q(deployment)}"
