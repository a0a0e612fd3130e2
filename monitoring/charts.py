"""Plotly figures of one endpoint's metrics, built on the server; the page only draws them with plotly.js.

Figures are returned as plain JSON-ready dicts (`Figure.to_plotly_json()` through plotly's own encoder),
which the template embeds with `json_script`. Every line also draws its points: a busy minute between
empty ones (null latencies, no line to either side) is a point, never nothing. Each deployment has one
colour (monitoring.palette) in every chart, as on the endpoint's traffic card.
"""

from __future__ import annotations

import json
from datetime import datetime

import plotly.graph_objects as go
from plotly.io import to_json

from monitoring.forms import BUCKET_LABELS
from monitoring.layout import UNROUTED
from monitoring.models import ResourceMinute
from monitoring.palette import deployment_colours
from monitoring.queries import INTERVALS, Bucket, endpoint_metrics, floor_time, minute_rows
from monitoring.resources import resource_series

_LAYOUT = {
    "margin": {"l": 64, "r": 16, "t": 36, "b": 48},
    "height": 300,
    "hovermode": "x unified",
    # Shown with one trace too: it names the deployment a lone line belongs to.
    "showlegend": True,
    "legend": {"orientation": "h", "y": -0.28},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
}
_LINES = {"mode": "lines+markers", "marker": {"size": 5}, "connectgaps": False}
# One dash per latency percentile; the colour is the deployment's.
_PERCENTILES = (("p50", "solid"), ("p90", "dash"), ("p99", "dot"))


def _layout(figure: go.Figure, title: str, y_title: str, **extra) -> None:
    figure.update_layout(
        **_LAYOUT,
        title={"text": title, "x": 0},
        xaxis={"type": "date", "gridcolor": "#e5e7eb", "title": {"text": "Time (UTC)"}},
        yaxis={"rangemode": "tozero", "gridcolor": "#e5e7eb", "title": {"text": y_title}},
        **extra,
    )


def _plain(figure: go.Figure) -> dict:
    return json.loads(to_json(figure, validate=False))


def _times(series: list[dict]) -> list[str]:
    return [point["t"] for point in series]


def sampled_in(endpoint: str, start: datetime, end: datetime) -> list[str]:
    """Deployments whose replicas were sampled in the range."""
    names = (
        ResourceMinute.objects.filter(endpoint=endpoint, minute__gte=start, minute__lt=end)
        .values_list("deployment", flat=True)
        .distinct()
    )
    return sorted(set(names))


def traffic_by_deployment(
    endpoint: str, start: datetime, end: datetime, interval: str
) -> dict[str, list[dict]]:
    """Each deployment's series (as the metrics API gives one deployment's), from one query over the
    endpoint's minutes: every deployment with traffic in the range, deleted ones too, and requests no
    deployment got; by name."""
    step = INTERVALS[interval]
    first = floor_time(start, step)
    buckets: dict[str, dict[datetime, Bucket]] = {}
    for row in minute_rows(endpoint, None, first, end).iterator(chunk_size=2000):
        buckets.setdefault(row.deployment, {}).setdefault(floor_time(row.minute, step), Bucket()).add(row)
    times = []
    t = first
    while t < end:
        times.append(t)
        t += step
    return {
        name: [per_time.get(t, Bucket()).point(t) for t in times]
        for name, per_time in sorted(buckets.items())
    }


def label(deployment: str) -> str:
    return "not routed" if deployment == UNROUTED else deployment


def requests_figure(per_deployment: dict[str, list[dict]], bucket: str, colours: dict[str, str]) -> dict:
    """Requests per bucket, one line per deployment; mirrored copies dotted and named apart."""
    figure = go.Figure()
    for name, series in per_deployment.items():
        line = {"color": colours[name]}
        figure.add_trace(
            go.Scatter(
                x=_times(series), y=[p["requests"] for p in series], name=label(name), line=line, **_LINES
            )
        )
        if any(p["mirrored_requests"] for p in series):
            figure.add_trace(
                go.Scatter(
                    x=_times(series),
                    y=[p["mirrored_requests"] for p in series],
                    name=f"{label(name)} (mirrored)",
                    line={**line, "dash": "dot"},
                    **_LINES,
                )
            )
    _layout(figure, f"Requests per {bucket}", f"Requests per {bucket}")
    return _plain(figure)


def latency_figure(per_deployment: dict[str, list[dict]], colours: dict[str, str]) -> dict:
    """Latency percentiles of each deployment's live requests, per bucket, from merged histograms."""
    figure = go.Figure()
    for name, series in per_deployment.items():
        for q, dash in _PERCENTILES:
            figure.add_trace(
                go.Scatter(
                    x=_times(series),
                    y=[p[f"latency_{q}_ms"] for p in series],
                    name=f"{label(name)} {q}",
                    legendgroup=name,
                    line={"color": colours[name], "dash": dash},
                    **_LINES,
                )
            )
    _layout(figure, "Latency percentiles", "Latency (ms)")
    return _plain(figure)


def errors_figure(series: list[dict], bucket: str) -> dict:
    figure = go.Figure()
    figure.add_trace(
        go.Bar(x=_times(series), y=[p["errors_4xx"] for p in series], name="4xx", marker_color="#f59e0b")
    )
    figure.add_trace(
        go.Bar(x=_times(series), y=[p["errors_5xx"] for p in series], name="5xx", marker_color="#dc2626")
    )
    _layout(figure, f"Errors per {bucket} by status class", f"Errors per {bucket}", barmode="stack")
    return _plain(figure)


def resource_figure(
    per_deployment: dict[str, list[dict]], key: str, title: str, y_title: str, colours: dict[str, str]
) -> dict:
    """One resource figure (`cpu_pct` or `memory_mib`) with one line per deployment."""
    figure = go.Figure()
    for name, series in per_deployment.items():
        figure.add_trace(
            go.Scatter(
                x=_times(series),
                y=[p[key] for p in series],
                name=label(name),
                line={"color": colours[name]},
                **_LINES,
            )
        )
    _layout(figure, title, y_title)
    return _plain(figure)


def _chart(name: str, title: str, figure: dict) -> dict:
    return {"name": name, "title": title, "script_id": f"chart-{name}-figure", "figure": figure}


def endpoint_charts(
    endpoint: str, deployment: str | None, start: datetime, end: datetime, interval: str
) -> dict:
    """The monitoring tab's figures and totals for one endpoint (or one of its deployments): traffic
    figures when there were requests, resource figures when replicas were sampled."""
    bucket = BUCKET_LABELS[interval]
    overall = endpoint_metrics(endpoint, deployment, start, end, interval)
    if deployment:
        per_deployment = {deployment: overall["series"]}
    else:
        per_deployment = traffic_by_deployment(endpoint, start, end, interval)
    sampled = [deployment] if deployment else sampled_in(endpoint, start, end)
    colours = deployment_colours(endpoint, [*per_deployment, *sampled])
    resources = resource_series(endpoint, sampled, start, end, interval)
    has_resources = any(p["memory_mib"] is not None for series in resources.values() for p in series)
    return {
        "metrics": overall,
        "has_data": bool(overall["totals"]["requests"] or overall["totals"]["mirrored_requests"]),
        "figures": [
            _chart("requests", "Requests by deployment", requests_figure(per_deployment, bucket, colours)),
            _chart("latency", "Latency percentiles by deployment", latency_figure(per_deployment, colours)),
            _chart("errors", "Errors by status class", errors_figure(overall["series"], bucket)),
        ],
        "resource_figures": [
            _chart(
                "cpu",
                "Replica CPU by deployment",
                resource_figure(resources, "cpu_pct", "CPU", "CPU (% of one core)", colours),
            ),
            _chart(
                "memory",
                "Replica memory by deployment",
                resource_figure(resources, "memory_mib", "Memory", "Memory (MiB)", colours),
            ),
        ]
        if has_resources
        else [],
    }
