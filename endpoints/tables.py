"""The endpoint list's table, and the badges every endpoint page draws states with."""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from endpoints.choices import (
    AuthModeChoices,
    BatchJobStateChoices,
    EndpointHealthChoices,
    JobStateChoices,
    MiniBatchStateChoices,
    ProvisioningStateChoices,
    ReplicaStateChoices,
)
from endpoints.models import BatchEndpoint, OnlineEndpoint
from registry.tables import Column, Table, tag_chips

# The choice classes name colours; the style sheet names badges after what they mean.
BADGE_FOR_COLOUR = {"green": "success", "red": "danger", "grey": "muted", "blue": "info", "orange": "warning"}
BUSY_STATES = {
    ProvisioningStateChoices.CREATING,
    ProvisioningStateChoices.UPDATING,
    ProvisioningStateChoices.SCALING,
}


def state_badge(state: str) -> SafeString:
    """A provisioning state as a badge; states still converging pulse."""
    badge = BADGE_FOR_COLOUR[ProvisioningStateChoices.colour(state)]
    busy = " badge-busy" if state in BUSY_STATES or state == ProvisioningStateChoices.DELETING else ""
    return format_html('<span class="badge badge-{}{}">{}</span>', badge, busy, state)


def endpoint_state_badges(endpoint: OnlineEndpoint, reasons: list[str] | None = None) -> SafeString:
    """The state an endpoint is shown in: its provisioning state while that is under way or failed, and
    a Degraded badge (its reasons as the title) when its live traffic goes to a deployment that cannot
    serve it. A Succeeded endpoint whose traffic cannot be served shows only Degraded, never Succeeded."""
    reasons = endpoint.health_reasons if reasons is None else reasons
    if not reasons:
        return state_badge(endpoint.provisioning_state)
    badges = format_html(
        '<span class="badge badge-{}" title="{}" data-health="degraded">{}</span>',
        BADGE_FOR_COLOUR[EndpointHealthChoices.colour(EndpointHealthChoices.DEGRADED)],
        " ".join(reasons),
        EndpointHealthChoices.DEGRADED.label,
    )
    if endpoint.provisioning_state != ProvisioningStateChoices.SUCCEEDED:
        badges = format_html("{} {}", state_badge(endpoint.provisioning_state), badges)
    return badges


def job_state_badge(state: str) -> SafeString:
    badge = BADGE_FOR_COLOUR[JobStateChoices.colour(state)]
    busy = "" if state in (JobStateChoices.SUCCEEDED, JobStateChoices.FAILED) else " badge-busy"
    return format_html('<span class="badge badge-{}{}">{}</span>', badge, busy, JobStateChoices(state).label)


def auth_badge(mode: str) -> SafeString:
    return format_html('<span class="badge badge-neutral">{}</span>', AuthModeChoices(mode).label.lower())


# A constant of ours: format_html_join escapes its separator unless it is marked safe.
TRAFFIC_SEPARATOR = mark_safe('<span class="muted"> · </span>')  # noqa: S308


def traffic_summary(endpoint: OnlineEndpoint) -> SafeString:
    """`blue 90% · green 10%`, and the mirror; deployments at 0% are left out."""
    live = [(name, percent) for name, percent in endpoint.traffic.items() if percent]
    mirror = [(name, percent) for name, percent in endpoint.mirror_traffic.items() if percent]
    if not live and not mirror:
        return format_html('<span class="muted">{}</span>', "no live traffic")
    parts = format_html_join(
        TRAFFIC_SEPARATOR,
        '<span class="nowrap">{} <span class="strong">{}%</span></span>',
        live,
    )
    if mirror:
        parts += format_html_join(
            "",
            ' <span class="badge badge-muted" title="Copies of live requests">mirror {} {}%</span>',
            mirror,
        )
    return parts


def deployment_states(endpoint: OnlineEndpoint) -> SafeString:
    deployments = list(endpoint.deployments.all())
    if not deployments:
        return format_html('<span class="muted">{}</span>', "none yet")
    return format_html_join(
        " ",
        '<span class="deployment-chip" title="{}: {}"><span class="dot dot-{}"></span>{}</span>',
        (
            (
                d.name,
                d.provisioning_state,
                BADGE_FOR_COLOUR[ProvisioningStateChoices.colour(d.provisioning_state)],
                d.name,
            )
            for d in deployments
        ),
    )


class OnlineEndpointTable(Table):
    """Rows are OnlineEndpoint with their deployments prefetched."""

    empty_title = "No endpoints match these filters"
    empty_text = "Clear the filters to see every endpoint."

    columns = (
        Column(
            "Name",
            lambda e: format_html('<a class="strong" href="{}">{}</a>', e.get_absolute_url(), e.name),
            order_by="name",
        ),
        Column("State", endpoint_state_badges),
        Column("Auth", lambda e: auth_badge(e.auth_mode)),
        Column("Deployments", deployment_states),
        Column("Traffic", traffic_summary),
        Column("Tags", lambda e: tag_chips(e.tags), css="cell-tags"),
        Column(
            "Updated",
            lambda e: format_html(
                '<time datetime="{}">{}</time>',
                e.updated_at.isoformat(),
                e.updated_at.strftime("%Y-%m-%d %H:%M"),
            ),
            order_by="updated_at",
            css="nowrap",
        ),
    )


REPLICA_BADGE = {
    ReplicaStateChoices.READY: "success",
    ReplicaStateChoices.STARTING: "info",
    ReplicaStateChoices.UNHEALTHY: "warning",
    ReplicaStateChoices.STOPPING: "muted",
    ReplicaStateChoices.FAILED: "danger",
}


def replica_badge(state: str) -> SafeString:
    busy = " badge-busy" if state == ReplicaStateChoices.STARTING else ""
    return format_html(
        '<span class="badge badge-{}{}">{}</span>', REPLICA_BADGE.get(state, "neutral"), busy, state
    )


def batch_job_badge(state: str) -> SafeString:
    """A batch job's status as Azure words it; statuses that will still change pulse."""
    badge = BADGE_FOR_COLOUR[BatchJobStateChoices.colour(state)]
    busy = "" if state in BatchJobStateChoices.finished() else " badge-busy"
    label = BatchJobStateChoices(state).label if state in BatchJobStateChoices.values else state
    return format_html('<span class="badge badge-{}{}" data-status="{}">{}</span>', badge, busy, state, label)


def mini_batch_badge(state: str) -> SafeString:
    badge = BADGE_FOR_COLOUR[MiniBatchStateChoices.colour(state)]
    return format_html('<span class="badge badge-{}">{}</span>', badge, MiniBatchStateChoices(state).label)


def _created(row) -> SafeString:
    return format_html(
        '<time datetime="{}">{}</time>', row.created_at.isoformat(), row.created_at.strftime("%Y-%m-%d %H:%M")
    )


def batch_deployment_names(endpoint: BatchEndpoint) -> SafeString:
    names = [deployment.name for deployment in endpoint.deployments.all()]
    if not names:
        return format_html('<span class="muted">{}</span>', "none yet")
    return format_html_join(" ", '<span class="deployment-chip">{}</span>', ((name,) for name in names))


class BatchEndpointTable(Table):
    """Rows are BatchEndpoint with their deployments prefetched and `last_job_state` annotated."""

    empty_title = "No batch endpoints match these filters"
    empty_text = "Clear the filters to see every batch endpoint."

    columns = (
        Column(
            "Name",
            lambda e: format_html('<a class="strong" href="{}">{}</a>', e.get_absolute_url(), e.name),
            order_by="name",
        ),
        Column(
            "Default deployment",
            lambda e: e.default_deployment or format_html('<span class="muted">{}</span>', "none"),
        ),
        Column("Deployments", batch_deployment_names),
        Column(
            "Last job",
            lambda e: (
                batch_job_badge(e.last_job_state)
                if e.last_job_state
                else format_html('<span class="muted">{}</span>', "never invoked")
            ),
        ),
        Column("Auth", lambda e: auth_badge(e.auth_mode)),
        Column("Tags", lambda e: tag_chips(e.tags), css="cell-tags"),
        Column("Created", _created, order_by="created_at", css="nowrap"),
    )


def batch_job_progress(job) -> SafeString:
    """Mini-batches done of all, and failed ones, from the job's own counters (no query per row)."""
    done = job.mini_batches_succeeded + job.mini_batches_failed
    failed = (
        format_html(' <span class="badge badge-danger">{} failed</span>', job.mini_batches_failed)
        if job.mini_batches_failed
        else ""
    )
    return format_html(
        '<span class="nowrap">{}/{} mini-batches</span>{} <span class="muted small">· {} rows</span>',
        done,
        job.mini_batches,
        failed,
        job.rows,
    )


class BatchJobTable(Table):
    """Rows are BatchJob, newest first."""

    empty_title = "No jobs"
    empty_text = "Invoke the endpoint to start one."

    columns = (
        Column(
            "Job",
            lambda j: format_html(
                '<a class="strong" href="{}" title="{}">{}</a>', j.get_absolute_url(), j.name, j.name[:8]
            ),
        ),
        Column("Status", lambda j: batch_job_badge(j.state)),
        Column("Deployment", lambda j: j.deployment_name),
        Column("Progress", batch_job_progress),
        Column("Created", _created, css="nowrap"),
    )
