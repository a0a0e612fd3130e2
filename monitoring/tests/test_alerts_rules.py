"""Each kind of alert rule over its window, from telemetry shipped and rolled up as the gateway's is, from
replicas' restart counters and from drift runs; emails retried when the mail server refuses; the rules
and their history on the endpoint's Monitoring tab."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from endpoints.models import Replica
from monitoring import alerts, tasks
from monitoring.choices import MonitorRunStateChoices, MonitorTriggerChoices
from monitoring.models import AlertEvent, AlertRule, Monitor, MonitorRun
from monitoring.tests.factories import event, recent, write_segment
from studio import owed_mail
from studio.models import Event
from studio.testing import signed_in
from studio.testkit import free_port

pytestmark = pytest.mark.django_db

RULES = "/api/v1/online-endpoints/fraud/alerts/"


def _rule(team, **body) -> dict:
    response = team.contributor.client().post(RULES, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _states() -> dict[str, tuple[str, float | None]]:
    return {rule.name: (rule.state, rule.value) for rule in AlertRule.objects.all()}


def _history(name: str) -> list[str]:
    return list(
        AlertEvent.objects.filter(rule__name=name).order_by("time", "id").values_list("kind", flat=True)
    )


def _evaluate(monkeypatch, now: datetime) -> dict:
    """The beat task, run at `now`."""
    monkeypatch.setattr(alerts, "clock", lambda: now)
    return tasks.evaluate_alerts()


@pytest.fixture
def busy_minute(endpoints, spool):
    """Half an hour ago, one minute: blue 20 requests at 10 ms and 2 at 900 ms, green 5 at 10 ms."""
    minute = recent(30).replace(second=0)
    at = minute + timedelta(seconds=20)
    events = [event(at, deployment="blue", latency_ms=10.0) for _ in range(20)]
    events += [event(at, deployment="blue", latency_ms=900.0) for _ in range(2)]
    events += [event(at, deployment="green", latency_ms=10.0) for _ in range(5)]
    write_segment(spool, events)
    tasks.ship_telemetry()
    return minute


def test_latency_and_request_rates_are_read_over_whole_minutes(team, busy_minute, monkeypatch, mailoutbox):
    _rule(team, name="slow-blue", deployment="blue", kind="latency_p99", threshold=500, window="5m")
    _rule(team, name="busy", kind="request_rate_high", threshold=3, window="5m")
    _rule(team, name="quiet-green", deployment="green", kind="request_rate_low", threshold=2, window="5m")
    _rule(team, name="quiet", kind="request_rate_low", threshold=2, window="5m")
    _rule(team, name="at-threshold", kind="request_rate_high", threshold=5.4, window="5m")

    # A minute still arriving is not in the window: until it has settled, nothing is counted, which is
    # too little traffic.
    _evaluate(monkeypatch, busy_minute + timedelta(seconds=59) + alerts.SETTLE)
    assert _states() == {
        "slow-blue": ("ok", None),
        "busy": ("ok", 0.0),
        "quiet-green": ("firing", 0.0),
        "quiet": ("firing", 0.0),
        "at-threshold": ("ok", 0.0),
    }

    report = _evaluate(monkeypatch, busy_minute + timedelta(minutes=1) + alerts.SETTLE)
    assert report == {"rules": 5, "fired": 2, "resolved": 1, "failed": 0, "emails": 0}  # nobody to mail
    states = _states()
    assert states["slow-blue"][0] == "firing" and 800 < states["slow-blue"][1] < 1000
    assert states["busy"] == ("firing", 5.4)  # 27 requests in 5 minutes
    assert states["quiet-green"] == ("firing", 1.0)
    assert states["quiet"] == ("ok", 5.4)
    assert states["at-threshold"] == ("ok", 5.4), "a value at the threshold is not over it"
    # Level-triggered: the same state read again is no new event.
    _evaluate(monkeypatch, busy_minute + timedelta(minutes=2) + alerts.SETTLE)
    assert Event.objects.filter(type="studio.alert.fired").count() == 4

    # Once the busy minute leaves the window: no latency is no breach, and no traffic is too little.
    _evaluate(monkeypatch, busy_minute + timedelta(minutes=6) + alerts.SETTLE)
    assert _states() == {
        "slow-blue": ("ok", None),
        "busy": ("ok", 0.0),
        "quiet-green": ("firing", 0.0),
        "quiet": ("firing", 0.0),
        "at-threshold": ("ok", 0.0),
    }
    assert _history("slow-blue") == ["fired", "resolved"]
    assert _history("quiet-green") == ["fired"]
    assert _history("quiet") == ["fired", "resolved", "fired"]
    resolved = Event.objects.get(type="studio.alert.resolved", data__rule="busy")
    assert (resolved.subject, resolved.data["value"], resolved.data["window"]) == (
        "online-endpoints/fraud",
        0.0,
        "5m",
    )
    assert mailoutbox == []


def test_replica_restarts_count_the_growth_of_the_counters_within_the_window(team, endpoints, monkeypatch):
    blue = endpoints.deployments.get(name="blue")
    first = Replica.objects.create(deployment=blue, revision=1, index=0)
    _rule(team, name="restarts", deployment="blue", kind="replica_restarts", threshold=1, window="10m")
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    _evaluate(monkeypatch, start)
    assert _states()["restarts"] == ("ok", None), "nothing to compare the counters with yet"
    Replica.objects.filter(pk=first.pk).update(restarts=2)  # supervision restarted it twice
    _evaluate(monkeypatch, start + timedelta(minutes=1))
    assert _states()["restarts"] == ("firing", 2.0)
    _evaluate(monkeypatch, start + timedelta(minutes=5))
    assert _states()["restarts"] == ("firing", 2.0), "still within the window"
    _evaluate(monkeypatch, start + timedelta(minutes=12))
    assert _states()["restarts"] == ("ok", 0.0), "the restarts are older than the window"
    # A replica started since the last look: every restart of it is within the window.
    Replica.objects.create(deployment=blue, revision=2, index=0, restarts=3)
    _evaluate(monkeypatch, start + timedelta(minutes=13))
    assert _states()["restarts"] == ("firing", 3.0)
    assert _history("restarts") == ["fired", "resolved", "fired"]
    assert len(AlertRule.objects.get().restart_samples) <= 12


def test_a_drift_score_rule_reads_the_latest_run_of_the_deployments_monitors(team, endpoints, monkeypatch):
    blue = endpoints.deployments.get(name="blue")
    monitor = Monitor.objects.create(endpoint=endpoints, deployment=blue, metrics={"psi": 0.2}, window="1h")
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def run(score: float, minutes: int) -> None:
        at = now + timedelta(minutes=minutes)
        MonitorRun.objects.create(
            monitor=monitor, trigger=MonitorTriggerChoices.SCHEDULE, state=MonitorRunStateChoices.SUCCEEDED,
            window_start=at - timedelta(hours=1), window_end=at, score=score, started_at=at, finished_at=at,
        )  # fmt: skip

    _rule(team, name="drift-blue", deployment="blue", kind="drift_score", threshold=0.25)
    _rule(team, name="drift-any", kind="drift_score", threshold=0.25)
    _evaluate(monkeypatch, now)
    assert _states() == {"drift-blue": ("ok", None), "drift-any": ("ok", None)}
    run(0.4, 1)
    _evaluate(monkeypatch, now + timedelta(minutes=2))
    assert _states() == {"drift-blue": ("firing", 0.4), "drift-any": ("firing", 0.4)}
    run(0.1, 3)
    _evaluate(monkeypatch, now + timedelta(minutes=4))
    assert _states() == {"drift-blue": ("ok", 0.1), "drift-any": ("ok", 0.1)}
    assert _history("drift-blue") == ["fired", "resolved"]

    # A changed threshold is judged by the next pass; the change itself leaves the state alone.
    rule = AlertRule.objects.get(name="drift-blue")
    changed = team.contributor.client().patch(f"{RULES}{rule.pk}/", {"threshold": 0.05}, format="json").json()
    assert (changed["state"], changed["threshold"]) == ("ok", 0.05)
    _evaluate(monkeypatch, now + timedelta(minutes=5))
    assert _states()["drift-blue"] == ("firing", 0.1)
    assert _history("drift-blue") == ["fired", "resolved", "fired"]


def test_an_email_the_server_refused_is_sent_by_a_later_pass(
    team, busy_minute, endpoints, settings, monkeypatch
):
    from django.core import mail

    endpoints.created_by = team.contributor.user
    endpoints.save()
    _rule(team, name="busy", kind="request_rate_high", threshold=3, window="5m")
    # A real SMTP connection to a loopback port nobody listens on: refused.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", free_port(), False
    now = busy_minute + timedelta(minutes=1) + alerts.SETTLE
    assert _evaluate(monkeypatch, now)["emails"] == 0
    sent = AlertEvent.objects.get()
    assert (sent.email_to, sent.email_attempts, sent.email_sent_at) == (["contributor@example.com"], 1, None)
    assert sent.email_error

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    assert _evaluate(monkeypatch, now + timedelta(minutes=1))["emails"] == 0, "too soon to try again"
    assert _evaluate(monkeypatch, now + owed_mail.RETRY_AFTER)["emails"] == 1
    assert _evaluate(monkeypatch, now + 2 * owed_mail.RETRY_AFTER)["emails"] == 0
    sent.refresh_from_db()
    assert (sent.email_attempts, sent.email_error) == (2, "") and sent.email_sent_at
    assert [message.to for message in mail.outbox] == [["contributor@example.com"]]
    assert mail.outbox[0].subject == "[Studio] Firing: busy on fraud: request_rate_high 5.4 req/min"
    assert mail.outbox[0].body.startswith(
        "The request rate is 5.4 req/min over the last 5m, over the threshold of 3 req/min."
    )


def test_the_monitoring_tab_shows_the_rules_and_their_history(team, busy_minute, monkeypatch):
    page = signed_in(team.reader.user).get("/endpoints/fraud/monitoring/")
    assert b"No alert rule watches this endpoint" in page.content
    _rule(team, name="busy", kind="request_rate_high", threshold=3, window="5m")
    _rule(team, name="slow-blue", deployment="blue", kind="latency_p99", threshold=5000, window="1h")
    _evaluate(monkeypatch, busy_minute + timedelta(minutes=1) + alerts.SETTLE)

    html = signed_in(team.reader.user).get("/endpoints/fraud/monitoring/").content.decode()
    assert 'data-alert-rule="busy"' in html and 'data-alert-rule="slow-blue"' in html
    busy_row = html.split('data-alert-rule="busy"')[1].split("</tr>")[0]
    assert "firing" in busy_row and "5.4 req/min" in busy_row and "all deployments" in busy_row
    blue_row = html.split('data-alert-rule="slow-blue"')[1].split("</tr>")[0]
    assert ">ok<" in blue_row and "over 1h" in blue_row
    assert html.count('data-alert-event="fired"') == 1


def test_contributors_add_and_delete_rules_on_the_tab_and_readers_cannot(team, endpoints):
    tab = "/endpoints/fraud/monitoring/"
    add = f"{tab}alerts/"
    contributor, reader = signed_in(team.contributor.user), signed_in(team.reader.user)
    assert b'<details class="card-edit">' in contributor.get(tab).content, "the form starts folded"
    assert b'id="alert-rule-form"' not in reader.get(tab).content
    form = {
        "kind": "error_rate",
        "deployment": "blue",
        "threshold": "5",
        "window": "15m",
        "counted_errors": "any",
    }
    assert reader.post(add, form).status_code == 403

    refused = contributor.post(add, {**form, "window": "soon"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400
    assert "&#x27;soon&#x27; is not a window" in refused.content.decode()
    assert b'<details class="card-edit" open>' in refused.content, "unfolded, to show what to fix"
    assert AlertRule.objects.count() == 0

    added = contributor.post(
        add, {**form, "recipients": "reader@example.com, admin@example.com"}, HTTP_HX_REQUEST="true"
    )
    assert added.status_code == 200
    assert 'data-alert-rule="blue-error_rate"' in added.content.decode()
    rule = AlertRule.objects.get()
    assert (rule.deployment.name, rule.window_minutes, rule.errors, rule.threshold) == (
        "blue",
        15,
        "any",
        5.0,
    )
    assert (
        rule.recipients == ["reader@example.com", "admin@example.com"]
        and rule.created_by == team.contributor.user
    )
    # Without htmx: back to the tab.
    plain = contributor.post(add, {**form, "deployment": "", "kind": "latency_p99", "threshold": "300"})
    assert (plain.status_code, plain["Location"]) == (302, tab)
    assert AlertRule.objects.get(name="latency_p99").deployment is None

    delete = f"{tab}alerts/{rule.pk}/delete/"
    assert reader.post(delete).status_code == 403
    deleted = contributor.post(delete, HTTP_HX_REQUEST="true")
    assert deleted.status_code == 200 and 'data-alert-rule="blue-error_rate"' not in deleted.content.decode()
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["latency_p99"]
    assert contributor.post(delete).status_code == 404


def test_a_rule_goes_with_its_deployment_and_leaves_no_lease_behind(team, endpoints, monkeypatch):
    from endpoints.models import Lease

    rule = _rule(team, deployment="green", kind="error_rate", threshold=5)
    _rule(team, kind="error_rate", threshold=5)
    _evaluate(monkeypatch, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    assert Lease.objects.filter(name__startswith="alert-rule:").count() == 2
    endpoints.deployments.get(name="green").delete()  # what the deletion job does last

    assert _evaluate(monkeypatch, datetime(2026, 3, 1, 12, 1, tzinfo=UTC))["rules"] == 1
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["error_rate"]
    assert not Lease.objects.filter(name=f"alert-rule:{rule['id']}").exists()
    assert Lease.objects.filter(name__startswith="alert-rule:").count() == 1


def test_deleting_a_firing_rule_resolves_it_saying_why(
    team, busy_minute, endpoints, monkeypatch, mailoutbox, django_capture_on_commit_callbacks
):
    endpoints.created_by = team.contributor.user
    endpoints.save()
    busy = _rule(team, name="busy", kind="request_rate_high", threshold=3, window="5m")
    calm = _rule(team, name="calm", kind="request_rate_high", threshold=100, window="5m")
    _evaluate(monkeypatch, busy_minute + timedelta(minutes=1) + alerts.SETTLE)
    assert _states()["busy"] == ("firing", 5.4)
    mailoutbox.clear()

    client = team.contributor.client()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"{RULES}{busy['id']}/").status_code == 204
        assert client.delete(f"{RULES}{calm['id']}/").status_code == 204
    resolved = Event.objects.get(type="studio.alert.resolved")
    assert (resolved.subject, resolved.data) == (
        "online-endpoints/fraud",
        {
            "rule": "busy",
            "metric": "request_rate_high",
            "value": 5.4,
            "threshold": 3.0,
            "window": "5m",
            "reason": "rule deleted",
        },
    )
    assert [(m.subject, m.to) for m in mailoutbox] == [
        ("[Studio] Resolved (rule deleted): busy on fraud", ["contributor@example.com"])
    ]
    assert mailoutbox[0].body.startswith("The rule was deleted while firing (last value: 5.4 req/min")


def test_a_firing_rule_deleted_with_its_deployment_or_endpoint_resolves_in_that_transaction(
    team, endpoints, monkeypatch
):
    from endpoints.models import OnlineEndpoint

    # No traffic at all: too little, so both fire at once.
    _rule(team, name="green-quiet", deployment="green", kind="request_rate_low", threshold=1)
    _rule(team, name="quiet", kind="request_rate_low", threshold=1)
    _evaluate(monkeypatch, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    assert _states() == {"green-quiet": ("firing", 0.0), "quiet": ("firing", 0.0)}

    class Crash(Exception):
        pass

    # A deletion that fails after the rows went takes the announcement back with it.
    with pytest.raises(Crash), transaction.atomic():
        endpoints.deployments.get(name="green").delete()
        raise Crash
    assert not Event.objects.filter(type="studio.alert.resolved").exists()
    assert _states()["green-quiet"] == ("firing", 0.0)

    endpoints.deployments.get(name="green").delete()  # what the deletion job does last
    OnlineEndpoint.objects.get(name="fraud").delete()  # and, once empty, the endpoint's
    resolved = Event.objects.filter(type="studio.alert.resolved").order_by("id")
    assert [(e.subject, e.data["rule"], e.data["reason"]) for e in resolved] == [
        ("online-endpoints/fraud/deployments/green", "green-quiet", "rule deleted"),
        ("online-endpoints/fraud", "quiet", "rule deleted"),
    ]
    assert not AlertRule.objects.exists()


def test_a_pass_stops_at_its_soft_time_limit(team, endpoints, busy_minute, monkeypatch, settings):
    from celery.exceptions import SoftTimeLimitExceeded

    from monitoring import monitors

    _rule(team, name="drift", kind="drift_score", threshold=0.2)
    _rule(team, name="later", kind="request_rate_low", threshold=1)

    def slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()  # the limit strikes while a drift query runs

    monkeypatch.setattr(monitors, "latest_drift_score", slow)
    with pytest.raises(SoftTimeLimitExceeded):
        _evaluate(monkeypatch, busy_minute + timedelta(minutes=1) + alerts.SETTLE)
    assert AlertRule.objects.get(name="later").evaluated_at is None, "no rule after the limit"

    # ... or while an email is being sent: the attempt is counted, and the next pass retries it.
    monkeypatch.undo()
    AlertRule.objects.filter(name="later").update(recipients=["reader@example.com"])
    settings.EMAIL_BACKEND = f"{__name__}.OutOfTimeBackend"
    with pytest.raises(SoftTimeLimitExceeded):
        _evaluate(monkeypatch, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    pending = AlertEvent.objects.get(rule__name="later")
    assert (pending.email_attempts, pending.email_sent_at, pending.email_error) == (1, None, "")


class OutOfTimeBackend:
    """An email backend whose send is cut short by the task's soft time limit."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        from celery.exceptions import SoftTimeLimitExceeded

        raise SoftTimeLimitExceeded()


def test_a_late_pass_never_overwrites_a_newer_one(team, busy_minute, monkeypatch):
    _rule(team, name="busy", kind="request_rate_high", threshold=3, window="5m")
    newer = busy_minute + timedelta(minutes=1) + alerts.SETTLE
    _evaluate(monkeypatch, newer)
    assert _states()["busy"] == ("firing", 5.4)

    # A pass that began earlier (its window still without the busy minute) reaches the rule only now.
    report = _evaluate(monkeypatch, newer - timedelta(seconds=30))
    assert report["resolved"] == 0
    rule = AlertRule.objects.get()
    assert (rule.state, rule.value, rule.evaluated_at) == ("firing", 5.4, newer)
    assert _history("busy") == ["fired"]
    # Nor does a late pass that reads the same state write its older value.
    _evaluate(monkeypatch, newer + timedelta(minutes=2))
    _evaluate(monkeypatch, newer + timedelta(minutes=1, seconds=30))
    rule.refresh_from_db()
    assert rule.evaluated_at == newer + timedelta(minutes=2)


def test_a_slow_pass_holds_its_rule_for_the_lease_time_counted_from_now(team, endpoints, monkeypatch):
    from endpoints import leases

    rule = _rule(team, name="quiet", kind="request_rate_low", threshold=1)
    taken_meanwhile = []
    measure = alerts.measure

    def measure_while_another_pass_tries(rule, now):
        taken_meanwhile.append(leases.acquire(alerts.lease_name(rule.pk), alerts.LEASE_TTL))
        return measure(rule, now)

    monkeypatch.setattr(alerts, "measure", measure_while_another_pass_tries)
    # This pass started two minutes ago and reaches the rule only now.
    _evaluate(monkeypatch, timezone.now() - timedelta(minutes=2))
    assert taken_meanwhile == [None], "another pass took the rule while this one evaluated it"
    assert AlertRule.objects.get(pk=rule["id"]).state == "firing"


def test_a_drift_score_older_than_the_window_is_no_breach(team, endpoints, monkeypatch):
    blue = endpoints.deployments.get(name="blue")
    monitor = Monitor.objects.create(endpoint=endpoints, deployment=blue, metrics={"psi": 0.2}, window="1h")
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    MonitorRun.objects.create(
        monitor=monitor, trigger=MonitorTriggerChoices.SCHEDULE, state=MonitorRunStateChoices.SUCCEEDED,
        window_start=at - timedelta(hours=1), window_end=at, score=0.4, started_at=at, finished_at=at,
    )  # fmt: skip
    _rule(team, name="drift", deployment="blue", kind="drift_score", threshold=0.25, window="1h")
    _evaluate(monkeypatch, at + timedelta(minutes=50))
    assert _states()["drift"] == ("firing", 0.4)
    _evaluate(monkeypatch, at + timedelta(minutes=61))
    assert _states()["drift"] == ("ok", None), "the run's window ended before the rule's began"
    assert _history("drift") == ["fired", "resolved"]
