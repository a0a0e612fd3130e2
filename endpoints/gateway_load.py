"""What the gateways report of their load (serving.gateway.load), kept for the autoscaler.

Each live gateway posts, about once a second, the mean and peak number of requests each deployment had in
flight there. The latest report of each gateway is kept in Studio's cache (shared by every process of an
installation: a file cache under STUDIO_HOME, or Redis) for a few report intervals; `in_flight()` sums the
fresh reports of the gateways that are alive. A gateway that stops reporting stops counting: its load is
not made up.
"""

from __future__ import annotations

import json
import time

from django.core.cache import cache
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from endpoints import routetable
from endpoints.models import GatewayAck

KEY = "studio:gateway-load:{}"
# A report older than this is stale: the gateway stopped, or cannot reach the control plane.
FRESH_S = 5.0
MAX_BODY = 1 << 20


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _rows(body) -> dict[str, list[float]] | None:
    """{"endpoint/deployment": [mean, peak]} from a report body; None when it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("deployments"), list):
        return None
    rows = {}
    for row in body["deployments"]:
        try:
            key = f"{row['endpoint']}/{row['deployment']}"
            mean, peak = float(row["in_flight"]), float(row["peak"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (0 <= mean < 1e9 and 0 <= peak < 1e9) or len(key) > 200:
            return None
        rows[key] = [mean, peak]
    return rows


@csrf_exempt
@require_POST
def gateway_load_view(request):
    """Keep a gateway's load report: 204; 401 without the gateway secret, 400 for a malformed report."""
    if not routetable.authorised(request):
        return _error(401, "not_authenticated", "Wrong gateway secret.")
    gateway_id = request.headers.get(routetable.GATEWAY_HEADER, "")
    if not routetable.valid_gateway_id(gateway_id):
        return _error(400, "invalid", "Name the gateway in X-Studio-Gateway.")
    if len(request.body) > MAX_BODY:
        return _error(413, "too_large", "A load report is at most 1 MiB.")
    try:
        rows = _rows(json.loads(request.body))
    except ValueError:
        rows = None
    if rows is None:
        return _error(
            400, "invalid", "A load report is {deployments: [{endpoint, deployment, in_flight, peak}]}."
        )
    cache.set(KEY.format(gateway_id), {"at": time.time(), "rows": rows}, timeout=int(FRESH_S * 4))
    return HttpResponse(status=204)


def in_flight(now: float | None = None) -> dict[tuple[str, str], float]:
    """The mean requests in flight per (endpoint, deployment), summed over the live gateways' fresh
    reports."""
    now = time.time() if now is None else now
    gateways = GatewayAck.objects.filter(seen_at__gte=routetable.live_since()).values_list(
        "gateway_id", flat=True
    )
    reports = cache.get_many([KEY.format(gateway) for gateway in gateways])
    total: dict[tuple[str, str], float] = {}
    for report in reports.values():
        if not isinstance(report, dict) or now - float(report.get("at", 0)) > FRESH_S:
            continue
        for key, (mean, _peak) in report["rows"].items():
            endpoint, _, deployment = key.partition("/")
            total[endpoint, deployment] = total.get((endpoint, deployment), 0.0) + mean
    return total
