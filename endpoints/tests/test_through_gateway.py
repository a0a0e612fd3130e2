"""End to end: deploy through the API, score through the real gateway reading the real route table."""

import httpx
import pytest

from endpoints.tests.support import steady_load
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"


def _register(client, name, content):
    from registry.tests.factories import form

    response = client.post(
        "/api/v1/models/", form(name, content, "m.zip", archive=True, type="mlflow_model"), format="multipart"
    )
    assert response.status_code == 201, response.json()


def test_a_deployment_answers_through_the_gateway_and_survives_an_update_under_load(
    team, gateway, mlflow_model_zip
):
    client = team.contributor.client()
    _register(client, "clf", mlflow_model_zip)
    endpoint = client.post(ENDPOINTS, {"name": "fraud"}, format="json").json()
    assert endpoint["scoring_uri"] == f"{gateway.url}/endpoints/fraud/score"
    created = client.post(
        f"{ENDPOINTS}fraud/deployments/?all_traffic=true",
        {"name": "blue", "model": "azureml:clf:1"},
        format="json",
    ).json()
    assert created["job"]["state"] == "succeeded", created["job"]["error"]
    key = client.post(f"{ENDPOINTS}fraud/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    payload = {"input_data": [[0.0, 1.0]]}

    def score(**extra):
        return httpx.post(endpoint["scoring_uri"], json=payload, headers={**headers, **extra}, timeout=10)

    assert until(lambda: score().status_code == 200), "the gateway picks up the new route table"
    answer = score()
    assert answer.json() == [0]
    assert answer.headers["azureml-model-deployment"] == "blue"
    assert (
        httpx.post(
            endpoint["scoring_uri"], json=payload, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )

    # Load runs while a new model version rolls in: new replicas are ready before old ones leave.
    with steady_load(endpoint["scoring_uri"], payload, headers) as seen:
        _register(client, "clf", mlflow_model_zip)
        updated = client.patch(
            f"{ENDPOINTS}fraud/deployments/blue/", {"model": "azureml:clf:2"}, format="json"
        )
        assert updated.json()["job"]["state"] == "succeeded", updated.json()["job"]["error"]
        # Answers keep coming after the old replicas left: the new ones serve.
        answered = seen["answered"]
        assert until(lambda: seen["answered"] > answered + 10, timeout=20)
    assert seen["failures"] == [], seen["failures"][:5]
    assert seen["answered"] > 10
    assert client.post(f"{ENDPOINTS}fraud/credentials/").json()["primaryKey"] == key

    # A regenerated key takes effect at the gateway within a second or two.
    client.post(f"{ENDPOINTS}fraud/regenerate-keys/", {"keyType": "primary"}, format="json")
    assert until(lambda: score().status_code == 401, timeout=5)
    new_key = client.post(f"{ENDPOINTS}fraud/credentials/").json()["primaryKey"]
    assert (
        httpx.post(
            endpoint["scoring_uri"], json=payload, headers={"Authorization": f"Bearer {new_key}"}
        ).status_code
        == 200
    )


def test_a_token_endpoint_accepts_the_token_it_hands_out(team, gateway, mlflow_model_zip):
    client = team.contributor.client()
    _register(client, "clf", mlflow_model_zip)
    endpoint = client.post(ENDPOINTS, {"name": "tokens", "auth_mode": "aml_token"}, format="json").json()
    client.post(
        f"{ENDPOINTS}tokens/deployments/?all_traffic=true",
        {"name": "blue", "model": "azureml:clf:1"},
        format="json",
    )
    token = client.post(f"{ENDPOINTS}tokens/credentials/").json()["accessToken"]
    payload = {"input_data": [[1.0, 0.0]]}

    def score(bearer):
        return httpx.post(
            endpoint["scoring_uri"], json=payload, headers={"Authorization": f"Bearer {bearer}"}
        )

    assert until(lambda: score(token).status_code == 200)
    assert score(token).json() == [1]
    other = client.post(ENDPOINTS, {"name": "other", "auth_mode": "aml_token"}, format="json")
    assert other.status_code == 201
    assert score(client.post(f"{ENDPOINTS}other/credentials/").json()["accessToken"]).status_code == 401
