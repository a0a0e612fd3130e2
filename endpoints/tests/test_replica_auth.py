"""Replicas answer only the gateway: each deployment's replica key, through the doors a user has.

A deployment made through the REST API runs real model-server processes on the local target; a direct
call to a replica's address is refused without its key, while the gateway, the Test tab and Studio's own
readiness and liveness checks go on working. The key is never shown.
"""

import json

import httpx
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from endpoints import credentials, tasks
from endpoints.models import OnlineDeployment
from endpoints.tests.support import ENDPOINTS, deploy, register
from serving import replica_key
from studio.testing import signed_in
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

PAYLOAD = {"input_data": [[0.0, 1.0]]}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    assert "scoring URI" in error["message"], "it says where to send the request instead"


def replica_url(client, deployment: str) -> str:
    shown = client.get(f"{ENDPOINTS}guarded/deployments/{deployment}/").json()
    return shown["replicas"][0]["url"]


@pytest.fixture
def guarded(team, gateway, mlflow_model_zip):
    """Endpoint `guarded`: `blue` takes all traffic; `green` (no traffic) sets STUDIO_REPLICA_KEY itself."""
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "guarded"}, format="json")
    blue = deploy(client, "guarded", {"name": "blue", "model": "azureml:clf:1"})
    assert blue["job"]["state"] == "succeeded", blue["job"]["error"]
    green = deploy(
        client,
        "guarded",
        {
            "name": "green",
            "model": "azureml:clf:1",
            "environment_variables": {replica_key.VARIABLE: "chosen-by-the-deployment-itself"},
        },
        all_traffic=False,
    )
    assert green["job"]["state"] == "succeeded", green["job"]["error"]
    return client


def test_a_direct_call_without_the_key_is_refused(guarded):
    url = replica_url(guarded, "blue")
    assert_refused(httpx.post(f"{url}/score", json=PAYLOAD, timeout=10))
    for path in ("/health/ready", "/swagger.json", "/metrics"):
        assert_refused(httpx.get(f"{url}{path}", timeout=10))
    live = httpx.get(f"{url}/health/live", timeout=10)
    assert live.status_code == 200 and live.text == "Healthy", "liveness answers anyone, and says no more"


def test_a_direct_call_with_a_wrong_key_is_refused(guarded):
    blue, green = (OnlineDeployment.objects.get(name=name) for name in ("blue", "green"))
    url = replica_url(guarded, "blue")
    endpoint_key = guarded.post(f"{ENDPOINTS}guarded/credentials/").json()["primaryKey"]
    wrong = [
        replica_key.headers(green.replica_secret),  # another deployment's key
        replica_key.headers(endpoint_key),  # the endpoint's own key is not the replicas'
        replica_key.headers(blue.replica_secret[:-1]),
        {"Authorization": f"Bearer {endpoint_key}"},
    ]
    for headers in wrong:
        assert_refused(httpx.post(f"{url}/score", json=PAYLOAD, headers=headers, timeout=10))
    right = httpx.post(f"{url}/score", json=PAYLOAD, headers=replica_key.headers(blue.replica_secret))
    assert right.status_code == 200 and right.json() == [0]


def test_a_deployment_cannot_choose_its_replicas_key(guarded):
    url = replica_url(guarded, "green")
    chosen = replica_key.headers("chosen-by-the-deployment-itself")
    assert_refused(httpx.post(f"{url}/score", json=PAYLOAD, headers=chosen, timeout=10))
    own = replica_key.headers(OnlineDeployment.objects.get(name="green").replica_secret)
    assert httpx.post(f"{url}/score", json=PAYLOAD, headers=own, timeout=10).status_code == 200


def test_the_gateway_still_scores_every_deployment(guarded, gateway):
    key = guarded.post(f"{ENDPOINTS}guarded/credentials/").json()["primaryKey"]
    uri = guarded.get(f"{ENDPOINTS}guarded/").json()["scoring_uri"]

    def score(**headers):
        return httpx.post(
            uri, json=PAYLOAD, headers={"Authorization": f"Bearer {key}", **headers}, timeout=10
        )

    assert until(lambda: score(**{"azureml-model-deployment": "green"}).status_code == 200), score().text
    answer = score()
    assert answer.status_code == 200 and answer.json() == [0]
    assert answer.headers["azureml-model-deployment"] == "blue"
    # Studio's own liveness checks present the key too: supervision finds every replica healthy.
    assert tasks.supervise()["unhealthy"] == []


def test_the_test_tab_still_works(guarded, gateway, team):
    page = signed_in(team.contributor.user)
    body = json.dumps(PAYLOAD)
    for deployment in ("", "green"):
        sent = {"body": body, "deployment": deployment}
        assert until(
            lambda sent=sent: "200 OK" in page.post("/endpoints/guarded/test/", sent).content.decode()
        )
        html = page.post("/endpoints/guarded/test/", sent).content.decode()
        assert "200 OK" in html and "[\n  0\n]" in html, html


def test_the_key_is_never_shown_by_the_api_or_the_pages(guarded, team):
    keys = [d.replica_secret for d in OnlineDeployment.objects.all()]
    assert len(set(keys)) == 2
    answers = [
        guarded.get(f"{ENDPOINTS}guarded/").content,
        guarded.get(f"{ENDPOINTS}guarded/deployments/").content,
        guarded.get(f"{ENDPOINTS}guarded/deployments/blue/").content,
        guarded.get(f"{ENDPOINTS}guarded/deployments/blue/logs/?lines=200").content,
    ]
    page = signed_in(team.contributor.user)
    for tab in ("details/", "logs/", "consume/", "test/", "traffic/"):
        response = page.get(f"/endpoints/guarded/{tab}")
        assert response.status_code == 200, tab
        answers.append(response.content)
    for answer in answers:
        for key in keys:
            assert key.encode() not in answer
    row = OnlineDeployment.objects.get(name="blue")
    assert row.replica_secret not in row.replica_key, "kept encrypted at rest"


def test_the_migration_gives_every_existing_deployment_a_key_of_its_own(team):
    from registry.tests.factories import register as register_version

    executor = MigrationExecutor(connection)
    mine = next(
        key for key in executor.loader.graph.nodes if key[0] == "endpoints" and "replica_key" in key[1]
    )
    before = [key for key in executor.loader.get_migration(*mine).dependencies if key[0] == "endpoints"]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    version = register_version("old", team.contributor.user)
    endpoint = old.get_model("endpoints", "OnlineEndpoint").objects.create(
        name="before", primary_key=credentials.encrypt("a"), secondary_key=credentials.encrypt("b")
    )
    for name in ("blue", "green"):
        old.get_model("endpoints", "OnlineDeployment").objects.create(
            endpoint=endpoint, name=name, model_version_id=version.pk
        )
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    keys = [d.replica_secret for d in OnlineDeployment.objects.filter(endpoint__name="before")]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(len(key) >= replica_key.MIN_LENGTH for key in keys)
