"""The kubernetes target's objects and Studio's own manifests: valid for every Kubernetes version Studio
supports, what each spec asks for, and served through the REST API and the CLI with no cluster at all.

No API server runs here, so validity is checked against the official OpenAPI schemas (strictly: an
unknown or misspelt field fails), as `kubernetes-validate` ships them.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from endpoints.models import OnlineDeployment
from endpoints.targets import kubernetes_objects
from endpoints.targets.kubernetes_objects import Placement, object_name, render
from endpoints.tests.support import ENDPOINTS, azure_sample_spec, deploy, register, upload_code
from studio.cli.main import cli

KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
PLACEMENT = Placement(namespace="studio-models", installation="abc123", image_pull_secrets=("pull",))


def assert_valid(objects: list[dict]) -> None:
    for version in KUBERNETES_VERSIONS:
        for item in objects:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{item['kind']} {item['metadata'].get('name')} is not valid for {version}: {exc}"
                )


def a_deployment(**fields) -> SimpleNamespace:
    """What render reads of a deployment row."""
    values = {
        "endpoint": SimpleNamespace(name="house-prices"),
        "name": "blue",
        "instance_type": "Standard_DS3_v2",
        "instance_count": 3,
        "scale_settings": {},
        "request_settings": {"request_timeout_ms": 3000},
        "liveness_probe": {},
        "readiness_probe": {"initial_delay": 2, "period": 5, "failure_threshold": 6},
        "environment_variables": {"MODEL_MODE": "fast", "STUDIO_REPLICA_KEY": "hijacked"},
        "scoring_script": "score.py",
        "generation": 4,
        "revision": 2,
    }
    values.update(fields)
    return SimpleNamespace(**values)


def objects_by_kind(deployment, **options) -> dict[str, dict]:
    rendered = render(deployment, "registry.example.com/studio-model/house:abc", PLACEMENT, **options)
    return {item["kind"]: item for item in rendered.objects}


# --- Studio on Kubernetes -------------------------------------------------------------------------


def deploy_documents() -> list[tuple[str, dict]]:
    documents = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path.name, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def test_every_file_of_studio_on_kubernetes_validates_for_each_supported_version():
    documents = deploy_documents()
    kinds = {document["kind"] for _, document in documents}
    assert {
        "Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job", "Deployment",
        "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress",
        "NetworkPolicy",
    } <= kinds  # fmt: skip
    assert_valid([document for _, document in documents])


def test_the_kustomization_lists_every_manifest_and_nothing_else():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_only_the_worker_holds_an_api_token_and_only_for_the_models_namespace():
    documents = [document for _, document in deploy_documents()]
    pods = {
        document["metadata"]["name"]: document["spec"]["template"]["spec"]
        for document in documents
        if document["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    assert set(pods) == {"studio-migrate", "studio-web", "studio-worker", "studio-beat", "studio-gateway"}
    assert pods["studio-worker"]["serviceAccountName"] == "studio-worker"
    for name, pod in pods.items():
        if name != "studio-worker":
            assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
    (role,) = [d for d in documents if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "studio-models"
    granted = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert granted == {
        "deployments", "services", "secrets", "poddisruptionbudgets", "horizontalpodautoscalers",
        "pods", "pods/log",
    }  # fmt: skip
    assert not [d for d in documents if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_what_the_worker_may_do_is_what_the_target_asks():
    """The Role grants each kind the kubernetes target applies, reads or deletes."""
    from endpoints.targets.kubernetes import COLLECTIONS

    (role,) = [d for _, d in deploy_documents() if d["kind"] == "Role"]
    granted = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert {path.rsplit("/", 1)[1] for path in COLLECTIONS.values()} | {"pods", "pods/log"} == granted


def test_model_servers_accept_only_the_gateway_and_reach_nothing():
    (policy,) = [d for _, d in deploy_documents() if d["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "studio-models"
    assert policy["spec"]["egress"] == []
    (source,) = policy["spec"]["ingress"][0]["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "gateway"}


def test_the_gateway_keeps_its_spool_on_a_volume_of_its_own_and_scales_by_load():
    documents = {(d["kind"], d["metadata"]["name"]): d for _, d in deploy_documents()}
    gateway = documents["StatefulSet", "studio-gateway"]
    (claim,) = gateway["spec"]["volumeClaimTemplates"]
    mounts = gateway["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts
    hpa = documents["HorizontalPodAutoscaler", "studio-gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "studio-gateway"}


# --- a deployment's objects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"instance_type": "", "instance_count": 1},
        {"scale_settings": {"type": "target_utilization", "min_instances": 1, "max_instances": 5}},
        {
            "scale_settings": {
                "type": "target_utilization",
                "min_instances": 2,
                "max_instances": 8,
                "polling_interval": 10,
                "target_utilization_percentage": 55,
            },
            "liveness_probe": {"initial_delay": 1, "period": 2, "timeout": 3, "failure_threshold": 4},
        },
        {"endpoint": SimpleNamespace(name="A" * 32), "name": "Green-" + "b" * 26},
    ],
)
def test_every_spec_renders_objects_valid_for_each_supported_version(fields):
    rendered = render(
        a_deployment(**fields),
        "studio-model/house:abc",
        PLACEMENT,
        model_dir="/m",
        code_dir="/var/azureml-app/code",
    )
    assert_valid(rendered.objects)


def test_a_fixed_count_deployment_gets_its_instance_count_and_no_autoscaler():
    objects = objects_by_kind(a_deployment(), model_dir="/m", code_dir=None)
    assert set(objects) == {"Deployment", "Service", "PodDisruptionBudget"}
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 3
    # A new pod is ready before an old one leaves.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_target_utilization_scaling_leaves_the_count_to_its_autoscaler():
    settings = {
        "type": "target_utilization",
        "min_instances": 2,
        "max_instances": 6,
        "polling_interval": 5,
        "target_utilization_percentage": 50,
    }
    objects = objects_by_kind(a_deployment(scale_settings=settings), model_dir="/m", code_dir=None)
    assert "replicas" not in objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}
    assert hpa["behavior"]["scaleUp"]["policies"][0]["periodSeconds"] == 5


def test_the_pod_is_confined_sized_and_probed_as_the_spec_says():
    deployment = objects_by_kind(a_deployment(), model_dir="/m", code_dir="/var/azureml-app/code")[
        "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert container["name"] == "inference-server"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    # Standard_DS3_v2: 4 vCPUs and 14 GiB, requested and limited alike.
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "14336Mi"},
        "limits": {"cpu": "4", "memory": "14336Mi"},
    }
    ready = container["readinessProbe"]
    assert ready["exec"]["command"] == ["/opt/studio/env/bin/python", "-m", "serving.probe", "5001"]
    assert (ready["initialDelaySeconds"], ready["periodSeconds"], ready["failureThreshold"]) == (2, 5, 6)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_the_replica_key_comes_from_its_secret_whatever_the_deployments_variables_say():
    deployment = objects_by_kind(a_deployment(), model_dir="/m", code_dir="/var/azureml-app/code")[
        "Deployment"
    ]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    named = {item["name"]: item for item in env}
    assert [item["name"] for item in env].count("STUDIO_REPLICA_KEY") == 1
    assert named["STUDIO_REPLICA_KEY"]["valueFrom"]["secretKeyRef"]["name"].endswith("-replica-key")
    assert "hijacked" not in json.dumps(deployment)
    assert named["MODEL_MODE"]["value"] == "fast"
    assert named["AZUREML_ENTRY_SCRIPT"]["value"] == "score.py"
    assert named["SCORING_TIMEOUT_MS"]["value"] == "3000"
    assert named["STUDIO_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_labels_name_installation_endpoint_deployment_and_generation_and_pods_roll_by_revision():
    objects = objects_by_kind(a_deployment(), model_dir="/m", code_dir=None)
    labels = objects["Deployment"]["metadata"]["labels"]
    assert labels["studio/installation"] == "abc123"
    assert (labels["studio/endpoint"], labels["studio/deployment"]) == ("house-prices", "blue")
    assert labels["studio/generation"] == "4"
    template = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert template["studio/revision"] == "2" and "studio/generation" not in template
    assert objects["Service"]["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kubernetes_objects.owned_selector(PLACEMENT) == (
        "app.kubernetes.io/managed-by=studio,studio/installation=abc123"
    )


def test_object_names_are_dns_labels_and_never_shared():
    assert object_name("house-prices", "blue") == "house-prices-blue"
    names = {
        object_name(e, d) for e, d in [("A" * 32, "b" * 32), ("a" * 32, "b" * 32), ("Ab", "c"), ("ab", "c")]
    }
    assert len(names) == 4
    for name in names:
        assert len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()


# --- through the REST API and the CLI -------------------------------------------------------------


@pytest.fixture
def blue(team, azure_sample_zips):
    """An endpoint with a deployment recorded (its job is never run: no cluster is needed to read it)."""
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    assert client.post(ENDPOINTS, {"name": "house-prices"}, format="json").status_code in (201, 202)
    code = upload_code(client, code_zip)
    deploy(client, "house-prices", azure_sample_spec(code), all_traffic=False)
    return code


def test_a_reader_gets_a_deployments_objects_as_a_list_kubectl_applies(team, blue, settings):
    settings.STUDIO_K8S_IMAGE_REGISTRY = "registry.example.com/models"
    response = team.reader.client().get(f"{ENDPOINTS}house-prices/deployments/blue/manifests")
    assert response.status_code == 200, response.content
    listing = response.json()
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    assert [item["kind"] for item in listing["items"]] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert_valid(listing["items"])
    container = listing["items"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.example.com/models/studio-model/regression:")
    warnings = json.loads(response["Studio-Warnings"])
    assert any("local target" in warning for warning in warnings)


def test_a_spec_renders_without_recording_anything(team, blue, settings):
    spec = azure_sample_spec(
        blue,
        name="green",
        target="kubernetes",
        scale_settings={"type": "target_utilization", "min_instances": 1, "max_instances": 3},
    )
    before = OnlineDeployment.objects.count()
    response = team.reader.client().post(f"{ENDPOINTS}house-prices/manifests", spec, format="json")
    assert response.status_code == 200, response.content
    kinds = [item["kind"] for item in response.json()["items"]]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    assert OnlineDeployment.objects.count() == before


def test_a_spec_with_an_unknown_instance_type_is_refused_saying_which_exist(team, blue):
    spec = azure_sample_spec(blue, name="green", instance_type="Standard_Bogus_v9")
    response = team.reader.client().post(f"{ENDPOINTS}house-prices/manifests", spec, format="json")
    assert response.status_code == 400
    assert "Standard_DS3_v2" in json.dumps(response.json())


def test_an_unknown_deployment_is_a_404_that_names_it(team, blue):
    response = team.reader.client().get(f"{ENDPOINTS}house-prices/deployments/nope/manifests")
    assert response.status_code == 404
    assert "nope" in json.dumps(response.json())


@pytest.fixture
def studio(live_server, transactional_db, team, tmp_path, monkeypatch, blue):
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))

    def run(*args: str) -> tuple[str, str]:
        env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": team.contributor.token}
        result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout, result.stderr

    return run


def test_the_cli_prints_yaml_documents_or_a_json_list(studio):
    text, errors = studio("online-deployment", "manifests", "-e", "house-prices", "-n", "blue")
    documents = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert "Warning:" in errors
    text, _ = studio("online-deployment", "manifests", "-e", "house-prices", "-n", "blue", "-o", "json")
    assert json.loads(text)["kind"] == "List"


def test_the_cli_renders_a_deployment_file_not_created_yet(studio, tmp_path, blue):
    spec = azure_sample_spec(blue, name="green", target="kubernetes", instance_count=2)
    del spec["environment"]  # the model's own requirements
    path = tmp_path / "green.yml"
    path.write_text(yaml.safe_dump({**spec, "endpoint_name": "house-prices"}))
    text, _ = studio("online-deployment", "manifests", "-f", str(path))
    (deployment,) = [d for d in yaml.safe_load_all(text) if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["name"] == "house-prices-green"
    assert not OnlineDeployment.objects.filter(name="green").exists()
