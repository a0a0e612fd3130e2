"""What the dashboard answers first: is anything broken?

Endpoints with their state, traffic and last hour's live requests and errors (summed from the monitoring
rollups), deployments whose last change failed, and the jobs under way. Every part is a fixed number of
queries whatever the number of endpoints (the rollups are summed by one GROUP BY, deployments and
replicas come by prefetch), and lists are bounded, so the page stays fast on a large installation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Sum

from endpoints.choices import JobStateChoices, ProvisioningStateChoices
from endpoints.failures import explain
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint
from endpoints.tables import endpoint_state_badges, job_state_badge, state_badge, traffic_summary
from monitoring.models import MetricMinute

ENDPOINTS_SHOWN = 25
FAILING_SHOWN = 10
JOBS_SHOWN = 10
WINDOW = timedelta(hours=1)


@dataclass
class EndpointHealth:
    endpoint: OnlineEndpoint
    badges: str
    traffic: str
    requests: int
    errors: int
    reasons: list[str]

    @property
    def broken(self) -> bool:
        return bool(self.reasons) or self.endpoint.provisioning_state == ProvisioningStateChoices.FAILED

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def last_hour_counts(now: datetime, names: list[str]) -> dict[str, tuple[int, int]]:
    """Live (not mirrored) requests and errors (4xx and 5xx) of each endpoint named, in the hour to `now`."""
    rows = (
        MetricMinute.objects.filter(
            endpoint__in=names, minute__gte=now - WINDOW, minute__lte=now, mirrored=False
        )
        .values("endpoint")
        .annotate(requests=Sum("requests"), errors_4xx=Sum("errors_4xx"), errors_5xx=Sum("errors_5xx"))
    )
    return {
        row["endpoint"]: (row["requests"] or 0, (row["errors_4xx"] or 0) + (row["errors_5xx"] or 0))
        for row in rows
    }


def endpoint_health(now: datetime) -> tuple[list[EndpointHealth], int]:
    """Up to ENDPOINTS_SHOWN endpoints, those in trouble first, then the busiest; and how many there are."""
    total = OnlineEndpoint.objects.count()
    endpoints = list(OnlineEndpoint.objects.prefetch_related("deployments__replicas").order_by("name")[:200])
    counts = last_hour_counts(now, [endpoint.name for endpoint in endpoints])
    rows = []
    for endpoint in endpoints:
        reasons = endpoint.health_reasons
        requests, errors = counts.get(endpoint.name, (0, 0))
        rows.append(
            EndpointHealth(
                endpoint=endpoint,
                badges=endpoint_state_badges(endpoint, reasons),
                traffic=traffic_summary(endpoint),
                requests=requests,
                errors=errors,
                reasons=reasons,
            )
        )
    rows.sort(key=lambda row: (not row.broken, -row.error_rate, -row.requests, row.endpoint.name))
    return rows[:ENDPOINTS_SHOWN], total


def failing_deployments() -> list[dict]:
    """Deployments whose last change failed, newest change first, with what failed and why (the cause
    endpoints.failures finds in the job's error, as the endpoint's page shows it)."""
    found = (
        OnlineDeployment.objects.filter(provisioning_state=ProvisioningStateChoices.FAILED)
        .select_related("endpoint", "model_version__model")
        .order_by("-updated_at")[:FAILING_SHOWN]
    )
    failing = [
        {"deployment": deployment, "badge": state_badge(deployment.provisioning_state)}
        for deployment in found
    ]
    errors = {}
    if failing:
        jobs = Job.objects.filter(
            deployment__in=[row["deployment"] for row in failing], state=JobStateChoices.FAILED
        ).order_by("deployment_id", "-created_at")
        for job in jobs.only("deployment_id", "error", "created_at"):
            errors.setdefault(job.deployment_id, job.error)
    for row in failing:
        error = (errors.get(row["deployment"].pk) or "").strip()
        found = explain(error) if error else None
        row["error"] = found.summary if found else ""
        row["cause"] = found.cause if found else ""
    return failing


def running_jobs() -> list[dict]:
    """Jobs queued or running, oldest first (the one waiting longest is the one to look at)."""
    jobs = (
        Job.objects.filter(state__in=[JobStateChoices.QUEUED, JobStateChoices.RUNNING])
        .select_related("model_version__model")
        .order_by("created_at")[:JOBS_SHOWN]
    )
    return [{"job": job, "badge": job_state_badge(job.state)} for job in jobs]
