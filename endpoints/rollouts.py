"""Progressive rollout: move live traffic to a new deployment step by step, and roll back on an SLO breach.

The `Rollout` row is the intent and the whole state. A driver (the `advance_rollout` task) holds the
rollout's lease, reads the row, does the one thing the row says is next, writes the outcome with a
compare-and-swap on the step it acted on, and reads the row again:

1. Write the step's split (under the endpoint's lock, through the same rules as a user's traffic change)
   and remember the route-table version that carries it.
2. Open the step's window once every live gateway acknowledged that version (endpoints.routetable): from
   then on, every request a gateway routes follows the step's split.
3. After `interval_s`, wait until the telemetry archive holds the whole window (monitoring.window), then
   judge the SLO on the new deployment's live requests of that window only, exactly, from their events.
   A shadow step judges the agreement of mirrored answers (monitoring.comparison) instead.
4. A breach restores the split the rollout started from at once and ends it `rolled_back` with the
   figures that broke it; otherwise the next step begins, and the last one ends `succeeded`.

Killed at any line, a driver loses nothing: the next one (the sweep queues it once the lease lapsed)
finds the row where it was left and goes on from the recorded step. No step is judged twice, because the
judgement and the move to the next step are one compare-and-swap. A traffic change by a person during a
rollout aborts it (services.update_endpoint calls `traffic_changed_by_user`), and the driver also checks,
under the lock, that the endpoint still routes as the rollout left it before every move.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from endpoints import leases, routetable, services
from endpoints.choices import ProvisioningStateChoices, RolloutStateChoices
from endpoints.models import GatewayAck, OnlineEndpoint, Rollout, RouteTableVersion
from monitoring import comparison
from studio.choices import AuditActionChoices
from studio.errors import Invalid, NotFound, Refused, StateConflict
from studio.events import emit
from studio.models import audit

logger = logging.getLogger(__name__)

# A driver hands over to a fresh task after this long, well inside the task's time limit.
DRIVE_FOR_S = 1800.0
# How often a waiting driver looks again (gateway acknowledgements, the archive, an abort).
POLL_S = 0.2
MAX_INTERVAL_S = 24 * 3600
SLO_FIELDS = ("max_error_rate_pct", "max_p99_ms", "min_agreement_pct")


def clock() -> datetime:
    """Now, for every decision of a driver; tests move it."""
    return timezone.now()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def lease_ttl() -> timedelta:
    return timedelta(seconds=settings.STUDIO_ROLLOUT_LEASE_S)


def lease_name(rollout_id: int) -> str:
    return f"rollout:{rollout_id}"


# Splits


def split_for(previous: dict[str, int], deployment: str, share: int) -> dict[str, int]:
    """`previous` with `share` percent moved to `deployment`: the others keep their proportions of the
    rest (largest remainder, so the shares stay whole and add up to 100)."""
    others = {name: percent for name, percent in previous.items() if name != deployment}
    total = sum(others.values())
    rest = 100 - share
    if total == 0:
        return {**dict.fromkeys(others, 0), deployment: 100}
    exact = {name: percent * rest / total for name, percent in others.items()}
    split = {name: int(value) for name, value in exact.items()}
    left = rest - sum(split.values())
    for name in sorted(exact, key=lambda n: (split[n] - exact[n], n))[:left]:
        split[name] += 1
    return {**split, deployment: share}


def step_plan(rollout: Rollout) -> list[dict]:
    """Each step as {"name", "shadow", "share"}: the shadow step first, when asked for."""
    plan = [{"name": "shadow", "shadow": True, "share": 0}] if rollout.shadow else []
    plan += [{"name": f"{share}%", "shadow": False, "share": share} for share in rollout.steps]
    return plan


def step_split(rollout: Rollout, index: int) -> tuple[dict, dict]:
    """The live and mirror split a step asks for."""
    step = step_plan(rollout)[index]
    if step["shadow"]:
        return dict(rollout.previous_traffic), {rollout.deployment: services.MAX_MIRROR_PERCENT}
    mirror = {
        name: percent for name, percent in rollout.previous_mirror.items() if name != rollout.deployment
    }
    return split_for(rollout.previous_traffic, rollout.deployment, step["share"]), mirror


# Starting and stopping


def _parse_steps(steps) -> tuple[bool, list[int]]:
    if isinstance(steps, str):
        steps = [part.strip() for part in steps.split(",") if part.strip()]
    if not isinstance(steps, list) or not steps:
        raise Invalid("give the shares of live traffic as a list, e.g. [10, 50, 100].", "steps")
    shadow = steps[0] == "shadow"
    shares = []
    for item in steps[1:] if shadow else steps:
        try:
            share = int(item) if not isinstance(item, bool) and str(item).strip().isdigit() else None
        except (TypeError, ValueError):
            share = None
        if share is None or not 1 <= share <= 100:
            raise Invalid(
                f"{item!r} is not a whole percentage from 1 to 100 (only the first step may be 'shadow').",
                "steps",
            )
        shares.append(share)
    if not shares or shares[-1] != 100:
        raise Invalid("the last step must be 100, so the rollout ends with all traffic moved.", "steps")
    if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise Invalid(f"shares must grow from step to step, not {shares}.", "steps")
    return shadow, shares


def _parse_slo(slo) -> dict:
    if slo is None:
        return {}
    if not isinstance(slo, dict):
        raise Invalid("must be an object with max_error_rate_pct, max_p99_ms, min_agreement_pct.", "slo")
    unknown = sorted(set(slo) - set(SLO_FIELDS))
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)}; use {', '.join(SLO_FIELDS)}.", "slo")
    parsed = {}
    for name, value in slo.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise Invalid(f"{name}: {value!r} is not a number of at least 0.", "slo")
        if name.endswith("_pct") and value > 100:
            raise Invalid(f"{name}: {value!r} is a percentage, at most 100.", "slo")
        parsed[name] = value
    return parsed


def start_rollout(endpoint: OnlineEndpoint, values: dict, user) -> Rollout:
    """Record a rollout of `values["deployment"]` and queue its driver; refuses what cannot run."""
    name = values.get("deployment")
    if not isinstance(name, str) or not name:
        raise Invalid("name the deployment to roll out.", "deployment")
    shadow, shares = _parse_steps(values.get("steps"))
    interval = values.get("interval_s")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 < interval <= MAX_INTERVAL_S
    ):
        raise Invalid(f"must be a number of seconds above 0 and at most {MAX_INTERVAL_S}.", "interval_s")
    slo = _parse_slo(values.get("slo"))
    if "min_agreement_pct" in slo and not shadow:
        raise Invalid("min_agreement_pct is judged on a shadow step: start the steps with 'shadow'.", "slo")
    try:
        with transaction.atomic():
            endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
            if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
                raise StateConflict(f"Endpoint {endpoint.name!r} is being deleted.")
            deployment = endpoint.deployments.filter(name=name).first()
            if deployment is None:
                raise Invalid(f"endpoint {endpoint.name!r} has no deployment named {name!r}.", "deployment")
            if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
                raise StateConflict(f"deployment {name!r} is being deleted.", "deployment")
            if deployment.serving_revision is None:
                raise StateConflict(
                    f"deployment {name!r} has not succeeded yet; wait for it before rolling it out.",
                    "deployment",
                )
            if sum(endpoint.traffic.values()) != 100:
                raise StateConflict(
                    f"endpoint {endpoint.name!r} sends no live traffic to split; give {name!r} all traffic "
                    "instead.",
                    "deployment",
                )
            if endpoint.traffic.get(name, 0) >= 100:
                raise StateConflict(f"deployment {name!r} takes all live traffic already.", "deployment")
            rollout = Rollout.objects.create(
                endpoint=endpoint,
                deployment=name,
                steps=shares,
                shadow=shadow,
                interval_s=float(interval),
                slo=slo,
                previous_traffic=dict(endpoint.traffic),
                previous_mirror=dict(endpoint.mirror_traffic),
                created_by=user,
            )
            audit(user, AuditActionChoices.CREATED, "rollout", str(rollout), steps=rollout.step_names)
            _emit("started", rollout)
            transaction.on_commit(lambda: dispatch(rollout.pk))
    except IntegrityError:
        running = Rollout.objects.filter(endpoint=endpoint, state=RolloutStateChoices.RUNNING).first()
        which = f"rollout {running.pk} of {running.deployment!r}" if running else "another rollout"
        raise StateConflict(
            f"{which} is running on endpoint {endpoint.name!r}; one rollout at a time (abort it first)."
        ) from None
    return rollout


def abort(rollout: Rollout, user) -> Rollout:
    """Stop a running rollout and restore the split it started from."""
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=rollout.endpoint_id)
        row = Rollout.objects.select_for_update().get(pk=rollout.pk)
        if row.state != RolloutStateChoices.RUNNING:
            raise StateConflict(f"Rollout {row.pk} has ended already ({row.get_state_display().lower()}).")
        who = getattr(user, "username", "") or "someone"
        _restore(endpoint, row)
        _end(
            row,
            RolloutStateChoices.ABORTED,
            f"Aborted by {who}; the traffic was restored to {_words(row.previous_traffic)}.",
        )
        audit(user, AuditActionChoices.UPDATED, "rollout", str(row), state=row.state)
    return row


def traffic_changed_by_user(endpoint: OnlineEndpoint, user) -> None:
    """Within the endpoint's lock, as a person's traffic change is saved: abort its running rollout, and
    leave the traffic as that person set it."""
    row = (
        Rollout.objects.select_for_update()
        .filter(endpoint=endpoint, state=RolloutStateChoices.RUNNING)
        .first()
    )
    if row is None:
        return
    who = getattr(user, "username", "") or "someone"
    _end(
        row,
        RolloutStateChoices.ABORTED,
        f"The traffic of {endpoint.name} was changed by {who} during step {_step_name(row)} of the rollout; "
        f"the rollout stopped and the traffic stays as set ({_words(endpoint.traffic)}).",
    )


def _words(split: dict) -> str:
    return " ".join(f"{name}={percent}" for name, percent in split.items()) or "none"


def _step_name(row: Rollout) -> str:
    plan = step_plan(row)
    return plan[min(row.current_step, len(plan) - 1)]["name"]


def _restore(endpoint: OnlineEndpoint, row: Rollout) -> None:
    """Under the endpoint's lock: the split the rollout started from, as it was (no rules of growth: it
    is where the endpoint was)."""
    traffic = {name: percent for name, percent in row.previous_traffic.items()}
    live = {
        d.name for d in endpoint.deployments.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
    }
    traffic = {name: percent for name, percent in traffic.items() if name in live or percent}
    mirror = {name: percent for name, percent in row.previous_mirror.items() if name in live}
    moved = (traffic, mirror) != (endpoint.traffic, endpoint.mirror_traffic)
    endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
    endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
    if moved:
        services.emit_traffic_changed(endpoint)
        RouteTableVersion.bump()


def _end(row: Rollout, state: str, reason: str) -> None:
    row.state = state
    row.reason = reason
    row.finished_at = clock()
    row.save(update_fields=["state", "reason", "finished_at", "updated_at"])
    _emit(
        {
            RolloutStateChoices.SUCCEEDED: "succeeded",
            RolloutStateChoices.ROLLED_BACK: "rolled_back",
            RolloutStateChoices.ABORTED: "aborted",
        }[state],
        row,
    )


def _emit(kind: str, row: Rollout) -> None:
    endpoint = row.endpoint.name
    data = {
        "endpoint": endpoint,
        "deployment": row.deployment,
        "rollout": row.pk,
        "steps": row.step_names,
        "state": row.state,
        "current_step": row.current_step,
    }
    if row.reason:
        data["reason"] = row.reason
    if row.figures and kind == "rolled_back":
        data["figures"] = row.figures[-1]
    emit(f"studio.rollout.{kind}", f"online-endpoints/{endpoint}/rollouts/{row.pk}", data)


# Driving


def dispatch(rollout_id: int) -> None:
    """Queue the rollout's driver (tests replace this with a driver of their own)."""
    from endpoints.tasks import advance_rollout

    advance_rollout.delay(rollout_id)


def drive(rollout_id: int, *, drive_for: float = DRIVE_FOR_S) -> str:
    """Advance the rollout until it ends, holding its lease; "held" when another driver has it."""
    lease = leases.acquire(lease_name(rollout_id), lease_ttl(), clock=clock)
    if lease is None:
        return "held"
    deadline = time.monotonic() + drive_for
    renew_every = lease.ttl.total_seconds() / 3
    renewed = time.monotonic()
    outcome = "lost"
    try:
        while True:
            wait = advance(rollout_id)
            if wait is None:
                state = Rollout.objects.filter(pk=rollout_id).values_list("state", flat=True).first()
                outcome = state or "gone"
                return outcome
            if time.monotonic() >= deadline:
                outcome = "handed over"
                return outcome
            if wait > 0:
                sleep(min(wait, POLL_S))
            if time.monotonic() - renewed >= renew_every:
                lease.renew()
                renewed = time.monotonic()
    except leases.LeaseLost as exc:
        logger.warning("rollout %s: %s; leaving it to the new holder", rollout_id, exc)
        return outcome
    finally:
        lease.release()
        if outcome == "handed over":
            dispatch(rollout_id)  # after the release, so the next driver finds the lease free


def sweep() -> list[int]:
    """Queue the driver of every running rollout nobody holds (a worker restart resumes them)."""
    queued = []
    for rollout_id in Rollout.objects.filter(state=RolloutStateChoices.RUNNING).values_list("pk", flat=True):
        if leases.holder(lease_name(rollout_id), clock=clock) is None:
            dispatch(rollout_id)
            queued.append(rollout_id)
    return queued


def advance(rollout_id: int) -> float | None:
    """Do the next thing the row asks for; the seconds to wait before asking again, None once it ended."""
    row = Rollout.objects.select_related("endpoint").filter(pk=rollout_id).first()
    if row is None or row.state != RolloutStateChoices.RUNNING:
        return None
    if row.step_traffic is None:
        _move(row)
        return 0.0
    if row.step_started_at is None:
        if routetable.unacknowledged(row.step_version, now=clock()):
            return POLL_S
        Rollout.objects.filter(
            pk=row.pk, state=RolloutStateChoices.RUNNING, current_step=row.current_step, step_started_at=None
        ).update(step_started_at=clock())
        return 0.0
    end = row.step_started_at + timedelta(seconds=row.interval_s)
    now = clock()
    if now < end:
        return (end - now).total_seconds()
    figures = measure(row, row.step_started_at, end)
    if figures is None:
        return POLL_S  # the archive does not hold the whole window yet
    _judge(row, figures)
    return 0.0


def _expected(row: Rollout) -> dict:
    """The live split the endpoint has if nobody but the rollout changed it."""
    if row.current_step == 0:
        return row.previous_traffic
    return step_split(row, row.current_step - 1)[0]


def _move(row: Rollout) -> None:
    """Write the current step's split, once; an endpoint no longer routing as the rollout left it, or a
    split the rules refuse now (the deployment went), aborts the rollout."""
    traffic, mirror = step_split(row, row.current_step)
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=row.endpoint_id)
        locked = Rollout.objects.select_for_update().get(pk=row.pk)
        if locked.state != RolloutStateChoices.RUNNING or locked.step_traffic is not None:
            return
        if locked.current_step != row.current_step:
            return
        if endpoint.traffic != _expected(locked):
            _end(
                locked,
                RolloutStateChoices.ABORTED,
                f"The traffic of {endpoint.name} changed outside the rollout before step "
                f"{_step_name(locked)} ({_words(endpoint.traffic)}); the rollout stopped and left it as is.",
            )
            return
        deployments = {
            d.name: d
            for d in endpoint.deployments.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
        }
        try:
            services.check_traffic(traffic, mirror, deployments)
            services.check_ready(traffic, mirror, endpoint, deployments)
        except Refused as exc:
            _restore(endpoint, locked)
            _end(
                locked,
                RolloutStateChoices.ABORTED,
                f"Step {_step_name(locked)} could not be applied ({exc.message}); the traffic was restored "
                f"to {_words(locked.previous_traffic)}.",
            )
            return
        moved = (traffic, mirror) != (endpoint.traffic, endpoint.mirror_traffic)
        endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
        endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
        if moved:
            services.emit_traffic_changed(endpoint)
        RouteTableVersion.bump()
        locked.step_traffic, locked.step_mirror = traffic, mirror
        locked.step_version = RouteTableVersion.current()
        locked.save(update_fields=["step_traffic", "step_mirror", "step_version", "updated_at"])


def live_gateways(start: datetime) -> list[str]:
    """Gateways alive when the window opened (they may have routed requests of it). A gateway holding a
    long-poll was last recorded when the poll arrived, up to routetable.LIVE_FOR before."""
    since = routetable.live_since(start)
    return list(GatewayAck.objects.filter(seen_at__gte=since).values_list("gateway_id", flat=True))


def measure(row: Rollout, start: datetime, end: datetime, *, partial: bool = False) -> dict | None:
    """The step's figures on [start, end), or None while the archive does not hold the whole window
    (unless `partial`: figures so far, for the pages)."""
    from monitoring import window
    from monitoring.tasks import telemetry_store

    step = step_plan(row)[row.current_step]
    store = telemetry_store()
    complete = comparison.watermarks_reached(live_gateways(start), end)
    waited = (clock() - end).total_seconds()
    if not complete and not partial and waited < settings.STUDIO_ROLLOUT_TELEMETRY_WAIT_S:
        return None
    figures = {
        "step": step["name"],
        "share": step["share"],
        "start": start.isoformat(),
        "end": end.isoformat(),
        "complete": complete,
    }
    if step["shadow"]:
        if (
            not partial
            and not comparison.comparisons_complete(row.endpoint.name, start, end)
            and (waited < settings.STUDIO_ROLLOUT_TELEMETRY_WAIT_S)
        ):
            return None
        report = comparison.comparison_report(row.endpoint.name, row.deployment, start, end)
        figures.update(
            {
                "compared": report.get("compared"),
                "agreement_pct": report.get("agreement_pct"),
                "shadow_errors": report.get("shadow_errors"),
                "disagreements": (report.get("disagreements") or [])[:5],
            }
        )
    else:
        figures.update(window.deployment_window(store, row.endpoint.name, row.deployment, start, end))
    return figures


def breaches(slo: dict, figures: dict) -> list[str]:
    """What of the SLO the figures break, in words; empty when they keep it."""
    found = []
    rate, limit = figures.get("error_rate_pct"), slo.get("max_error_rate_pct")
    if rate is not None and limit is not None and rate > limit:
        found.append(
            f"error rate {rate:g}% ({figures['errors']} of {figures['requests']} requests) is above "
            f"the {limit:g}% allowed"
        )
    p99, limit = figures.get("latency_p99_ms"), slo.get("max_p99_ms")
    if p99 is not None and limit is not None and p99 > limit:
        found.append(f"p99 latency {p99:g} ms is above the {limit:g} ms allowed")
    agreement, limit = figures.get("agreement_pct"), slo.get("min_agreement_pct")
    if agreement is not None and limit is not None and agreement < limit:
        found.append(
            f"shadow agreement {agreement:g}% (of {figures.get('compared')} compared) is below the "
            f"{limit:g}% required"
        )
    return found


def _judge(row: Rollout, figures: dict) -> None:
    """Record the step's figures and act on them: roll back, end, or go to the next step. One
    compare-and-swap on the step, so a step is judged once whoever drives."""
    found = breaches(row.slo, figures)
    figures["breaches"] = found
    last = row.current_step == len(step_plan(row)) - 1
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=row.endpoint_id)
        locked = Rollout.objects.select_for_update().get(pk=row.pk)
        if locked.state != RolloutStateChoices.RUNNING or locked.current_step != row.current_step:
            return
        if locked.step_started_at != row.step_started_at:
            return
        locked.figures = [*locked.figures, figures]
        if found:
            _restore(endpoint, locked)
            locked.save(update_fields=["figures", "updated_at"])
            _end(
                locked,
                RolloutStateChoices.ROLLED_BACK,
                f"Step {figures['step']}: {'; '.join(found)}. The traffic was restored to "
                f"{_words(locked.previous_traffic)}.",
            )
            return
        if last:
            locked.save(update_fields=["figures", "updated_at"])
            _end(
                locked,
                RolloutStateChoices.SUCCEEDED,
                f"{locked.deployment} takes {_words(endpoint.traffic)} after {len(locked.figures)} step(s) "
                "within the SLO.",
            )
            return
        locked.current_step += 1
        locked.step_traffic = locked.step_mirror = locked.step_version = locked.step_started_at = None
        locked.save(
            update_fields=[
                "figures",
                "current_step",
                "step_traffic",
                "step_mirror",
                "step_version",
                "step_started_at",
                "updated_at",
            ]
        )


def live_figures(row: Rollout) -> dict | None:
    """The figures of the step in progress so far (its window open), for the pages and the API."""
    if row.state != RolloutStateChoices.RUNNING or row.step_started_at is None:
        return None
    end = min(clock(), row.step_started_at + timedelta(seconds=row.interval_s))
    try:
        return measure(row, row.step_started_at, end, partial=True)
    except Exception:  # the pages must render whatever the archive does
        logger.exception("rollout %s: live figures", row.pk)
        return None


def get(endpoint: OnlineEndpoint, rollout_id) -> Rollout:
    try:
        return endpoint.rollouts.get(pk=int(rollout_id))
    except (ValueError, TypeError, Rollout.DoesNotExist):
        raise NotFound(f"Endpoint {endpoint.name!r} has no rollout {rollout_id}.") from None
