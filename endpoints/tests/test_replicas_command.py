"""Local replicas stop with their installation: `manage.py replicas stop`, which `studio up` runs as it
stops, and by themselves once the installation is gone."""

import io

import pytest
from django.core.management import call_command

from endpoints.models import Replica, RouteTableVersion
from endpoints.targets.local import LocalTarget, installation_marker
from endpoints.tests.support import ENDPOINTS, deploy, register, score
from studio.testkit import process_group, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]


def test_it_stops_every_local_replica_and_marks_the_ready_ones_for_a_restart(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "fraud"}, format="json")
    body = deploy(client, "fraud", {"name": "blue", "model": "azureml:clf@latest"})
    assert body["job"]["state"] == "succeeded", body["job"]
    replica = Replica.objects.get()
    assert score(replica.url, {"input_data": [[0.0, 1.0]]}).status_code == 200
    version = RouteTableVersion.current()

    out = io.StringIO()
    call_command("replicas", "stop", stdout=out)

    assert "Stopped 1 local replica;" in out.getvalue()
    assert until(lambda: not process_group(replica.handle["pid"]), 5), "the replica and its workers are gone"
    replica.refresh_from_db()
    assert replica.state == "unhealthy", "the reconciler starts it again once a worker runs"
    assert RouteTableVersion.current() > version, "gateways stop routing to it"

    out = io.StringIO()
    call_command("replicas", "stop", stdout=out)
    assert "No local replica was running." in out.getvalue()
    assert RouteTableVersion.current() == version + 1, "nothing changed the second time"


def test_a_local_replica_exits_by_itself_once_its_installation_is_gone(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "orphan"}, format="json")
    spec = {"name": "blue", "model": "azureml:clf@latest"}
    # Looked at every 0.2 s rather than every few seconds, so the test need not wait.
    body = deploy(client, "orphan", spec | {"environment_variables": {"STUDIO_INSTALLATION_CHECK_S": "0.2"}})
    assert body["job"]["state"] == "succeeded", body["job"]
    replica = Replica.objects.get()
    marker = installation_marker()
    # This user's, and (where replicas are sandboxed) readable by the replicas' group only.
    assert marker.stat().st_mode & 0o737 == 0o600, "the installation's id is for nobody else"

    marker.unlink()  # what deleting STUDIO_HOME does to it
    # As the reconciler sees it (a replica started cold here is this process's child: `alive` reaps it).
    assert until(lambda: not LocalTarget().alive(replica), 15), "the replica outlived its installation"
    assert until(lambda: not process_group(replica.handle["pid"]), 5), "its workers outlived it"
    assert "installation_gone" in LocalTarget().logs(replica, 20), "its log says why it stopped"
