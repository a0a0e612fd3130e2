"""How the kubernetes target reads a cluster's answers: pure functions over API objects (plain dicts).

Kept apart from the driver so each decision can be tested on recorded API objects: whether a rollout is
done, still going, or stuck for a reason a user can act on; which pods serve and at which address; which
applied objects no deployment owns any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoints.targets.kubernetes_objects import LABEL_PREFIX, SERVICE_PORT

# Container states a rollout does not recover from by waiting (the kubelet retries them forever).
STUCK_WAITING = {
    "CrashLoopBackOff": "keeps crashing",
    "ImagePullBackOff": "cannot pull its image",
    "ErrImagePull": "cannot pull its image",
    "InvalidImageName": "names an invalid image",
    "CreateContainerConfigError": "has a configuration the kubelet refuses",
    "CreateContainerError": "could not be created",
    "RunContainerError": "could not be started",
}
DONE, PROGRESSING, FAILED = "done", "progressing", "failed"


@dataclass(frozen=True)
class Rollout:
    state: str  # DONE | PROGRESSING | FAILED
    message: str
    failed_pod: str = ""


def _revision(pod: dict) -> str:
    return (pod.get("metadata", {}).get("labels") or {}).get(f"{LABEL_PREFIX}/revision", "")


def pod_ready(pod: dict) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _stuck(pod: dict) -> str | None:
    """Why a pod cannot become ready however long one waits, or None."""
    status = pod.get("status", {})
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            reason, detail = waiting["reason"], waiting.get("message") or ""
            return f"{STUCK_WAITING[reason]} ({reason}{': ' + detail if detail else ''})"
        terminated = (container.get("lastState") or {}).get("terminated") or {}
        if terminated and container.get("restartCount", 0) >= 2 and terminated.get("exitCode"):
            reason, times = terminated.get("reason") or "Error", container["restartCount"]
            return f"exited with code {terminated['exitCode']} {times} times ({reason})"
    if status.get("phase") == "Failed":
        return f"failed ({status.get('reason') or 'Failed'}: {status.get('message') or 'no message'})"
    return None


def rollout(deployment: dict | None, pods: list[dict], revision: int) -> Rollout:
    """Where the rollout of `revision` stands, from the Deployment and its pods as the API answers."""
    if deployment is None:
        return Rollout(PROGRESSING, "The Deployment is not there yet.")
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return Rollout(FAILED, f"The cluster cannot create its pods: {condition.get('message', '')}")
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Rollout(FAILED, f"The rollout made no progress in time: {condition.get('message', '')}")
    for pod in pods:
        if _revision(pod) == str(revision) and (why := _stuck(pod)):
            name = pod["metadata"]["name"]
            return Rollout(FAILED, f"Pod {name} {why}.", failed_pod=name)
    wanted = spec.get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation", 0)
    counts = {key: status.get(key, 0) for key in ("replicas", "updatedReplicas", "readyReplicas")}
    if status.get("observedGeneration", 0) < generation:
        return Rollout(PROGRESSING, "The cluster has not seen this change yet.")
    if counts["updatedReplicas"] < wanted:
        return Rollout(PROGRESSING, f"{counts['updatedReplicas']} of {wanted} pods updated.")
    if counts["replicas"] > counts["updatedReplicas"]:
        leaving = counts["replicas"] - counts["updatedReplicas"]
        return Rollout(PROGRESSING, f"{leaving} old pod(s) still leaving.")
    if counts["readyReplicas"] < wanted:
        return Rollout(PROGRESSING, f"{counts['readyReplicas']} of {wanted} pods ready.")
    return Rollout(DONE, f"{wanted} pod(s) ready.")


def serving_pods(pods: list[dict], revision: int) -> list[dict]:
    """The ready pods of `revision`, in name order (their replica slots)."""
    ready = [pod for pod in pods if _revision(pod) == str(revision) and pod_ready(pod)]
    return sorted(ready, key=lambda pod: pod["metadata"]["name"])


def address(mode: str, pod: dict, service: dict | None, namespace: str) -> str:
    """Where the gateway reaches a serving pod: the Service's cluster name (`service`), the pod itself
    (`pods`), or, from outside the cluster, the Service's node port on the host `mode` names."""
    if mode == "pods":
        return f"http://{pod['status']['podIP']}:{pod['spec']['containers'][0]['ports'][0]['containerPort']}"
    name = service["metadata"]["name"] if service else ""
    if mode == "service":
        return f"http://{name}.{namespace}.svc:{SERVICE_PORT}"
    ports = (service or {}).get("spec", {}).get("ports") or [{}]
    node_port = ports[0].get("nodePort")
    if not node_port:
        raise ValueError(f"Service {name} has no node port: set STUDIO_K8S_SERVICE_TYPE=NodePort.")
    return f"{mode.rstrip('/')}:{node_port}"


def orphans(objects: list[dict], owned: set[tuple[str, str]]) -> list[dict]:
    """The applied objects whose (endpoint, deployment) labels name no deployment of this installation."""
    found = []
    for item in objects:
        labels = item.get("metadata", {}).get("labels") or {}
        key = (labels.get(f"{LABEL_PREFIX}/endpoint", ""), labels.get(f"{LABEL_PREFIX}/deployment", ""))
        if key not in owned:
            found.append(item)
    return found
