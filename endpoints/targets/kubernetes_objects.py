"""The Kubernetes objects of one online deployment, as plain API dictionaries.

This module is the one place that says what a deployment looks like on a cluster: the Kubernetes target
applies exactly these objects (server-side apply), and `studio online-deployment manifests` prints them,
so what a team reviews or commits to its GitOps repository is what Studio would apply. Nothing here talks
to a cluster; every object validates against the official schemas of the Kubernetes versions Studio
supports (tests run `kubernetes-validate` strictly on them).

Per deployment:
- a `Deployment` of the model server (`instance_count` replicas, unless an autoscaler owns the count),
  confined as the docker target's containers are: non-root, no privilege escalation, no capabilities, a
  read-only root with a private size-limited /tmp, no service-account token, no service links;
  requests and limits from the instance type; Azure's liveness and readiness probes; a rolling update
  that adds a ready pod before removing one;
- a `Service` the gateway reaches it through;
- a `PodDisruptionBudget` that lets a drain take one pod at a time;
- for `scale_settings.type: target_utilization`, a `HorizontalPodAutoscaler` (CPU utilization, as
  Azure's Kubernetes online deployments scale).

The replica key the gateway presents is a `Secret` Studio writes itself and never prints: the pods read
it from there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from endpoints import packaging, specs
from endpoints.targets.base import server_environment
from endpoints.targets.instance_types import lookup
from serving.replica_key import VARIABLE as REPLICA_KEY

SERVICE_PORT = 80
# The container's name is Azure's, so `get-logs --container inference-server` names it as on Azure.
CONTAINER = "inference-server"
TMP_SIZE = "512Mi"
# Azure Arc's `defaultinstancetype`, for a deployment that names none.
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
# Azure's defaults for target_utilization scaling of Kubernetes online deployments.
DEFAULT_TARGET_UTILIZATION = 70
DEFAULT_POLLING_INTERVAL_S = 1
# How long load must stay low before the autoscaler removes pods.
SCALE_DOWN_WINDOW_S = 300
LABEL_PREFIX = "studio"
MANAGED_BY = "studio"


@dataclass(frozen=True)
class Placement:
    """Where and how a deployment's objects live on the cluster (from settings)."""

    namespace: str
    installation: str
    service_type: str = "ClusterIP"
    image_pull_secrets: tuple[str, ...] = ()


@dataclass
class Rendered:
    """The objects, in the order they are applied, and what the caller should be told about them."""

    objects: list[dict]
    warnings: list[str] = field(default_factory=list)


def object_name(endpoint: str, deployment: str) -> str:
    """A DNS-1123 label for the deployment's objects: `endpoint-deployment` when it is one already,
    otherwise shortened and lowercased with a digest of the real names, so two deployments never share
    one."""
    base = f"{endpoint}-{deployment}"
    if base.lower() == base and len(base) <= 63:
        return base
    digest = hashlib.sha256(f"{endpoint}/{deployment}".encode()).hexdigest()[:8]
    return f"{base.lower()[:54].rstrip('-')}-{digest}"


def secret_name(endpoint: str, deployment: str) -> str:
    return f"{object_name(endpoint, deployment)[:52].rstrip('-')}-replica-key"


def selector_labels(placement: Placement, endpoint: str, deployment: str) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}/installation": placement.installation,
        f"{LABEL_PREFIX}/endpoint": endpoint,
        f"{LABEL_PREFIX}/deployment": deployment,
    }


def owned_selector(placement: Placement) -> str:
    """The label selector of everything this installation applies, for listing what may be orphaned."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_PREFIX}/installation={placement.installation}"


def resources_for(instance_type: str) -> tuple[dict, list[str]]:
    """Requests equal to limits (the Guaranteed class: a pod gets what its size says, no more, no less)
    from the instance type's vCPUs and memory."""
    if not instance_type:
        return DEFAULT_RESOURCES, [
            "No instance_type: pods get Azure's default instance type on Kubernetes "
            "(request 100m CPU and 2Gi memory, limit 2 CPUs and 2Gi)."
        ]
    size = lookup(instance_type)
    amounts = {"cpu": f"{size.cores:g}", "memory": f"{round(size.memory_gib * 1024)}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}, []


def probe(settings: dict | None, check: dict) -> dict:
    """Azure's probe settings (seconds) as a Kubernetes probe doing `check`."""
    merged = {**specs.PROBE_DEFAULTS, **(settings or {})}
    return {
        **check,
        "initialDelaySeconds": int(merged["initial_delay"]),
        "periodSeconds": int(merged["period"]),
        "timeoutSeconds": int(merged["timeout"]),
        "successThreshold": int(merged["success_threshold"]),
        "failureThreshold": int(merged["failure_threshold"]),
    }


def autoscaled(scale_settings: dict | None) -> bool:
    return (scale_settings or {}).get("type", "default") == "target_utilization"


def pod_environment(deployment, model_dir: str, code_dir: str | None) -> list[dict]:
    """The model server's variables, as every target sets them; the replica's name is the pod's."""
    values = server_environment(deployment, model_dir, code_dir)
    for reserved in ("STUDIO_REPLICA", REPLICA_KEY):
        values.pop(reserved, None)
    env = [{"name": name, "value": str(value)} for name, value in values.items()]
    env.append({"name": "STUDIO_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    # Last, so no variable of the deployment's can stand in for it.
    name = secret_name(deployment.endpoint.name, deployment.name)
    env.append({"name": REPLICA_KEY, "valueFrom": {"secretKeyRef": {"name": name, "key": "key"}}})
    return env


def labels_for(deployment, placement: Placement) -> dict[str, str]:
    """What every object of the deployment is labelled with (the selector's labels among them)."""
    endpoint, name = deployment.endpoint.name, deployment.name
    return {
        "app.kubernetes.io/name": "studio-model-server",
        "app.kubernetes.io/instance": object_name(endpoint, name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(placement, endpoint, name),
        f"{LABEL_PREFIX}/generation": str(deployment.generation or 1),
    }


def replica_key_secret(deployment, placement: Placement) -> dict:
    """The Secret the pods read the replica key from; applied by the target, never printed."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(deployment.endpoint.name, deployment.name),
            "namespace": placement.namespace,
            "labels": labels_for(deployment, placement),
        },
        "type": "Opaque",
        "stringData": {"key": deployment.replica_secret},
    }


def render(deployment, image: str, placement: Placement, *, model_dir: str, code_dir: str | None) -> Rendered:
    """The objects of `deployment` (a saved row, or one built from a spec and never saved)."""
    endpoint, name = deployment.endpoint.name, deployment.name
    full_name = object_name(endpoint, name)
    selector = selector_labels(placement, endpoint, name)
    labels = labels_for(deployment, placement)

    def metadata(kind_labels: dict | None = None) -> dict:
        return {"name": full_name, "namespace": placement.namespace, "labels": kind_labels or labels}

    resources, warnings = resources_for(deployment.instance_type)
    run_as = int(packaging.IMAGE_USER.split(":")[0])  # the user the model images run as
    ready_check = [packaging.IMAGE_PYTHON, "-m", "serving.probe", str(packaging.SERVER_PORT)]
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": run_as,
            "runAsGroup": run_as,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": packaging.SERVER_PORT, "protocol": "TCP"}],
                "env": pod_environment(deployment, model_dir, code_dir),
                "resources": resources,
                # Liveness is open to anyone; readiness answers the replica key alone, which the probe
                # reads from the container's environment (serving.probe), not from this spec.
                "livenessProbe": probe(
                    deployment.liveness_probe, {"httpGet": {"path": "/health/live", "port": "http"}}
                ),
                "readinessProbe": probe(deployment.readiness_probe, {"exec": {"command": ready_check}}),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 (the pod's own)
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}],
    }
    if placement.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in placement.image_pull_secrets]
    spec = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            # The revision, not the generation: a change that needs no new pods (the count) rolls none.
            "metadata": {"labels": {**selector, f"{LABEL_PREFIX}/revision": str(deployment.revision or 1)}},
            "spec": pod_spec,
        },
    }
    if not autoscaled(deployment.scale_settings):
        # With an autoscaler the count is its to set: applying one here would undo its decisions.
        spec["replicas"] = deployment.instance_count
    objects = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(), "spec": spec},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(),
            "spec": {
                "type": placement.service_type,
                "selector": selector,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        },
    ]
    if autoscaled(deployment.scale_settings):
        objects.append(autoscaler(deployment, metadata(), full_name))
    return Rendered(objects, warnings)


def autoscaler(deployment, metadata: dict, target_name: str) -> dict:
    """Azure's target_utilization settings as an autoscaling/v2 HorizontalPodAutoscaler on CPU."""
    settings = deployment.scale_settings
    minimum = int(settings.get("min_instances", 1))
    maximum = int(settings.get("max_instances", max(minimum, deployment.instance_count)))
    period = int(settings.get("polling_interval", DEFAULT_POLLING_INTERVAL_S))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target_name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": int(
                                settings.get("target_utilization_percentage", DEFAULT_TARGET_UTILIZATION)
                            ),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": maximum, "periodSeconds": max(period, 1)}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": max(period, 15)}],
                },
            },
        },
    }
