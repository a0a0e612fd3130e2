"""The reconciler through the doors users use: concurrent changes, failures under load, drains through
several gateways, supervision beside slow replicas. Real replicas, real gateways, real leases."""

import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from endpoints import tasks
from endpoints.models import GatewayAck, Job, OnlineDeployment, ReconcilePass, Replica
from endpoints.targets.local import LocalTarget
from endpoints.tests.support import (
    ENDPOINTS,
    WorkerProcess,
    deploy,
    register,
    replica_headers,
    steady_load,
    upload_code,
)
from registry.tests.factories import zip_bytes
from studio.testkit import GATEWAY_SECRET, SLOW_INIT, Gate, GatewayProcess, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

PAYLOAD = {"input_data": [[0.0, 1.0]]}

BROKEN_INIT = (
    b"def init():\n    raise RuntimeError('weights are corrupt')\n\ndef run(data):\n    return data\n"
)

# init() waits until a file the test creates exists: a replica that starts as slowly as the test wants.


def _thread(target, *args) -> threading.Thread:
    """A thread that closes its own database connection when done (Django opens one per thread, and an
    open one keeps PostgreSQL from dropping the test database)."""

    def run():
        try:
            target(*args)
        finally:
            connection.close()

    return threading.Thread(target=run)


def _slow_spec(client, name: str, release: Gate) -> dict:
    """A deployment of the regression model whose replicas are ready only once `release` opens."""
    return {
        "name": name,
        "model": "azureml:regression:1",
        "code_configuration": {
            "code": upload_code(client, zip_bytes({"score.py": SLOW_INIT.encode()})),
            "scoring_script": "score.py",
        },
        "environment_variables": {"RELEASE_ADDRESS": release.address},
    }


def _no_overlap(deployment_id: int) -> list[ReconcilePass]:
    """The deployment's pass records once the last has finished, asserted to never overlap in time: each
    pass starts after the one before finished, or, when that one was killed, after its lease lapsed (last
    renewal plus the TTL)."""
    from django.conf import settings

    def last_finished() -> bool:
        last = ReconcilePass.objects.filter(deployment_id=deployment_id).order_by("-started_at").first()
        return last is not None and last.finished_at is not None

    # A pass finishes its job before its own record: the job's success may be seen a moment earlier.
    assert until(last_finished, timeout=30), "the last pass finished"
    passes = list(ReconcilePass.objects.filter(deployment_id=deployment_id).order_by("started_at"))
    ttl = timedelta(seconds=settings.STUDIO_RECONCILE_LEASE_S)
    for before, after in zip(passes, passes[1:], strict=False):
        held_until = before.finished_at or before.renewed_at + ttl
        assert held_until <= after.started_at, f"passes {before.pk} and {after.pk} overlap"
    return passes


def _serving_endpoint(client, name: str, mlflow_model_zip) -> dict:
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": name}, format="json")
    body = deploy(client, name, {"name": "blue", "model": "azureml:clf:1"})
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    return client.get(f"{ENDPOINTS}{name}/").json()


def test_sixteen_concurrent_updates_of_one_deployment_lose_no_field(team, mlflow_model_zip):
    client = team.contributor.client()
    _serving_endpoint(client, "busy", mlflow_model_zip)
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    url = f"{ENDPOINTS}busy/deployments/blue/"
    # Each change touches other fields than the others: a stale whole-row save would undo one of them.
    changes = [
        {"instance_count": 2},
        {"model": "azureml:clf:2"},
        {"environment_variables": {"COLOUR": "green"}},
        {"request_settings": {"request_timeout_ms": 4000, "max_concurrent_requests_per_instance": 2}},
        {"tags": {"owner": "team-a"}},
        {"description": "the busy one"},
        {"readiness_probe": {"period": 2}},
        {"liveness_probe": {"period": 3}},
    ] * 2
    start = threading.Barrier(len(changes))
    answers = []

    def change(body):
        own = team.contributor.client()
        start.wait()
        answers.append(own.patch(url, body, format="json").status_code)

    threads = [_thread(change, body) for body in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert all(status in (200, 202) for status in answers), answers

    deployment = OnlineDeployment.objects.get(name="blue")
    assert deployment.instance_count == 2
    assert str(deployment.model_version) == "clf:2"
    assert deployment.environment_variables == {"COLOUR": "green"}
    assert deployment.request_settings["request_timeout_ms"] == 4000
    assert deployment.tags == {"owner": "team-a"}
    assert deployment.description == "the busy one"
    assert deployment.readiness_probe["period"] == 2 and deployment.liveness_probe["period"] == 3
    # What runs is what the row asks for: the final revision, as many replicas as asked, all live.
    assert deployment.observed_generation == deployment.generation
    assert deployment.provisioning_state == "Succeeded"
    assert deployment.serving_revision == deployment.revision
    assert deployment.serving_spec["environment_variables"] == {"COLOUR": "green"}
    replicas = list(deployment.replicas.all())
    assert sorted((r.revision, r.index, r.state) for r in replicas) == [
        (deployment.revision, 0, "ready"),
        (deployment.revision, 1, "ready"),
    ]
    assert all(LocalTarget().alive(r) for r in replicas)
    direct = httpx.post(f"{replicas[0].url}/score", json=PAYLOAD, headers=replica_headers(replicas[0].url))
    assert direct.json() == [0]
    assert not Job.objects.filter(state__in=["queued", "running"]).exists(), "every job was settled"
    assert len(_no_overlap(deployment.pk)) >= 1


def test_a_failing_green_created_with_all_traffic_leaves_blue_serving_under_load(
    team, gateway, mlflow_model_zip, azure_sample_zips
):
    client = team.contributor.client()
    endpoint = _serving_endpoint(client, "steady", mlflow_model_zip)
    register(client, "regression", azure_sample_zips[0])
    key = client.post(f"{ENDPOINTS}steady/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    assert until(
        lambda: httpx.post(endpoint["scoring_uri"], json=PAYLOAD, headers=headers).status_code == 200
    )

    broken = upload_code(client, zip_bytes({"score.py": BROKEN_INIT}))
    spec = {
        "name": "green",
        "model": "azureml:regression:1",
        "code_configuration": {"code": broken, "scoring_script": "score.py"},
    }
    with steady_load(endpoint["scoring_uri"], PAYLOAD, headers) as seen:
        created = deploy(client, "steady", spec, all_traffic=True)
        answered_before = seen["answered"]
        assert until(lambda: seen["answered"] > answered_before + 20)
    assert created["job"]["state"] == "failed"
    assert "weights are corrupt" in created["job"]["error"]
    messages = " ".join(event["message"] for event in created["job"]["events"])
    assert "traffic given at create was not moved" in messages
    assert seen["failures"] == [], seen["failures"][:5]
    print(f"failing green under load: {seen['answered']} answered, {len(seen['failures'])} failed")
    shown = client.get(f"{ENDPOINTS}steady/").json()
    assert shown["traffic"] == {"blue": 100}
    assert shown["health"] == "Healthy"
    green = client.get(f"{ENDPOINTS}steady/deployments/green/").json()
    assert green["provisioning_state"] == "Failed" and green["replicas"] == []
    assert green["pending_traffic"] is None


def test_an_update_that_fails_keeps_the_last_good_revision_serving(team, gateway, mlflow_model_zip):
    client = team.contributor.client()
    endpoint = _serving_endpoint(client, "keeper", mlflow_model_zip)
    key = client.post(f"{ENDPOINTS}keeper/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}

    def score():
        return httpx.post(endpoint["scoring_uri"], json=PAYLOAD, headers=headers, timeout=10)

    assert until(lambda: score().status_code == 200)
    broken = upload_code(client, zip_bytes({"score.py": BROKEN_INIT}))
    updated = client.patch(
        f"{ENDPOINTS}keeper/deployments/blue/",
        {"code_configuration": {"code": broken, "scoring_script": "score.py"}},
        format="json",
    ).json()
    assert updated["job"]["state"] == "failed"
    assert "Revision 1 of blue keeps serving" in updated["job"]["error"]
    blue = client.get(f"{ENDPOINTS}keeper/deployments/blue/").json()
    assert blue["provisioning_state"] == "Failed"
    assert (blue["revision"], blue["serving_revision"]) == (2, 1)
    assert [r["state"] for r in blue["replicas"]] == ["ready"]
    assert score().json() == [0]
    shown = client.get(f"{ENDPOINTS}keeper/").json()
    assert shown["health"] == "Degraded"
    assert "last change failed" in shown["health_reasons"][0]

    # The serving revision is kept alive from what it ran, not from the failed spec.
    replica = Replica.objects.get()
    LocalTarget().stop(replica)
    assert tasks.supervise()["unhealthy"] == [replica.replica_id]
    replica = Replica.objects.get()
    assert (replica.revision, replica.state, replica.restarts) == (1, "ready", 1)
    assert until(lambda: score().status_code == 200)


def test_traffic_to_a_deployment_that_has_not_succeeded_is_refused(team, mlflow_model_zip, settings):
    from studio.celery import app

    client = team.contributor.client()
    _serving_endpoint(client, "waiting", mlflow_model_zip)
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False  # green stays queued
    created = client.post(
        f"{ENDPOINTS}waiting/deployments/", {"name": "green", "model": "azureml:clf:1"}, format="json"
    )
    assert created.status_code == 202
    refused = client.patch(ENDPOINTS + "waiting/", {"traffic": {"blue": 50, "green": 50}}, format="json")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "deployment 'green' is not ready (Creating)" in error["message"]
    assert error["details"] == {"traffic": [error["message"].removeprefix("traffic: ")]}
    assert client.get(ENDPOINTS + "waiting/").json()["traffic"] == {"blue": 100}
    # Shrinking a share is always allowed, whatever state the others are in.
    assert (
        client.patch(
            ENDPOINTS + "waiting/", {"traffic": {"blue": 100, "green": 0}}, format="json"
        ).status_code
        == 200
    )


@pytest.fixture
def two_gateways(live_server, settings, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    gateways = [
        GatewayProcess(live_server.url, tmp_path / f"spool-{n}", gateway_id=f"gw-{n}") for n in (1, 2)
    ]
    for process in gateways:
        process.start()
    settings.STUDIO_GATEWAY_URL = gateways[0].url
    yield gateways
    for process in gateways:
        process.stop()


def test_a_rolling_update_through_two_gateways_drops_no_request_and_drains_on_acknowledgement(
    team, two_gateways, mlflow_model_zip
):
    client = team.contributor.client()
    _serving_endpoint(client, "rolling", mlflow_model_zip)
    key = client.post(f"{ENDPOINTS}rolling/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    uris = [f"{g.url}/endpoints/rolling/score" for g in two_gateways]
    for uri in uris:
        assert until(lambda uri=uri: httpx.post(uri, json=PAYLOAD, headers=headers).status_code == 200)
    assert until(lambda: GatewayAck.objects.filter(gateway_id__in=["gw-1", "gw-2"]).count() == 2)
    old = Replica.objects.get()

    register(client, "clf", mlflow_model_zip, "mlflow_model")
    with steady_load(uris[0], PAYLOAD, headers) as first, steady_load(uris[1], PAYLOAD, headers) as second:
        updated = client.patch(
            f"{ENDPOINTS}rolling/deployments/blue/", {"model": "azureml:clf:2"}, format="json"
        )
        answered = first["answered"] + second["answered"]
        assert until(lambda: first["answered"] + second["answered"] > answered + 20)
    job = updated.json()["job"]
    assert job["state"] == "succeeded", job["error"]
    failures = first["failures"] + second["failures"]
    assert failures == [], failures[:5]
    sent = first["answered"] + second["answered"]
    print(f"rolling update through two gateways: {sent} answered, 0 failed")
    messages = " ".join(event["message"] for event in job["events"])
    assert "did not acknowledge" not in messages
    assert f"Stopped replica {old.replica_id}" in messages
    # Both gateways had applied a table without the old replica before it stopped.
    drained = max(GatewayAck.objects.values_list("version", flat=True))
    assert all(ack.version >= drained for ack in GatewayAck.objects.filter(gateway_id__in=["gw-1", "gw-2"]))


def test_supervision_never_overlaps_itself_and_leaves_a_slow_starting_replica_to_its_reconcile(
    team, mlflow_model_zip, azure_sample_zips, tmp_path
):
    client = team.contributor.client()
    _serving_endpoint(client, "slow", mlflow_model_zip)
    register(client, "regression", azure_sample_zips[0])
    release = Gate()
    spec = _slow_spec(client, "green", release)
    creating = _thread(lambda: deploy(team.contributor.client(), "slow", spec, all_traffic=False))
    creating.start()
    try:
        assert until(lambda: Replica.objects.filter(deployment__name="green", state="starting").exists(), 60)
        sweeps = []
        start = threading.Barrier(2)

        def sweep(into):
            start.wait()
            began = time.monotonic()
            result = tasks.supervise()
            into.append((began, time.monotonic(), result))

        for _ in range(3):
            pair = []
            threads = [_thread(sweep, pair) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            (first, second) = sorted(pair, key=lambda run: run[0])
            # Two sweeps started together: one found the other's lease, or they ran one after the other.
            skipped = "skipped" in first[2] or "skipped" in second[2]
            assert skipped or first[1] <= second[0], pair
            sweeps += [run[2] for run in pair]
        green = OnlineDeployment.objects.get(name="green")
        ran = [s for s in sweeps if "skipped" not in s]
        assert ran, sweeps
        assert all(green.pk not in s["queued"] for s in ran), "a deployment being reconciled is not queued"
        assert Replica.objects.get(deployment=green).state == "starting", "supervision did not touch it"
        assert green.provisioning_state == "Creating"
    finally:
        release.open()
        creating.join(120)
    green = OnlineDeployment.objects.get(name="green")
    assert green.provisioning_state == "Succeeded"
    _no_overlap(green.pk)


def test_an_endpoint_whose_traffic_goes_to_a_replica_that_died_is_degraded_until_restarted(
    team, mlflow_model_zip, settings
):
    from studio.celery import app

    client = team.contributor.client()
    _serving_endpoint(client, "wounded", mlflow_model_zip)
    replica = Replica.objects.get()
    LocalTarget().stop(replica)
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False  # the restart stays queued
    assert tasks.supervise()["unhealthy"] == [replica.replica_id]
    shown = client.get(f"{ENDPOINTS}wounded/").json()
    assert shown["health"] == "Degraded"
    assert shown["health_reasons"] == ["blue takes 100% of traffic but has no ready replica."]
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = True
    from endpoints import reconcile

    assert reconcile.reconcile(replica.deployment_id).startswith("restarted 1")
    assert client.get(f"{ENDPOINTS}wounded/").json()["health"] == "Healthy"


@pytest.fixture
def workers(settings, tmp_path):
    """Real Celery workers started by the test; every one is stopped at the end."""
    started = []

    def start(**env):
        worker = WorkerProcess(settings, **env).start(tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_a_worker_killed_mid_reconcile_converges_after_restart_with_no_orphan(
    team, mlflow_model_zip, azure_sample_zips, tmp_path, settings, workers
):
    from studio.celery import app

    lease = "3"
    settings.STUDIO_RECONCILE_LEASE_S = int(lease)
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    client = team.contributor.client()
    register(client, "regression", azure_sample_zips[0])
    client.post(ENDPOINTS, {"name": "crash"}, format="json")
    release = Gate()
    spec = _slow_spec(client, "blue", release)
    first = workers(STUDIO_RECONCILE_LEASE_S=lease)
    created = client.post(f"{ENDPOINTS}crash/deployments/", spec, format="json")
    assert created.status_code == 202
    job_id = created.json()["job"]["id"]

    def starting():
        replica = Replica.objects.filter(deployment__name="blue", state="starting").first()
        return replica if replica is not None and replica.handle.get("pid") else None

    assert until(starting, timeout=120), "the first worker started the replica"
    orphan = starting()
    first.kill()  # mid-reconcile: the pass was waiting for the replica to be ready

    workers(STUDIO_RECONCILE_LEASE_S=lease)
    # Supervision hands the work on once the dead worker's lease lapsed and its job stopped heartbeating.
    assert until(lambda: OnlineDeployment.objects.get(name="blue").pk in tasks.supervise()["queued"], 30)
    release.open()
    assert until(lambda: Job.objects.get(pk=job_id).state == "succeeded", timeout=120), Job.objects.get(
        pk=job_id
    ).events[-5:]
    job = Job.objects.get(pk=job_id)
    assert job.attempts == 2
    replica = Replica.objects.get(deployment__name="blue")
    assert replica.state == "ready"
    # The replica the dead worker started was adopted in its slot, or stopped: never left running beside.
    if replica.handle["pid"] != orphan.handle["pid"]:
        assert not LocalTarget().alive(orphan)
    assert LocalTarget().alive(replica)
    _no_overlap(replica.deployment_id)


def test_a_lease_has_one_holder_until_it_is_released_or_lapses(db):
    from endpoints import leases

    now = [timezone.now()]

    def clock():
        return now[0]

    ttl = timedelta(seconds=15)
    first = leases.acquire("deployment:1", ttl, clock=clock)
    assert first is not None
    assert leases.acquire("deployment:1", ttl, clock=clock) is None, "held"
    now[0] += timedelta(seconds=10)
    first.renew()
    now[0] += timedelta(seconds=10)
    assert leases.acquire("deployment:1", ttl, clock=clock) is None, "renewed: still held"
    now[0] += timedelta(seconds=6)
    second = leases.acquire("deployment:1", ttl, clock=clock)
    assert second is not None, "a holder that stopped renewing lost it"
    with pytest.raises(leases.LeaseLost):
        first.renew()
    first.release()
    assert leases.holder("deployment:1", clock=clock) == second.owner, "the old holder cannot release it"
    second.release()
    assert leases.holder("deployment:1", clock=clock) is None
    assert leases.acquire("deployment:1", ttl, clock=clock) is not None


def test_a_replica_whose_restart_failed_waits_longer_each_time(team, mlflow_model_zip, monkeypatch):
    from endpoints import reconcile

    client = team.contributor.client()
    _serving_endpoint(client, "backoff", mlflow_model_zip)
    replica = Replica.objects.get()
    LocalTarget().stop(replica)
    now = [timezone.now()]
    monkeypatch.setattr(reconcile, "clock", lambda: now[0])
    Replica.objects.filter(pk=replica.pk).update(state="failed", restarts=3, updated_at=now[0])
    deployment = OnlineDeployment.objects.get()
    assert reconcile.work(deployment) == [], "2^3 s have not passed"
    now[0] += timedelta(seconds=8)
    assert reconcile.work(deployment) == [f"restart {replica.replica_id}"]
    assert reconcile.reconcile(deployment.pk).startswith("restarted 1")
    assert Replica.objects.get().state == "ready"
