"""Alert rules: conditions on an endpoint's telemetry, evaluated every minute, level-triggered.

A pass measures each rule over its window of whole minutes that ends with the last minute whose
telemetry is all rolled up (`SETTLE`: a minute still arriving would read as a drop in traffic) and sets
the rule's state from that value alone; only a change of state is an event. So a pass that is missed,
late, or run twice changes nothing that the next pass would not. Passes may overlap (two beats, two
workers): each rule is evaluated under its own lease, timed by the wall clock (a pass that started long ago
must not take a lease already lapsed for everyone else), and its state changes by compare-and-swap on both
the state and the time of the last evaluation, so every transition is recorded, announced and mailed once,
and a late pass never writes an older window's reading over a newer one.

The transition, its AlertEvent row and its `studio.alert.fired|resolved` event (which webhooks deliver)
are written in one transaction. Email, being slow I/O, is sent after that commits; an event whose email
was not taken by the mail server (refused, or the pass died) is retried by later passes, a few times.
A pass past its soft time limit stops at once rather than carry on until the hard kill lands mid-write.

A firing rule that is deleted, by itself or with its deployment or endpoint, resolves in the deleting
transaction (`resolve_deleted`, from the rule's pre_delete signal): an incident opened by the fired event
is closed by a resolved one, `"reason": "rule deleted"`. Its history goes with it, so that email is sent
once, after the deletion commits, and not retried.

Rules mail the team's users only (any address with a Studio role), plus the domains an Admin allows with
STUDIO_ALERT_EMAIL_DOMAINS: Contributors cannot make Studio mail the outside world.

No data is no breach: a window without requests has neither error rate nor latency, so such rules stay
(or return to) `ok`; `request_rate_low` is the rule for traffic that stops.

Time comes from `clock()`, which tests replace to move it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from endpoints import leases
from endpoints.models import Lease, OnlineDeployment, OnlineEndpoint, Replica
from monitoring import histogram
from monitoring.choices import AlertErrorsChoices, AlertEventKindChoices, AlertKindChoices, AlertStateChoices
from monitoring.models import AlertEvent, AlertRule
from monitoring.queries import Bucket, floor_time, minute_rows
from studio import owed_mail
from studio.choices import RoleChoices
from studio.errors import Invalid, StateConflict
from studio.events import emit

logger = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
# How long a minute's telemetry takes to be all rolled up: a gateway closes its spool segment within 60 s
# (STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS), the shipper takes it within 10 s and rolls it up at once.
# Windows end this long ago, so a minute not all counted yet never reads as a drop in traffic.
SETTLE = timedelta(seconds=90)
MAX_WINDOW_MINUTES = 24 * 60
# A rule's lease outlives any one evaluation (a few queries) by far; a holder that dies frees it this late.
LEASE_TTL = timedelta(seconds=60)
LEASE_PREFIX = "alert-rule:"
DELETED = "rule deleted"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
WINDOW_RE = re.compile(r"^(\d+)\s*([mhd]?)\Z")
FIELDS = {"name", "deployment", "kind", "threshold", "window", "errors", "recipients"}


@dataclass(frozen=True)
class Kind:
    noun: str  # what is measured, in a sentence
    unit: str  # after the value in messages: "%", " ms", ...
    below: bool = False  # fires when the value is under the threshold, not over it


KINDS: dict[str, Kind] = {
    AlertKindChoices.ERROR_RATE: Kind("The error rate", "%"),
    AlertKindChoices.LATENCY_P99: Kind("The p99 latency", " ms"),
    AlertKindChoices.REQUEST_RATE_LOW: Kind("The request rate", " req/min", below=True),
    AlertKindChoices.REQUEST_RATE_HIGH: Kind("The request rate", " req/min"),
    AlertKindChoices.REPLICA_RESTARTS: Kind("The count of replica restarts", " restarts"),
    AlertKindChoices.DRIFT_SCORE: Kind("The drift score", ""),
}


def clock() -> datetime:
    """Now, for every decision a test may want to move."""
    return timezone.now()


# Windows


def parse_window(text: object) -> int:
    """`5m`, `1h`, `1d` or a number of minutes -> minutes; raises Invalid saying what to write."""
    match = WINDOW_RE.match(str(text).strip().lower()) if isinstance(text, str | int) else None
    minutes = int(match.group(1)) * {"": 1, "m": 1, "h": 60, "d": 1440}[match.group(2)] if match else 0
    if not match or not 1 <= minutes <= MAX_WINDOW_MINUTES:
        raise Invalid(
            f"{text!r} is not a window: write whole minutes or hours, e.g. 5m, 30m or 1h, from 1m to 24h.",
            field="window",
        )
    return minutes


def window_text(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


# Rules: creation, change, deletion


def _recipients(value: object) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise Invalid("give a list of email addresses (or one comma-separated string).", field="recipients")
    addresses = [item.strip() for item in items if item.strip()]
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise Invalid(f"{address!r} is not an email address.", field="recipients") from None
    outside = sorted(set(addresses) - _mailable(addresses))
    if outside:
        domains = settings.STUDIO_ALERT_EMAIL_DOMAINS
        also = f" or of {', '.join(domains)}" if domains else ""
        raise Invalid(
            f"{', '.join(map(repr, outside))}: alerts mail the addresses of Studio's users{also} only. "
            "Give a team member's address, or ask an Admin to allow that domain in "
            "STUDIO_ALERT_EMAIL_DOMAINS.",
            field="recipients",
        )
    return list(dict.fromkeys(addresses))


def _mailable(addresses: list[str]) -> set[str]:
    """Those of `addresses` Studio may mail: an active user's with a role, or in an allowed domain."""
    domains = {domain.lower().lstrip("@") for domain in settings.STUDIO_ALERT_EMAIL_DOMAINS}
    allowed = {address for address in addresses if address.rpartition("@")[2].lower() in domains}
    users = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name__in=RoleChoices.values))
    )
    team = {email.lower() for email in users.exclude(email="").values_list("email", flat=True)}
    return allowed | {address for address in addresses if address.lower() in team}


def _deployment(endpoint: OnlineEndpoint, name: object) -> OnlineDeployment | None:
    if name in (None, ""):
        return None
    found = endpoint.deployments.filter(name=name).first() if isinstance(name, str) else None
    if found is None:
        names = sorted(endpoint.deployments.values_list("name", flat=True))
        choice = f"use one of {', '.join(names)}, or" if names else "it has none yet:"
        raise Invalid(
            f"endpoint {endpoint.name!r} has no deployment {name!r}: {choice} leave deployment out to "
            "watch the whole endpoint.",
            field="deployment",
        )
    return found


def _threshold(value: object, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid("give a number.", field="threshold")
    try:
        number = float(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a number.", field="threshold") from None
    if not number >= 0 or number == float("inf"):
        raise Invalid(f"{value!r} is not a number of zero or more.", field="threshold")
    if kind == AlertKindChoices.ERROR_RATE and number > 100:
        raise Invalid(f"an error rate is a percentage: give 0 to 100, not {value!r}.", field="threshold")
    return number


def clean(endpoint: OnlineEndpoint, data: object, rule: AlertRule | None = None) -> dict:
    """A rule's fields from a request body (every field for a new rule, any of them for a change);
    raises Invalid naming each field to fix."""
    if not isinstance(data, dict):
        raise Invalid("send a JSON object with kind, threshold and window.")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise Invalid(
            f"unknown field {', '.join(map(repr, unknown))}: a rule has {', '.join(sorted(FIELDS))}."
        )
    missing = [] if rule else [key for key in ("kind", "threshold") if data.get(key) in (None, "")]
    if missing:
        raise Invalid({key: "is required." for key in missing})
    values: dict = {}
    kind = data.get("kind", rule.kind if rule else None)
    if kind not in AlertKindChoices.values:
        raise Invalid(f"{kind!r} is not a kind of alert: use one of {', '.join(KINDS)}.", field="kind")
    values["kind"] = kind
    if "threshold" in data or rule is None or kind == AlertKindChoices.ERROR_RATE:
        values["threshold"] = _threshold(data.get("threshold", rule.threshold if rule else None), kind)
    if "window" in data or rule is None:
        window = data.get("window")
        values["window_minutes"] = parse_window("5m" if window is None else window)
    if "errors" in data:
        errors = data["errors"] or AlertErrorsChoices.SERVER
        if errors not in AlertErrorsChoices.values:
            raise Invalid(
                f"{errors!r} is not a choice: use 5xx (server errors, as Azure counts them), 4xx (424 "
                "is a model that failed) or any.",
                field="errors",
            )
        values["errors"] = errors
    if "deployment" in data or rule is None:
        values["deployment"] = _deployment(endpoint, data.get("deployment"))
    if "recipients" in data:
        values["recipients"] = _recipients(data["recipients"] or [])
    if "name" in data or rule is None:
        name = data.get("name") or None
        if name is not None and not (isinstance(name, str) and NAME_RE.match(name)):
            raise Invalid(
                f"{name!r} is not a rule name: use up to 64 letters, digits, '.', '_' and '-'.", field="name"
            )
        others = endpoint.alert_rules.exclude(pk=rule.pk if rule else None)
        if name is None:
            deployment = values.get("deployment")
            base = f"{deployment.name}-{kind}" if deployment else kind
            name = next(
                candidate
                for candidate in (base, *(f"{base}-{n}" for n in range(2, 1000)))
                if not others.filter(name=candidate).exists()
            )
        elif others.filter(name=name).exists():
            raise Invalid(f"endpoint {endpoint.name!r} has a rule named {name!r} already.", field="name")
        values["name"] = name
    return values


def create_rule(endpoint: OnlineEndpoint, data: object, user) -> AlertRule:
    """A new rule, `ok` until its first evaluation says otherwise."""
    values = clean(endpoint, data)
    try:
        with transaction.atomic():
            return AlertRule.objects.create(endpoint=endpoint, created_by=user, **values)
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise StateConflict(
            f"endpoint {endpoint.name!r} has a rule named {values['name']!r} already.", field="name"
        ) from None


def update_rule(rule: AlertRule, data: object) -> AlertRule:
    """Change a rule; its state is left for the next evaluation, which fires or resolves as the changed
    rule reads the same telemetry."""
    values = clean(rule.endpoint, data, rule)
    if values.get("kind", rule.kind) != rule.kind:
        values["restart_samples"] = []
    for key, value in values.items():
        setattr(rule, key, value)
    # Only what the request changed: the state is the evaluator's, which may have moved meanwhile.
    try:
        with transaction.atomic():
            rule.save(update_fields=[*values, "updated_at"])
    except IntegrityError:
        raise StateConflict(
            f"endpoint {rule.endpoint.name!r} has a rule named {rule.name!r} already.", field="name"
        ) from None
    return rule


def delete_rule(rule: AlertRule) -> None:
    """Delete the rule and its history; a firing rule resolves (`resolve_deleted`) as it goes."""
    pk = rule.pk
    with transaction.atomic():
        rule.delete()
        leases.forget(lease_name(pk))


def resolve_deleted(rule: AlertRule) -> None:
    """Announce `resolved (rule deleted)` if the rule being deleted is firing; called inside the deleting
    transaction (the rule's pre_delete signal), so the event is recorded, or rolled back, with the deletion.

    The compare-and-swap makes this and an evaluation that resolves the rule meanwhile announce it once;
    an evaluation that would fire it later finds no row. Its email is sent once the deletion commits.
    """
    now = clock()
    if not AlertRule.objects.filter(pk=rule.pk, state=AlertStateChoices.FIRING).update(
        state=AlertStateChoices.OK, state_since=now
    ):
        return
    # Not saved: the rule's history is being deleted with it; this only carries the email's figures.
    event = _event(rule, AlertEventKindChoices.RESOLVED, rule.value, now)
    _announce(rule, event, reason=DELETED)
    if event.email_to:
        title, body = message(event, reason=DELETED)
        transaction.on_commit(lambda: _send_once(title, body, event.email_to))


def _send_once(title: str, body: str, to: list[str]) -> None:
    """One attempt: no row is left to record a refusal on, or to retry from."""
    try:
        mail.send_mail(title, body, None, to)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up: let it stop
    except Exception as exc:  # noqa: BLE001 -- the deletion committed; a refused email is only logged
        logger.warning("alert email %r to %s failed: %s", title, to, exc)


# Measuring


def measure(rule: AlertRule, now: datetime) -> float | None:
    """The rule's value over its window of whole minutes, ending at the last minute whose telemetry has
    settled; None when there is none (no requests, no drift run yet, no earlier look at the restart
    counters)."""
    end = floor_time(now - SETTLE, MINUTE)
    start = end - timedelta(minutes=rule.window_minutes)
    if rule.kind == AlertKindChoices.DRIFT_SCORE:
        return _drift(rule, now)
    if rule.kind == AlertKindChoices.REPLICA_RESTARTS:
        return _restarts(rule, now)
    live = Bucket()
    for row in minute_rows(rule.endpoint.name, rule.deployment.name if rule.deployment else None, start, end):
        live.add(row)
    if rule.kind in (AlertKindChoices.REQUEST_RATE_LOW, AlertKindChoices.REQUEST_RATE_HIGH):
        return round(live.requests / rule.window_minutes, 2)
    if not live.requests:
        return None
    if rule.kind == AlertKindChoices.LATENCY_P99:
        return histogram.percentile(live.latency, 0.99)
    errors = {
        AlertErrorsChoices.SERVER: live.errors_5xx,
        AlertErrorsChoices.CLIENT: live.errors_4xx,
        AlertErrorsChoices.ANY: live.errors_4xx + live.errors_5xx,
    }[rule.errors]
    return round(100 * errors / live.requests, 2)


def _drift(rule: AlertRule, now: datetime) -> float | None:
    """The latest drift score of the deployment, or the worst of the endpoint's deployments, from runs
    whose window ends within the rule's: an old score says nothing of the data now."""
    from monitoring.monitors import latest_drift_score

    since = now - timedelta(minutes=rule.window_minutes)
    deployments = [rule.deployment] if rule.deployment else list(rule.endpoint.deployments.all())
    scores = [latest_drift_score(deployment, since=since) for deployment in deployments]
    scores = [score for score in scores if score is not None]
    return max(scores) if scores else None


def _restarts(rule: AlertRule, now: datetime) -> float | None:
    """Restarts of the rule's replicas within the window.

    Replica rows count restarts but do not time them, so each pass keeps the counters it saw
    (`restart_samples`) and the value is the growth since the sample at the window's start: a replica
    absent from that sample was started since, and all its restarts count. The first pass has nothing to
    compare with (None); until the samples reach back a whole window, the value covers what they do.
    Restarts of a replica removed within the window are no longer counted.
    """
    replicas = Replica.objects.filter(deployment__endpoint=rule.endpoint)
    if rule.deployment:
        replicas = replicas.filter(deployment=rule.deployment)
    current = {str(pk): restarts for pk, restarts in replicas.values_list("pk", "restarts")}
    start = now - timedelta(minutes=rule.window_minutes)
    samples = [(datetime.fromisoformat(at), counters) for at, counters in rule.restart_samples]
    samples = [(at, counters) for at, counters in samples if at <= now]
    older = [sample for sample in samples if sample[0] <= start]
    kept = older[-1:] + [sample for sample in samples if sample[0] > start]
    rule.restart_samples = [[at.isoformat(), counters] for at, counters in kept] + [
        [now.isoformat(), current]
    ]
    if not kept:
        return None
    base = kept[0][1]
    return float(sum(max(count - base.get(pk, 0), 0) for pk, count in current.items()))


def breached(rule: AlertRule, value: float | None) -> bool:
    if value is None:
        return False
    return value < rule.threshold if KINDS[rule.kind].below else value > rule.threshold


# Evaluating


def lease_name(rule_id: int) -> str:
    return f"{LEASE_PREFIX}{rule_id}"


def subject(rule: AlertRule) -> str:
    """The CloudEvents subject, named as the deployment events name theirs (studio.events): the deployment
    the rule watches, or its endpoint."""
    base = f"online-endpoints/{rule.endpoint.name}"
    return f"{base}/deployments/{rule.deployment.name}" if rule.deployment else base


def recipients(rule: AlertRule) -> list[str]:
    """Who is mailed: the rule's recipients, else whoever created the endpoint (if they have an email)."""
    if rule.recipients:
        return list(rule.recipients)
    creator = rule.endpoint.created_by
    return [creator.email] if creator is not None and creator.email else []


def evaluate_rule(rule_id: int, now: datetime) -> AlertEvent | None:
    """Measure one rule and set its state; the AlertEvent of a transition, else None (also when another
    pass holds the rule: it does the same work)."""
    # The lease is timed by the wall clock: `now` may be long past for a slow pass, and a lease taken at
    # that time could be lapsed already, free for a newer pass to take while this one still works.
    held = leases.acquire(lease_name(rule_id), LEASE_TTL)
    if held is None:
        return None
    try:
        rule = (
            AlertRule.objects.select_related("endpoint__created_by", "deployment").filter(pk=rule_id).first()
        )
        if rule is None:
            return None
        value = measure(rule, now)
        state = AlertStateChoices.FIRING if breached(rule, value) else AlertStateChoices.OK
        measured = {"value": value, "evaluated_at": now, "restart_samples": rule.restart_samples}
        # A pass that reads an older window than the last one written changes nothing.
        row_if_older = AlertRule.objects.filter(
            Q(evaluated_at__isnull=True) | Q(evaluated_at__lt=now), pk=rule.pk
        )
        with transaction.atomic():
            if state == rule.state:
                row_if_older.update(**measured)
                return None
            changed = row_if_older.filter(state=rule.state).update(state=state, state_since=now, **measured)
            if not changed:
                return None
            fired = state == AlertStateChoices.FIRING
            kind = AlertEventKindChoices.FIRED if fired else AlertEventKindChoices.RESOLVED
            event = _event(rule, kind, value, now)
            event.save()
            _announce(rule, event)
        return event
    finally:
        held.release()


def _event(rule: AlertRule, kind: str, value: float | None, now: datetime) -> AlertEvent:
    """The (unsaved) record of a transition, with the rule's figures and recipients as they are now."""
    return AlertEvent(
        rule=rule,
        kind=kind,
        value=value,
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        time=now,
        email_to=recipients(rule),
    )


def _announce(rule: AlertRule, event: AlertEvent, reason: str = "") -> None:
    data = {
        "rule": rule.name,
        "metric": rule.kind,
        "value": event.value,
        "threshold": event.threshold,
        "window": window_text(event.window_minutes),
    }
    emit(
        f"studio.alert.{event.kind}",
        subject=subject(rule),
        data={**data, "reason": reason} if reason else data,
    )


def evaluate_all(now: datetime | None = None) -> dict:
    """One pass over every rule, then the emails still owed; counts of what happened."""
    now = now or clock()
    report = {"rules": 0, "fired": 0, "resolved": 0, "failed": 0, "emails": 0}
    rule_ids = list(AlertRule.objects.order_by("pk").values_list("pk", flat=True))
    # The leases of rules deleted with their endpoint or deployment (delete_rule forgets its own).
    Lease.objects.filter(name__startswith=LEASE_PREFIX, owner="").exclude(
        name__in=[lease_name(pk) for pk in rule_ids]
    ).delete()
    for rule_id in rule_ids:
        report["rules"] += 1
        try:
            event = evaluate_rule(rule_id, now)
        except SoftTimeLimitExceeded:
            raise  # the task's time is up: stop before the hard kill lands mid-transaction
        except Exception:
            # One rule's failure (a drift monitor that raises) must not silence the others.
            logger.exception("alert rule %s could not be evaluated", rule_id)
            report["failed"] += 1
            continue
        if event is not None:
            report[event.kind] += 1
    report["emails"] = send_pending_emails(now)
    return report


# Email


def message(event: AlertEvent, reason: str = "") -> tuple[str, str]:
    """The email's subject and body; `reason` says why a rule resolved other than by its value."""
    rule = event.rule
    kind = KINDS[rule.kind]
    unit = kind.unit
    scope = subject(rule).removeprefix("online-endpoints/").replace("/deployments/", "/")
    window = window_text(event.window_minutes)
    value = "no data" if event.value is None else f"{event.value:g}{unit}"
    comparison = "under" if kind.below else "over"
    if event.kind == AlertEventKindChoices.FIRED:
        title = f"[Studio] Firing: {rule.name} on {scope}: {rule.kind} {value}"
        summary = f"{kind.noun} is {value} over the last {window}, {comparison} the threshold of"
    elif reason:
        title = f"[Studio] Resolved ({reason}): {rule.name} on {scope}"
        summary = f"The rule was deleted while firing (last value: {value} over {window}); its threshold was"
    else:
        title = f"[Studio] Resolved: {rule.name} on {scope}"
        state = "has no value (no requests)" if event.value is None else f"is back to {value}"
        summary = f"{kind.noun} {state} over the last {window}; the threshold is"
    body = (
        f"{summary} {event.threshold:g}{unit}.\n\n"
        f"Rule: {rule.name}\nWatching: {scope}\nAt: {event.time:%Y-%m-%d %H:%M} UTC\n\n"
        f"Charts and history: /endpoints/{rule.endpoint.name}/monitoring/ on your Studio server.\n"
    )
    return title, body


def send_pending_emails(now: datetime) -> int:
    """Send every transition's email that is owed (studio.owed_mail). How many went."""
    return owed_mail.send_owed(
        AlertEvent.objects.select_related("rule__endpoint", "rule__deployment"), message, now
    )
