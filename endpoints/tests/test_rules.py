"""The rules Azure ML users rely on, through the REST API: each violation is a 400/409 naming the rule."""

import jwt
import pytest
from django.db import transaction

from endpoints import credentials
from endpoints.models import OnlineDeployment, OnlineEndpoint, RouteTableVersion
from registry.tests.factories import register
from studio.models import AuditEvent

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/online-endpoints/"


def _mlflow_version():
    """An MLflow model as far as the registry can tell: these tests never run it."""
    return register("clf", type="mlflow_model", files={"model/MLmodel": b"flavors:\n  python_function: {}\n"})


def _endpoint(client, name="fraud", **fields):
    response = client.post(ENDPOINTS, {"name": name, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _deployment_row(endpoint_name: str, name: str, version=None) -> OnlineDeployment:
    """A deployment row as a succeeded create leaves it, without running anything: these tests are about
    rules, not replicas."""
    endpoint = OnlineEndpoint.objects.get(name=endpoint_name)
    version = version or _mlflow_version()
    return OnlineDeployment.objects.create(
        endpoint=endpoint,
        name=name,
        model_version=version,
        provisioning_state="Succeeded",
        observed_generation=1,
        serving_revision=1,
    )


@pytest.mark.parametrize(
    "name", ["ab", "a" * 33, "1abc", "has--double", "ends-", "under_score", "white space"]
)
def test_endpoint_names_follow_azures_rule(team, name):
    response = team.contributor.client().post(ENDPOINTS, {"name": name}, format="json")
    assert response.status_code == 400
    assert "3-32 letters, digits and single dashes" in response.json()["error"]["message"]


def test_endpoint_names_are_unique(team):
    client = team.contributor.client()
    _endpoint(client)
    response = client.post(ENDPOINTS, {"name": "fraud"}, format="json")
    assert response.status_code == 409
    assert "exists already" in response.json()["error"]["message"]


def test_an_endpoint_has_azures_fields_and_a_stable_scoring_uri(team, settings):
    settings.STUDIO_GATEWAY_URL = "https://gw.example.com"
    body = _endpoint(team.contributor.client(), auth_mode="aml_token", description="fraud scores")
    assert body["scoring_uri"] == "https://gw.example.com/endpoints/fraud/score"
    assert body["openapi_uri"] == "https://gw.example.com/endpoints/fraud/swagger.json"
    assert body["auth_mode"] == "aml_token"
    assert body["provisioning_state"] == "Succeeded"


def test_an_unknown_field_is_refused_by_name(team):
    response = team.contributor.client().post(ENDPOINTS, {"name": "fraud", "colour": "red"}, format="json")
    assert response.status_code == 400
    assert "colour" in response.json()["error"]["message"]


def test_yaml_written_for_az_ml_is_accepted_as_the_body(team):
    yaml_body = (
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n"
        "name: fraud\nauth_mode: key\nidentity:\n  type: system_assigned\n"
    )
    response = team.contributor.client().post(ENDPOINTS, yaml_body, content_type="application/yaml")
    assert response.status_code == 201, response.json()
    assert response.json()["warnings"] == ["identity is not used by Studio and was ignored."]


@pytest.mark.parametrize(
    ("traffic", "says"),
    [
        ({"blue": 90}, "add up to 0 or 100 percent, not 90"),
        ({"blue": 50, "green": 60}, "not 110"),
        ({"blue": 100, "red": 0}, "does not have"),
        ({"blue": 101}, "from 0 to 100"),
        ({"blue": "100"}, "from 0 to 100"),
    ],
)
def test_traffic_must_sum_to_0_or_100_over_existing_deployments(team, traffic, says):
    client = team.contributor.client()
    _endpoint(client)
    version = _mlflow_version()
    _deployment_row("fraud", "blue", version)
    _deployment_row("fraud", "green", version)
    response = client.patch(f"{ENDPOINTS}fraud/", {"traffic": traffic}, format="json")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("traffic", "mirror", "says"),
    [
        ({"blue": 100}, {"green": 51}, "at most 50 percent"),
        ({"blue": 100}, {"blue": 10}, "takes live traffic"),
        ({"blue": 50, "green": 50}, {"green": 10}, "takes live traffic"),
    ],
)
def test_mirror_traffic_is_at_most_50_percent_to_an_idle_deployment(team, traffic, mirror, says):
    client = team.contributor.client()
    _endpoint(client)
    version = _mlflow_version()
    for name in ("blue", "green"):
        _deployment_row("fraud", name, version)
    response = client.patch(
        f"{ENDPOINTS}fraud/", {"traffic": traffic, "mirror_traffic": mirror}, format="json"
    )
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


def test_valid_traffic_and_mirror_are_saved_and_published(team):
    client = team.contributor.client()
    _endpoint(client)
    version = _mlflow_version()
    for name in ("blue", "green"):
        _deployment_row("fraud", name, version)
    before = RouteTableVersion.current()
    response = client.patch(
        f"{ENDPOINTS}fraud/",
        {"traffic": {"blue": 100, "green": 0}, "mirror_traffic": {"green": 20}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["traffic"] == {"blue": 100, "green": 0}
    assert RouteTableVersion.current() > before


def test_a_deployment_with_live_traffic_cannot_be_deleted(team):
    client = team.contributor.client()
    _endpoint(client)
    _deployment_row("fraud", "blue")
    client.patch(f"{ENDPOINTS}fraud/", {"traffic": {"blue": 100}}, format="json")
    response = client.delete(f"{ENDPOINTS}fraud/deployments/blue/")
    assert response.status_code == 409
    assert "set its traffic to 0 first" in response.json()["error"]["message"]


def test_a_model_version_used_by_a_deployment_cannot_be_deleted(team):
    client = team.contributor.client()
    _endpoint(client)
    _deployment_row("fraud", "blue")
    response = client.delete("/api/v1/models/clf/versions/1/")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["deployments"] == ["fraud/blue"]
    assert "archive this version instead" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"model": "azureml:nope:1"}, "no registered model 'nope'"),
        ({"model": "not a ref"}, "not a model reference"),
        ({"model": {"path": "./model"}}, "must be registered first"),
        ({"model": "azureml:clf:1", "instance_count": 0}, "at least 1"),
        ({"model": "azureml:clf:1", "target": "mainframe"}, "must be one of"),
        ({"model": "azureml:clf:1", "target": "kubernetes"}, "needs a cluster and none is configured"),
        ({"model": "azureml:clf:1", "code_configuration": {"code": "./src"}}, "azureml:code:"),
        ({"model": "azureml:clf:1", "environment": {"conda_file": "conda.yaml"}}, "file's content"),
        ({"model": "azureml:clf:1", "colour": "red"}, "not a field of an online deployment"),
        ({"model": "azureml:custom:1"}, "custom_model needs code_configuration"),
    ],
)
def test_a_bad_deployment_spec_is_a_400_that_says_what_to_fix(team, spec, says, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-cluster"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    client = team.contributor.client()
    _endpoint(client)
    _mlflow_version()
    register("custom")
    response = client.post(f"{ENDPOINTS}fraud/deployments/", {"name": "blue", **spec}, format="json")
    assert response.status_code == 400, response.json()
    assert says in response.json()["error"]["message"]
    assert not OnlineDeployment.objects.exists()


def test_unknown_endpoints_and_deployments_are_404s(team):
    client = team.reader.client()
    assert client.get(f"{ENDPOINTS}nope/").status_code == 404
    assert (
        "no online endpoint named 'nope'"
        in client.get(f"{ENDPOINTS}nope/deployments/").json()["error"]["message"]
    )


def test_readers_cannot_create_endpoints_or_read_keys(team):
    _endpoint(team.contributor.client())
    reader = team.reader.client()
    assert reader.post(ENDPOINTS, {"name": "other"}, format="json").status_code == 403
    assert reader.post(f"{ENDPOINTS}fraud/credentials/").status_code == 403


def test_keys_are_encrypted_at_rest_and_regenerated_one_at_a_time(team):
    client = team.contributor.client()
    _endpoint(client)
    keys = client.post(f"{ENDPOINTS}fraud/credentials/").json()
    row = OnlineEndpoint.objects.get(name="fraud")
    assert keys["primaryKey"] not in row.primary_key and keys["secondaryKey"] not in row.secondary_key
    assert (
        client.post(f"{ENDPOINTS}fraud/regenerate-keys/", {"keyType": "primary"}, format="json").status_code
        == 204
    )
    after = client.post(f"{ENDPOINTS}fraud/credentials/").json()
    assert after["primaryKey"] != keys["primaryKey"]
    assert after["secondaryKey"] == keys["secondaryKey"]
    bad = client.post(f"{ENDPOINTS}fraud/regenerate-keys/", {"keyType": "tertiary"}, format="json")
    assert bad.status_code == 400
    assert AuditEvent.objects.filter(action="credentials_changed", details__regenerated="primary").exists()


def test_token_endpoints_hand_out_signed_tokens_that_expire_in_an_hour(team):
    client = team.contributor.client()
    _endpoint(client, auth_mode="aml_token")
    answer = client.post(f"{ENDPOINTS}fraud/credentials/").json()
    assert set(answer) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    claims = jwt.decode(
        answer["accessToken"], credentials.token_public_key(), algorithms=["EdDSA"], audience="fraud"
    )
    assert claims["exp"] - claims["iat"] == 3600
    assert answer["refreshAfterTimeUtc"] < answer["expiryTimeUtc"]


def test_the_route_table_needs_the_gateway_secret_and_holds_digests_not_keys(team, client):
    contributor = team.contributor.client()
    _endpoint(contributor)
    keys = contributor.post(f"{ENDPOINTS}fraud/credentials/").json()
    assert client.get("/internal/route-table/", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    secret = credentials.gateway_secret()
    response = client.get("/internal/route-table/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    table = response.json()
    assert response["ETag"] == f'"{table["version"]}"'
    entry = table["endpoints"]["fraud"]
    assert entry["key_digests"] == [
        credentials.key_digest(keys["primaryKey"], secret),
        credentials.key_digest(keys["secondaryKey"], secret),
    ]
    assert keys["primaryKey"] not in response.content.decode()
    assert "BEGIN PUBLIC KEY" in table["token"]["public_key"]


def test_the_route_table_answers_304_when_unchanged_and_200_after_a_change(team, client):
    _endpoint(team.contributor.client())
    secret = credentials.gateway_secret()
    first = client.get("/internal/route-table/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    unchanged = client.get(
        "/internal/route-table/?wait=0.3",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_IF_NONE_MATCH=first["ETag"],
    )
    assert unchanged.status_code == 304
    with transaction.atomic():
        RouteTableVersion.bump()
    changed = client.get(
        "/internal/route-table/?wait=5",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_IF_NONE_MATCH=first["ETag"],
    )
    assert changed.status_code == 200
    assert changed.json()["version"] > first.json()["version"]


def test_a_no_code_deployment_cannot_switch_to_a_custom_model_without_code(team):
    client = team.contributor.client()
    _endpoint(client)
    _deployment_row("fraud", "blue")
    register("custom")
    response = client.patch(
        f"{ENDPOINTS}fraud/deployments/blue/", {"model": "azureml:custom:1"}, format="json"
    )
    assert response.status_code == 400
    assert "custom_model needs code_configuration" in response.json()["error"]["message"]
    assert OnlineDeployment.objects.get().model_version.model.name == "clf"
