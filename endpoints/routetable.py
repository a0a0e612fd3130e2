"""The route table the gateway reads (docs/route-table.md): built from the database on request."""

import asyncio
import hmac

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from endpoints import credentials
from endpoints.choices import ProvisioningStateChoices, ReplicaStateChoices
from endpoints.models import OnlineEndpoint, RouteTableVersion

MAX_WAIT_S = 60
POLL_INTERVAL_S = 0.05
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024


def build() -> dict:
    """The whole table, at the version current when it was read."""
    version = RouteTableVersion.current()
    secret = credentials.gateway_secret()
    endpoints = {}
    queryset = OnlineEndpoint.objects.exclude(
        provisioning_state=ProvisioningStateChoices.DELETING
    ).prefetch_related("deployments__replicas")
    for endpoint in queryset:
        deployments = {}
        for deployment in endpoint.deployments.all():
            if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
                continue
            settings = dict(deployment.request_settings)
            settings.setdefault("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
            deployments[deployment.name] = {
                "replicas": [
                    {"id": r.replica_id, "url": r.url, "ready": r.state == ReplicaStateChoices.READY}
                    for r in deployment.replicas.all()
                    if r.url and r.state != ReplicaStateChoices.STOPPING
                ],
                "request_settings": settings,
                "data_collector": deployment.data_collector,
            }
        endpoints[endpoint.name] = {
            "auth_mode": endpoint.auth_mode,
            "key_digests": [
                credentials.key_digest(credentials.decrypt(endpoint.primary_key), secret),
                credentials.key_digest(credentials.decrypt(endpoint.secondary_key), secret),
            ],
            "traffic": endpoint.traffic,
            "mirror_traffic": endpoint.mirror_traffic,
            "cors_origins": endpoint.cors_origins,
            "deployments": deployments,
        }
    return {
        "version": version,
        "generated_at": timezone.now().isoformat(),
        "token": {
            "algorithm": "EdDSA",
            "issuer": credentials.TOKEN_ISSUER,
            "public_key": credentials.token_public_key(),
        },
        "endpoints": endpoints,
    }


def _authorised(request) -> bool:
    header = request.headers.get("Authorization", "")
    presented = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(presented.encode(), credentials.gateway_secret().encode())


@require_GET
async def route_table_view(request):
    """Long-poll: answers at once when the caller's ETag is stale, else on a change or after `wait` s."""
    if not await sync_to_async(_authorised)(request):
        return JsonResponse(
            {"error": {"code": "not_authenticated", "message": "Wrong gateway secret."}}, status=401
        )
    try:
        wait = min(float(request.GET.get("wait", 0)), MAX_WAIT_S)
    except ValueError:
        wait = 0.0
    held = request.headers.get("If-None-Match", "").strip('"')
    deadline = asyncio.get_running_loop().time() + wait
    current = await sync_to_async(RouteTableVersion.current)()
    while str(current) == held and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(POLL_INTERVAL_S)
        current = await sync_to_async(RouteTableVersion.current)()
    if str(current) == held:
        response = HttpResponse(status=304)
    else:
        table = await sync_to_async(build)()
        response = JsonResponse(table)
        current = table["version"]
    response["ETag"] = f'"{current}"'
    response["Cache-Control"] = "no-store"
    return response
