"""Studio's autoscaler: deployments with `scale_settings.type: target_utilization` sized by their load.

Azure's settings, on every target:

    scale_settings:
      type: target_utilization
      min_instances: 1                   # never fewer
      max_instances: 3                   # never more
      polling_interval: 1                # seconds of sustained load before scaling out
      target_utilization_percentage: 70  # of max_concurrent_requests_per_instance, per replica

Utilization is in-flight requests per replica over `max_concurrent_requests_per_instance`, measured by the
gateways (endpoints.gateway_load). The count the load wants is the fewest replicas that keep utilization at
or under the target, within min and max. A wanted count above the deployment's is acted on once it has been
wanted for `polling_interval`; one below, once it has been wanted for the cool-down
(STUDIO_AUTOSCALE_COOLDOWN_S), so a pause in traffic does not shed replicas that the next burst needs.

Each evaluation is level-triggered: it reads the load and the deployment as they are now, and what it
remembers between evaluations (since when a count has been wanted) only delays decisions; losing it costs
one interval, never a wrong count. Acting is an ordinary scale of the deployment (`instance_count`, a new
generation, the reconciler converges it), recorded as a `studio.deployment.scaled` event and in the audit
log. A deployment that is converging is left alone until it has converged.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from endpoints import gateway_load, leases, reconcile
from endpoints.choices import JobKindChoices, ProvisioningStateChoices, ReplicaStateChoices
from endpoints.jobs import start_job
from endpoints.models import OnlineDeployment
from endpoints.specs import REQUEST_SETTINGS_DEFAULTS
from studio.choices import AuditActionChoices
from studio.events import emit
from studio.models import audit

TARGET_UTILIZATION = "target_utilization"
DEFAULTS = {
    "min_instances": 1,
    "max_instances": 1,
    "polling_interval": 1,
    "target_utilization_percentage": 70,
}
STATE_KEY = "studio:autoscale:{}"
LEASE = "autoscaler"
LEASE_TTL = timedelta(seconds=30)  # longer than the task's hard time limit (endpoints.tasks.autoscale)


def clock() -> float:
    """Now, in seconds; tests move it."""
    return time.time()


@dataclass(frozen=True)
class Settings:
    minimum: int
    maximum: int
    polling_interval: float
    target_pct: int
    per_instance: int

    @classmethod
    def of(cls, deployment: OnlineDeployment) -> Settings:
        scale = {**DEFAULTS, **(deployment.scale_settings or {})}
        requests = {**REQUEST_SETTINGS_DEFAULTS, **(deployment.request_settings or {})}
        return cls(
            int(scale["min_instances"]),
            int(scale["max_instances"]),
            float(scale["polling_interval"]),
            int(scale["target_utilization_percentage"]),
            int(requests["max_concurrent_requests_per_instance"]),
        )

    def wanted(self, in_flight: float) -> int:
        """The fewest replicas that keep in-flight requests per replica at or under the target."""
        per_replica = self.per_instance * self.target_pct / 100
        # A hair under a whole number is that number: averaged samples are not exact.
        needed = math.ceil(in_flight / per_replica - 1e-6) if in_flight > 0 else 0
        return max(self.minimum, min(self.maximum, needed))


@dataclass(frozen=True)
class Decision:
    endpoint: str
    deployment: str
    current: int
    wanted: int
    in_flight: float
    utilization_pct: float
    action: str  # "scale_out" | "scale_in" | "wait" | "hold"
    reason: str


def decide(
    deployment: OnlineDeployment, in_flight: float, remembered: dict | None, now: float
) -> tuple[Decision, dict | None]:
    """What to do about `deployment` under `in_flight` mean requests, given what was wanted since when
    (`remembered`); returns the decision and what to remember for the next evaluation."""
    config = Settings.of(deployment)
    current = deployment.instance_count
    wanted = config.wanted(in_flight)
    capacity = max(current, 1) * config.per_instance
    utilization = round(100 * in_flight / capacity, 1)

    def decision(action: str, reason: str) -> Decision:
        return Decision(deployment.endpoint.name, deployment.name, current, wanted, round(in_flight, 3),
                        utilization, action, reason)  # fmt: skip

    if wanted == current:
        return decision("hold", f"utilization {utilization}% fits the target of {config.target_pct}%"), None
    if not config.minimum <= current <= config.maximum:
        return decision(
            "scale_out" if wanted > current else "scale_in",
            f"{current} replica(s) is outside min_instances {config.minimum} and "
            f"max_instances {config.maximum}",
        ), None
    out = wanted > current
    needed_for = config.polling_interval if out else float(settings.STUDIO_AUTOSCALE_COOLDOWN_S)
    same_way = remembered is not None and (remembered["want"] > current) == out
    since = float(remembered["since"]) if same_way else now
    if now - since < needed_for:
        return decision("wait", f"{wanted} wanted for {now - since:.1f}s of {needed_for:g}s"), {
            "want": wanted,
            "since": since,
        }
    side = "over" if out else "under"
    reason = f"utilization {utilization}% {side} the target of {config.target_pct}% for {needed_for:g}s"
    return decision("scale_out" if out else "scale_in", reason), None


def tick() -> list[Decision]:
    """Evaluate every autoscaled deployment once (one evaluation at a time across the installation)."""
    # On Kubernetes the cluster's HorizontalPodAutoscaler sizes the deployment, not this.
    deployments = (
        OnlineDeployment.objects.select_related("endpoint")
        .filter(scale_settings__type=TARGET_UTILIZATION)
        .exclude(target="kubernetes")
    )
    # Read before any write: an installation without autoscaled deployments pays one query a second.
    if not deployments.exists():
        return []
    lease = leases.acquire(LEASE, LEASE_TTL, clock=reconcile.clock)
    if lease is None:
        return []
    try:
        load = gateway_load.in_flight()
        now = clock()
        decisions = []
        for deployment in deployments:
            key = STATE_KEY.format(deployment.pk)
            made, remembered = decide(deployment, load.get((deployment.endpoint.name, deployment.name), 0.0),
                                      cache.get(key), now)  # fmt: skip
            if remembered:
                cache.set(key, remembered, timeout=3600)
            else:
                cache.delete(key)
            if made.action in ("scale_out", "scale_in") and not apply(deployment.pk, made):
                made = Decision(
                    **{**asdict(made), "action": "hold", "reason": "the deployment is converging"}
                )
            decisions.append(made)
        return decisions
    finally:
        lease.release()


def apply(deployment_pk: int, decision: Decision) -> bool:
    """Scale the deployment to the decision's count, unless it is converging or changed meanwhile."""
    with transaction.atomic():
        deployment = OnlineDeployment.objects.select_for_update().filter(pk=deployment_pk).first()
        if (
            deployment is None
            or deployment.provisioning_state != ProvisioningStateChoices.SUCCEEDED
            or deployment.observed_generation != deployment.generation
            or deployment.instance_count != decision.current
        ):
            return False
        deployment.instance_count = decision.wanted
        deployment.generation += 1
        deployment.provisioning_state = ProvisioningStateChoices.SCALING
        deployment.save(update_fields=["instance_count", "generation", "provisioning_state", "updated_at"])
        label = f"{decision.endpoint}/{decision.deployment}"
        details = {"from": decision.current, "to": decision.wanted, "in_flight": decision.in_flight,
                   "utilization_pct": decision.utilization_pct, "reason": decision.reason}  # fmt: skip
        audit(None, AuditActionChoices.DEPLOYED, "deployment", label, autoscaled=details)
        emit(
            "studio.deployment.scaled",
            f"online-endpoints/{decision.endpoint}/deployments/{decision.deployment}",
            {"endpoint": decision.endpoint, "deployment": decision.deployment, **details},
        )
        endpoint = deployment.endpoint
        start_job(
            JobKindChoices.SCALE_DEPLOYMENT, endpoint, deployment, None, generation=deployment.generation
        )
    return True


def recent_decisions(deployment: OnlineDeployment, count: int = 5) -> list:
    """The deployment's last scaling decisions, newest first (its `studio.deployment.scaled` events)."""
    from studio.models import Event

    subject = f"online-endpoints/{deployment.endpoint.name}/deployments/{deployment.name}"
    return list(Event.objects.filter(type="studio.deployment.scaled", subject=subject)[:count])


def card(deployment: OnlineDeployment) -> dict | None:
    """What the deployment's card shows of its autoscaling: the settings, the replicas ready against the
    count wanted, and the last decisions; None for a fixed count."""
    if (deployment.scale_settings or {}).get("type") != TARGET_UTILIZATION:
        return None
    ready = ReplicaStateChoices.READY
    return {
        "settings": Settings.of(deployment),
        "desired": deployment.instance_count,
        "ready": sum(1 for replica in deployment.replicas.all() if replica.state == ready),
        "decisions": recent_decisions(deployment),
    }
