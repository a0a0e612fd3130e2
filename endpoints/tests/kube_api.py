"""A Kubernetes API server's answers, for the kubernetes target's tests: no cluster can run here.

It serves the few routes the target uses, over real HTTP on loopback, from objects kept in memory: server-
side apply (PATCH, application/apply-patch+yaml) stores the object and bumps its generation when its spec
changes; GET, LIST with label selectors, DELETE; a watch that answers one event; pod logs. Its
"controllers" are the test's: `rolled_out` gives a Deployment ready pods of its template, `crashing` pods
that crash, as a cluster would report them (shapes recorded from a real API server). Every request is kept
in `requests` for the test to check what the target asked.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

COLLECTION_KINDS = {
    "secrets": "Secret",
    "deployments": "Deployment",
    "services": "Service",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "pods": "Pod",
}


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> object
        self.requests: list[dict] = []
        self.logs: dict[str, str] = {}
        # Set: every applied Deployment gets ready pods of its template at once, as a healthy cluster would.
        self.auto_rollout = False
        self.version = 100
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body=None, content_type: str = "application/json") -> None:
                data = (
                    b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with api.lock:
                    api.requests.append(
                        {"method": method, "path": url.path, "query": query, "body": body,
                         "content_type": self.headers.get("Content-Type", "")}
                    )  # fmt: skip
                    status, answer, kind = api.route(method, url.path, query, body)
                self._answer(status, answer, kind)

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                self._handle("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, folder: Path) -> Path:
        path = folder / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "studio", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "studio"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # --- the API ----------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict, body):
        parts = path.strip("/").split("/")
        if parts[-1] == "log":  # /api/v1/namespaces/{ns}/pods/{name}/log
            return 200, self.logs.get(parts[-2], "").encode(), "text/plain"
        index = next(i for i, part in enumerate(parts) if part == "namespaces")
        namespace, collection = parts[index + 1], parts[index + 2]
        kind = COLLECTION_KINDS[collection]
        name = parts[index + 3] if len(parts) > index + 3 else None
        if name is None:
            items = [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and ns == namespace
            ]
            items = [
                item
                for item in items
                if _selected(item, query.get("labelSelector", ""), query.get("fieldSelector", ""))
            ]
            if query.get("watch"):
                event = (
                    {"type": "MODIFIED", "object": items[0]} if items else {"type": "BOOKMARK", "object": {}}
                )
                return 200, (json.dumps(event) + "\n").encode(), "application/json"
            return 200, {"kind": f"{kind}List", "apiVersion": "v1", "items": items}, "application/json"
        key = (kind, namespace, name)
        if method == "GET":
            found = self.objects.get(key)
            return (
                (200, copy.deepcopy(found), "application/json")
                if found
                else (404, _not_found(kind, name), "application/json")
            )
        if method == "DELETE":
            found = self.objects.pop(key, None)
            if kind == "Deployment":
                for pod_key in [k for k, o in self.objects.items() if k[0] == "Pod" and _owned_by(o, name)]:
                    del self.objects[pod_key]
            return (
                (200, {"status": "Success"}, "application/json")
                if found
                else (404, _not_found(kind, name), "application/json")
            )
        # Server-side apply.
        assert query.get("fieldManager") and query.get("force") == "true", query
        previous = self.objects.get(key)
        self.version += 1
        stored = copy.deepcopy(body)
        generation = (previous or {}).get("metadata", {}).get("generation", 0)
        if previous is None or previous.get("spec") != body.get("spec"):
            generation += 1
        stored["metadata"].update(
            {"generation": generation, "resourceVersion": str(self.version), "uid": f"uid-{name}"}
        )
        if previous is not None and "status" in previous:
            stored["status"] = previous["status"]
        self.objects[key] = stored
        if kind == "Deployment" and self.auto_rollout:
            self._roll_out(namespace, name, ready=True, waiting=None)
        return 200, copy.deepcopy(self.objects[key]), "application/json"

    # --- the test's controllers -------------------------------------------------------------------

    def deployment(self, namespace: str, name: str) -> dict:
        return self.objects[("Deployment", namespace, name)]

    def rolled_out(
        self, namespace: str, name: str, *, ready: bool = True, waiting: str | None = None
    ) -> list[str]:
        """Replace the Deployment's pods by pods of its current template, as its controller would, ready
        (or stuck `waiting` for that reason), and set its status to match."""
        with self.lock:
            return self._roll_out(namespace, name, ready=ready, waiting=waiting)

    def _roll_out(self, namespace: str, name: str, *, ready: bool, waiting: str | None) -> list[str]:
        deployment = self.deployment(namespace, name)
        for key in [k for k, o in self.objects.items() if k[0] == "Pod" and _owned_by(o, name)]:
            del self.objects[key]
        count = deployment["spec"].get("replicas", 1)
        template = deployment["spec"]["template"]
        names = []
        for number in range(count):
            pod_name = f"{name}-{deployment['metadata']['generation']}-{number}"
            self.objects["Pod", namespace, pod_name] = _pod(
                pod_name, namespace, name, template, number, ready, waiting
            )
            names.append(pod_name)
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": count,
            "updatedReplicas": count,
            "readyReplicas": count if ready else 0,
            "availableReplicas": count if ready else 0,
        }
        self.version += 1
        deployment["metadata"]["resourceVersion"] = str(self.version)
        return names

    def applied(self) -> list[tuple[str, str]]:
        """(kind, name) of each server-side apply, in order."""
        kinds = {f"/{c}/": k for c, k in COLLECTION_KINDS.items()}
        found = []
        for request in self.requests:
            if request["method"] == "PATCH":
                kind = next(k for c, k in kinds.items() if c in request["path"] + "/")
                found.append((kind, request["path"].rsplit("/", 1)[1]))
        return found


def _pod(name, namespace, owner, template, number, ready, waiting) -> dict:
    container = template["spec"]["containers"][0]
    state = (
        {"waiting": {"reason": waiting, "message": "back-off 40s restarting failed container"}}
        if waiting
        else {"running": {"startedAt": "2026-11-30T10:00:00Z"}}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(template["metadata"]["labels"]),
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{owner}-7d9f8c6b5d"}],
        },
        "spec": {
            "containers": [
                {"name": container["name"], "image": container["image"], "ports": container["ports"]}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.244.0.{10 + number}",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "ready": ready,
                    "restartCount": 3 if waiting else 0,
                    "state": state,
                    "image": container["image"],
                }
            ],  # fmt: skip
        },
    }


def _owned_by(pod: dict, deployment: str) -> bool:
    return any(ref["name"].startswith(f"{deployment}-") for ref in pod["metadata"].get("ownerReferences", []))


def _selected(item: dict, labels: str, fields: str) -> bool:
    have = item.get("metadata", {}).get("labels") or {}
    for term in filter(None, labels.split(",")):
        key, _, value = term.partition("=")
        if have.get(key) != value:
            return False
    for term in filter(None, fields.split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and item["metadata"]["name"] != value:
            return False
    return True


def _not_found(kind: str, name: str) -> dict:
    return {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": f'{kind.lower()}s "{name}" not found'}  # fmt: skip
