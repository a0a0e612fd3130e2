"""The kubernetes target against a real cluster: a deployment's whole life, scored through the gateway.

Runs when KUBECONFIG names a cluster, and skips otherwise, saying so (no cluster can run on the machines
that run Studio's CI). docs/kubernetes.md shows how to run it on kind or k3d:

    KUBECONFIG=~/.kube/config                    the cluster (its namespace STUDIO_K8S_NAMESPACE must exist)
    STUDIO_K8S_IMAGE_REGISTRY=localhost:5001     a registry this host pushes to and the cluster pulls from
    STUDIO_K8S_NODE_ADDRESS=http://172.18.0.2    a node's address, where this host reaches NodePorts

The gateway runs on this host, outside the cluster, so deployments get NodePort Services and the gateway
reaches them at the node's address (STUDIO_K8S_GATEWAY_ADDRESS).
"""

import os
from types import SimpleNamespace

import httpx
import pytest

from endpoints.targets.kubernetes import KubernetesTarget
from endpoints.tests.support import ENDPOINTS, deploy, register
from studio.testkit import until

NEEDED = ("KUBECONFIG", "STUDIO_K8S_IMAGE_REGISTRY", "STUDIO_K8S_NODE_ADDRESS")
missing = [name for name in NEEDED if not os.environ.get(name)]
pytestmark = [
    pytest.mark.skipif(
        bool(missing),
        reason=f"needs a real cluster: set {', '.join(missing)} (docs/kubernetes.md, 'Testing on a cluster')",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]
PAYLOAD = {"input_data": [[0.0, 1.0]]}


@pytest.fixture
def on_cluster(settings, docker_target):
    settings.STUDIO_K8S_NAMESPACE = os.environ.get("STUDIO_K8S_NAMESPACE", "studio-models")
    settings.STUDIO_K8S_IMAGE_REGISTRY = os.environ["STUDIO_K8S_IMAGE_REGISTRY"]
    settings.STUDIO_K8S_SERVICE_TYPE = "NodePort"
    settings.STUDIO_K8S_GATEWAY_ADDRESS = os.environ["STUDIO_K8S_NODE_ADDRESS"]
    yield KubernetesTarget()
    # Whatever a failed test left of this installation's objects goes.
    KubernetesTarget().remove_orphans()


def test_a_deployments_whole_life_on_a_real_cluster(team, gateway, mlflow_model_zip, on_cluster):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    endpoint = client.post(ENDPOINTS, {"name": "k8s-life"}, format="json").json()
    created = deploy(client, "k8s-life", {"name": "blue", "model": "azureml:clf:1", "target": "kubernetes"})
    assert created["job"]["state"] == "succeeded", created["job"]["error"]
    key = client.post(f"{ENDPOINTS}k8s-life/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}

    def score() -> httpx.Response:
        return httpx.post(endpoint["scoring_uri"], json=PAYLOAD, headers=headers, timeout=20)

    assert until(lambda: score().status_code == 200, 60)
    assert score().json() == [0]

    # An update rolls new pods in by the Deployment's own strategy; it keeps answering.
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    updated = client.patch(
        f"{ENDPOINTS}k8s-life/deployments/blue/", {"model": "azureml:clf:2"}, format="json"
    )
    assert updated.json()["job"]["state"] == "succeeded", updated.json()["job"]["error"]
    assert score().status_code == 200

    scaled = client.patch(f"{ENDPOINTS}k8s-life/deployments/blue/", {"instance_count": 2}, format="json")
    assert scaled.json()["job"]["state"] == "succeeded", scaled.json()["job"]["error"]
    assert len(client.get(f"{ENDPOINTS}k8s-life/deployments/blue/").json()["replicas"]) == 2
    blue = SimpleNamespace(endpoint=SimpleNamespace(name="k8s-life"), name="blue")
    assert len(on_cluster.pods(blue)) == 2
    logs = client.get(f"{ENDPOINTS}k8s-life/deployments/blue/logs/?lines=20").json()["replicas"]
    assert logs and all(replica["log"] for replica in logs)

    client.patch(f"{ENDPOINTS}k8s-life/", {"traffic": {"blue": 0}}, format="json")
    gone = client.delete(f"{ENDPOINTS}k8s-life/deployments/blue/").json()
    assert gone["job"]["state"] == "succeeded", gone["job"]["error"]
    assert on_cluster.remove_orphans() == []
