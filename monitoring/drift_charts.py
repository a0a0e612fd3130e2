"""Plotly figures of the Drift tab, built on the server as the monitoring tab's are (monitoring.charts).

- Scores over time: one line per feature on the monitor's primary metric, one point per run, the worst
  features (by their latest score) first in the legend, and the threshold as a dashed line.
- One feature's histograms: the baseline's and the latest window's share per baseline bin, overlaid.
"""

from __future__ import annotations

import json

import plotly.graph_objects as go
from plotly.io import to_json

from monitoring.models import Monitor, MonitorRun
from monitoring.palette import PALETTE

# Lines past this many make the chart unreadable; the table below it lists every feature.
MAX_LINES = 12
_LAYOUT = {
    "margin": {"l": 64, "r": 16, "t": 56, "b": 48},
    "height": 320,
    "showlegend": True,
    # Above the plot, right: below it the legend would cover the rotated bin labels.
    "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
}


def _plain(figure: go.Figure) -> dict:
    return json.loads(to_json(figure, validate=False))


def worst_features(run: MonitorRun, metric: str) -> list[str]:
    """The run's features and prediction columns, highest score on `metric` first (unscored last)."""
    scores = {name: result["scores"].get(metric) for name, result in run.details.items()}
    return sorted(scores, key=lambda name: (scores[name] is None, -(scores[name] or 0.0), name))


def scores_figure(monitor: Monitor, runs: list[MonitorRun], order: list[str]) -> dict:
    """Each feature's primary-metric score per run (oldest to newest), worst features first."""
    metric = monitor.primary_metric
    figure = go.Figure()
    times = [run.window_end.isoformat() for run in runs]
    for index, name in enumerate(order[:MAX_LINES]):
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[run.details.get(name, {}).get("scores", {}).get(metric) for run in runs],
                name=name,
                mode="lines+markers",
                marker={"size": 6},
                line={"color": PALETTE[index % len(PALETTE)]},
                connectgaps=False,
            )
        )
    threshold = monitor.metrics[metric]
    figure.add_hline(y=threshold, line={"dash": "dash", "color": "#dc2626"}, annotation_text="threshold")
    figure.update_layout(
        **_LAYOUT,
        hovermode="x unified",
        title={"text": f"{metric} per feature, by window end", "x": 0},
        xaxis={"type": "date", "gridcolor": "#e5e7eb", "title": {"text": "Window end (UTC)"}},
        yaxis={
            "rangemode": "tozero",
            "gridcolor": "#e5e7eb",
            "title": {"text": f"{metric} (threshold {threshold:g})"},
        },
    )
    return _plain(figure)


def histogram_figure(name: str, result: dict) -> dict:
    """The baseline's and the window's share of rows per baseline bin (or category) of one feature."""
    histogram = result["histogram"]
    figure = go.Figure()
    for label, counts, colour in (
        ("baseline", histogram["baseline"], "#9ca3af"),
        ("current window", histogram["current"], PALETTE[0]),
    ):
        total = sum(counts) or 1
        figure.add_trace(
            go.Bar(
                x=histogram["labels"],
                y=[100.0 * count / total for count in counts],
                name=label,
                marker={"color": colour},
                opacity=0.6,
            )
        )
    figure.update_layout(
        **_LAYOUT,
        barmode="overlay",
        hovermode="x",
        title={"text": f"{name}: baseline vs current", "x": 0},
        xaxis={
            "type": "category",
            "title": {"text": "bin (baseline deciles)" if result["kind"] == "numeric" else "category"},
        },
        yaxis={"rangemode": "tozero", "gridcolor": "#e5e7eb", "title": {"text": "share of rows (%)"}},
    )
    return _plain(figure)
