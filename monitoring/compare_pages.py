"""The Compare tab of an endpoint: how a mirror deployment's answers compare with the live ones, over
time (agreement %, live and shadow p99) and in total, with the latest disagreements and replays.

`?deployment=` picks the deployment compared (by default the one the endpoint mirrors to, else the
latest one compared); the range picker is the monitoring tab's, so every view has its own URL. An htmx
request (filter change, the refresh of a relative range) gets the panel alone.
"""

from __future__ import annotations

import plotly.graph_objects as go
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views import View

from endpoints.models import OnlineEndpoint
from endpoints.views import EndpointTabMixin
from monitoring import comparison
from monitoring.drift_charts import _LAYOUT, _plain
from monitoring.forms import BUCKETS, RANGES, TimeRangeForm
from monitoring.models import ComparisonEvent
from monitoring.palette import PALETTE
from monitoring.queries import INTERVALS
from studio.views import StudioPageMixin

REFRESH_SECONDS = 30
DISAGREEMENTS_SHOWN = 10
REPLAYS_SHOWN = 10


def agreement_figure(points: list[dict]) -> dict:
    """Agreement % per bucket (gaps where nothing was compared), with the compared count on hover."""
    figure = go.Figure(
        go.Scatter(
            x=[p["t"] for p in points],
            y=[p["agreement_pct"] for p in points],
            customdata=[p["compared"] for p in points],
            hovertemplate="%{y:.3g}% of %{customdata} compared<extra></extra>",
            name="agreement",
            mode="lines+markers",
            marker={"size": 6},
            line={"color": PALETTE[0]},
            connectgaps=False,
        )
    )
    figure.update_layout(
        **_LAYOUT,
        hovermode="x unified",
        title={"text": "Agreement with the live answers", "x": 0},
        xaxis={"type": "date", "gridcolor": "#e5e7eb"},
        yaxis={"range": [0, 100.5], "gridcolor": "#e5e7eb", "title": {"text": "agreeing (%)"}},
    )
    return _plain(figure)


def latency_figure(points: list[dict], deployment: str) -> dict:
    """The replicas' p99 answer time per bucket, live and shadow."""
    figure = go.Figure()
    for key, label, colour, dash in (
        ("live_p99_ms", "live p99", "#6b7280", "solid"),
        ("shadow_p99_ms", f"{deployment} (shadow) p99", PALETTE[1], "dot"),
    ):
        figure.add_trace(
            go.Scatter(
                x=[p["t"] for p in points],
                y=[p[key] for p in points],
                name=label,
                mode="lines+markers",
                marker={"size": 6},
                line={"color": colour, "dash": dash},
                connectgaps=False,
            )
        )
    figure.update_layout(
        **_LAYOUT,
        hovermode="x unified",
        title={"text": "p99 answer time, live and shadow", "x": 0},
        xaxis={"type": "date", "gridcolor": "#e5e7eb"},
        yaxis={"rangemode": "tozero", "gridcolor": "#e5e7eb", "title": {"text": "ms"}},
    )
    return _plain(figure)


class OnlineEndpointCompareView(EndpointTabMixin, StudioPageMixin, View):
    template_name = "monitoring/onlineendpoint_compare.html"
    partial_template = "monitoring/inc/compare_panel.html"
    tab = "compare"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        form = TimeRangeForm(request.GET or None)
        window = form.window()
        deployments = sorted(endpoint.deployments.values_list("name", flat=True))
        mirrored = [d for d, share in (endpoint.mirror_traffic or {}).items() if share]
        deployment = request.GET.get("deployment", "")
        if deployment not in deployments:
            latest = ComparisonEvent.objects.filter(endpoint=endpoint.name, replay__isnull=True).order_by(
                "-started_at"
            )
            deployment = (mirrored or list(latest.values_list("deployment", flat=True)[:1]) or [""])[0]
        context = {"deployment": deployment, "figures": [], "report": None}
        if deployment:
            report = comparison.comparison_report(
                endpoint.name, deployment, window.start, window.end, sample=DISAGREEMENTS_SHOWN
            )
            step = INTERVALS[window.interval]
            points = comparison.comparison_series(endpoint.name, deployment, window.start, window.end, step)
            context["report"] = report
            if report["compared"]:
                context["figures"] = [
                    {"name": "agreement", "title": "Agreement %", "figure": agreement_figure(points)},
                    {
                        "name": "latency",
                        "title": "p99 live and shadow",
                        "figure": latency_figure(points, deployment),
                    },
                ]
                for chart in context["figures"]:
                    chart["script_id"] = f"compare-{chart['name']}-figure"
        context = self.tab_context(
            endpoint,
            form=form,
            window=window,
            deployments=deployments,
            mirrored=mirrored,
            ranges=[(key, text) for key, (text, _, _) in RANGES.items()],
            buckets=list(BUCKETS.items()),
            refresh_seconds=REFRESH_SECONDS,
            settings=comparison.policy(endpoint),
            replays=list(endpoint.replays.order_by("-created_at")[:REPLAYS_SHOWN]),
            **context,
        )
        template = self.partial_template if request.htmx and not request.htmx.boosted else self.template_name
        return render(request, template, context)
