"""The kubernetes target's decisions, on recorded API objects, and its calls, against an API server's answers.

No cluster can run here: `kube_api.FakeKubeApi` answers over HTTP on loopback with objects shaped as a real
API server returns them, and records what the target asks. The whole deployment life against a real cluster
is `test_kubernetes_cluster.py`, which runs when KUBECONFIG is set.
"""

import json
from types import SimpleNamespace

import pytest

from endpoints.targets import kubernetes_status as status
from endpoints.targets.base import Prepared, QuietLog, ReplicaFailed
from endpoints.targets.kubernetes import KubernetesTarget
from endpoints.targets.kubernetes_objects import object_name
from endpoints.tests.kube_api import FakeKubeApi, _pod
from endpoints.tests.support import ENDPOINTS, azure_sample_spec, deploy, register, upload_code

NS = "studio-models"
TEMPLATE = {
    "metadata": {"labels": {"studio/endpoint": "shop", "studio/deployment": "blue", "studio/revision": "2"}},
    "spec": {
        "containers": [{"name": "inference-server", "image": "r/m:1", "ports": [{"containerPort": 5001}]}]
    },
}


def a_deployment_object(generation=3, observed=3, replicas=2, updated=2, ready=2, total=None, conditions=()):
    return {
        "metadata": {"name": "shop-blue", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if total is None else total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "conditions": list(conditions),
        },
    }


# --- decisions on recorded objects ------------------------------------------------------------------


def test_a_rollout_is_done_when_every_pod_is_updated_and_ready_and_no_old_one_is_left():
    pods = [_pod(f"p{i}", NS, "shop-blue", TEMPLATE, i, True, None) for i in range(2)]
    assert status.rollout(a_deployment_object(), pods, 2).state == status.DONE
    assert status.rollout(a_deployment_object(observed=2), pods, 2).message.startswith("The cluster has not")
    assert status.rollout(a_deployment_object(updated=1), pods, 2).message == "1 of 2 pods updated."
    assert status.rollout(a_deployment_object(total=3), pods, 2).message == "1 old pod(s) still leaving."
    assert status.rollout(a_deployment_object(ready=1), pods, 2).message == "1 of 2 pods ready."
    assert status.rollout(None, [], 2).state == status.PROGRESSING


@pytest.mark.parametrize(
    ("waiting", "words"),
    [
        ("CrashLoopBackOff", "keeps crashing"),
        ("ImagePullBackOff", "cannot pull its image"),
        ("CreateContainerConfigError", "configuration the kubelet refuses"),
    ],
)
def test_a_pod_stuck_for_good_fails_the_rollout_naming_it_and_why(waiting, words):
    pods = [_pod("shop-blue-x", NS, "shop-blue", TEMPLATE, 0, False, waiting)]
    found = status.rollout(a_deployment_object(ready=0), pods, 2)
    assert found.state == status.FAILED and found.failed_pod == "shop-blue-x"
    assert words in found.message and waiting in found.message


def test_a_stuck_pod_of_another_revision_does_not_fail_this_one():
    old = {**TEMPLATE, "metadata": {"labels": {**TEMPLATE["metadata"]["labels"], "studio/revision": "1"}}}
    pods = [_pod("old", NS, "shop-blue", old, 0, False, "CrashLoopBackOff")]
    assert status.rollout(a_deployment_object(ready=0), pods, 2).state == status.PROGRESSING


def test_the_clusters_own_verdicts_fail_the_rollout():
    quota = {"type": "ReplicaFailure", "status": "True", "message": 'pods "x" is forbidden: exceeded quota'}
    deadline = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "m",
    }
    assert "exceeded quota" in status.rollout(a_deployment_object(conditions=[quota]), [], 2).message
    assert status.rollout(a_deployment_object(conditions=[deadline]), [], 2).state == status.FAILED


def test_the_gateway_address_of_a_pod_in_each_mode():
    pod = _pod("p0", NS, "shop-blue", TEMPLATE, 0, True, None)
    service = {"metadata": {"name": "shop-blue"}, "spec": {"ports": [{"port": 80, "nodePort": 31234}]}}
    assert status.address("service", pod, service, NS) == "http://shop-blue.studio-models.svc:80"
    assert status.address("pods", pod, service, NS) == "http://10.244.0.10:5001"
    assert status.address("http://node.example.com", pod, service, NS) == "http://node.example.com:31234"
    with pytest.raises(ValueError, match="NodePort"):
        status.address("http://node", pod, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, NS)


def test_serving_pods_are_the_ready_ones_of_the_revision_in_name_order():
    pods = [
        _pod(name, NS, "shop-blue", TEMPLATE, i, ready, None)
        for i, (name, ready) in enumerate([("b", True), ("a", True), ("c", False)])
    ]
    terminating = _pod("d", NS, "shop-blue", TEMPLATE, 3, True, None)
    terminating["metadata"]["deletionTimestamp"] = "2026-11-30T10:00:00Z"
    assert [p["metadata"]["name"] for p in status.serving_pods([*pods, terminating], 2)] == ["a", "b"]


def test_orphans_are_objects_whose_deployment_is_gone():
    def labelled(endpoint, deployment):
        return {
            "metadata": {
                "name": f"{endpoint}-{deployment}",
                "labels": {"studio/endpoint": endpoint, "studio/deployment": deployment},
            }
        }

    found = status.orphans([labelled("shop", "blue"), labelled("shop", "old")], {("shop", "blue")})
    assert [item["metadata"]["name"] for item in found] == ["shop-old"]


# --- the driver's calls ----------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    with FakeKubeApi() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path)))
        yield api


@pytest.fixture
def recorded(team, azure_sample_zips, cluster):
    """A kubernetes deployment recorded through the API (its reconcile is run by each test)."""
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    code = upload_code(client, code_zip)
    deploy(
        client,
        "shop",
        azure_sample_spec(code, name="blue", target="kubernetes", instance_count=2),
        all_traffic=False,
    )
    from endpoints.models import OnlineDeployment

    return OnlineDeployment.objects.select_related("endpoint", "model_version__model").get(name="blue")


PREPARED = Prepared(
    "/opt/studio/env/bin/python",
    "/var/azureml-app/azureml-models/regression/1",
    None,
    image="registry.example.com/studio-model/regression:abc",
)


def test_apply_is_a_server_side_apply_of_each_object_with_studios_field_manager(cluster, recorded):
    target = KubernetesTarget()
    target.apply(recorded, PREPARED, QuietLog())
    assert cluster.applied() == [
        ("Secret", "shop-blue-replica-key"),
        ("Deployment", "shop-blue"),
        ("Service", "shop-blue"),
        ("PodDisruptionBudget", "shop-blue"),
    ]
    for request in cluster.requests:
        if request["method"] == "PATCH":
            assert request["content_type"] == "application/apply-patch+yaml"
            assert request["query"] == {"fieldManager": "studio", "force": "true"}
    # Not autoscaled: an autoscaler left from an earlier spec is removed.
    assert ("DELETE", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/shop-blue") in [
        (r["method"], r["path"]) for r in cluster.requests
    ]
    secret = cluster.objects["Secret", NS, "shop-blue-replica-key"]
    assert secret["stringData"]["key"] == recorded.replica_secret
    assert cluster.deployment(NS, "shop-blue")["spec"]["replicas"] == 2


def test_a_rollout_is_watched_to_its_end_and_its_pods_become_replica_rows(cluster, recorded, settings):
    from endpoints import reconcile

    target = KubernetesTarget()
    target.apply(recorded, PREPARED, QuietLog())
    cluster.rolled_out(NS, "shop-blue")
    pods = target.wait_rolled_out(recorded, recorded.revision, 10, QuietLog())
    assert len(pods) == 2
    reconcile.sync_cluster_replicas(recorded, target, pods, recorded.revision, image=PREPARED.image)
    rows = list(recorded.replicas.order_by("index"))
    assert [row.url for row in rows] == ["http://shop-blue.studio-models.svc:80"] * 2
    assert [row.state for row in rows] == ["ready", "ready"]
    assert all(row.handle["image"] == PREPARED.image for row in rows)
    settings.STUDIO_K8S_GATEWAY_ADDRESS = "pods"
    reconcile.sync_cluster_replicas(recorded, target, pods, recorded.revision)
    assert sorted(row.url for row in recorded.replicas.all()) == [
        "http://10.244.0.10:5001",
        "http://10.244.0.11:5001",
    ]
    assert {row.handle["image"] for row in recorded.replicas.all()} == {PREPARED.image}
    assert target.alive(rows[0])


def test_a_crashing_rollout_fails_with_the_reason_and_the_pods_log(cluster, recorded):
    target = KubernetesTarget()
    target.apply(recorded, PREPARED, QuietLog())
    crashing = cluster.rolled_out(NS, "shop-blue", ready=False, waiting="CrashLoopBackOff")
    cluster.logs[crashing[0]] = "Traceback (most recent call last):\nValueError: no model file"
    with pytest.raises(ReplicaFailed) as failed:
        target.wait_rolled_out(recorded, recorded.revision, 10, QuietLog())
    assert "keeps crashing" in str(failed.value) and "ValueError: no model file" in str(failed.value)


def test_teardown_and_orphan_removal_delete_what_this_installation_applied(cluster, recorded):
    target = KubernetesTarget()
    target.apply(recorded, PREPARED, QuietLog())
    stranger = SimpleNamespace(**{**recorded.__dict__})
    stranger.endpoint, stranger.name = SimpleNamespace(name="gone"), "green"
    stranger.replica_secret = "x" * 32
    target.apply(stranger, PREPARED, QuietLog())
    removed = target.remove_orphans()
    assert sorted(removed) == sorted(
        [
            "Secret/gone-green-replica-key",
            "Deployment/gone-green",
            "Service/gone-green",
            "PodDisruptionBudget/gone-green",
        ]
    )
    assert ("Deployment", NS, "shop-blue") in cluster.objects
    target.teardown(recorded)
    assert not [key for key in cluster.objects if key[1] == NS]
    assert object_name("shop", "blue") == "shop-blue"


def test_a_kubernetes_deployment_without_a_cluster_is_refused_saying_so(
    team, azure_sample_zips, monkeypatch, tmp_path
):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    code = upload_code(client, code_zip)
    answer = client.post(
        f"{ENDPOINTS}shop/deployments/", azure_sample_spec(code, target="kubernetes"), format="json"
    )
    assert answer.status_code == 400
    assert "needs a cluster" in json.dumps(answer.json())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints")
def test_a_deployments_life_on_the_target_through_the_api(team, mlflow_model_zip, docker_target, cluster):
    """Built on the real Docker engine, applied to the API server, converged, scaled, deleted."""
    cluster.auto_rollout = True
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "fraud"}, format="json")
    spec = {"name": "blue", "model": "azureml:clf:1", "target": "kubernetes", "instance_count": 2}
    body = deploy(client, "fraud", spec, all_traffic=False)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    shown = client.get(f"{ENDPOINTS}fraud/deployments/blue/").json()
    assert shown["provisioning_state"] == "Succeeded"
    assert [replica["url"] for replica in shown["replicas"]] == ["http://fraud-blue.studio-models.svc:80"] * 2
    applied = cluster.deployment(NS, "fraud-blue")
    image = applied["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("studio-model/clf:"), "built by content, not pushed: no registry is set"
    assert docker_target.images.get(image)
    # What `manifests` prints is exactly what was applied.
    listing = client.get(f"{ENDPOINTS}fraud/deployments/blue/manifests").json()
    assert [item["kind"] for item in listing["items"]] == ["Deployment", "Service", "PodDisruptionBudget"]
    for item in listing["items"]:
        stored = cluster.objects[item["kind"], NS, item["metadata"]["name"]]
        assert (stored["spec"], stored["metadata"]["labels"]) == (item["spec"], item["metadata"]["labels"])

    scaled = client.patch(f"{ENDPOINTS}fraud/deployments/blue/", {"instance_count": 3}, format="json").json()
    assert scaled["job"]["state"] == "succeeded", scaled["job"]["error"]
    assert cluster.deployment(NS, "fraud-blue")["spec"]["replicas"] == 3
    assert len(client.get(f"{ENDPOINTS}fraud/deployments/blue/").json()["replicas"]) == 3

    gone = client.delete(f"{ENDPOINTS}fraud/deployments/blue/").json()
    assert gone["job"]["state"] == "succeeded", gone["job"]["error"]
    assert not [key for key in cluster.objects if key[1] == NS]
