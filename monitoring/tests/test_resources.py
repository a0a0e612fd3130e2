"""Replica CPU and memory, read where replicas really run (a local model server, a Docker container),
kept per minute by the beat task and charted on the monitoring tab."""

import json
import os
import re
import time
from pathlib import Path

import pytest
from django.db.models import Sum

from endpoints.models import OnlineDeployment, Replica
from endpoints.tests.support import ENDPOINTS, deploy, register, score
from monitoring import tasks
from monitoring.models import ResourceMinute
from monitoring.resources import Usage, record
from monitoring.tests.factories import recent
from studio.testkit import PASSWORD, process_stat, until

PAYLOAD = {"input_data": [[0.0, 1.0], [1.0, 0.0]]}


def _figure(html: str, name: str) -> dict:
    found = re.search(rf'<script id="chart-{name}-figure" type="application/json">(.*?)</script>', html, re.S)
    assert found, f"no {name} chart on the page"
    return json.loads(found.group(1))


def _charted(client, endpoint: str, deployment: str) -> tuple[list, list]:
    """The CPU and memory values the monitoring tab charts for one deployment (nulls left out)."""
    client.login(username="reader", password=PASSWORD)
    html = client.get(f"/endpoints/{endpoint}/monitoring/").content.decode()
    values = []
    for name in ("cpu", "memory"):
        trace = next(t for t in _figure(html, name)["data"] if t["name"] == deployment)
        values.append([value for value in trace["y"] if value is not None])
    return values[0], values[1]


def _resident_bytes(pid: int) -> int:
    """VmRSS of one process, as the kernel reports it in /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints")
def test_a_local_replicas_cpu_and_memory_are_sampled_and_charted(team, mlflow_model_zip, client):
    api = team.contributor.client()
    register(api, "clf", mlflow_model_zip, "mlflow_model")
    api.post(ENDPOINTS, {"name": "fraud"}, format="json")
    body = deploy(api, "fraud", {"name": "blue", "model": "azureml:clf@latest"})
    assert body["job"]["state"] == "succeeded", body["job"]
    replica = Replica.objects.get()
    pid = replica.handle["pid"]
    print(f"replica {pid} runs as uid {os.stat(f'/proc/{pid}').st_uid}, {replica.handle['isolation']}")

    started = time.perf_counter()
    assert tasks.sample_resources() == {"replicas": 1, "deployments": 1, "failed": []}
    print(f"one sample of one local replica: {1000 * (time.perf_counter() - started):.1f} ms")

    def used_cpu() -> bool:
        for _ in range(10):
            assert score(replica.url, PAYLOAD).status_code == 200
        tasks.sample_resources()
        return ResourceMinute.objects.aggregate(cpu=Sum("cpu_seconds"))["cpu"] > 0

    assert until(used_cpu, 30, every=0.05), "scoring used no CPU that sampling saw"
    rows = ResourceMinute.objects.filter(endpoint="fraud", deployment="blue")
    assert all(row.replicas == 1 for row in rows)
    # The group's memory: at least the model server's own (its workers add theirs).
    peak = max(row.rss_bytes for row in rows)
    assert peak >= _resident_bytes(pid) * 0.8

    cpu, memory = _charted(client, "fraud", "blue")
    assert max(cpu) > 0
    assert memory and max(memory) == round(peak / 2**20, 1)


@pytest.mark.django_db
def test_a_restarted_replica_starts_its_count_again_instead_of_going_negative(team, endpoints):
    first = recent(4).replace(second=10)
    record("fraud", "blue", {"blue-1-0": Usage("local:100:1", 50.0, 2**27)}, first)
    record("fraud", "blue", {"blue-1-0": Usage("local:100:1", 53.0, 2**27)}, first.replace(second=40))
    # Restarted: another process, its counter from zero. No CPU is counted for it until its next reading.
    record("fraud", "blue", {"blue-1-0": Usage("local:200:9", 0.5, 2**26)}, first.replace(second=50))
    row = record("fraud", "blue", {"blue-1-0": Usage("local:200:9", 2.0, 2**26)}, first.replace(second=55))
    assert (row.cpu_seconds, row.sampled_seconds) == (4.5, 35.0)
    assert row.rss_bytes == 2**27


@pytest.fixture
def busy_container(docker_engine):
    """A container of the base image that keeps a core busy for a while: what a replica under load is."""
    client, base = docker_engine
    container = client.containers.run(
        base,
        ["python", "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"],
        detach=True,
        labels={"studio-test": "resources"},
    )
    yield container
    container.remove(force=True)


@pytest.mark.django_db
def test_a_docker_replicas_cpu_and_memory_come_from_the_engines_stats(team, endpoints, busy_container):
    blue = OnlineDeployment.objects.get(endpoint=endpoints, name="blue")
    OnlineDeployment.objects.filter(pk=blue.pk).update(target="docker")
    Replica.objects.create(
        deployment=blue, revision=1, index=0, state="ready", handle={"container": busy_container.id}
    )
    assert tasks.sample_resources()["replicas"] == 1

    def sampled_cpu() -> bool:
        tasks.sample_resources()
        return ResourceMinute.objects.aggregate(cpu=Sum("sampled_seconds"))["cpu"] > 0.5

    assert until(sampled_cpu, 20, every=0.2)
    rows = list(ResourceMinute.objects.filter(endpoint="fraud", deployment="blue"))
    cpu = sum(row.cpu_seconds for row in rows) / sum(row.sampled_seconds for row in rows)
    # One busy thread: some CPU, never more than a core (how much depends on what else the host runs).
    assert 0 < cpu <= 1.05, f"a busy loop uses up to one core, not {cpu:.2f}"
    assert min(row.rss_bytes for row in rows) > 1 * 2**20
    # The engine's counter is the container's process's CPU time, as the host's kernel counts it.
    last = rows[-1].readings["replicas"]["blue-1-0"]["cpu"]
    busy_container.reload()
    fields = process_stat(busy_container.attrs["State"]["Pid"])
    by_kernel = sum(int(value) for value in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    assert last - 0.05 <= by_kernel <= last + 2.0


@pytest.mark.django_db
def test_resource_minutes_are_kept_as_long_as_the_request_minutes(settings, endpoints):
    from datetime import timedelta

    old = recent(0) - timedelta(days=settings.STUDIO_METRICS_RETENTION_DAYS, minutes=5)
    record("fraud", "blue", {"blue-1-0": Usage("local:1:1", 1.0, 2**20)}, old)
    kept = record("fraud", "blue", {"blue-1-0": Usage("local:1:1", 2.0, 2**20)}, recent(1))
    tasks.enforce_telemetry_retention()
    assert list(ResourceMinute.objects.all()) == [kept]
