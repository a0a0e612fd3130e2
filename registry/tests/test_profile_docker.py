"""Profiling on the Docker engine, through the REST API: the model runs as the docker target runs a
replica (its image, its confinement, the instance type's limits as read back from the engine), its
container is never taken for an orphaned replica, and the sweep removes the one a dead worker left.

These need a Docker engine and a base image (`make docker-base-image`); they skip without, or fail when
STUDIO_REQUIRE_DOCKER=1 (CI).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from endpoints.targets.docker import DockerTarget, installation_id
from endpoints.tests.support import register
from registry.profile_docker import JOB_LABEL, PROFILE_LABEL
from registry.tests.factories import save_sklearn_mlflow_model
from registry.tests.test_optimize import zipped
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "docker_target"),
    # The first test builds the model's image (scikit-learn and its wheels): minutes on a busy host.
    pytest.mark.timeout(900),
]

DS1 = "Standard_DS1_v2"


@pytest.fixture(autouse=True)
def docker_profiles(settings):
    settings.STUDIO_PROFILE_TARGET = "docker"


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory) -> bytes:
    return zipped(save_sklearn_mlflow_model(tmp_path_factory.mktemp("profile-docker") / "model"))


class _Log:
    """What a job's log is to the image build: messages and heartbeats, unread here."""

    def __call__(self, message: str, **fields) -> None:
        pass

    def heartbeat(self) -> None:
        pass


def _profile_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": f"{PROFILE_LABEL}={installation_id()}"})


class ContainerWatcher(threading.Thread):
    """Reads, from the engine, the settings of every profile container of this installation it sees."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.seen: dict[str, dict] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for container in _profile_containers(self.client):
                self.seen.setdefault(container.name, container.attrs)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def test_a_profile_runs_the_model_as_the_docker_target_under_the_types_limits(team, model_zip, docker_target):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    with ContainerWatcher(docker_target) as watcher:
        started = client.post(
            "/api/v1/models/clf/versions/1/profile/",
            {"instance_types": [DS1], "duration": "0.5s"},
            format="json",
        )
    assert started.status_code == 202, started.json()
    job = client.get(started["Location"]).json()
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["target"] == "docker"
    (figures,) = result["instance_types"]
    assert figures["throughput_rps"] > 0 and figures["levels"][0]["errors"] == 0
    assert figures["limits"]["method"] == "docker"
    assert figures["limits"]["cpus"] == 1.0 and figures["limits"]["memory_bytes"] == int(3.5 * 1024**3)
    assert 20 * 2**20 < figures["peak_memory_bytes"] < int(3.5 * 1024**3)
    # The engine ran it as the docker target runs a DS1_v2 replica.
    (attributes,) = watcher.seen.values()
    host = attributes["HostConfig"]
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == int(3.5 * 1024**3)
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert attributes["Config"]["User"] == "65532:65532"
    labels = attributes["Config"]["Labels"]
    assert labels[JOB_LABEL] == job["id"] and "studio" not in labels, "not labelled as a replica"
    assert _profile_containers(docker_target) == [], "removed once measured"


def test_orphan_removal_spares_a_profile_and_the_sweep_removes_one_a_dead_worker_left(
    team, model_zip, docker_target, monkeypatch
):
    from django.utils import timezone

    from endpoints import artifacts, supervision
    from endpoints.jobs import hold
    from endpoints.models import Job
    from registry import profile_docker
    from registry.models import ModelVersion

    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    # The job is recorded but its message goes nowhere: this test plays the worker that takes it.
    monkeypatch.setattr("endpoints.jobs.dispatch_model_job", lambda job_id: None)
    started = client.post("/api/v1/models/clf/versions/1/profile/", {}, format="json")
    job = Job.objects.get(pk=started.json()["job"]["id"])
    # As a worker killed mid-profile leaves it: the container running, on the job's row.
    version = ModelVersion.objects.get(model__name="clf", version="1")
    image, model_dir = profile_docker.build(docker_target, version, artifacts.model_dir(version), _Log())
    size, _ = profile_docker.limits(docker_target, DS1)
    profile_docker.start(docker_target, job, image, model_dir, DS1, size, 1, "secret", hold)
    Job.objects.filter(pk=job.pk).update(state="running", heartbeat_at=timezone.now())

    assert DockerTarget().remove_orphans() == []
    assert supervision.sweep()["failed_model_jobs"] == [], "its worker is alive"
    assert len(_profile_containers(docker_target)) == 1, "no replica row owns it, yet it is no orphan"

    silent = timezone.now() - timedelta(minutes=11)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=silent)
    assert supervision.sweep()["failed_model_jobs"] == [str(job.pk)]
    assert until(lambda: _profile_containers(docker_target) == [], timeout=30)
