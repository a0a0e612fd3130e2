"""The objects the kubernetes target applies for a deployment (endpoints.manifests), as a Kubernetes
`List` that `kubectl apply -f` takes as it is. What Studio warns about travels in the `Studio-Warnings`
header (a JSON array), so the body stays a clean List."""

import json

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints import manifests, specs
from endpoints.api.views import _deployment
from studio.api.parsers import JSONParser, YAMLParser
from studio.choices import RoleChoices

WARNINGS_HEADER = "Studio-Warnings"


def _answer(rendered) -> Response:
    response = Response(manifests.as_list(rendered))
    response[WARNINGS_HEADER] = json.dumps(rendered.warnings)  # ASCII: json escapes the rest
    return response


class DeploymentManifestsView(APIView):
    """Reading them changes nothing, so Readers may: they show what the deployment's API shows."""

    required_role = RoleChoices.READER

    @extend_schema(responses={200: dict}, summary="The Kubernetes objects of a deployment")
    def get(self, request, endpoint_name=None, name=None):
        return _answer(manifests.render(_deployment(endpoint_name, name)))


class SpecManifestsView(APIView):
    """Rendering a spec records nothing, so Readers may."""

    required_role = RoleChoices.READER
    parser_classes = [JSONParser, YAMLParser]

    @extend_schema(
        request=dict,
        responses={200: dict},
        summary="The Kubernetes objects a deployment spec would have, recording nothing",
    )
    def post(self, request, endpoint_name=None):
        data = request.data if isinstance(request.data, dict) else None
        if data is None:
            raise ValidationError("Send a deployment spec: the fields of an online deployment's YAML.")
        name = data.get("name")
        if not name or not isinstance(name, str):
            raise ValidationError({"name": ["is required."]})
        target = data.get("target", "kubernetes")
        if target != "kubernetes":
            raise ValidationError(
                {"target": [f"manifests are the kubernetes target's objects; this spec is for {target!r}."]}
            )
        spec = specs.parse_deployment({k: v for k, v in data.items() if k != "target"}, partial=False)
        return _answer(manifests.render_spec(endpoint_name, name, spec))
