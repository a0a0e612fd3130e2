"""The route table the gateway reads, and what the gateways acknowledge of it (docs/route-table.md).

The table is built from the database on request and served by a long-poll whose ETag is the version. A
held poll is woken by this process's watcher (endpoints/notify.py), never by reading the row itself.

Each poll carries the gateway's id and, in `If-None-Match`, the version it has applied: recorded in
`GatewayAck`, that is the gateway's acknowledgement and its sign of life. The reconciler retires a replica
only once `unacknowledged()` of the version that removed it is empty, so no live gateway still routes new
requests to it.
"""

import asyncio
import hmac
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from endpoints import credentials, notify
from endpoints.choices import ProvisioningStateChoices, ReplicaStateChoices
from endpoints.models import GatewayAck, OnlineEndpoint, RouteTableVersion
from monitoring import comparison

MAX_WAIT_S = 60
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024
# A gateway polls again as soon as a poll ends, and every poll (at most MAX_WAIT_S long) is recorded when
# it arrives and when it ends: a gateway not seen for longer than this has stopped or lost the control plane.
LIVE_FOR = timedelta(seconds=MAX_WAIT_S + 15)
# Rows of gateways gone this long are deleted (checked at most every _PRUNE_EVERY_S per process).
FORGET_AFTER = timedelta(days=1)
_PRUNE_EVERY_S = 3600.0
_next_prune_at = 0.0
ACK_POLL_S = 0.2  # wait_acknowledged(): one query per waiting job this often
HEARTBEAT_EVERY_S = 5.0
GATEWAY_HEADER = "X-Studio-Gateway"
GATEWAY_PARAM = "gateway"
# The gateway's own rule for its id (serving/gateway/config.py), within GatewayAck.gateway_id's length.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*")
_GATEWAY_ID_MAX = GatewayAck._meta.get_field("gateway_id").max_length


def build() -> dict:
    """The whole table, at the version current when it was read."""
    version = RouteTableVersion.current()
    secret = credentials.gateway_secret()
    endpoints = {}
    queryset = (
        OnlineEndpoint.objects.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
        .prefetch_related("deployments__replicas")
        .select_related("comparison_settings")
    )
    for endpoint in queryset:
        deployments = {}
        for deployment in endpoint.deployments.all():
            if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
                continue
            # Until a change converges (or after it failed), the serving revision's settings apply.
            serving = deployment.serving_spec or {}
            if deployment.provisioning_state == ProvisioningStateChoices.SUCCEEDED or not serving:
                serving = {"request_settings": deployment.request_settings}
                serving["data_collector"] = deployment.data_collector
            settings = dict(serving["request_settings"])
            settings.setdefault("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
            deployments[deployment.name] = {
                "replicas": [
                    {"id": r.replica_id, "url": r.url, "ready": r.state == ReplicaStateChoices.READY}
                    for r in deployment.replicas.all()
                    if r.url and r.state != ReplicaStateChoices.STOPPING
                ],
                "request_settings": settings,
                "data_collector": serving["data_collector"],
                # What the gateway presents to these replicas, which refuse every other caller.
                "replica_key": deployment.replica_secret,
            }
        endpoints[endpoint.name] = {
            **credentials.token_binding(endpoint),  # "endpoint_id", "key_generation"
            "auth_mode": endpoint.auth_mode,
            "key_digests": [
                credentials.key_digest(credentials.decrypt(endpoint.primary_key), secret),
                credentials.key_digest(credentials.decrypt(endpoint.secondary_key), secret),
            ],
            "traffic": endpoint.traffic,
            "mirror_traffic": endpoint.mirror_traffic,
            "cors_origins": endpoint.cors_origins,
            "deployments": deployments,
            "comparison": comparison.policy(endpoint),  # how mirrored answers are compared
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


def authorised(request) -> bool:
    header = request.headers.get("Authorization", "")
    presented = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(presented.encode(), credentials.gateway_secret().encode())


def valid_gateway_id(value: str | None) -> bool:
    """Whether `value` can name a gateway: letters, digits, '.', '_' and single '-', bounded."""
    return bool(value) and len(value) <= _GATEWAY_ID_MAX and _GATEWAY_ID.fullmatch(value) is not None


def live_since(now: datetime | None = None) -> datetime:
    """Gateways seen since then are alive."""
    return (now or timezone.now()) - LIVE_FOR


def _applied_version(if_none_match: str) -> int | None:
    """The version an `If-None-Match` names (`"12"`, `W/"12"` or `12`); None if it names none."""
    value = if_none_match.strip().removeprefix("W/").strip('"')
    # ASCII digits only, and within the column's range: anything else is no version of ours.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def acknowledge(gateway_id: str, version: int, now: datetime | None = None) -> None:
    """Record that `gateway_id` has applied `version` and was seen `now` (one upsert)."""
    global _next_prune_at
    now = now or timezone.now()
    GatewayAck.objects.bulk_create(
        [GatewayAck(gateway_id=gateway_id, version=version, seen_at=now)],
        update_conflicts=True,
        unique_fields=["gateway_id"],
        update_fields=["version", "seen_at"],
    )
    if time.monotonic() >= _next_prune_at:
        _next_prune_at = time.monotonic() + _PRUNE_EVERY_S
        GatewayAck.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


def unacknowledged(version: int, now: datetime | None = None) -> list[str]:
    """Ids (sorted) of the live gateways whose applied version is below `version`; empty when every live
    gateway has applied it. Live: seen within LIVE_FOR of `now`."""
    now = now or timezone.now()
    return list(
        GatewayAck.objects.filter(seen_at__gte=now - LIVE_FOR, version__lt=version)
        .order_by("gateway_id")
        .values_list("gateway_id", flat=True)
    )


def wait_acknowledged(
    version: int,
    timeout: float,
    heartbeat: Callable[[], object] | None = None,
    *,
    clock: Callable[[], datetime] = timezone.now,
    sleep: Callable[[float], object] = time.sleep,
    heartbeat_every: float = HEARTBEAT_EVERY_S,
) -> list[str]:
    """Wait until every live gateway has applied `version` (or a later one), or `timeout` seconds pass.

    Returns the ids of the live gateways that still have not (sorted; empty: all have), for the caller to
    log. A gateway that stops being seen while it is waited for stops being waited for once LIVE_FOR
    passes. Calls `heartbeat()` every `heartbeat_every` seconds of waiting (a job renews its lease there).
    `clock` (aware datetimes) and `sleep` are the time it runs on; tests move them.

    Call it outside `transaction.atomic()`: the acknowledgements are other connections' writes, which a
    transaction may not see (SQLite's snapshot) or may even block (SQLite's write lock).
    """
    if transaction.get_connection(GatewayAck.objects.db).in_atomic_block:
        raise RuntimeError(
            "wait_acknowledged() waits for other connections' writes: call it outside a transaction."
        )
    start = clock()
    deadline = start + timedelta(seconds=timeout)
    next_beat = start + timedelta(seconds=heartbeat_every)
    while True:
        now = clock()
        missing = unacknowledged(version, now=now)
        if not missing or now >= deadline:
            return missing
        if heartbeat is not None and now >= next_beat:
            heartbeat()
            next_beat = now + timedelta(seconds=heartbeat_every)
        sleep(min(ACK_POLL_S, (deadline - now).total_seconds()))


def _arrive(gateway_id: str | None, applied: int | None) -> int:
    """A poll arrives: record its acknowledgement, and read the version to compare with (one thread hop)."""
    if gateway_id is not None:
        acknowledge(gateway_id, applied or 0)
    return RouteTableVersion.current()


def _conclude(gateway_id: str | None, applied: int | None, held: bool, changed: bool) -> dict | None:
    """A poll ends: a held one is recorded again (the gateway was there all along); the table if changed."""
    if held and gateway_id is not None:
        acknowledge(gateway_id, applied or 0)
    return build() if changed else None


async def _hold(subscription: notify.Subscription, applied: int, wait: float) -> int:
    """Wait up to `wait` s for the version to differ from `applied`; returns the version read last."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    current = applied
    while current == applied and not subscription.closed and (remaining := deadline - loop.time()) > 0:
        if await subscription.wait(remaining):
            # A wake-up is a hint: the row says whether the table really changed.
            current = await sync_to_async(RouteTableVersion.current)()
    return current


@require_GET
async def route_table_view(request):
    """Long-poll: answers at once when the caller's ETag is stale, else on a change or after `wait` s.

    The caller's gateway id (`X-Studio-Gateway` header or `gateway` query parameter) and the version in
    its `If-None-Match` are recorded as its acknowledgement when the poll arrives and when a held poll
    ends. 401 without the gateway secret, 400 for a malformed gateway id.
    """
    if not await sync_to_async(authorised)(request):
        return JsonResponse(
            {"error": {"code": "not_authenticated", "message": "Wrong gateway secret."}}, status=401
        )
    gateway_id = request.headers.get(GATEWAY_HEADER) or request.GET.get(GATEWAY_PARAM) or None
    if gateway_id is not None and not valid_gateway_id(gateway_id):
        return JsonResponse(
            {
                "error": {
                    "code": "invalid",
                    "message": f"Gateway id {gateway_id[:_GATEWAY_ID_MAX]!r}: use at most {_GATEWAY_ID_MAX} "
                    "letters, digits, '.', '_' and single '-'.",
                }
            },
            status=400,
        )
    try:
        wait = max(0.0, min(float(request.GET.get("wait", 0)), MAX_WAIT_S))
    except ValueError:
        wait = 0.0
    applied = _applied_version(request.headers.get("If-None-Match", ""))
    # Subscribed before the version is read, so that no change committed after the read goes unnoticed.
    subscription = notify.subscribe(applied) if wait > 0 and applied is not None else None
    try:
        current = await sync_to_async(_arrive)(gateway_id, applied)
        held = subscription is not None and current == applied
        if held:
            current = await _hold(subscription, applied, wait)
    finally:
        if subscription is not None:
            subscription.close()
    changed = current != applied
    table = None
    if changed or (held and gateway_id is not None):
        table = await sync_to_async(_conclude)(gateway_id, applied, held, changed)
    if table is None:
        response = HttpResponse(status=304)
    else:
        response = JsonResponse(table)
        current = table["version"]
    response["ETag"] = f'"{current}"'
    response["Cache-Control"] = "no-store"
    return response
