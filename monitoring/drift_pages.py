"""The Drift tab of an endpoint: its monitors, each one's scores over time, and one feature's histograms.

The page reads what runs stored (monitoring.monitors); it computes nothing. `?monitor=` picks a monitor
(the first by default) and `?feature=` a feature (the worst of the latest run by default), so every view
has its own URL.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views import View

from endpoints.models import OnlineEndpoint
from endpoints.tables import BADGE_FOR_COLOUR
from endpoints.views import EndpointTabMixin
from monitoring.choices import MonitorRunStateChoices
from monitoring.drift_charts import histogram_figure, scores_figure, worst_features
from studio.views import StudioPageMixin

# Runs drawn over time; older ones stay in the API (`.../monitors/{id}/runs/`).
RUNS_SHOWN = 100


class OnlineEndpointDriftView(EndpointTabMixin, StudioPageMixin, View):
    template_name = "monitoring/onlineendpoint_drift.html"
    tab = "drift"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        monitors = list(endpoint.monitors.select_related("deployment").order_by("id"))
        chosen = request.GET.get("monitor", "")
        monitor = next((m for m in monitors if str(m.pk) == chosen), monitors[0] if monitors else None)
        context = {"monitors": monitors, "monitor": monitor, "figures": [], "rows": []}
        if monitor is not None:
            context.update(self.monitor_context(monitor, request.GET.get("feature", "")))
        return render(request, self.template_name, self.tab_context(endpoint, **context))

    def monitor_context(self, monitor, feature: str) -> dict:
        runs = list(monitor.runs.order_by("-started_at", "-id")[:RUNS_SHOWN])[::-1]
        scored = [run for run in runs if run.state != MonitorRunStateChoices.FAILED]
        latest = runs[-1] if runs else None
        last_scored = scored[-1] if scored else None
        if last_scored is None:
            return {"latest": latest, "latest_badge": _badge(latest)}
        order = worst_features(last_scored, monitor.primary_metric)
        feature = feature if feature in last_scored.details else order[0]
        thresholds = monitor.metrics
        rows = []
        for name in order:
            result = last_scored.details[name]
            rows.append(
                {
                    "name": name,
                    "result": result,
                    "scores": [
                        (
                            m,
                            result["scores"].get(m),
                            result["scores"].get(m) is not None and result["scores"][m] > t,
                        )
                        for m, t in thresholds.items()
                    ],
                    "drifted": name in last_scored.breached,
                    "selected": name == feature,
                }
            )
        figures = [
            {"name": "scores", "title": "Scores over time", "figure": scores_figure(monitor, scored, order)},
            {
                "name": "histogram",
                "title": f"Histograms of {feature}",
                "figure": histogram_figure(feature, last_scored.details[feature]),
            },
        ]
        for chart in figures:
            chart["script_id"] = f"drift-{chart['name']}-figure"
        return {
            "latest": latest,
            "latest_badge": _badge(latest),
            "scored": last_scored,
            "feature": feature,
            "rows": rows,
            "metrics": list(thresholds.items()),
            "figures": figures,
        }


def _badge(run) -> str | None:
    if run is None:
        return None
    return BADGE_FOR_COLOUR.get(MonitorRunStateChoices.colour(run.state), "muted")
