"""Monitoring pages: an endpoint's monitoring tab and the /monitoring/ overview of every endpoint.

Both render the whole page, or for an htmx request (live refresh, filter changes) only their panel.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views import View

from endpoints.models import OnlineEndpoint
from endpoints.views import EndpointTabMixin
from monitoring.charts import endpoint_charts
from monitoring.collected import collected_objects, download_name, stream_objects
from monitoring.forms import BUCKETS, RANGES, TimeRangeForm
from monitoring.layout import PAYLOAD_KINDS
from monitoring.queries import summaries
from studio.objectstore import store_from_url
from studio.views import StudioPageMixin

REFRESH_SECONDS = 30
RECENT_COLLECTED = 20
SORTS = {
    "name": lambda s: s.endpoint,
    "requests": lambda s: s.requests,
    "errors": lambda s: s.errors,
    "error_rate": lambda s: s.error_rate or 0.0,
    "p50": lambda s: s.latency_p50_ms or 0.0,
    "p99": lambda s: s.latency_p99_ms or 0.0,
}


class OnlineEndpointMonitoringView(EndpointTabMixin, StudioPageMixin, View):
    """Requests and latency percentiles by deployment (live and mirrored apart), errors by status class,
    and the replicas' CPU and memory, in buckets of the chosen size."""

    template_name = "monitoring/onlineendpoint_monitoring.html"
    partial_template = "monitoring/inc/charts_panel.html"
    tab = "monitoring"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        form = TimeRangeForm(request.GET or None)
        window = form.window()
        deployment = form.cleaned_data.get("deployment") if form.is_valid() else None
        charts = endpoint_charts(endpoint.name, deployment or None, window.start, window.end, window.interval)
        deployments = sorted(endpoint.deployments.values_list("name", flat=True))
        context = self.tab_context(
            endpoint,
            form=form,
            window=window,
            deployment=deployment,
            deployments=deployments,
            has_deployments=bool(deployments),
            ranges=[(key, text) for key, (text, _, _) in RANGES.items()],
            buckets=list(BUCKETS.items()),
            refresh_seconds=REFRESH_SECONDS,
            collected=list(collected_objects(endpoint.name, deployment=deployment)[:RECENT_COLLECTED]),
            collecting=[d.name for d in endpoint.deployments.all() if d.data_collector],
            payload_kinds=PAYLOAD_KINDS,
            **charts,
        )
        template = self.partial_template if request.htmx and not request.htmx.boosted else self.template_name
        return render(request, template, context)


class MonitoringOverviewView(StudioPageMixin, View):
    """Every endpoint's traffic, errors and latency over the chosen range, sortable by any column."""

    template_name = "monitoring/overview.html"
    partial_template = "monitoring/inc/overview_table.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = TimeRangeForm(request.GET or None)
        window = form.window()
        names = list(OnlineEndpoint.objects.order_by("name").values_list("name", flat=True))
        rows = summaries(names, window.start, window.end)
        sort = request.GET.get("sort", "-requests")
        key = sort.lstrip("-")
        if key not in SORTS:
            sort, key = "-requests", "requests"
        rows.sort(key=SORTS[key], reverse=sort.startswith("-"))
        query = request.GET.copy()
        query.pop("sort", None)
        columns = [
            ("name", "Endpoint"),
            ("requests", "Requests"),
            ("errors", "Errors"),
            ("error_rate", "Error rate"),
            ("p50", "Latency p50"),
            ("p99", "Latency p99"),
        ]
        headers = []
        for column, text in columns:
            descending_first = column != "name"
            if sort == column:
                next_sort = f"-{column}"
            elif sort == f"-{column}":
                next_sort = column
            else:
                next_sort = f"-{column}" if descending_first else column
            query["sort"] = next_sort
            headers.append(
                {
                    "label": text,
                    "url": f"?{query.urlencode()}",
                    "sorted": "desc" if sort == f"-{column}" else "asc" if sort == column else None,
                }
            )
        context = {
            "form": form,
            "window": window,
            "rows": rows,
            "headers": headers,
            "sort": sort,
            "ranges": [(k, text) for k, (text, _, _) in RANGES.items()],
            "refresh_seconds": REFRESH_SECONDS,
        }
        template = self.partial_template if request.htmx and not request.htmx.boosted else self.template_name
        return render(request, template, context)


class CollectedDataDownloadView(StudioPageMixin, View):
    """One .jsonl.gz of an endpoint's sampled payloads of one kind over the range (whole hours)."""

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        form = TimeRangeForm(request.GET or None)
        window = form.window()
        kind = request.GET.get("kind", PAYLOAD_KINDS[0])
        if kind not in PAYLOAD_KINDS:
            return HttpResponse(
                f"There is no collected kind {kind!r}: use one of {', '.join(PAYLOAD_KINDS)}.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        deployment = form.cleaned_data.get("deployment") if form.is_valid() else None
        objects = collected_objects(
            endpoint.name, kind=kind, deployment=deployment, start=window.start, end=window.end
        )
        keys = list(objects.order_by("hour", "key").values_list("key", flat=True))
        store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
        response = StreamingHttpResponse(stream_objects(store, keys), content_type="application/gzip")
        filename = download_name(endpoint.name, kind, window.start, window.end)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
