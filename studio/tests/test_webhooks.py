"""Webhooks: subscriptions through the API, signed deliveries to a real receiver on loopback sent by a real
Celery worker, retries with backoff, order per subject, the allow-list, and disabling after a day."""

import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from endpoints.tests.support import WorkerProcess, broker_of_its_own
from registry.tests.factories import form
from studio import webhooks
from studio.models import Event, WebhookDelivery, WebhookSubscription
from studio.testkit import until
from studio.tests.webhook_receiver import SlowReceiver, WebhookReceiver

WEBHOOKS = "/api/v1/webhooks/"


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def loopback_allowed(settings, receiver):
    """The receiver listens on loopback, which only an address entry with its port opens; eager jobs
    retry at once (not after the backoff), so retries here have none."""
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [receiver.allow_entry]
    settings.STUDIO_WEBHOOK_RETRY_BASE_MS = 0


@pytest.fixture
def worker(settings, tmp_path, transactional_db, receiver, monkeypatch):
    """A real Celery worker with a broker of its own (no other test's worker takes its messages), retrying
    after 200 ms, 400 ms, ...; this process sends its tasks to that broker."""
    home = tmp_path / "worker-home"
    settings.STUDIO_HOME = home
    with broker_of_its_own(home, monkeypatch):
        process = WorkerProcess(
            settings,
            CELERY_BROKER_URL="filesystem://",  # the worker's settings put its folders under this STUDIO_HOME
            STUDIO_WEBHOOK_ALLOWED_HOSTS=receiver.allow_entry,
            STUDIO_WEBHOOK_RETRY_BASE_MS="200",
        ).start(tmp_path / "worker.log")
        yield process
        process.kill()  # its broker is thrown away with it: nothing to finish gracefully


def create_webhook(client, receiver, **fields):
    body = {"name": "ci", "url": receiver.url, "events": ["studio.model.*"], **fields}
    response = client.post(WEBHOOKS, body, format="json")
    assert response.status_code == 201, response.json()
    receiver.secret = response.json()["secret"]
    return response.json()


def test_a_receiver_gets_each_event_once_signed_in_order_per_subject_after_retries(
    team, receiver, worker, loopback_allowed
):
    receiver.failures = 2  # 500, 500, then 200 for every event
    create_webhook(team.admin.client(), receiver)
    client = team.contributor.client()
    for _ in range(2):
        assert client.post("/api/v1/models/", form("iris", b"weights"), format="multipart").status_code == 201
    assert (
        client.patch("/api/v1/models/iris/versions/1/", {"archived": True}, format="json").status_code == 200
    )
    assert client.delete("/api/v1/models/iris/versions/2/").status_code == 204

    assert until(lambda: len(receiver.accepted) == 4, timeout=60), [a.status for a in receiver.attempts]
    accepted = receiver.accepted
    by_subject = {}
    for event in accepted:
        by_subject.setdefault(event["subject"], []).append(event["type"])
    assert by_subject == {
        "models/iris/versions/1": ["studio.model.registered", "studio.model.archived"],
        "models/iris/versions/2": ["studio.model.registered", "studio.model.deleted"],
    }
    assert len({event["id"] for event in accepted}) == 4, "each event once"
    for event in accepted:
        assert event["specversion"] == "1.0" and event["source"] == "/studio"
        assert event["data"]["name"] == "iris"
        tries = receiver.attempts_at(event["id"])
        assert [attempt.status for attempt in tries] == [500, 500, 200]
        assert all(attempt.verified for attempt in tries)
        assert tries[0].headers["Content-Type"] == "application/cloudevents+json"
        # Backoff: the second wait is about twice the first (200 ms, then 400 ms).
        first, second = tries[1].at - tries[0].at, tries[2].at - tries[1].at
        assert first >= 0.15 and second >= 0.35, (first, second)
    # Order per subject: event n+1 was not tried before event n was delivered.
    for subject_events in _events_by_subject(accepted).values():
        for earlier, later in zip(subject_events, subject_events[1:], strict=False):
            assert receiver.attempts_at(later["id"])[0].at >= receiver.attempts_at(earlier["id"])[-1].at

    log = team.admin.client().get(f"{WEBHOOKS}ci/deliveries/").json()["results"]
    assert len(log) == 4
    assert {(row["state"], row["attempts"], row["response_code"]) for row in log} == {("succeeded", 3, 200)}
    assert all(row["latency_ms"] is not None for row in log)


def _events_by_subject(events: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for event in events:
        grouped.setdefault(event["subject"], []).append(event)
    return grouped


@pytest.mark.django_db(transaction=True)
def test_a_later_event_of_a_subject_waits_until_the_earlier_one_is_given_up(
    team, receiver, loopback_allowed, settings, eager_jobs
):
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 2
    receiver.failures = 5  # more than the attempts: the first event is given up
    hook = WebhookSubscription.objects.get(pk=create_webhook(team.admin.client(), receiver)["id"])
    from studio.events import emit

    first = emit("studio.model.registered", "models/a/versions/1", {"name": "a"})
    second = emit("studio.model.archived", "models/a/versions/1", {"name": "a"})
    assert WebhookDelivery.objects.get(event=first).state == "failed"
    assert WebhookDelivery.objects.get(event=second).state == "failed"
    tries = [(attempt.event["id"], attempt.status) for attempt in receiver.attempts]
    # Both attempts at the first event happened before any at the second.
    assert tries == [(str(first.uuid), 500)] * 2 + [(str(second.uuid), 500)] * 2
    assert hook.deliveries.count() == 2


@pytest.mark.django_db(transaction=True)
def test_deliveries_to_private_addresses_are_refused_unless_an_admin_allows_them(
    team, receiver, eager_jobs, settings
):
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 1
    admin = team.admin.client()
    refused = admin.post(WEBHOOKS, {"name": "local", "url": receiver.url}, format="json")
    assert refused.status_code == 400
    assert "allow" in refused.json()["error"]["message"] and "127.0.0.1" in refused.json()["error"]["message"]
    for url in ("ftp://example.com/x", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/"):
        answer = admin.post(WEBHOOKS, {"name": "bad", "url": url}, format="json")
        assert answer.status_code == 400, url
    assert not WebhookSubscription.objects.exists()

    # A name may pass at creation and resolve to loopback at send time: the send is refused then.
    port = receiver.server.server_address[1]
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [f"*:{port}"]
    sneaky = f"http://localhost:{port}/hooks"
    created = admin.post(WEBHOOKS, {"name": "sneaky", "url": sneaky}, format="json")
    assert created.status_code == 201, created.json()
    delivery = admin.post(f"{WEBHOOKS}sneaky/test/").json()
    assert delivery["state"] == "failed" and delivery["response_code"] is None
    assert "resolves to 127.0.0.1" in delivery["error"] and "loopback" in delivery["error"]
    assert receiver.attempts == []


@pytest.mark.django_db(transaction=True)
def test_a_subscription_failing_for_a_day_is_disabled_and_its_owner_told(
    team, receiver, loopback_allowed, settings, eager_jobs, monkeypatch
):
    from studio.tasks import sweep_webhook_deliveries

    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 2
    receiver.failures = None  # always 500
    now = [timezone.now()]
    monkeypatch.setattr(webhooks, "clock", lambda: now[0])
    admin = team.admin.client()
    create_webhook(admin, receiver, events=["*"])
    admin.post(f"{WEBHOOKS}ci/test/")
    hook = WebhookSubscription.objects.get(name="ci")
    assert hook.active and hook.failing_since == now[0]

    now[0] += timedelta(hours=23)
    admin.post(f"{WEBHOOKS}ci/test/")
    hook.refresh_from_db()
    assert hook.active, "23 hours of failures is not yet a day"
    assert mail.outbox == []

    now[0] += timedelta(hours=1, minutes=1)
    admin.post(f"{WEBHOOKS}ci/test/")
    hook.refresh_from_db()
    assert not hook.active
    assert "failed since" in hook.disabled_reason
    assert mail.outbox == [], "the email is owed, and sent by the sweep"
    sweep_webhook_deliveries()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["admin@example.com"] and "ci" in mail.outbox[0].subject
    sent = len(receiver.attempts)
    admin.post(f"{WEBHOOKS}ci/test/")  # a disabled subscription is sent nothing
    assert len(receiver.attempts) == sent

    # Enabled again, a delivery that succeeds clears the failure clock.
    receiver.failures = 0
    assert admin.patch(f"{WEBHOOKS}ci/", {"active": True}, format="json").json()["active"] is True
    assert admin.post(f"{WEBHOOKS}ci/test/").json()["state"] == "succeeded"
    hook.refresh_from_db()
    assert hook.active and hook.failing_since is None


@pytest.mark.django_db(transaction=True)
def test_admins_manage_webhooks_and_the_secret_is_shown_once(team, receiver, loopback_allowed, eager_jobs):
    admin = team.admin.client()
    for persona in (team.contributor, team.reader):
        assert persona.client().get(WEBHOOKS).status_code == 403
        assert (
            persona.client().post(WEBHOOKS, {"name": "x", "url": receiver.url}, format="json").status_code
            == 403
        )
    created = create_webhook(admin, receiver, events=["studio.deployment.*", "studio.webhook.test"])
    assert created["secret"].startswith("whsec_") and created["owner"] == "admin"
    listed = admin.get(WEBHOOKS).json()["results"]
    assert [hook["name"] for hook in listed] == ["ci"]
    # The hint tells secrets apart without giving away a guessable part of one.
    assert "secret" not in listed[0] and listed[0]["secret_hint"] == "whsec_…" + created["secret"][-4:]
    assert "secret" not in admin.get(f"{WEBHOOKS}{created['id']}/").json()

    assert admin.post(WEBHOOKS, {"name": "ci", "url": receiver.url}, format="json").status_code == 409
    bad = admin.post(
        WEBHOOKS, {"name": "other", "url": receiver.url, "events": ["not a type!"]}, format="json"
    )
    assert bad.status_code == 400 and "events" in bad.json()["error"]["message"]
    assert not WebhookSubscription.objects.filter(name="other").exists()

    delivery = admin.post(f"{WEBHOOKS}ci/test/").json()
    assert delivery["type"] == "studio.webhook.test" and delivery["state"] == "succeeded"
    assert receiver.accepted[0]["subject"] == "webhooks/ci"
    changed = admin.patch(f"{WEBHOOKS}ci/", {"events": ["studio.model.*", "studio.webhook.*"]}, format="json")
    assert changed.status_code == 200 and changed.json()["events"] == ["studio.model.*", "studio.webhook.*"]
    assert admin.get(f"{WEBHOOKS}ci/deliveries/?state=succeeded").json()["count"] == 1
    short = admin.patch(f"{WEBHOOKS}ci/", {"secret": "a-new-secret-of-the-team"}, format="json")
    assert short.status_code == 400 and "at least 32 characters" in short.json()["error"]["message"]
    chosen = "a-new-secret-of-the-team-0123456789"
    rotated = admin.patch(f"{WEBHOOKS}ci/", {"secret": chosen}, format="json")
    assert rotated.status_code == 200 and "secret" not in rotated.json()
    assert rotated.json()["secret_hint"] == "…6789"
    receiver.secret = chosen
    assert admin.post(f"{WEBHOOKS}ci/test/").json()["state"] == "succeeded"
    assert receiver.attempts[-1].verified
    assert admin.get(f"{WEBHOOKS}ci/deliveries/?state=nonsense").status_code == 400
    assert admin.delete(f"{WEBHOOKS}ci/").status_code == 204
    assert admin.get(f"{WEBHOOKS}ci/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_activity_feed_lists_events_filtered_by_type_and_subject(team):
    from studio.events import emit

    emit("studio.model.registered", "models/iris/versions/1", {"name": "iris"})
    emit("studio.deployment.created", "online-endpoints/shop/deployments/blue", {"deployment": "blue"})
    emit("studio.deployment.succeeded", "online-endpoints/shop/deployments/blue", {"deployment": "blue"})
    reader = team.reader.client()
    feed = reader.get("/api/v1/events/").json()
    assert [event["type"] for event in feed["results"]] == [
        "studio.deployment.succeeded",
        "studio.deployment.created",
        "studio.model.registered",
    ]
    assert feed["results"][0]["specversion"] == "1.0" and feed["results"][0]["time"].endswith("Z")
    family = reader.get("/api/v1/events/?type=studio.deployment.*").json()
    assert family["count"] == 2
    subject = reader.get("/api/v1/events/?subject=models/*").json()
    assert [event["subject"] for event in subject["results"]] == ["models/iris/versions/1"]
    assert team.outsider.client().get("/api/v1/events/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_events_older_than_the_retention_are_deleted(settings):
    from studio.events import emit
    from studio.tasks import enforce_event_retention

    settings.STUDIO_EVENT_RETENTION_DAYS = 90
    old = emit("studio.model.registered", "models/old/versions/1", {})
    Event.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(days=91))
    recent = emit("studio.model.registered", "models/new/versions/1", {})
    assert enforce_event_retention() == 1
    assert list(Event.objects.values_list("pk", flat=True)) == [recent.pk]


@pytest.mark.django_db(transaction=True)
def test_the_sweep_sends_deliveries_whose_message_was_lost_in_order(
    team, receiver, loopback_allowed, monkeypatch, settings
):
    from studio.celery import app
    from studio.events import emit
    from studio.tasks import sweep_webhook_deliveries

    create_webhook(team.admin.client(), receiver, events=["*"])
    # No worker takes these messages: as if the broker had lost them.
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    monkeypatch.setattr(webhooks, "dispatch", lambda *args, **kwargs: None)
    first = emit("studio.model.registered", "models/a/versions/1", {})
    second = emit("studio.model.archived", "models/a/versions/1", {})
    assert sweep_webhook_deliveries() == 0, "a fresh delivery is left to its own message for a while"

    monkeypatch.undo()
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = True
    later = timezone.now() + timedelta(minutes=2)
    monkeypatch.setattr(webhooks, "clock", lambda: later)
    try:
        # Only the head of the subject's queue is re-sent; the next one follows when it is delivered.
        assert sweep_webhook_deliveries() == 1
    finally:
        app.conf.task_always_eager = False
    assert [event["id"] for event in receiver.accepted] == [str(first.uuid), str(second.uuid)]
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"succeeded"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("allowed", "url", "accepted"),
    [
        (["*"], "https://hooks.example.com/studio", True),
        (["*.example.com"], "https://hooks.example.com/studio", True),
        (["*.example.com"], "https://hooks.example.org/studio", False),
        (["*"], "http://[::ffff:127.0.0.1]:9/", False),
        (["*"], "http://[fe80::1]/", False),
        (["*"], "http://user:pw@hooks.example.com/", False),
        (["10.0.0.0/8"], "http://10.1.2.3/hook", True),
        (["10.0.0.0/8"], "http://11.1.2.3/hook", False),
        (["ci.internal"], "http://ci.internal:8080/hook", True),
        # IPv6 forms that carry an IPv4 address are judged by it: NAT64, 6to4, IPv4-compatible, Teredo.
        (["*"], "http://[64:ff9b::a9fe:a9fe]/", False),
        (["*"], "http://[2002:a9fe:a9fe::]/", False),
        (["*"], "http://[::7f00:1]/", False),
        (["*"], "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", False),
        (["*"], "http://[64:ff9b::808:808]/", True),
        (["64:ff9b::/96"], "http://[64:ff9b::a9fe:a9fe]/", True),
        # Numeric IPv4 forms the resolver accepts are refused when saved, not only when sent.
        (["*"], "http://2130706433/", False),
        (["*"], "http://0x7f000001/", False),
        (["*"], "http://127.1/", False),
        # Ports: 80, 443, 8080 and 8443 unless an entry names one.
        (["*"], "https://hooks.example.com:22/", False),
        (["*"], "https://hooks.example.com:8443/", True),
        (["hooks.example.com:9000"], "http://hooks.example.com:9000/", True),
        (["hooks.example.com:9000"], "http://hooks.example.com/", False),
        (["10.0.0.0/8"], "http://10.1.2.3:9000/", False),
        (["10.0.0.0/8:9000"], "http://10.1.2.3:9000/", True),
        (["[fd00::/8]:9000"], "http://[fd00::1]:9000/", True),
        (["*"], "http://hooks.example.com:99999/", False),
        # Host names go in their ASCII form.
        (["*"], "http://exämple.com/", False),
        (["*"], "http://xn--exmple-cua.com/", True),
    ],
)
def test_the_allow_list_decides_which_urls_a_webhook_may_have(team, settings, allowed, url, accepted):
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = allowed
    answer = team.admin.client().post(WEBHOOKS, {"name": "hook", "url": url}, format="json")
    assert (answer.status_code == 201) == accepted, answer.json()


@pytest.mark.django_db(transaction=True)
def test_a_named_host_is_sent_to_the_address_checked_with_its_own_name(team, receiver, settings, eager_jobs):
    port = receiver.server.server_address[1]
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [f"localhost:{port}", receiver.allow_entry]
    create_webhook(team.admin.client(), receiver, url=f"http://localhost:{port}/hooks", events=["*"])
    assert team.admin.client().post(f"{WEBHOOKS}ci/test/").json()["state"] == "succeeded"
    assert receiver.attempts[0].headers["Host"] == f"localhost:{port}"


@pytest.mark.django_db(transaction=True)
def test_a_name_in_the_allow_list_does_not_open_the_private_addresses_it_resolves_to(
    team, receiver, settings, eager_jobs
):
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 1
    port = receiver.server.server_address[1]
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [f"localhost:{port}"]
    create_webhook(team.admin.client(), receiver, url=f"http://localhost:{port}/hooks", events=["*"])
    delivery = team.admin.client().post(f"{WEBHOOKS}ci/test/").json()
    assert delivery["state"] == "failed" and "resolves to 127.0.0.1" in delivery["error"], delivery
    assert f"127.0.0.1:{port}" in delivery["error"], "the message names the entry that would open it"
    assert receiver.attempts == []


def test_the_cli_waits_for_a_real_workers_first_attempt(
    team, receiver, worker, loopback_allowed, live_server, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from studio.cli.main import cli

    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))
    create_webhook(team.admin.client(), receiver, events=["studio.webhook.test"])
    env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": team.admin.token}

    def studio(*args):
        return CliRunner(env=env).invoke(cli, ["webhook", *args], catch_exceptions=False)

    accepted = studio("test", "--name", "ci", "-o", "json")
    assert accepted.exit_code == 0, accepted.output
    assert '"state": "succeeded"' in accepted.output
    receiver.failures = None
    refused = studio("test", "--name", "ci")
    assert refused.exit_code != 0 and "The receiver answered 500" in refused.output
    queued = studio("test", "--name", "ci", "--no-wait", "-o", "json")
    assert queued.exit_code == 0 and '"type": "studio.webhook.test"' in queued.output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STUDIO_WEBHOOK_TIMEOUT_S", "120"),
        ("STUDIO_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("STUDIO_EVENT_RETENTION_DAYS", "x"),
        ("STUDIO_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com:http"),
        ("STUDIO_WEBHOOK_ALLOWED_HOSTS", "*,not a host"),
    ],
)
def test_a_bad_webhook_setting_stops_the_start_naming_it(tmp_path, variable, value):
    from studio.tests.test_settings import manage

    result = manage("check", home=tmp_path, **{variable: value})
    assert result.returncode != 0 and f"{variable}=" in result.stderr, result.stderr


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_written_with_the_event_and_one_message_per_commit_queues_them(
    team, receiver, loopback_allowed, settings, monkeypatch
):
    from django.db import transaction

    from studio.celery import app
    from studio.events import emit
    from studio.tasks import queue_webhook_deliveries, sweep_webhook_deliveries

    for name in ("a", "b", "c"):
        secret = "one-secret-the-receiver-checks-0123456789"
        create_webhook(team.admin.client(), receiver, name=name, events=["studio.model.*"], secret=secret)
    published = []
    # The message is published, then lost (as when the process dies right after the commit).
    monkeypatch.setattr(queue_webhook_deliveries, "apply_async", lambda **kw: published.append(kw))
    with transaction.atomic():
        first = emit("studio.model.registered", "models/a/versions/1", {})
        second = emit("studio.model.archived", "models/a/versions/1", {})
        # An outbox: the rows commit with the events, or not at all.
        assert WebhookDelivery.objects.filter(event__in=[first, second]).count() == 6
        assert published == []
    assert len(published) == 1, "one message for the whole transaction"
    assert sorted(published[0]["args"][0]) == sorted(WebhookDelivery.objects.values_list("pk", flat=True))
    assert published[0]["retry"] is False, "a broker out of reach must not hold the emitter up"

    # The sweep finds them (after its grace) and sends them, in order per subject and webhook.
    monkeypatch.setattr(webhooks, "clock", lambda: timezone.now() + timedelta(minutes=2))
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = True
    try:
        assert sweep_webhook_deliveries() == 3, "the head of each webhook's queue"
    finally:
        app.conf.task_always_eager = False
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"succeeded"}
    assert len(receiver.accepted) == 6
    for hook in WebhookSubscription.objects.all():
        earlier, later = (hook.deliveries.get(event=event) for event in (first, second))
        assert earlier.delivered_at <= later.last_attempt_at, "in order per subject, for each webhook"


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_while_sending_is_a_failed_attempt_not_a_stuck_delivery(
    team, receiver, loopback_allowed, settings, eager_jobs
):
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = ["*"]
    admin = team.admin.client()
    # A port out of range is refused when saved now...
    refused = admin.post(WEBHOOKS, {"name": "x", "url": "http://hooks.example.com:99999/"}, format="json")
    assert refused.status_code == 400 and "port" in refused.json()["error"]["message"]
    # ... but a URL saved before that check makes sending raise something no HTTP client error covers.
    create_webhook(admin, receiver, url="https://hooks.example.com/", events=["*"])
    WebhookSubscription.objects.filter(name="ci").update(url="http://hooks.example.com:99999/")
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 2
    delivery = admin.post(f"{WEBHOOKS}ci/test/").json()
    assert delivery["state"] == "failed" and delivery["attempts"] == 2, delivery
    assert delivery["error"].startswith("ValueError") and "out of range" in delivery["error"]
    assert WebhookSubscription.objects.get(name="ci").failing_since is not None
    # The subject's next delivery is not held back behind a delivery stuck `sending`.
    assert admin.post(f"{WEBHOOKS}ci/test/").json()["attempts"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_sender_died_in_its_last_attempt_is_given_up_not_sent_again(
    team, receiver, loopback_allowed, settings, monkeypatch
):
    from studio.celery import app
    from studio.events import emit
    from studio.tasks import queue_webhook_deliveries, sweep_webhook_deliveries

    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 3
    create_webhook(team.admin.client(), receiver, events=["*"])
    monkeypatch.setattr(queue_webhook_deliveries, "apply_async", lambda **kw: None)
    first = emit("studio.model.registered", "models/a/versions/1", {})
    second = emit("studio.model.archived", "models/a/versions/1", {})
    WebhookDelivery.objects.filter(event=first).update(
        state="sending", attempts=3, lease_until=timezone.now() - timedelta(seconds=1)
    )
    monkeypatch.setattr(webhooks, "clock", lambda: timezone.now() + timedelta(minutes=2))
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = True
    try:
        assert sweep_webhook_deliveries() == 1
    finally:
        app.conf.task_always_eager = False
    given_up = WebhookDelivery.objects.get(event=first)
    assert (given_up.state, given_up.attempts) == ("failed", 3) and "Given up" in given_up.error
    assert [event["id"] for event in receiver.accepted] == [str(second.uuid)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("sqlite" not in __import__("django.conf").conf.settings.DATABASES["default"]["ENGINE"],
                    reason="the interleaving is staged with an SQLite trigger")  # fmt: skip
def test_a_success_landing_between_a_failures_writes_does_not_break_the_failure(
    team, receiver, loopback_allowed, settings, eager_jobs
):
    from django.db import connection

    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 1
    receiver.failures = None
    create_webhook(team.admin.client(), receiver, events=["*"])
    # A concurrent delivery that succeeds clears failing_since right after this failure set it.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER concurrent_success AFTER UPDATE OF failing_since ON studio_webhooksubscription "
            "WHEN NEW.failing_since IS NOT NULL BEGIN "
            "UPDATE studio_webhooksubscription SET failing_since = NULL WHERE id = NEW.id; END"
        )
    try:
        delivery = team.admin.client().post(f"{WEBHOOKS}ci/test/").json()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER concurrent_success")
    assert delivery["state"] == "failed" and delivery["response_code"] == 500
    assert WebhookSubscription.objects.get(name="ci").active


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_message_does_not_send_before_the_backoff_ends(
    team, receiver, loopback_allowed, settings, eager_jobs, monkeypatch
):
    from studio.tasks import deliver_webhook

    settings.STUDIO_WEBHOOK_RETRY_BASE_MS = 60_000
    receiver.failures = 1
    create_webhook(team.admin.client(), receiver, events=["*"])
    # Eager jobs run the retry's message at once, as a duplicate message would arrive: it must wait.
    delivery = team.admin.client().post(f"{WEBHOOKS}ci/test/").json()
    assert (delivery["state"], delivery["attempts"]) == ("pending", 1)
    deliver_webhook.delay(delivery["id"])
    assert len(receiver.attempts) == 1
    later = timezone.now() + timedelta(seconds=61)
    monkeypatch.setattr(webhooks, "clock", lambda: later)
    deliver_webhook.delay(delivery["id"])
    assert [attempt.status for attempt in receiver.attempts] == [500, 200]


@pytest.mark.django_db(transaction=True)
def test_the_sweep_does_not_queue_a_delivery_again_every_minute(
    team, receiver, loopback_allowed, monkeypatch
):
    from studio.events import emit
    from studio.tasks import queue_webhook_deliveries, sweep_webhook_deliveries

    create_webhook(team.admin.client(), receiver, events=["*"])
    monkeypatch.setattr(queue_webhook_deliveries, "apply_async", lambda **kw: None)
    queued = []
    monkeypatch.setattr(webhooks, "dispatch", queued.append)  # a backlog: nobody takes the messages
    emit("studio.model.registered", "models/a/versions/1", {})
    start = timezone.now()
    for minutes, expected in ((2, 1), (3, 0), (4, 0), (13, 1)):
        monkeypatch.setattr(webhooks, "clock", lambda minutes=minutes: start + timedelta(minutes=minutes))
        assert sweep_webhook_deliveries() == expected, minutes
    assert len(queued) == 2


@pytest.mark.django_db(transaction=True)
def test_retention_deletes_old_events_in_batches(settings, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from studio.events import emit

    settings.STUDIO_EVENT_RETENTION_DAYS = 90
    monkeypatch.setattr(webhooks, "RETENTION_BATCH", 2)
    old = [emit("studio.model.registered", f"models/old/versions/{n}", {}) for n in range(5)]
    Event.objects.filter(pk__in=[event.pk for event in old]).update(time=timezone.now() - timedelta(days=91))
    recent = emit("studio.model.registered", "models/new/versions/1", {})
    with CaptureQueriesContext(connection) as queries:
        assert webhooks.enforce_retention() == 5
    deletes = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "studio_event"')
    ]
    assert len(deletes) == 3, deletes
    assert list(Event.objects.values_list("pk", flat=True)) == [recent.pk]


class RefusingOnceBackend:
    """A mail server that refuses the first message it is given, then takes them (into mail.outbox)."""

    refused = 0

    def __init__(self, *args, **kwargs):
        from django.core.mail.backends.locmem import EmailBackend

        self.backend = EmailBackend(*args, **kwargs)

    def send_messages(self, messages):
        if RefusingOnceBackend.refused == 0:
            RefusingOnceBackend.refused += 1
            raise ConnectionRefusedError("the mail server is down")
        return self.backend.send_messages(messages)


@pytest.mark.django_db(transaction=True)
def test_the_email_about_a_disabled_webhook_is_retried_until_the_mail_server_takes_it(
    team, receiver, loopback_allowed, settings, eager_jobs, monkeypatch
):
    from studio.tasks import sweep_webhook_deliveries

    settings.EMAIL_BACKEND = f"{__name__}.RefusingOnceBackend"
    RefusingOnceBackend.refused = 0
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 1
    settings.STUDIO_WEBHOOK_DISABLE_AFTER_S = 60
    receiver.failures = None
    now = [timezone.now()]
    monkeypatch.setattr(webhooks, "clock", lambda: now[0])
    admin = team.admin.client()
    create_webhook(admin, receiver, events=["*"])
    admin.post(f"{WEBHOOKS}ci/test/")
    now[0] += timedelta(minutes=2)
    assert admin.post(f"{WEBHOOKS}ci/test/").json()["state"] == "failed"
    hook = WebhookSubscription.objects.get(name="ci")
    assert not hook.active and hook.email_to == ["admin@example.com"]

    sweep_webhook_deliveries()
    hook.refresh_from_db()
    assert mail.outbox == [] and "mail server is down" in hook.email_error
    sweep_webhook_deliveries()  # too soon to try again
    assert mail.outbox == []
    now[0] += timedelta(minutes=3)
    sweep_webhook_deliveries()
    assert len(mail.outbox) == 1 and "ci" in mail.outbox[0].subject
    sweep_webhook_deliveries()
    assert len(mail.outbox) == 1, "sent once"


def delivery_to_slow(slow, team, settings, timeout_s: int) -> tuple[dict, float]:
    """Send a test event to a slow receiver with the whole attempt bounded by timeout_s: the delivery, and
    the seconds the request that sent it took."""
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [slow.allow_entry]
    settings.STUDIO_WEBHOOK_TIMEOUT_S = timeout_s
    settings.STUDIO_WEBHOOK_MAX_ATTEMPTS = 1
    admin = team.admin.client()
    try:
        assert admin.post(WEBHOOKS, {"name": "ci", "url": slow.url}, format="json").status_code == 201
        started = time.monotonic()
        delivery = admin.post(f"{WEBHOOKS}ci/test/").json()
        return delivery, time.monotonic() - started
    finally:
        slow.close()


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_off_at_the_total_timeout(team, settings, eager_jobs):
    # Its answer would take 8 s, each byte well within the 1 s.
    delivery, took = delivery_to_slow(SlowReceiver("drip", pause=0.2), team, settings, timeout_s=1)
    assert delivery["state"] == "failed" and "Timeout" in delivery["error"], delivery
    assert took < 3, took


@pytest.mark.django_db(transaction=True)
def test_only_the_status_of_an_endless_answer_is_read(team, settings, eager_jobs):
    # 200, then a body that goes on for as long as it is read.
    delivery, took = delivery_to_slow(SlowReceiver("endless"), team, settings, timeout_s=5)
    assert delivery["state"] == "succeeded" and delivery["response_code"] == 200, delivery
    assert took < 2, took


@pytest.mark.django_db(transaction=True)
def test_of_a_refusal_only_the_start_of_its_body_is_read_for_the_log(team, settings, eager_jobs):
    delivery, took = delivery_to_slow(SlowReceiver("endless", status=503), team, settings, timeout_s=5)
    assert delivery["state"] == "failed" and delivery["response_code"] == 503, delivery
    assert delivery["error"].startswith("The receiver answered 503. xxxx"), delivery["error"][:60]
    assert took < 2, took


@pytest.mark.django_db(transaction=True)
def test_test_events_stay_out_of_the_activity_feed(team, receiver, loopback_allowed, eager_jobs, client):
    from studio.events import emit

    create_webhook(team.admin.client(), receiver, name="payments-ledger", events=["*"])
    team.admin.client().post(f"{WEBHOOKS}payments-ledger/test/")
    emit("studio.model.registered", "models/iris/versions/1", {"name": "iris"})
    for persona in (team.reader, team.admin):
        feed = persona.client().get("/api/v1/events/").json()
        assert [event["type"] for event in feed["results"]] == ["studio.model.registered"]
    client.force_login(team.reader.user)
    page = client.get("/").content.decode()
    feed = page[page.index('id="lifecycle-events"') :]
    assert "studio.model.registered" in feed and "payments-ledger" not in feed


@pytest.mark.django_db(transaction=True)
def test_a_deployment_event_under_the_row_lock_reads_what_it_names_with_the_row(team):
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from endpoints import reconcile, services
    from endpoints.models import OnlineDeployment
    from endpoints.tests.support import ENDPOINTS, upload_code
    from registry.tests.factories import zip_bytes

    client = team.contributor.client()
    assert client.post("/api/v1/models/", form("clf", b"weights"), format="multipart").status_code == 201
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    code = upload_code(
        client, zip_bytes({"score.py": b"def init():\n    pass\n\ndef run(d):\n    return d\n"})
    )
    spec = {
        "name": "blue",
        "model": "azureml:clf:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    }
    created = client.post(f"{ENDPOINTS}shop/deployments/", spec, format="json")
    assert created.status_code == 202, created.json()
    pk = OnlineDeployment.objects.get(name="blue").pk
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        row = reconcile._locked_for_event(pk)
        services.emit_deployment_event("succeeded", row)
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # The row with its endpoint and model version in one query; then only the webhook subscriptions.
    assert len(reads) == 2 and '"registry_modelversion"' in reads[0], reads
    assert Event.objects.get(type="studio.deployment.succeeded").data["model"] == "clf:1"


@pytest.mark.django_db(transaction=True)
def test_a_soft_time_limit_is_recorded_as_a_failed_attempt_then_raised_again(team, settings, monkeypatch):
    import signal

    from celery.exceptions import SoftTimeLimitExceeded

    from studio.tasks import deliver_webhook, queue_webhook_deliveries

    slow = SlowReceiver("drip", pause=0.2)
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [slow.allow_entry]
    settings.STUDIO_WEBHOOK_TIMEOUT_S = 30
    monkeypatch.setattr(queue_webhook_deliveries, "apply_async", lambda **kw: None)
    admin = team.admin.client()
    assert admin.post(WEBHOOKS, {"name": "ci", "url": slow.url}, format="json").status_code == 201
    delivery_id = admin.post(f"{WEBHOOKS}ci/test/").json()["id"]

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()  # as a worker's pool raises it in the task, by a signal

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        result = deliver_webhook.apply(args=[delivery_id])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        slow.close()
    assert result.failed() and isinstance(result.result, SoftTimeLimitExceeded)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.state, delivery.attempts) == ("pending", 1), "not left `sending`: retried later"
    assert delivery.error.startswith("SoftTimeLimitExceeded")
    assert WebhookSubscription.objects.get(name="ci").failing_since is not None
