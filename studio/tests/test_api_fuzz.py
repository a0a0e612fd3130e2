"""The REST API under schemathesis: every operation of /api/schema/, against a live server, as an Admin.

For each operation schemathesis sends the schema's examples, requests built to cover each parameter's
edge cases (negative numbers, wrong types, missing fields, odd bytes), and generated ones; then it walks
the links between operations (create, read, change, delete) as a state machine. No request may be
answered 5xx, and every documented answer must match its schema and content type.

Examples are bounded and derandomised, so a run sends the same requests each time and takes about a
minute; set STUDIO_FUZZ_EXAMPLES higher, or STUDIO_FUZZ_SEED to a number, to search further.
"""

import io
import os

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig

from endpoints.models import BatchEndpoint, BatchJob, Job, OnlineDeployment, OnlineEndpoint
from registry import data
from registry.models import DataAsset, Environment, RegisteredModel
from registry.tests.factories import register, zip_bytes

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("STUDIO_FUZZ_EXAMPLES", "12"))
# Unset: the same requests every run. Set: another search, repeatable with the same number.
SEED = os.environ.get("STUDIO_FUZZ_SEED")
CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")
# What admin_api makes, by kind: path parameters mostly name these, so requests reach real rows (any model
# with any version exists: iris:1, clf:1, and `latest` of each).
KNOWN = {
    "models": ["iris", "clf"],
    "versions": ["1", "latest"],
    "environments": ["py"],
    "endpoints": ["fraud"],
    "deployments": ["blue"],
    "batch_endpoints": ["nightly"],
    "data": ["iris-data"],
}
PATH_PARAMETERS = {
    "model_name": "models",
    "version": "versions",
    "env_name": "environments",
    "endpoint_name": "endpoints",
    "data_name": "data",
}
# `{name}` is a different kind of name under each path.
NAME_BY_PATH = {
    r"/deployments/\{name\}/": "deployments",
    r"^/api/v1/online-endpoints/\{name\}/": "endpoints",
    r"^/api/v1/models/\{name\}/": "models",
    r"^/api/v1/batch-endpoints/\{name\}/": "batch_endpoints",
    r"^/api/v1/data/\{name\}/": "data",
}
# `{endpoint_name}` under /batch-endpoints/ names a batch endpoint.
BATCH_ENDPOINT_PATH = r"^/api/v1/batch-endpoints/\{endpoint_name\}/"


def _known(kind: str, probability: float = 0.8) -> dict:
    return {"dictionary": kind, "probability": probability}


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            **({"seed": int(SEED)} if SEED else {}),
            "dictionaries": {
                **{kind: {"values": names} for kind, names in KNOWN.items()},
                "any": {"values": sorted({name for names in KNOWN.values() for name in names})},
            },
            "parameters": {f"path.{name}": _known(kind) for name, kind in PATH_PARAMETERS.items()},
            "operations": [
                {"include-path-regex": pattern, "parameters": {"path.name": _known(kind)}}
                for pattern, kind in NAME_BY_PATH.items()
            ]
            + [
                {
                    "include-path-regex": BATCH_ENDPOINT_PATH,
                    "parameters": {"path.endpoint_name": _known("batch_endpoints")},
                }
            ],
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": SEED is None,
                "database": "none",
                # Strings in bodies and queries name something real now and then, too.
                "dictionaries": {"string": _known("any", 0.3)},
            },
            "checks": {"enabled": False, **{check: {"enabled": True} for check in CHECKS}},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 6},
            },
            "request-timeout": 30,
        }
    )


# The document the server serves at /api/schema/, made here so that each operation is a test of its own.
schema = schemathesis.openapi.from_dict(
    SchemaGenerator().get_schema(request=None, public=True), config=_config()
)


def _known_rows(team) -> None:
    """Exactly the rows KNOWN names, whatever earlier requests made or deleted."""
    OnlineEndpoint.objects.all().delete()
    Job.objects.all().delete()
    BatchJob.objects.all().delete()
    BatchEndpoint.objects.all().delete()
    RegisteredModel.objects.all().delete()
    Environment.objects.all().delete()
    DataAsset.objects.all().delete()
    register("iris")
    spec = data.NewData(name="iris-data", type="uri_folder")
    data.register_upload(spec, io.BytesIO(zip_bytes({"iris.csv": b"a,b\n1,2\n"})), "d.zip", "folder", None)
    clf = register("clf", type="mlflow_model", files={"model/MLmodel": b"flavors:\n  python_function: {}\n"})
    client = team.admin.client()
    for url, body in (
        ("/api/v1/environments/", {"name": "py", "image": "python:3.11"}),
        ("/api/v1/online-endpoints/", {"name": "fraud"}),
    ):
        assert client.post(url, body, format="json").status_code == 201
    OnlineDeployment.objects.create(
        endpoint=OnlineEndpoint.objects.get(name="fraud"),
        name="blue",
        model_version=clf,
        provisioning_state="Succeeded",
        observed_generation=1,
        serving_revision=1,
    )
    assert client.post("/api/v1/batch-endpoints/", {"name": "nightly"}, format="json").status_code == 201
    blue = {"name": "blue", "model": "azureml:clf:1"}
    assert client.post("/api/v1/batch-endpoints/nightly/deployments/", blue, format="json").status_code == 201


@pytest.fixture
def admin_api(live_server, team) -> dict:
    """A live Studio holding the KNOWN rows; how to call it as its Admin."""
    _known_rows(team)
    return {"base_url": live_server.url, "headers": {"Authorization": f"Bearer {team.admin.token}"}}


@schema.parametrize()
@hypothesis_settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_no_operation_answers_a_server_error_or_breaks_its_schema(case, admin_api):
    case.call_and_validate(**admin_api)


def test_no_sequence_of_operations_answers_a_server_error_or_breaks_its_schema(admin_api, team):
    class Workflow(schema.as_state_machine()):
        def setup(self):
            # Each sequence starts from the same rows, so replaying one replays its answers too.
            _known_rows(team)

        def get_call_kwargs(self, case):
            return admin_api

    Workflow.run(
        settings=hypothesis_settings(
            max_examples=EXAMPLES * 4,
            stateful_step_count=6,
            deadline=None,
            derandomize=SEED is None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
