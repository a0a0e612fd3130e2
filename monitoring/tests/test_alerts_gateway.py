"""End to end: an error-rate alert fires and resolves on real traffic.

A deployment whose scoring script raises for some inputs is scored through a real gateway; its telemetry
goes spool -> store -> rollup -> MetricMinute as in production, and the beat task evaluates the rules
with an injected clock. Fired and resolved are each recorded, announced (studio.alert.*) and mailed once,
also when two passes run at the same time.
"""

import threading
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from endpoints.tests.support import deploy, register, upload_code
from monitoring import alerts, tasks
from registry.tests.factories import zip_bytes
from studio.models import Event
from studio.testkit import GATEWAY_SECRET, GatewayProcess, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
FLAKY_SCORE = b"""
import json


def init():
    pass


def run(raw_data):
    if json.loads(raw_data).get("fail"):
        raise ValueError("this input breaks the model")
    return "ok"
"""


@pytest.fixture
def gateway(live_server, settings, monkeypatch, spool):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    # Segments close a second after their first event, so each phase's traffic can be shipped at once.
    process = GatewayProcess(live_server.url, spool, {"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "0.5"})
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


def _ship_when_closed(spool) -> None:
    """Wait until the gateway has closed every segment holding events, then ship and roll them up."""
    assert until(lambda: all(path.stat().st_size == 0 for path in spool.glob("*.jsonl.open")))
    tasks.ship_telemetry()


def _score(uri: str, headers: dict, bodies: list[dict]) -> list[int]:
    with httpx.Client(timeout=15) as session:
        return [session.post(uri, json=body, headers=headers).status_code for body in bodies]


def _evaluate_concurrently(monkeypatch) -> None:
    """Two beat runs at once, as late as the current minute's telemetry has settled (it has: it was
    shipped), so the window holds it."""
    ahead = timezone.now() + timedelta(minutes=1) + alerts.SETTLE
    monkeypatch.setattr(alerts, "clock", lambda: ahead)
    errors = []

    def run():
        try:
            tasks.evaluate_alerts()
        except Exception as exc:  # reported below: an exception in a thread is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_an_error_rate_alert_fires_and_resolves_once_with_event_and_email(
    team, gateway, spool, monkeypatch, mailoutbox, settings
):
    settings.STUDIO_ALERT_EMAIL_DOMAINS = ["example.com"]  # the on-call list is no Studio user
    client = team.contributor.client()
    register(client, "flaky", zip_bytes({"model.txt": b"weights"}))
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    code = upload_code(client, zip_bytes({"score.py": FLAKY_SCORE}))
    spec = {
        "name": "blue",
        "model": "azureml:flaky:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    }
    created = deploy(client, "shop", spec)
    assert created["job"]["state"] == "succeeded", created["job"]["error"]
    key = client.post(f"{ENDPOINTS}shop/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    uri = client.get(f"{ENDPOINTS}shop/").json()["scoring_uri"]
    assert until(lambda: _score(uri, headers, [{}]) == [200]), "the gateway picks up the route table"

    rules = f"{ENDPOINTS}shop/alerts/"
    rule = client.post(
        rules,
        {
            "name": "failing-model",
            "deployment": "blue",
            "kind": "error_rate",
            "errors": "any",
            "threshold": 20,
            "window": "5m",
            "recipients": ["oncall@example.com"],
        },
        format="json",
    ).json()
    # A model that raises is answered 424: as Azure counts them, server errors (5xx) do not include it.
    server_errors = client.post(
        rules, {"deployment": "blue", "kind": "error_rate", "threshold": 20, "window": "5m"}, format="json"
    ).json()
    assert server_errors["errors"] == "5xx" and server_errors["name"] == "blue-error_rate"

    statuses = _score(uri, headers, [{"fail": True}] * 6 + [{}] * 4)
    assert statuses == [424] * 6 + [200] * 4
    _ship_when_closed(spool)
    _evaluate_concurrently(monkeypatch)

    shown = client.get(f"{rules}{rule['id']}/").json()
    assert shown["state"] == "firing"
    assert 20 < shown["value"] <= 60  # 6 failures in 10 requests, and the warm-up's successes
    assert client.get(f"{rules}{server_errors['id']}/").json()["state"] == "ok"
    fired = Event.objects.filter(type="studio.alert.fired")
    assert [(e.subject, e.data) for e in fired] == [
        (
            "online-endpoints/shop/deployments/blue",
            {
                "rule": "failing-model",
                "metric": "error_rate",
                "value": shown["value"],
                "threshold": 20.0,
                "window": "5m",
            },
        )
    ]
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["oncall@example.com"]
    assert mailoutbox[0].subject.startswith("[Studio] Firing: failing-model on shop/blue")
    assert f"{shown['value']:g}%" in mailoutbox[0].body

    # The model is fine again: successes bring the rate under the threshold within the same window.
    assert _score(uri, headers, [{}] * 40) == [200] * 40
    _ship_when_closed(spool)
    _evaluate_concurrently(monkeypatch)

    shown = client.get(f"{rules}{rule['id']}/").json()
    assert shown["state"] == "ok" and shown["value"] < 20
    assert Event.objects.filter(type="studio.alert.fired").count() == 1
    resolved = Event.objects.get(type="studio.alert.resolved")
    assert resolved.data["value"] == shown["value"] and resolved.data["rule"] == "failing-model"
    assert [message.subject for message in mailoutbox][1:] == [
        "[Studio] Resolved: failing-model on shop/blue"
    ]

    history = client.get(f"{rules}{rule['id']}/history/").json()["results"]
    assert [event["kind"] for event in history] == ["resolved", "fired"]
    assert all(event["email_to"] == ["oncall@example.com"] and event["email_sent_at"] for event in history)
    assert client.get(f"{rules}{server_errors['id']}/history/").json()["results"] == []
