"""Hostile input to the endpoint API: YAML bodies with aliases, values JSON cannot hold, bodies past the
limit, names with a trailing newline, numbers and text no database column holds. Each is a 4xx that says
what to fix; nothing is created."""

import pytest

from endpoints.models import OnlineDeployment, OnlineEndpoint
from registry.tests.factories import register

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/online-endpoints/"


def _message(response) -> str:
    return response.json()["error"]["message"]


def _endpoint_with_a_model(client) -> None:
    register("clf", type="mlflow_model", files={"model/MLmodel": b"flavors:\n  python_function: {}\n"})
    assert client.post(ENDPOINTS, {"name": "fraud"}, format="json").status_code == 201


# 317 bytes of YAML that name 9^6 copies of a 16-byte string through anchors and aliases.
LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "name: laughs\n"
    "description: laughing\n"
    "tags: {}\n"
)


def test_a_yaml_body_with_aliases_is_refused(team):
    response = team.contributor.client().post(ENDPOINTS, LAUGHS, content_type="application/yaml")
    assert response.status_code == 400
    assert "anchors and aliases are not supported" in _message(response)


def test_a_yaml_body_with_a_merge_key_is_refused_too(team):
    body = "base: &base {auth_mode: key}\nname: merged\n<<: *base\n"
    response = team.contributor.client().post(ENDPOINTS, body, content_type="application/yaml")
    assert response.status_code == 400
    assert "line 1" in _message(response)


def test_yaml_values_that_json_cannot_hold_are_refused_or_kept_as_text(team):
    client = team.contributor.client()
    dated = client.post(
        ENDPOINTS, "name: dated\ntags: {since: 2024-01-01}\n", content_type="application/yaml"
    )
    assert dated.status_code == 201, dated.json()
    assert dated.json()["tags"] == {"since": "2024-01-01"}
    for body in (
        "name: binary\ntraffic: !!binary aGVsbG8=\n",
        "name: aset\ntraffic: !!set {a, b}\n",
        "name: notnumber\ntraffic: {blue: .nan}\n",
        "name: stamp\ntraffic: {blue: !!timestamp 2024-01-01}\n",
    ):
        response = client.post(ENDPOINTS, body, content_type="application/yaml")
        assert response.status_code == 400, (body, response.content)
        assert "YAML" in _message(response)


def test_a_deeply_nested_body_is_a_400(team):
    client = team.contributor.client()
    nested_json = "[" * 100_000 + "]" * 100_000
    response = client.post(ENDPOINTS, nested_json, content_type="application/json")
    assert response.status_code == 400
    nested_yaml = "name: deep\ntags: " + "[" * 5_000 + "]" * 5_000 + "\n"
    response = client.post(ENDPOINTS, nested_yaml, content_type="application/yaml")
    assert response.status_code == 400


def test_a_yaml_body_over_the_body_limit_is_a_413(team):
    # The default limit, not one lowered for the test: 30 MB of YAML are not parsed at all.
    body = "name: big\ndescription: " + "x" * (30 * 1024 * 1024) + "\n"
    response = team.contributor.client().post(ENDPOINTS, body, content_type="application/yaml")
    assert response.status_code == 413
    assert "STUDIO_MAX_BODY_BYTES" in _message(response)


def test_an_endpoint_name_with_a_trailing_newline_is_refused(team):
    response = team.contributor.client().post(ENDPOINTS, {"name": "fraud\n"}, format="json")
    assert response.status_code == 400
    assert "3-32 letters" in _message(response)


def test_a_model_reference_or_deployment_name_with_a_trailing_newline_is_refused(team):
    client = team.contributor.client()
    _endpoint_with_a_model(client)
    response = client.post(
        f"{ENDPOINTS}fraud/deployments/", {"name": "blue", "model": "azureml:clf:1\n"}, format="json"
    )
    assert response.status_code == 400
    assert "not a model reference" in _message(response)
    response = client.post(
        f"{ENDPOINTS}fraud/deployments/", {"name": "blue\n", "model": "azureml:clf:1"}, format="json"
    )
    assert response.status_code == 400
    assert "3-32 letters" in _message(response)
    assert not OnlineDeployment.objects.exists()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"instance_count": 2**64}, "at most 2147483647"),
        ({"instance_type": "x" * 65}, "instance_type: must be at most 64 characters"),
        (
            {"code_configuration": {"code": "azureml:code:" + "0" * 64, "scoring_script": "s" * 501}},
            "at most 500 characters",
        ),
    ],
)
def test_deployment_values_too_big_to_store_are_a_400(team, spec, says):
    client = team.contributor.client()
    _endpoint_with_a_model(client)
    body = {"name": "blue", "model": "azureml:clf:1", **spec}
    response = client.post(f"{ENDPOINTS}fraud/deployments/", body, format="json")
    assert response.status_code == 400, response.content
    assert says in _message(response)
    assert not OnlineDeployment.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(team):
    client = team.contributor.client()
    _endpoint_with_a_model(client)
    OnlineDeployment.objects.create(
        endpoint=OnlineEndpoint.objects.get(name="fraud"),
        name="blue",
        model_version=register("other"),
        provisioning_state="Succeeded",
    )
    for url, method in (
        (f"{ENDPOINTS}fraud/regenerate-keys/", client.post),
        (f"{ENDPOINTS}fraud/deployments/blue/", client.patch),
        (f"{ENDPOINTS}fraud/", client.patch),
    ):
        response = method(url, [1, 2], format="json")
        assert response.status_code == 400, (url, response.content)


def test_text_with_a_nul_character_is_a_400(team):
    client = team.contributor.client()
    response = client.post(ENDPOINTS, {"name": "fraud", "description": "a\x00b"}, format="json")
    assert response.status_code == 400
    assert "NUL character" in _message(response)
    yaml_body = 'name: fraud\ndescription: "a\\0b"\n'
    response = client.post(ENDPOINTS, yaml_body, content_type="application/yaml")
    assert response.status_code == 400
    assert "NUL character" in _message(response)
    assert not OnlineEndpoint.objects.exists()
