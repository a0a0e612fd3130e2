"""Environments built as Azure ML builds them: from an MLflow model's own conda.yaml, with conda's pins and
the numpy ABI they imply kept, on the Python asked for, smoke-tested before any replica starts; Azure's
curated environments by name; failed builds that show their first error; model versions a retried
deployment registers again."""

import json
import pickle

import pytest
import yaml

from endpoints import curated_environments, interpreters, specs
from endpoints.models import OnlineDeployment, Replica
from endpoints.tests.support import ENDPOINTS, deploy, register, score, upload_code
from registry.tests.factories import form, zip_bytes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

OLD_SKLEARN = "1.2.2"  # has wheels for this Python, and was built for numpy 1's ABI


@pytest.fixture
def fresh_envs(settings, tmp_path):
    """A fresh environment cache, so a deployment must build; downloads stay in the uv cache that runs
    share (conftest.persistent_download_cache)."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    return settings.STUDIO_HOME


def _portable_pickle(estimator) -> bytes:
    """The estimator pickled so that any numpy reads it back (arrays as lists, scalars as floats), as a
    model saved in an older environment would be readable in it."""
    import io

    import numpy as np

    class Portable(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                return np.array, (obj.tolist(), obj.dtype.str)
            if isinstance(obj, np.generic):
                return type(obj.item()), (obj.item(),)
            return NotImplemented

    out = io.BytesIO()
    Portable(out, protocol=4).dump(estimator)
    return out.getvalue()


def _old_mlflow_model() -> bytes:
    """An MLflow scikit-learn model whose conda.yaml pins what conda gave it when it was saved."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).uniform(-5, 5, size=(20, 2))
    model = LinearRegression().fit(x, 2 * x[:, 0] + 3 * x[:, 1] + 1)
    mlmodel = {
        "flavors": {
            "python_function": {
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.sklearn",
                "model_path": "model.pkl",
                "predict_fn": "predict",
                "python_version": "3.11.7",
            },
            "sklearn": {
                "code": None,
                "pickled_model": "model.pkl",
                "serialization_format": "pickle",
                "sklearn_version": OLD_SKLEARN,
            },
        },
        "mlflow_version": "2.3.0",
        "signature": {
            "inputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]',
            "outputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]',
        },
    }
    conda = {
        "channels": ["conda-forge"],
        "dependencies": [
            "python=3.11.7",
            "pip<=23.0.1",
            f"scikit-learn={OLD_SKLEARN}",
            {"pip": ["mlflow==2.3.0", "joblib==1.2.0"]},
        ],
        "name": "mlflow-env",
    }
    return zip_bytes(
        {
            "model/MLmodel": yaml.safe_dump(mlmodel).encode(),
            "model/model.pkl": _portable_pickle(model),
            "model/conda.yaml": yaml.safe_dump(conda).encode(),
            "model/python_env.yaml": b"python: 3.11.7\ndependencies:\n- -r requirements.txt\n",
            "model/requirements.txt": f"mlflow==2.3.0\nscikit-learn=={OLD_SKLEARN}\n".encode(),
        }
    )


def _events(body: dict) -> str:
    return "\n".join(event["message"] for event in body["job"]["events"])


def test_an_mlflow_model_builds_from_its_conda_yaml_on_numpy_1_and_scores(team, fresh_envs):
    client = team.contributor.client()
    register(client, "legacy", _old_mlflow_model(), "mlflow_model")
    client.post(ENDPOINTS, {"name": "legacy"}, format="json")
    body = deploy(client, "legacy", {"name": "blue", "model": "azureml:legacy:1"})
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    events = _events(body)
    assert "Building environment" in events and "on Python 3.11.7" in events
    assert f"scikit-learn=={OLD_SKLEARN} predates numpy 2" in events
    assert "Smoke-testing the environment" in events
    built = (next(fresh_envs.glob("envs/*/requirements.txt"))).read_text().splitlines()
    # conda.yaml's pins, conda's and pip's (joblib is in no other file), and the numpy they imply.
    assert {f"scikit-learn=={OLD_SKLEARN}", "joblib==1.2.0", "numpy<2"} <= set(built)
    assert not any(line.startswith("mlflow") for line in built), "a native flavor needs no MLflow"
    replica = Replica.objects.get(deployment__name="blue")
    answer = score(replica.url, {"input_data": [[1.0, 2.0], [0.0, 0.0]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == pytest.approx([9.0, 1.0], abs=1e-6)


def test_an_abi_mismatch_fails_the_build_at_its_smoke_test_with_the_reason(team, fresh_envs):
    client = team.contributor.client()
    register(client, "legacy", _old_mlflow_model(), "mlflow_model")
    client.post(ENDPOINTS, {"name": "abi"}, format="json")
    spec = {
        "name": "blue",
        "model": "azureml:legacy:1",
        # numpy named by the environment is kept, even where it does not fit: the smoke test says so.
        "environment": {"pip_requirements": f"scikit-learn=={OLD_SKLEARN}\njoblib==1.2.0\nnumpy==2.0.2"},
    }
    body = deploy(client, "abi", spec, all_traffic=False)
    assert body["job"]["state"] == "failed"
    error = body["job"]["error"]
    assert "failed its smoke test importing sklearn" in error, error
    assert "numpy ABI" in error and "numpy<2" in error
    assert OnlineDeployment.objects.get(name="blue").provisioning_state == "Failed"
    assert not Replica.objects.exists()
    assert not list(fresh_envs.glob("envs/*/.ready")), "a failed environment is never used"


def test_a_python_version_not_installed_fails_naming_what_exists(team, fresh_envs):
    client = team.contributor.client()
    model = zip_bytes(
        {
            "model/MLmodel": b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n",
            "model/model.pkl": b"unused",
            "model/python_env.yaml": b"python: 3.4.10\ndependencies:\n- -r requirements.txt\n",
            "model/requirements.txt": b"scikit-learn\n",
        }
    )
    register(client, "ancient", model, "mlflow_model")
    client.post(ENDPOINTS, {"name": "ancient"}, format="json")
    body = deploy(client, "ancient", {"name": "blue", "model": "azureml:ancient:1"}, all_traffic=False)
    assert body["job"]["state"] == "failed"
    error = body["job"]["error"]
    assert "asks for Python 3.4.10, and no Python 3.4 is installed" in error, error
    assert interpreters.current().version in error, "what exists is named"


def test_a_failed_install_shows_its_first_error_before_the_log(team, fresh_envs, azure_sample_zips):
    _, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"-"}))
    client.post(ENDPOINTS, {"name": "badpin"}, format="json")
    spec = {
        "name": "blue",
        "model": "azureml:text:1",
        "code_configuration": {
            "code": upload_code(client, code_zip),
            "scoring_script": "onlinescoring/score.py",
        },
        "environment": {"pip_requirements": "scikit-learn==0.0.0.1"},
    }
    body = deploy(client, "badpin", spec, all_traffic=False)
    assert body["job"]["state"] == "failed"
    head = body["job"]["error"].split("build log (last lines)")[0]
    assert "No solution found" in head and "scikit-learn==0.0.0.1" in head, head
    assert "The whole log of the build is kept at" in head


CURATED_FORMS = [
    "azureml://registries/azureml/environments/sklearn-1.5/versions/1",
    "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
    "azureml:AzureML-sklearn-1.5@latest",
    "azureml:AzureML-sklearn-1.5:1",
    "AzureML-sklearn-1.5-ubuntu22.04-py310-cpu@latest",
]


@pytest.mark.parametrize("reference", CURATED_FORMS)
def test_each_form_of_a_curated_name_resolves_to_the_shipped_spec(reference):
    warnings = []
    version, inline = specs.resolve_environment(reference, warnings)
    assert version is None and warnings == []
    assert inline["curated"] == "azureml://registries/azureml/environments/sklearn-1.5/versions/1"
    assert "python=3.10" in inline["conda_file"]["dependencies"]


def test_every_family_azure_names_has_a_spec_of_released_packages():
    families = set(curated_environments.shipped())
    assert {"sklearn-1.5", "lightgbm-3.3", "xgboost-2.1", "pytorch-2.2", "tensorflow-2.16"} <= families
    from registry import requirements

    for spec in curated_environments.shipped().values():
        found = requirements.environment(spec.conda_file, None, "environment")
        assert found.python, f"{spec.name} names its Python"
    warnings = []
    specs.resolve_environment("azureml://registries/azureml/environments/lightgbm-3.3/versions/7", warnings)
    assert "version 1 of lightgbm-3.3" in warnings[0]


def test_a_curated_name_studio_lacks_is_refused_listing_those_it_has(team):
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"-"}))
    client.post(ENDPOINTS, {"name": "nocurated"}, format="json")
    response = client.post(
        f"{ENDPOINTS}nocurated/deployments/",
        {
            "name": "blue",
            "model": "azureml:text:1",
            "environment": "azureml:AzureML-sklearn-0.24-ubuntu18.04-py37-cpu:5",
        },
        format="json",
    )
    assert response.status_code == 400
    message = json.dumps(response.json())
    assert "no specification for" in message and "sklearn-1.5" in message
    assert not OnlineDeployment.objects.exists()


SCORE_VERSIONS = b"""
import json
import sys

import sklearn


def init():
    pass


def run(raw):
    return {"sklearn": sklearn.__version__, "python": "%d.%d" % sys.version_info[:2]}
"""


def test_a_curated_environment_is_built_on_first_use_with_its_python_and_packages(team, fresh_envs):
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"-"}))
    code = upload_code(client, zip_bytes({"score.py": SCORE_VERSIONS}))
    client.post(ENDPOINTS, {"name": "curated"}, format="json")
    spec = {
        "name": "blue",
        "model": "azureml:text:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
        "environment": "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
    }
    body = deploy(client, "curated", spec)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    assert body["environment"]["curated"].endswith("/sklearn-1.5/versions/1")
    assert "Building environment" in _events(body)
    replica = Replica.objects.get(deployment__name="blue")
    answer = score(replica.url, {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sklearn": "1.5.1", "python": "3.10"}


def test_a_pinned_model_version_with_the_same_content_is_reused_and_other_content_refused(team):
    client = team.contributor.client()

    def upload(content: bytes):
        data = form("pinned", content, "pinned.zip", archive=True, type="custom_model", version="3")
        return client.post("/api/v1/models/", data, format="multipart")

    content = zip_bytes({"model/weights.bin": b"\x01\x02"})
    first = upload(content)
    assert first.status_code == 201, first.json()
    again = upload(content)
    assert again.status_code == 200, again.json()
    assert again.json()["digest"] == first.json()["digest"]
    other = upload(zip_bytes({"model/weights.bin": b"\x03"}))
    assert other.status_code == 409
    assert "exists already with other content" in other.json()["error"]["message"]
    listed = client.get("/api/v1/models/pinned/versions/").json()
    assert [item["version"] for item in listed.get("value", listed.get("results", listed))] == ["3"]


def test_a_docker_deployment_without_an_engine_fails_saying_to_start_dockerd(team, monkeypatch):
    from endpoints.targets import docker as docker_target

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(docker_target, "_engine", None)
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"-"}))
    client.post(ENDPOINTS, {"name": "nodocker"}, format="json")
    code = upload_code(client, zip_bytes({"score.py": SCORE_VERSIONS}))
    spec = {
        "name": "blue",
        "model": "azureml:text:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
        "target": "docker",
    }
    body = deploy(client, "nodocker", spec, all_traffic=False)
    assert body["job"]["state"] == "failed"
    assert "Start dockerd" in body["job"]["error"], body["job"]["error"]
    assert "unexpected" not in body["job"]["error"].lower()


def test_the_gateway_serves_swagger_2_or_3_as_the_caller_asks(team, gateway, mlflow_model_zip):
    import httpx

    from studio.testkit import until

    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    endpoint = client.post(ENDPOINTS, {"name": "docs"}, format="json").json()
    body = deploy(client, "docs", {"name": "blue", "model": "azureml:clf:1"})
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    key = client.post(f"{ENDPOINTS}docs/credentials/").json()["primaryKey"]
    url = endpoint["scoring_uri"].removesuffix("/score") + "/swagger.json"

    def swagger(query: str = "") -> httpx.Response:
        return httpx.get(url + query, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    assert until(lambda: swagger().status_code == 200), "the gateway picks up the route table"
    assert swagger("?version=2").json()["swagger"] == "2.0"
    assert swagger("?version=3").json()["openapi"].startswith("3.")
    wrong = swagger("?version=9&other=x")
    assert wrong.status_code == 400 and "version=2 or version=3" in wrong.text
