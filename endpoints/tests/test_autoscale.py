"""Autoscaling by target utilization, for real: a local deployment behind a real gateway, under load.

The gateway reports the requests in flight to the control plane (serving.gateway.load); the autoscaler
(endpoints.autoscale) runs its evaluations in a thread here, as beat runs them every second in Studio, and
its scaling decisions go through the reconciler, run in-process. Load comes from closed-loop clients
through the gateway, and every answer they get is checked.
"""

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from endpoints import autoscale
from endpoints.models import OnlineDeployment
from endpoints.tests.support import ENDPOINTS, deploy, register, steady_load, upload_code
from registry.tests.factories import zip_bytes
from studio.models import AuditEvent, Event
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

# Each request takes 100 ms on the replica's one worker: one client keeps about one request in flight.
SLOW_SCORE = b"""
import time


def init():
    pass


def run(raw_data):
    time.sleep(0.1)
    return {"ok": True}
"""
SCALE = {
    "type": "target_utilization",
    "min_instances": 1,
    "max_instances": 3,
    "polling_interval": 1,
    "target_utilization_percentage": 50,
}


class Autoscaler:
    """What beat does in Studio: an evaluation every half second, in a thread of its own."""

    def __init__(self) -> None:
        self.decisions: list[tuple[float, autoscale.Decision]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for decision in autoscale.tick():
                    if decision.action in ("scale_out", "scale_in"):
                        self.decisions.append((time.monotonic(), decision))
                self._stop.wait(0.5)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> "Autoscaler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(120)


@pytest.fixture
def gateway(live_server, settings, monkeypatch, tmp_path):
    """A gateway of this test's own: its name is its cache key for load reports, which no other
    gateway (of another test, or another run on this host) may share."""
    import uuid

    from studio.testkit import GATEWAY_SECRET, GatewayProcess

    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    process = GatewayProcess(live_server.url, tmp_path / "spool", gateway_id=f"gw-{uuid.uuid4().hex[:12]}")
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


def ready_replicas() -> int:
    deployment = OnlineDeployment.objects.get(name="blue")
    return deployment.replicas.filter(state="ready").count()


def test_a_deployment_scales_out_under_sustained_load_without_failing_a_request_and_back_in_after(
    team, gateway, settings
):
    settings.STUDIO_AUTOSCALE_COOLDOWN_S = 3
    client = team.contributor.client()
    register(client, "slow", zip_bytes({"model/weights.txt": b"1"}))
    endpoint = client.post(ENDPOINTS, {"name": "busy"}, format="json").json()
    code = upload_code(client, zip_bytes({"score.py": SLOW_SCORE}))
    created = deploy(
        client,
        "busy",
        {
            "name": "blue",
            "model": "azureml:slow:1",
            "code_configuration": {"code": code, "scoring_script": "score.py"},
            "instance_count": 1,
            "scale_settings": SCALE,
            "request_settings": {"max_concurrent_requests_per_instance": 2},
        },
    )
    assert created["job"]["state"] == "succeeded", created["job"]["error"]
    key = client.post(f"{ENDPOINTS}busy/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    url = endpoint["scoring_uri"]
    assert until(lambda: httpx.post(url, json={}, headers=headers, timeout=10).status_code == 200, 30)

    with Autoscaler() as scaler:
        # Three clients keep about three requests in flight: at 50% of 2 per replica, three replicas.
        with steady_load(url, {}, headers, clients=3) as seen:
            loaded_at, loaded_wall = time.monotonic(), time.time()
            assert until(lambda: OnlineDeployment.objects.get(name="blue").instance_count == 3, 30), (
                scaler.decisions,
                scaler.errors,
            )
            assert until(lambda: ready_replicas() == 3, 60)
            scaled_out_at = time.monotonic()
            answered = seen["answered"]
            assert until(lambda: seen["answered"] > answered + 20, 30)
        assert seen["failures"] == [], seen["failures"][:5]
        assert seen["answered"] > 20
        # Load gone: after the cool-down it goes back to min_instances.
        assert until(lambda: OnlineDeployment.objects.get(name="blue").instance_count == 1, 60), (
            scaler.decisions,
            scaler.errors,
        )
        assert until(
            lambda: ready_replicas() == 1 and OnlineDeployment.objects.get(name="blue").replicas.count() == 1,
            60,
        )
    assert scaler.errors == []

    # Each decision's event is stamped when it is made (the reconcile it starts comes after).
    events = Event.objects.filter(
        type="studio.deployment.scaled", subject="online-endpoints/busy/deployments/blue"
    ).order_by("id")
    first_out = events.first().time.timestamp() - loaded_wall
    print(
        f"\nautoscale: first scale-out decided {first_out:.1f}s after the load began, 3 replicas ready "
        f"{scaled_out_at - loaded_at:.1f}s after it; {seen['answered']} answers, {len(seen['failures'])} failed"
    )
    # Within polling_interval (1 s) of sustained load, plus up to two report intervals (1 s each: the first
    # report after the start holds part of a second of load) and the evaluation cadence (0.5 s), with room
    # for a busy host.
    assert first_out < 6
    outs = [decision for _, decision in scaler.decisions if decision.action == "scale_out"]
    ins = [decision for _, decision in scaler.decisions if decision.action == "scale_in"]
    assert max(decision.wanted for decision in outs) == 3
    assert all(1 <= decision.wanted <= 3 for _, decision in scaler.decisions)
    assert ins and ins[-1].wanted == 1

    # Every decision is recorded: an event, an audit entry, and the deployment's card shows them.
    assert events.count() == len(scaler.decisions)
    assert {event.data["to"] for event in events} >= {3, 1}
    assert (
        AuditEvent.objects.filter(object_repr="busy/blue", details__has_key="autoscaled").count()
        == events.count()
    )
    browser = Client()
    browser.force_login(team.reader.user)
    page = browser.get(reverse("endpoints:onlineendpoint_details", args=["busy"]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Autoscaling" in text and "1 ready of 1 wanted" in text
    assert "under the target of 50%" in text


def test_scale_settings_are_checked_when_a_deployment_is_made(team):
    client = team.contributor.client()
    register(client, "slow", zip_bytes({"model/weights.txt": b"1"}))
    client.post(ENDPOINTS, {"name": "busy"}, format="json")
    code = upload_code(client, zip_bytes({"score.py": SLOW_SCORE}))
    spec = {
        "name": "blue",
        "model": "azureml:slow:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    }
    for scale, complaint in (
        ({"type": "target_utilization", "min_instances": 3, "max_instances": 2}, "above max_instances"),
        ({"type": "target_utilization", "target_utilization_percentage": 150}, "at most 100"),
        ({"type": "target_utilization", "cooldown": 5}, "unknown setting"),
        ({"type": "manual"}, "must be one of"),
        ({"type": "target_utilization", "max_instances": 0}, "at least 1"),
    ):
        answer = client.post(
            f"{ENDPOINTS}busy/deployments/", {**spec, "scale_settings": scale}, format="json"
        )
        assert answer.status_code == 400, (scale, answer.json())
        assert complaint in str(answer.json()), (scale, answer.json())
    assert not OnlineDeployment.objects.exists()


def a_deployment(count: int, **scale) -> SimpleNamespace:
    return SimpleNamespace(
        endpoint=SimpleNamespace(name="busy"),
        name="blue",
        instance_count=count,
        scale_settings={**SCALE, **scale},
        request_settings={"max_concurrent_requests_per_instance": 2},
    )


def test_the_count_wanted_keeps_utilization_under_the_target_within_min_and_max():
    config = autoscale.Settings.of(a_deployment(1, max_instances=5))
    # One request in flight per replica is 50% of 2.
    assert [config.wanted(load) for load in (0, 0.4, 1.0, 1.01, 2.9, 3.0, 4.2, 50)] == [
        1,
        1,
        1,
        2,
        3,
        3,
        5,
        5,
    ]


def test_scaling_out_waits_for_polling_interval_and_in_for_the_cool_down(settings):
    settings.STUDIO_AUTOSCALE_COOLDOWN_S = 30
    made, remembered = autoscale.decide(a_deployment(1), 3.0, None, now=100.0)
    assert made.action == "wait" and remembered == {"want": 3, "since": 100.0}
    made, remembered = autoscale.decide(a_deployment(1), 2.0, remembered, now=100.6)
    assert made.action == "wait" and remembered["since"] == 100.0
    made, remembered = autoscale.decide(a_deployment(1), 2.0, remembered, now=101.0)
    assert (made.action, made.wanted, remembered) == ("scale_out", 2, None)

    made, remembered = autoscale.decide(a_deployment(3), 0.0, None, now=200.0)
    assert made.action == "wait"
    # Load comes back within the cool-down: what was remembered is dropped, nothing is removed.
    made, remembered = autoscale.decide(a_deployment(3), 2.9, remembered, now=220.0)
    assert (made.action, remembered) == ("hold", None)
    made, remembered = autoscale.decide(a_deployment(3), 0.0, remembered, now=221.0)
    made, remembered = autoscale.decide(a_deployment(3), 0.0, remembered, now=250.9)
    assert made.action == "wait"
    made, remembered = autoscale.decide(a_deployment(3), 0.0, remembered, now=251.0)
    assert (made.action, made.wanted) == ("scale_in", 1)


def test_a_count_outside_min_and_max_is_brought_inside_at_once():
    made, _ = autoscale.decide(a_deployment(1, min_instances=2), 0.0, None, now=0.0)
    assert (made.action, made.wanted) == ("scale_out", 2)
    made, _ = autoscale.decide(a_deployment(6), 10.0, None, now=0.0)
    assert (made.action, made.wanted) == ("scale_in", 3)


def test_load_reports_need_the_gateway_secret_and_a_well_formed_body(team, client, settings, monkeypatch):
    from endpoints import gateway_load, routetable
    from studio.testkit import GATEWAY_SECRET

    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    body = {
        "gateway": "gw-a",
        "deployments": [{"endpoint": "busy", "deployment": "blue", "in_flight": 2.5, "peak": 3}],
    }
    good = {"HTTP_AUTHORIZATION": f"Bearer {GATEWAY_SECRET}", "HTTP_X_STUDIO_GATEWAY": "gw-a"}
    url = "/internal/gateway-load/"
    wrong = {**good, "HTTP_AUTHORIZATION": "Bearer nope"}
    assert client.post(url, body, content_type="application/json", **wrong).status_code == 401
    for bad in (
        {"deployments": "all"},
        {"deployments": [{"endpoint": "busy"}]},
        {"deployments": [{**body["deployments"][0], "in_flight": -1}]},
    ):
        assert client.post(url, bad, content_type="application/json", **good).status_code == 400, bad
    assert (
        client.post(
            url, body, content_type="application/json", **{**good, "HTTP_X_STUDIO_GATEWAY": "no way"}
        ).status_code
        == 400
    )
    assert client.post(url, body, content_type="application/json", **good).status_code == 204
    # Counted once the gateway is known to be alive (its route-table polls), and summed over gateways.
    assert gateway_load.in_flight() == {}
    routetable.acknowledge("gw-a", 1)
    assert gateway_load.in_flight() == {("busy", "blue"): 2.5}
    routetable.acknowledge("gw-b", 1)
    client.post(
        url,
        {**body, "gateway": "gw-b"},
        content_type="application/json",
        **{**good, "HTTP_X_STUDIO_GATEWAY": "gw-b"},
    )
    assert gateway_load.in_flight() == {("busy", "blue"): 5.0}
    # A report older than a few intervals no longer counts.
    assert gateway_load.in_flight(now=time.time() + gateway_load.FRESH_S + 1) == {}
