"""Batch endpoints, deployments and jobs through the REST API, as `az ml` users drive them.

Endpoints and deployments are created from the shapes of Azure's batch YAML files (the current spelling
and the older one), invocations upload a folder, name a data asset or an s3:// location of the store, and
authenticate with a person's token or with the batch endpoint's own key or token. Jobs are read, listed,
cancelled and, once the engine has run them, downloaded.
"""

import csv
import io
import json
import zipfile

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from endpoints import routetable
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob
from endpoints.tests import batch_support
from endpoints.tests.batch_support import (
    BATCH,
    create_batch_deployment,
    create_batch_endpoint,
    csv_folder_zip,
    csv_text,
    deployment_body,
    invoke_upload,
    wait_finished,
)
from endpoints.tests.support import register
from registry.services import artifact_store
from registry.tests.factories import zip_bytes
from serving.gateway.auth import Authenticator
from serving.gateway.table import parse_table
from studio.models import AuditEvent, Event

pytestmark = pytest.mark.django_db
# The shared fixtures, used by name.
tabular_model_zip = batch_support.tabular_model_zip
batch_setup = batch_support.batch_setup
batch_worker = batch_support.batch_worker

ENDPOINT_YAML = """
$schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json
name: scorer
description: Scores the nightly files.
auth_mode: aml_token
tags:
  team: risk
"""


def _error(response) -> str:
    return response.json()["error"]["message"]


def _keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_it_creates_an_endpoint_and_a_deployment_from_azure_yaml(team, tabular_model_zip):
    client = team.contributor.client()
    register(client, "tabular", tabular_model_zip[0], model_type="mlflow_model")
    created = client.post(BATCH, ENDPOINT_YAML, content_type="application/yaml")
    assert created.status_code == 201, created.json()
    endpoint = created.json()
    assert endpoint["auth_mode"] == "aml_token" and endpoint["tags"] == {"team": "risk"}
    assert endpoint["defaults"] == {"deployment_name": None}
    assert endpoint["scoring_uri"] == "http://testserver/api/v1/batch-endpoints/scorer/jobs/"

    deployment = create_batch_deployment(client, "scorer", deployment_body())
    assert deployment["model"] == "azureml:tabular:1" and deployment["type"] == "model"
    assert deployment["code_configuration"] is None
    assert deployment["resources"] == {"instance_count": 1}
    assert deployment["settings"] == {
        "max_concurrency_per_instance": 2,
        "mini_batch_size": 2,
        "output_action": "append_row",
        "output_file_name": "predictions.csv",
        "retry_settings": {"max_retries": 1, "timeout": 60},
        "error_threshold": -1,
        "logging_level": "info",
        "environment_variables": {},
    }
    assert deployment["compute"] == "azureml:batch-cluster"
    assert any("Studio's workers run batch jobs" in warning for warning in deployment["warnings"])
    # The first deployment is the default.
    shown = client.get(f"{BATCH}scorer/").json()
    assert shown["defaults"] == {"deployment_name": "classifier"} and shown["deployments"] == ["classifier"]
    assert client.get(f"{BATCH}scorer/deployments/classifier/").json() == deployment
    assert [item["name"] for item in client.get(BATCH).json()["results"]] == ["scorer"]

    assert Event.objects.filter(
        type="studio.batch_endpoint.created", subject="batch-endpoints/scorer"
    ).exists()
    assert Event.objects.filter(
        type="studio.batch_deployment.created", subject="batch-endpoints/scorer/deployments/classifier"
    ).exists()
    assert AuditEvent.objects.filter(object_type="batch deployment", object_repr="scorer/classifier").exists()


def test_it_reads_the_older_top_level_spelling_of_the_batch_settings(team, tabular_model_zip):
    client = team.contributor.client()
    register(client, "tabular", tabular_model_zip[0], model_type="mlflow_model")
    create_batch_endpoint(client)
    older = yaml.safe_load(
        """
name: older
endpoint_name: scorer
model: azureml:tabular@latest
instance_count: 2
max_concurrency_per_instance: 3
mini_batch_size: "5"
output_action: summary_only
output_file_name: out.csv
retry_settings:
  max_retries: 0
  timeout: 90
error_threshold: 10
logging_level: DEBUG
environment_variables:
  MODE: strict
"""
    )
    deployment = create_batch_deployment(client, "scorer", older)
    assert deployment["resources"] == {"instance_count": 2}
    assert deployment["settings"] == {
        "max_concurrency_per_instance": 3,
        "mini_batch_size": 5,
        "output_action": "summary_only",
        "output_file_name": "out.csv",
        "retry_settings": {"max_retries": 0, "timeout": 90},
        "error_threshold": 10,
        "logging_level": "debug",
        "environment_variables": {"MODE": "strict"},
    }
    assert BatchDeployment.objects.get(name="older").parallelism == 6

    both = {**deployment_body(name="both"), "mini_batch_size": 7}
    refused = client.post(f"{BATCH}scorer/deployments/", both, format="json")
    assert refused.status_code == 400
    assert "settings.mini_batch_size" in _error(refused) and "keep one" in _error(refused)


def test_it_keeps_fields_it_does_not_know_as_warnings(team, tabular_model_zip):
    client = team.contributor.client()
    register(client, "tabular", tabular_model_zip[0], model_type="mlflow_model")
    endpoint = client.post(BATCH, {"name": "scorer", "public_network_access": "enabled"}, format="json")
    assert endpoint.status_code == 201
    assert endpoint.json()["warnings"] == [
        "public_network_access is not a field Studio knows; it was ignored."
    ]
    body = deployment_body(properties={"k": "v"})
    body["settings"]["instance_type"] = "Standard_DS3_v2"
    deployment = create_batch_deployment(client, "scorer", body)
    assert "properties is not a field Studio knows; it was ignored." in deployment["warnings"]
    assert "settings.instance_type is not a field Studio knows; it was ignored." in deployment["warnings"]


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"type": "pipeline"}, "type", "must be model"),
        ({"model": "azureml:missing:3"}, "model", "no registered model 'missing'"),
        ({"model": "tabular"}, "model", "use azureml:name:version"),
        ({"endpoint_name": "other"}, "endpoint_name", "this is batch endpoint 'scorer'"),
        ({"settings": {"mini_batch_size": 0}}, "settings.mini_batch_size", "at least 1"),
        ({"settings": {"output_action": "append"}}, "settings.output_action", "append_row or summary_only"),
        ({"settings": {"output_file_name": "../x.csv"}}, "settings.output_file_name", "without folders"),
        (
            {"settings": {"retry_settings": {"tries": 2}}},
            "settings.retry_settings",
            "max_retries and timeout",
        ),
        ({"settings": {"error_threshold": -2}}, "settings.error_threshold", "at least -1"),
        ({"settings": {"logging_level": "loud"}}, "settings.logging_level", "debug, info"),
        ({"resources": {"instance_count": "two"}}, "resources.instance_count", "whole number"),
        ({"code_configuration": {"code": "./src"}}, "code_configuration", "azureml:code:<sha256>"),
    ],
)
def test_it_refuses_a_bad_deployment_naming_the_field_to_fix(team, tabular_model_zip, change, field, says):
    client = team.contributor.client()
    register(client, "tabular", tabular_model_zip[0], model_type="mlflow_model")
    create_batch_endpoint(client)
    refused = client.post(f"{BATCH}scorer/deployments/", {**deployment_body(), **change}, format="json")
    assert refused.status_code == 400, refused.json()
    assert _error(refused).startswith(f"{field}:") and says in _error(refused), _error(refused)
    assert not BatchDeployment.objects.exists()


def test_a_custom_model_needs_a_scoring_script(team):
    client = team.contributor.client()
    register(client, "custom", zip_bytes({"model/weights.bin": b"w"}))
    create_batch_endpoint(client)
    refused = client.post(
        f"{BATCH}scorer/deployments/", deployment_body("azureml:custom:1", name="nocode"), format="json"
    )
    assert refused.status_code == 400
    assert "custom_model needs code_configuration" in _error(refused)


def test_the_default_deployment_moves_and_is_kept_from_deletion_while_others_exist(batch_setup, team):
    client = team.contributor.client()
    create_batch_deployment(client, "scorer", deployment_body(name="challenger"), set_default=True)
    assert client.get(f"{BATCH}scorer/").json()["defaults"] == {"deployment_name": "challenger"}

    refused = client.delete(f"{BATCH}scorer/deployments/challenger/")
    assert refused.status_code == 409 and "make one of them the default first" in _error(refused)
    moved = client.patch(f"{BATCH}scorer/", {"defaults": {"deployment_name": "classifier"}}, format="json")
    assert moved.status_code == 200 and moved.json()["defaults"] == {"deployment_name": "classifier"}
    unknown = client.patch(f"{BATCH}scorer/", {"defaults": {"deployment_name": "nope"}}, format="json")
    assert unknown.status_code == 400 and "does not have" in _error(unknown)

    assert client.delete(f"{BATCH}scorer/deployments/challenger/").status_code == 204
    updated = client.patch(
        f"{BATCH}scorer/deployments/classifier/", {"settings": {"mini_batch_size": 4}}, format="json"
    )
    assert updated.status_code == 200 and updated.json()["settings"]["mini_batch_size"] == 4
    # The only deployment may go, and the endpoint is left without a default.
    assert client.delete(f"{BATCH}scorer/deployments/classifier/").status_code == 204
    assert client.get(f"{BATCH}scorer/").json()["defaults"] == {"deployment_name": None}
    assert client.get(f"{BATCH}scorer/deployments/classifier/").status_code == 404
    assert client.delete(f"{BATCH}scorer/").status_code == 204
    assert client.get(f"{BATCH}scorer/").status_code == 404


def test_a_model_version_a_batch_deployment_uses_cannot_be_deleted(batch_setup, team):
    client = team.contributor.client()
    refused = client.delete("/api/v1/models/tabular/versions/1/")
    assert refused.status_code == 409 and "batch deployment scorer/classifier" in _error(refused)
    assert client.delete(f"{BATCH}scorer/").status_code == 204
    assert client.delete("/api/v1/models/tabular/versions/1/").status_code == 204


def test_readers_read_and_only_contributors_change_or_invoke(batch_setup, team):
    reader = team.reader.client()
    assert reader.get(f"{BATCH}scorer/").status_code == 200
    assert reader.get(f"{BATCH}scorer/deployments/").status_code == 200
    assert reader.get(f"{BATCH}scorer/jobs/").status_code == 200
    assert reader.post(BATCH, {"name": "mine"}, format="json").status_code == 403
    assert reader.post(f"{BATCH}scorer/credentials/").status_code == 403
    assert invoke_upload(reader, "scorer", csv_folder_zip()).status_code == 403
    assert reader.delete(f"{BATCH}scorer/").status_code == 403
    assert team.outsider.client().get(f"{BATCH}scorer/").status_code == 403
    assert APIClient().get(f"{BATCH}scorer/").status_code in (401, 403)


def test_an_uploaded_folder_becomes_a_queued_job_split_in_mini_batches(batch_setup, team):
    client = team.contributor.client()
    invoked = invoke_upload(client, "scorer", csv_folder_zip(files=3), output_file_name="scores.csv")
    assert invoked.status_code == 202, invoked.json()
    job = invoked.json()
    assert job["type"] == "batch" and job["status"] == "Queued"
    assert job["endpoint_name"] == "scorer" and job["deployment_name"] == "classifier"
    assert job["inputs"]["type"] == "uri_folder" and job["inputs"]["uploaded"] is True
    assert job["spec"]["output_file_name"] == "scores.csv" and job["spec"]["mini_batch_size"] == 2
    assert job["progress"]["mini_batches"] == 2 and job["progress"]["items"] == 3
    assert job["outputs"]["score"]["path"].endswith(f"batch-jobs/{job['id']}/score/")
    assert job["creation_context"]["created_by"] == "contributor"
    assert invoked["Location"].endswith(f"/api/v1/jobs/{job['id']}/")
    keys = list(artifact_store().keys(f"batch-jobs/{job['id']}/inputs/"))
    assert keys == [f"batch-jobs/{job['id']}/inputs/part-{i:03d}.csv" for i in range(3)]

    reader = team.reader.client()
    assert reader.get(f"/api/v1/jobs/{job['id']}/").json()["status"] == "Queued"
    listed = reader.get("/api/v1/jobs/?type=batch&endpoint=scorer&status=Queued").json()
    assert [item["name"] for item in listed["results"]] == [job["name"]]
    assert reader.get("/api/v1/jobs/?status=Completed").json()["results"] == []
    assert reader.get("/api/v1/jobs/?status=Done").status_code == 400
    mini = reader.get(f"/api/v1/jobs/{job['id']}/mini-batches/").json()["results"]
    assert [(m["index"], m["items"], m["state"]) for m in mini] == [(0, 2, "queued"), (1, 1, "queued")]
    assert [f["path"] for f in mini[0]["files"]] == ["part-000.csv", "part-001.csv"]
    assert reader.get(f"/api/v1/jobs/{job['id']}/mini-batches/?state=failed").json()["results"] == []
    missing = reader.get(f"/api/v1/jobs/{job['id']}/outputs/score/")
    assert missing.status_code == 404 and "it is Queued" in _error(missing)
    logs = reader.get(f"/api/v1/jobs/{job['id']}/logs/?lines=20")
    assert logs.status_code == 200 and logs["Content-Type"].startswith("text/plain")
    assert Event.objects.filter(type="studio.batch_job.created", subject__endswith=job["id"]).exists()


def test_a_single_uploaded_file_is_a_uri_file_job(batch_setup, team):
    invoked = invoke_upload(team.contributor.client(), "scorer", csv_text(0, 3).encode(), "day.csv")
    assert invoked.status_code == 202, invoked.json()
    assert invoked.json()["inputs"]["type"] == "uri_file" and invoked.json()["progress"]["items"] == 1


def test_it_refuses_invocations_saying_what_to_fix(batch_setup, team, settings):
    client = team.contributor.client()
    create_batch_endpoint(client, "bare")
    bare = invoke_upload(client, "bare", csv_folder_zip())
    assert bare.status_code == 400 and "has no default deployment" in _error(bare)
    unknown = invoke_upload(client, "scorer", csv_folder_zip(), deployment_name="nope")
    assert unknown.status_code == 404 and "has no deployment 'nope'" in _error(unknown)
    assert client.post(f"{BATCH}missing/jobs/", {"input": {}}, format="json").status_code == 404

    slip = invoke_upload(client, "scorer", zip_bytes({"../escape.csv": b"a,b\n"}))
    assert slip.status_code == 400 and "escape.csv" in _error(slip)
    folder_as_file = invoke_upload(client, "scorer", csv_folder_zip(), input_type="uri_file")
    assert folder_as_file.status_code == 400 and "input type is uri_file" in _error(folder_as_file)
    bad_name = invoke_upload(client, "scorer", csv_folder_zip(), output_file_name="a/b.csv")
    assert bad_name.status_code == 400 and "without folders" in _error(bad_name)
    settings.STUDIO_BATCH_MAX_FILES = 2
    too_many = invoke_upload(client, "scorer", csv_folder_zip(files=3))
    assert too_many.status_code == 400 and "STUDIO_BATCH_MAX_FILES" in _error(too_many)

    no_input = client.post(f"{BATCH}scorer/jobs/", {}, format="json")
    assert no_input.status_code == 400 and "input: is required" in _error(no_input)
    outside = client.post(
        f"{BATCH}scorer/jobs/", {"input": {"type": "uri_folder", "path": "s3://elsewhere/x"}}, format="json"
    )
    assert outside.status_code == 400 and "outside Studio's artifact store" in _error(outside)
    asset = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": "azureml:nightly@latest"}},
        format="json",
    )
    assert asset.status_code == 404 and "no data asset 'nightly'" in _error(asset)
    assert not BatchJob.objects.exists()
    # Refused uploads leave nothing behind in the store.
    assert list(artifact_store().keys("batch-jobs/")) == []


def test_it_invokes_on_a_registered_data_asset(batch_setup, team):
    client = team.contributor.client()
    registered = client.post(
        "/api/v1/data/",
        {
            "name": "nightly",
            "type": "uri_folder",
            "archive": SimpleUploadedFile("nightly.zip", csv_folder_zip(files=5)),
        },
        format="multipart",
    )
    assert registered.status_code == 201, registered.json()
    invoked = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": "azureml:nightly@latest"}},
        format="json",
    )
    assert invoked.status_code == 202, invoked.json()
    job = invoked.json()
    assert job["inputs"] == {
        "type": "uri_folder",
        "path": "azureml:nightly@latest",
        "data": "azureml:nightly:1",
    }
    assert job["progress"]["items"] == 5
    job_row = BatchJob.objects.get(pk=job["id"])
    keys = [f["key"] for batch in job_row.mini_batch_rows.all() for f in batch.files]
    assert keys == [key for _path, key in sorted(job_row_version_keys("nightly"))]
    as_file = client.post(
        f"{BATCH}scorer/jobs/", {"input": {"type": "uri_file", "path": "azureml:nightly:1"}}, format="json"
    )
    assert as_file.status_code == 400 and "is a uri_folder" in _error(as_file)


def job_row_version_keys(name: str) -> list[tuple[str, str]]:
    from registry.models import DataVersion

    return DataVersion.objects.get(asset__name=name).store_keys()


def test_it_invokes_on_an_s3_location_of_the_artifact_store(
    batch_setup, team, settings, s3_bucket, s3_server
):
    import boto3

    settings.STUDIO_ARTIFACT_STORE = f"s3://{s3_bucket}/artifacts"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for index in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"artifacts/incoming/day1/{index}.csv", Body=csv_text(index, 2))
    s3.put_object(Bucket=s3_bucket, Key="artifacts/incoming/day10/other.csv", Body=b"a,b\n")
    client = team.contributor.client()
    invoked = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": f"s3://{s3_bucket}/artifacts/incoming/day1"}},
        format="json",
    )
    assert invoked.status_code == 202, invoked.json()
    job = BatchJob.objects.get(pk=invoked.json()["id"])
    files = [f for batch in job.mini_batch_rows.order_by("index") for f in batch.files]
    assert [(f["path"], f["key"]) for f in files] == [
        (f"{i}.csv", f"incoming/day1/{i}.csv") for i in range(3)
    ]
    assert all(f["size"] == len(csv_text(i, 2)) for i, f in enumerate(files))
    one = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_file", "path": f"s3://{s3_bucket}/artifacts/incoming/day1/2.csv"}},
        format="json",
    )
    assert one.status_code == 202 and one.json()["progress"]["items"] == 1
    nothing = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": f"s3://{s3_bucket}/artifacts/incoming/day2"}},
        format="json",
    )
    assert nothing.status_code == 400 and "There is nothing at" in _error(nothing)
    other_bucket = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": "s3://other/artifacts/x"}},
        format="json",
    )
    assert other_bucket.status_code == 400 and "outside" in _error(other_bucket)


def test_it_invokes_on_a_file_location_of_a_filesystem_store(batch_setup, team):
    store = artifact_store()
    for index in range(2):
        store.put(f"incoming/day1/{index}.csv", io.BytesIO(csv_text(index, 2).encode()))
    client = team.contributor.client()
    one = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_file", "path": f"{store.url}/incoming/day1/1.csv"}},
        format="json",
    )
    assert one.status_code == 202, one.json()
    files = BatchJob.objects.get(pk=one.json()["id"]).mini_batch_rows.get().files
    assert files == [{"path": "1.csv", "key": "incoming/day1/1.csv", "size": len(csv_text(1, 2))}]
    folder = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_file", "path": f"{store.url}/incoming/day1"}},
        format="json",
    )
    assert folder.status_code == 400 and "is a folder" in _error(folder)
    escape = client.post(
        f"{BATCH}scorer/jobs/",
        {"input": {"type": "uri_folder", "path": f"{store.url}/../secrets"}},
        format="json",
    )
    assert escape.status_code == 400 and "outside Studio's artifact store" in _error(escape)


def test_the_endpoint_key_invokes_and_reads_its_own_jobs_only(batch_setup, team):
    client = team.contributor.client()
    keys = client.post(f"{BATCH}scorer/credentials/").json()
    assert set(keys) == {"primaryKey", "secondaryKey"}
    keyed = _keyed(keys["secondaryKey"])
    invoked = invoke_upload(keyed, "scorer", csv_folder_zip())
    assert invoked.status_code == 202, invoked.json()
    job = invoked.json()
    assert job["creation_context"]["created_by"] is None
    invoked_audit = AuditEvent.objects.get(object_type="batch job", object_repr=job["id"])
    assert invoked_audit.actor is None and invoked_audit.details["credential"] == "the endpoint's key"
    assert keyed.get(f"/api/v1/jobs/{job['id']}/").json()["status"] == "Queued"
    assert keyed.get(f"{BATCH}scorer/jobs/").json()["results"][0]["id"] == job["id"]
    assert keyed.get(f"/api/v1/jobs/{job['id']}/mini-batches/").status_code == 200
    # The key opens nothing else: not the endpoint's settings, not other endpoints, not cancelling.
    assert keyed.get(f"{BATCH}scorer/").status_code == 401
    assert (
        keyed.post(f"{BATCH}scorer/deployments/", deployment_body(name="x"), format="json").status_code == 401
    )
    assert keyed.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 401
    # Nor the store: a location in it could be another job's inputs or outputs, a model, code.
    stored = keyed.post(
        f"{BATCH}scorer/jobs/",
        {
            "input": {
                "type": "uri_folder",
                "path": f"azureml://datastores/workspaceblobstore/paths/batch-jobs/{job['id']}",
            }
        },
        format="json",
    )
    assert stored.status_code == 400
    assert "only a person's token may do" in stored.json()["error"]["message"]
    create_batch_endpoint(client, "other", auth_mode="key")
    assert invoke_upload(keyed, "other", csv_folder_zip()).status_code == 401
    assert _keyed("not-a-key").get(f"{BATCH}scorer/jobs/").status_code == 401

    assert (
        client.post(f"{BATCH}scorer/regenerate-keys/", {"keyType": "secondary"}, format="json").status_code
        == 204
    )
    assert keyed.get(f"{BATCH}scorer/jobs/").status_code == 401
    assert _keyed(keys["primaryKey"]).get(f"{BATCH}scorer/jobs/").status_code == 200


def test_a_batch_token_is_not_an_online_token_of_the_same_name(team, tabular_model_zip):
    client = team.contributor.client()
    register(client, "tabular", tabular_model_zip[0], model_type="mlflow_model")
    create_batch_endpoint(client, "twin", auth_mode="aml_token")
    create_batch_deployment(client, "twin", deployment_body(endpoint_name="twin"))
    online = client.post(
        "/api/v1/online-endpoints/", {"name": "twin", "auth_mode": "aml_token"}, format="json"
    )
    assert online.status_code == 201
    batch_token = client.post(f"{BATCH}twin/credentials/").json()
    assert batch_token["tokenType"] == "Bearer" and batch_token["expiryTimeUtc"] > 0
    online_token = client.post("/api/v1/online-endpoints/twin/credentials/").json()["accessToken"]

    assert invoke_upload(_keyed(batch_token["accessToken"]), "twin", csv_folder_zip()).status_code == 202
    assert invoke_upload(_keyed(online_token), "twin", csv_folder_zip()).status_code == 401
    # Switching the auth mode ends the tokens issued before.
    assert client.patch(f"{BATCH}twin/", {"auth_mode": "key"}, format="json").json()["auth_mode"] == "key"
    assert invoke_upload(_keyed(batch_token["accessToken"]), "twin", csv_folder_zip()).status_code == 401

    # The gateway checks online tokens from the route table: the batch token opens no online endpoint.
    table = parse_table(routetable.build())
    authenticator = Authenticator(b"")
    assert authenticator.check(table.endpoints["twin"], table.token, online_token) is None
    refusal = authenticator.check(table.endpoints["twin"], table.token, batch_token["accessToken"])
    assert refusal == "The token was issued for another endpoint."


def test_cancelling_a_queued_job_ends_it_and_then_the_endpoint_can_go(batch_setup, team):
    client = team.contributor.client()
    job = invoke_upload(client, "scorer", csv_folder_zip()).json()
    refused = client.delete(f"{BATCH}scorer/")
    assert refused.status_code == 409 and job["id"] in _error(refused)
    refused = client.delete(f"{BATCH}scorer/deployments/classifier/")
    assert refused.status_code == 409 and job["id"] in _error(refused)
    assert team.reader.client().post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 403

    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] in ("CancelRequested", "Canceled")
    assert client.get(f"/api/v1/jobs/{job['id']}/").json()["status"] == "Canceled"
    ended = Event.objects.get(type="studio.batch_job.canceled")
    assert ended.subject == f"batch-endpoints/scorer/jobs/{job['id']}" and ended.data["status"] == "Canceled"
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel/").json()["status"] == "Canceled"

    assert client.delete(f"{BATCH}scorer/").status_code == 204
    assert not BatchEndpoint.objects.exists() and not BatchDeployment.objects.exists()
    kept = client.get(f"/api/v1/jobs/{job['id']}/")
    assert kept.status_code == 200 and kept.json()["endpoint_name"] == "scorer"
    assert client.post("/api/v1/jobs/00000000-0000-0000-0000-000000000000/cancel/").status_code == 404


def _read_zip(response) -> dict[str, bytes]:
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.django_db(transaction=True)
def test_a_job_scores_every_row_with_the_models_own_predictions_and_its_output_downloads(
    batch_setup, team, batch_worker
):
    import mlflow.pyfunc
    import pandas as pd

    client = team.contributor.client()
    batch_worker()
    keys = client.post(f"{BATCH}scorer/credentials/").json()
    keyed = _keyed(keys["primaryKey"])
    invoked = invoke_upload(keyed, "scorer", csv_folder_zip(files=3, rows=4))
    assert invoked.status_code == 202, invoked.json()
    job = wait_finished(keyed, invoked.json()["id"])
    assert job["status"] == "Completed", (job["error"], job["events"][-5:])
    assert job["progress"]["items_succeeded"] == 3 and job["progress"]["rows"] == 12
    assert sorted(job["outputs"]["score"]["files"]) == ["predictions.csv", "summary.json"]
    completed = Event.objects.get(type="studio.batch_job.completed")
    assert (completed.data["job"], completed.data["items_succeeded"]) == (job["id"], 3)

    model = mlflow.pyfunc.load_model(str(batch_setup.model_dir))
    expected = []
    for index in range(3):
        frame = pd.read_csv(io.StringIO(csv_text(index, 4)))
        expected += [
            {"file": f"part-{index:03d}.csv", "row": str(row), "prediction": str(value)}
            for row, value in enumerate(model.predict(frame))
        ]
    one = keyed.get(f"/api/v1/jobs/{job['id']}/outputs/score/?path=predictions.csv")
    assert one.status_code == 200
    assert list(csv.DictReader(io.StringIO(b"".join(one.streaming_content).decode()))) == expected
    folder = _read_zip(keyed.get(f"/api/v1/jobs/{job['id']}/outputs/score/"))
    assert set(folder) == {"predictions.csv", "summary.json"}
    assert json.loads(folder["summary.json"])["status"] == "Completed"
    missing = keyed.get(f"/api/v1/jobs/{job['id']}/outputs/score/?path=other.csv")
    assert missing.status_code == 404 and "has predictions.csv" in _error(missing)
    mini = keyed.get(f"/api/v1/jobs/{job['id']}/mini-batches/").json()["results"]
    assert [(m["state"], m["items"], m["rows"]) for m in mini] == [("succeeded", 2, 8), ("succeeded", 1, 4)]
    assert keyed.get(f"/api/v1/jobs/{job['id']}/logs/").status_code == 200
    # Finished jobs are not cancelled; the endpoint can go now, and the job stays readable.
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel/").json()["status"] == "Completed"
    assert client.delete(f"{BATCH}scorer/").status_code == 204
    assert client.get(f"/api/v1/jobs/{job['id']}/outputs/score/?path=summary.json").status_code == 200


def test_an_invocation_sets_its_own_mini_batch_size_and_instance_count(batch_setup, team):
    client = team.contributor.client()
    refused = invoke_upload(client, "scorer", csv_folder_zip(), mini_batch_size="0")
    assert refused.status_code == 400
    assert "mini_batch_size" in refused.json()["error"]["message"]
    assert BatchJob.objects.count() == 0, "a refused invocation leaves no job"

    invoked = invoke_upload(client, "scorer", csv_folder_zip(), mini_batch_size="1", instance_count="3")
    assert invoked.status_code == 202, invoked.json()
    job = BatchJob.objects.get(pk=invoked.json()["id"])
    assert (job.spec["mini_batch_size"], job.spec["instance_count"]) == (1, 3)
    assert job.mini_batches == job.items
    assert BatchDeployment.objects.get(name=job.deployment_name).mini_batch_size != 1
