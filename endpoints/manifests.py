"""What the kubernetes target applies for a deployment, for people and their own tools to read.

`GET .../deployments/{d}/manifests` renders a deployment that exists; `POST .../manifests` renders a
deployment spec (a YAML file's body) without recording anything, so a team can review a `target:
kubernetes` deployment, or apply it with its own tools, before or instead of creating it. Neither needs a
cluster. Both give the objects `endpoints.targets.kubernetes_objects` makes, nothing else.

The image is named by content (`endpoints.packaging`): the tag is the digest of the model, code,
requirements, base image and serving code. Its exact value needs the base image's identity, which only a
Docker engine can tell; without one the objects name the repository with the tag `unbuilt` and a warning
says so.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.conf import settings

from endpoints import packaging
from endpoints.models import OnlineDeployment, OnlineEndpoint
from endpoints.specs import DeploymentSpec
from endpoints.targets import kubernetes_objects
from endpoints.targets.base import BuildFailed
from endpoints.targets.docker import installation_id
from endpoints.targets.instance_types import UnknownInstanceType
from studio.errors import Invalid

UNBUILT_TAG = "unbuilt"


def placement() -> kubernetes_objects.Placement:
    return kubernetes_objects.Placement(
        namespace=settings.STUDIO_K8S_NAMESPACE,
        installation=installation_id(),
        service_type=settings.STUDIO_K8S_SERVICE_TYPE,
        image_pull_secrets=tuple(settings.STUDIO_K8S_IMAGE_PULL_SECRETS),
    )


def _package_spec(deployment: OnlineDeployment) -> packaging.PackageSpec:
    """What the image holds; the folders are never read (only digests name the image)."""
    code_dir = Path(settings.STUDIO_HOME) if deployment.code_digest else None
    try:
        return packaging.for_deployment(deployment, Path(settings.STUDIO_HOME), code_dir)
    except BuildFailed as exc:  # requirements Studio does not install
        raise Invalid(str(exc), "environment") from None


def image_reference(spec: packaging.PackageSpec) -> tuple[str, list[str]]:
    """The image the deployment's pods run, in the registry the cluster pulls from."""
    warnings: list[str] = []
    client = packaging.optional_engine()
    base_image = settings.STUDIO_DOCKER_BASE_IMAGE
    identity = None
    if client is not None:
        with contextlib.suppress(Exception):  # any answer but the image means: not known here
            identity = client.images.get(base_image).id
    if identity is None:
        tag = f"{spec.repository}:{UNBUILT_TAG}"
        warnings.append(
            f"The image tag is the digest of its content, known once the base image {base_image} is on a "
            f"Docker engine Studio reaches; `{UNBUILT_TAG}` stands in for it here."
        )
    else:
        target = packaging.platform_of(base_image, client)
        tag = packaging.image_tag(spec, packaging.content_key(spec, identity, target, offline=True))
    registry = settings.STUDIO_K8S_IMAGE_REGISTRY
    if not registry:
        warnings.append(
            "STUDIO_K8S_IMAGE_REGISTRY is not set: the image is named without a registry, so the cluster "
            "must have it already."
        )
    return (f"{registry}/{tag}" if registry else tag), warnings


def _applied_image(deployment: OnlineDeployment) -> str:
    """The image the cluster runs for a kubernetes deployment that converged (kept on its replica rows)."""
    if deployment.pk is None or deployment.target != "kubernetes":
        return ""
    for replica in deployment.replicas.filter(revision=deployment.revision):
        if image := (replica.handle or {}).get("image"):
            return image
    return ""


def render(deployment: OnlineDeployment) -> kubernetes_objects.Rendered:
    """The objects of `deployment`, saved or not; Invalid if its instance type is not a known size or
    its requirements are refused."""
    spec = _package_spec(deployment)
    applied = _applied_image(deployment)
    image, warnings = (applied, []) if applied else image_reference(spec)
    code_dir = str(spec.image_code_dir) if spec.image_code_dir else None
    try:
        rendered = kubernetes_objects.render(
            deployment, image, placement(), model_dir=str(spec.image_model_dir), code_dir=code_dir
        )
    except UnknownInstanceType as exc:
        raise Invalid(str(exc), "instance_type") from None
    if deployment.target != "kubernetes":
        warnings.append(
            f"This deployment runs on the {deployment.target} target: these are the objects it would have "
            "on kubernetes."
        )
    rendered.warnings[:0] = warnings
    return rendered


def render_spec(endpoint_name: str, name: str, spec: DeploymentSpec) -> kubernetes_objects.Rendered:
    """The objects a deployment made from `spec` would have, recording nothing. The endpoint need not
    exist yet."""
    endpoint = OnlineEndpoint.objects.filter(name=endpoint_name).first() or OnlineEndpoint(name=endpoint_name)
    values = {key: value for key, value in spec.values.items() if key != "target"}
    deployment = OnlineDeployment(endpoint=endpoint, name=name, target="kubernetes", **values)
    rendered = render(deployment)
    rendered.warnings[:0] = spec.warnings
    return rendered


def as_list(rendered: kubernetes_objects.Rendered) -> dict:
    """The objects as a Kubernetes `List`, which kubectl applies as it is."""
    return {"apiVersion": "v1", "kind": "List", "items": rendered.objects}
