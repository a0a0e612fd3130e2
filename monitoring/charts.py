"""Plotly figures of one endpoint's metrics, built on the server; the page only draws them with plotly.js.

Figures are returned as plain JSON-ready dicts (`Figure.to_plotly_json()` through plotly's own encoder),
which the template embeds with `json_script`.
"""

from __future__ import annotations

import json
from datetime import datetime

import plotly.graph_objects as go
from plotly.io import to_json

from monitoring.layout import UNROUTED
from monitoring.models import MetricMinute
from monitoring.queries import endpoint_metrics

_LAYOUT = {
    "margin": {"l": 48, "r": 16, "t": 36, "b": 36},
    "height": 280,
    "hovermode": "x unified",
    "legend": {"orientation": "h", "y": -0.2},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "xaxis": {"type": "date", "gridcolor": "#e5e7eb"},
    "yaxis": {"rangemode": "tozero", "gridcolor": "#e5e7eb"},
}


def _plain(figure: go.Figure) -> dict:
    return json.loads(to_json(figure, validate=False))


def _times(series: list[dict]) -> list[str]:
    return [point["t"] for point in series]


def deployments_seen(endpoint: str, start: datetime, end: datetime) -> list[str]:
    """Deployments with traffic in the range, including deleted ones and requests no deployment got."""
    names = (
        MetricMinute.objects.filter(endpoint=endpoint, minute__gte=start, minute__lt=end)
        .values_list("deployment", flat=True)
        .distinct()
    )
    return sorted(set(names))


def label(deployment: str) -> str:
    return "not routed" if deployment == UNROUTED else deployment


def requests_figure(per_deployment: dict[str, list[dict]], interval: str) -> dict:
    """Requests per interval, one line per deployment; mirrored copies dashed and named apart."""
    figure = go.Figure()
    for name, series in per_deployment.items():
        figure.add_trace(
            go.Scatter(x=_times(series), y=[p["requests"] for p in series], name=label(name), mode="lines")
        )
        if any(p["mirrored_requests"] for p in series):
            figure.add_trace(
                go.Scatter(
                    x=_times(series),
                    y=[p["mirrored_requests"] for p in series],
                    name=f"{label(name)} (mirrored)",
                    mode="lines",
                    line={"dash": "dot"},
                )
            )
    figure.update_layout(**_LAYOUT, title={"text": f"Requests per {interval}", "x": 0})
    return _plain(figure)


def latency_figure(series: list[dict]) -> dict:
    figure = go.Figure()
    for q in ("p50", "p90", "p99"):
        figure.add_trace(
            go.Scatter(
                x=_times(series),
                y=[p[f"latency_{q}_ms"] for p in series],
                name=q,
                mode="lines",
                connectgaps=False,
            )
        )
    figure.update_layout(**_LAYOUT, title={"text": "Latency (ms)", "x": 0})
    return _plain(figure)


def errors_figure(series: list[dict], interval: str) -> dict:
    figure = go.Figure()
    figure.add_trace(
        go.Bar(x=_times(series), y=[p["errors_4xx"] for p in series], name="4xx", marker_color="#f59e0b")
    )
    figure.add_trace(
        go.Bar(x=_times(series), y=[p["errors_5xx"] for p in series], name="5xx", marker_color="#dc2626")
    )
    figure.update_layout(
        **_LAYOUT, barmode="stack", title={"text": f"Errors per {interval} by status class", "x": 0}
    )
    return _plain(figure)


def _chart(name: str, title: str, figure: dict) -> dict:
    return {"name": name, "title": title, "script_id": f"chart-{name}-figure", "figure": figure}


def endpoint_charts(
    endpoint: str, deployment: str | None, start: datetime, end: datetime, interval: str
) -> dict:
    """The monitoring tab's figures and totals for one endpoint (or one of its deployments)."""
    overall = endpoint_metrics(endpoint, deployment, start, end, interval)
    names = [deployment] if deployment else deployments_seen(endpoint, start, end)
    per_deployment = {
        name: endpoint_metrics(endpoint, name, start, end, interval)["series"] for name in names
    }
    return {
        "metrics": overall,
        "has_data": bool(overall["totals"]["requests"] or overall["totals"]["mirrored_requests"]),
        "figures": [
            _chart("requests", "Requests by deployment", requests_figure(per_deployment, interval)),
            _chart("latency", "Latency percentiles", latency_figure(overall["series"])),
            _chart("errors", "Errors by status class", errors_figure(overall["series"], interval)),
        ],
    }
