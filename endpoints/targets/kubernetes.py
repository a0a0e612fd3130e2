"""The kubernetes target: a deployment is a Kubernetes Deployment (with its Service, PodDisruptionBudget and,
when autoscaled, HorizontalPodAutoscaler) in STUDIO_K8S_NAMESPACE.

Unlike the local and docker targets, the cluster runs the replicas: the reconciler applies the objects
(`endpoints.targets.kubernetes_objects`, server-side apply with Studio's field manager), watches the
Deployment until its rollout is done or stuck (`kubernetes_status.rollout`), and turns the ready pods into
replica rows the gateway routes to. Rolling updates are the Deployment's own (a ready pod before an old one
leaves); restarts are the kubelet's. Every call is idempotent: a reconcile killed at any line applies the
same objects again and reads the same pods.

The cluster is found as kubectl finds it: KUBECONFIG (or ~/.kube/config), else the service account of the
pod the worker runs in. Images are built by the Docker engine as on the docker target, then tagged into
STUDIO_K8S_IMAGE_REGISTRY and pushed with the engine's credentials (its Docker config: `docker login`, or
a config.json mounted from a Secret as DOCKER_CONFIG).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.conf import settings

from endpoints import packaging
from endpoints.targets import kubernetes_objects as objects
from endpoints.targets import kubernetes_status as status
from endpoints.targets.base import BuildFailed, Prepared, ReplicaFailed, TargetUnavailable, prepared_from
from endpoints.targets.docker import engine

FIELD_MANAGER = "studio"
WATCH_S = 5
# What the target applies, by kind: the API path of the collection (namespace filled in).
COLLECTIONS = {
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}
PODS = "/api/v1/namespaces/{ns}/pods"


def configured() -> bool:
    """Whether a cluster is configured for this process: a kubeconfig, or a pod's service account."""
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return in_cluster or any(Path(path).is_file() for path in kubeconfig.split(os.pathsep) if path)


NO_CLUSTER = (
    "The kubernetes target needs a cluster and none is configured: set KUBECONFIG (or ~/.kube/config) for "
    "Studio's worker, or run the worker in the cluster with a service account (docs/kubernetes.md)."
)


class KubernetesError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class KubernetesTarget:
    name = "kubernetes"
    # The cluster runs the replicas: the reconciler applies and observes instead of starting them.
    manages_replicas = True

    def __init__(self, api=None) -> None:
        self._api = api

    @property
    def api(self):
        if self._api is None:
            if not configured():
                raise TargetUnavailable(NO_CLUSTER)
            from kubernetes import client, config

            # A configuration of this driver's own, read now: the client's process-wide default (and the
            # KUBECONFIG it read when imported) would outlive a change of cluster.
            configuration = client.Configuration()
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
                    config.load_incluster_config(client_configuration=configuration)
                else:
                    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
                    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            except Exception as exc:  # noqa: BLE001 (any reason means: no cluster to talk to)
                raise TargetUnavailable(f"The cluster configuration cannot be used: {exc}") from None
            self._api = client.ApiClient(configuration)
        return self._api

    @property
    def placement(self) -> objects.Placement:
        from endpoints.manifests import placement

        return placement()

    # --- talking to the API server ------------------------------------------------------------------

    def _send(
        self, method: str, path: str, query=(), *, body: dict | None = None, headers=None, timeout=60.0
    ):
        """The raw answer (urllib3's, unread) to one authenticated call; the client raises ApiException for
        an answer that is not 2xx."""
        headers = {"Accept": "application/json", "Content-Type": "application/json", **(headers or {})}
        return self.api.call_api(
            path, method, query_params=list(query), header_params=headers, body=body,
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=(5, timeout),
        )  # fmt: skip

    def request(self, method: str, path: str, *, query=None, body=None, content_type="application/json"):
        """One API call; the answer's JSON (None for 404 on GET and DELETE), KubernetesError otherwise."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Content-Type": content_type}
        try:
            answer = self._send(method, path, (query or {}).items(), body=body, headers=headers)
            data = answer.data
        except ApiException as exc:
            if exc.status == 404 and method in ("GET", "DELETE"):
                return None
            raise KubernetesError(exc.status or 0, _reason(exc.body) or str(exc.reason)) from None
        except OSError as exc:
            raise TargetUnavailable(f"The Kubernetes API server does not answer: {exc}") from None
        return json.loads(data) if data else None

    def apply_object(self, item: dict) -> dict:
        """Server-side apply: Studio's field manager owns what it sets; fields others own stay theirs."""
        path = (
            f"{COLLECTIONS[item['kind']].format(ns=item['metadata']['namespace'])}/{item['metadata']['name']}"
        )
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return self.request(
            "PATCH", path, query=query, body=item, content_type="application/apply-patch+yaml"
        )

    # --- what the reconciler asks -------------------------------------------------------------------

    def prepare(self, deployment, model_dir: Path, code_dir: Path | None, log) -> Prepared:
        """Build the image on the Docker engine (as the docker target does) and push it where the cluster
        pulls from."""
        self.api  # a deployment with no cluster fails before a long build  # noqa: B018
        spec = packaging.for_deployment(deployment, model_dir, code_dir)
        for warning in spec.warnings:
            log(warning, level="warning")
        client = engine()
        image = packaging.build_image(client, spec, log)
        registry = settings.STUDIO_K8S_IMAGE_REGISTRY
        warnings = []
        if registry:
            image = push(client, image, registry, log)
        else:
            warnings.append(
                "STUDIO_K8S_IMAGE_REGISTRY is not set: the image was not pushed, so the cluster's nodes must "
                f"have {image} already (kind load docker-image, or a cluster on this Docker engine)."
            )
        return prepared_from(spec, image, warnings)

    def prepared_for(self, deployment, image: str) -> Prepared:
        """What an image built for `deployment` holds, where (to apply it again without building)."""
        version = deployment.model_version
        layout = packaging.PackageSpec(
            label="", model_name=version.model.name, model_version=str(version.version), model_digest="",
            model_dir=Path(), code_dir=Path() if deployment.code_digest else None,
        )  # fmt: skip
        return prepared_from(layout, image)

    def apply(self, deployment, prepared: Prepared, log) -> None:
        """Apply the deployment's objects; remove an autoscaler it no longer has."""
        placement = self.placement
        code_dir = str(prepared.code_dir) if prepared.code_dir else None
        rendered = objects.render(
            deployment, prepared.image, placement, model_dir=str(prepared.model_dir), code_dir=code_dir
        )
        try:
            self.apply_object(objects.replica_key_secret(deployment, placement))
            for item in rendered.objects:
                self.apply_object(item)
                log(f"Applied {item['kind']} {placement.namespace}/{item['metadata']['name']}.")
            if not objects.autoscaled(deployment.scale_settings):
                name = objects.object_name(deployment.endpoint.name, deployment.name)
                path = COLLECTIONS["HorizontalPodAutoscaler"].format(ns=placement.namespace)
                self.request("DELETE", f"{path}/{name}")
        except KubernetesError as exc:
            raise ReplicaFailed(f"The cluster refused the deployment's objects: {exc}") from None

    def _deployment_object(self, deployment) -> dict | None:
        ns = self.placement.namespace
        name = objects.object_name(deployment.endpoint.name, deployment.name)
        return self.request("GET", f"{COLLECTIONS['Deployment'].format(ns=ns)}/{name}")

    def pods(self, deployment) -> list[dict]:
        placement = self.placement
        selector = ",".join(
            f"{key}={value}"
            for key, value in objects.selector_labels(
                placement, deployment.endpoint.name, deployment.name
            ).items()
        )
        answer = self.request("GET", PODS.format(ns=placement.namespace), query={"labelSelector": selector})
        return (answer or {}).get("items", [])

    def wait_rolled_out(self, deployment, revision: int, timeout: float, log) -> list[dict]:
        """Watch the Deployment until its rollout is done (its ready pods of `revision`), or raise
        ReplicaFailed with what is stuck and the failing pod's log."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            found = status.rollout(self._deployment_object(deployment), self.pods(deployment), revision)
            if found.state == status.DONE:
                return status.serving_pods(self.pods(deployment), revision)
            if found.state == status.FAILED:
                tail = self.pod_log(found.failed_pod, 30) if found.failed_pod else ""
                raise ReplicaFailed(found.message + (f" Its log ends with:\n{tail}" if tail else ""))
            if found.message != last:
                log(found.message)
                last = found.message
            if time.monotonic() >= deadline:
                raise ReplicaFailed(f"The rollout did not finish within {timeout:.0f}s: {found.message}")
            log.heartbeat()
            self._watch(deployment, min(WATCH_S, max(deadline - time.monotonic(), 1)))

    def _watch(self, deployment, seconds: float) -> None:
        """Return at the Deployment's next change (the first event of a watch from its current version),
        or after `seconds`."""
        from kubernetes.client.exceptions import ApiException

        ns = self.placement.namespace
        name = objects.object_name(deployment.endpoint.name, deployment.name)
        query = [
            ("watch", "1"),
            ("fieldSelector", f"metadata.name={name}"),
            ("timeoutSeconds", str(int(seconds))),
        ]
        current = self._deployment_object(deployment)
        if current is not None:
            query.append(("resourceVersion", current["metadata"].get("resourceVersion", "")))
        try:
            stream = self._send("GET", COLLECTIONS["Deployment"].format(ns=ns), query, timeout=seconds + 5)
            try:
                for chunk in stream.stream(4096):
                    if chunk.strip():
                        return  # an event: look again
            finally:
                stream.release_conn()
        except (ApiException, OSError, ValueError):
            time.sleep(min(seconds, 1.0))  # a watch the server refuses or drops: look again shortly

    def addresses(self, deployment, pods: list[dict]) -> list[tuple[str, str]]:
        """(pod name, the address the gateway uses) for each serving pod."""
        mode = settings.STUDIO_K8S_GATEWAY_ADDRESS
        service = None
        if mode != "pods":
            ns = self.placement.namespace
            name = objects.object_name(deployment.endpoint.name, deployment.name)
            service = self.request("GET", f"{COLLECTIONS['Service'].format(ns=ns)}/{name}")
        return [
            (pod["metadata"]["name"], status.address(mode, pod, service, self.placement.namespace))
            for pod in pods
        ]

    def teardown(self, deployment) -> None:
        """Delete every object of the deployment (absent ones are fine)."""
        ns = self.placement.namespace
        name = objects.object_name(deployment.endpoint.name, deployment.name)
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment"):
            self.request("DELETE", f"{COLLECTIONS[kind].format(ns=ns)}/{name}")
        secret = objects.secret_name(deployment.endpoint.name, deployment.name)
        self.request("DELETE", f"{COLLECTIONS['Secret'].format(ns=ns)}/{secret}")

    def pod_log(self, pod: str, lines: int) -> str:
        from kubernetes.client.exceptions import ApiException

        path = f"{PODS.format(ns=self.placement.namespace)}/{pod}/log"
        query = [("tailLines", str(lines)), ("container", objects.CONTAINER)]
        try:
            data = self._send("GET", path, query, headers={"Accept": "text/plain"}, timeout=30).data
        except (ApiException, OSError):
            return ""
        return data.decode(errors="replace").rstrip("\n")

    # --- the per-replica interface, as far as the cluster leaves it to Studio ---------------------

    def start(self, replica, launch) -> None:
        raise ReplicaFailed("Pods of the kubernetes target are started by the cluster, not one by one.")

    def alive(self, replica) -> bool:
        pod = (replica.handle or {}).get("pod")
        if not pod:
            return False
        found = self.request("GET", f"{PODS.format(ns=self.placement.namespace)}/{pod}")
        return found is not None and found.get("status", {}).get("phase") == "Running"

    def stop(self, replica) -> None:
        """Nothing to do: the Deployment owns its pods (a scale-down or teardown removes them)."""

    def logs(self, replica, lines: int) -> str:
        pod = (replica.handle or {}).get("pod")
        return self.pod_log(pod, lines) if pod else ""

    def remove_orphans(self) -> list[str]:
        from endpoints.models import OnlineDeployment

        if not configured():
            return []
        placement = self.placement
        selector = objects.owned_selector(placement)
        found = []
        for kind, collection in COLLECTIONS.items():
            answer = self.request(
                "GET", collection.format(ns=placement.namespace), query={"labelSelector": selector}
            )
            found += [{**item, "kind": kind} for item in (answer or {}).get("items", [])]
        # Read after the listing: a deployment created in between is known by then.
        owned = set(OnlineDeployment.objects.filter(target=self.name).values_list("endpoint__name", "name"))
        removed = []
        for item in status.orphans(found, owned):
            path = f"{COLLECTIONS[item['kind']].format(ns=placement.namespace)}/{item['metadata']['name']}"
            self.request("DELETE", path)
            removed.append(f"{item['kind']}/{item['metadata']['name']}")
        return removed


def push(client, image: str, registry: str, log) -> str:
    """Tag `image` into `registry` and push it with the engine's credentials; the pushed reference."""
    import docker.errors

    repository, _, tag = image.rpartition(":")
    target = f"{registry}/{repository}"
    client.images.get(image).tag(target, tag)
    log(f"Pushing {target}:{tag}.")
    try:
        for line in client.images.push(target, tag, stream=True, decode=True):
            if line.get("error"):
                raise BuildFailed(f"Pushing {target}:{tag} failed: {line['error']}")
    except docker.errors.APIError as exc:
        raise BuildFailed(f"Pushing {target}:{tag} failed: {exc.explanation or exc}") from None
    return f"{target}:{tag}"


def _reason(body) -> str:
    try:
        return json.loads(body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        return ""
