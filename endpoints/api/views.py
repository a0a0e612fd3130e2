from django.db import transaction
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import MethodNotAllowed, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints import jobs, packaging, reconcile, services, specs, targets
from endpoints.api import batch
from endpoints.api.serializers import (
    DeletionAcceptedSerializer,
    JobSerializer,
    OnlineDeploymentSerializer,
    OnlineEndpointSerializer,
    PackageAcceptedSerializer,
)
from endpoints.choices import TargetChoices
from endpoints.code import upload_code
from endpoints.filtersets import OnlineEndpointFilterSet
from endpoints.models import BatchJob, Job, OnlineDeployment, OnlineEndpoint
from endpoints.targets.base import TargetUnavailable
from registry.api.views import find_version
from registry.models import ModelVersion
from studio.api.errors import ServiceUnavailable
from studio.api.parsers import JSONParser, MultiPartParser, YAMLParser
from studio.choices import AuditActionChoices
from studio.models import audit


def _endpoint(name: str) -> OnlineEndpoint:
    try:
        return OnlineEndpoint.objects.get(name=name)
    except OnlineEndpoint.DoesNotExist:
        raise NotFound(f"There is no online endpoint named {name!r}.") from None


def _accepted(job: Job, body: dict, request) -> Response:
    job.refresh_from_db()
    body = {**body, "job": JobSerializer(job, context={"request": request}).data}
    response = Response(body, status=status.HTTP_202_ACCEPTED)
    response["Location"] = body["job"]["url"]
    return response


class OnlineEndpointViewSet(viewsets.GenericViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    # The list page's FilterSet, so `?tag=`, `?name=`, `?q=` filter alike in both; a bad filter is a 400.
    filterset_class = OnlineEndpointFilterSet
    # Replicas too: an endpoint's health is read from its deployments' replicas.
    queryset = OnlineEndpoint.objects.prefetch_related("deployments__replicas")
    serializer_class = OnlineEndpointSerializer
    lookup_field = "name"
    parser_classes = [JSONParser, YAMLParser]

    def get_object(self):
        return _endpoint(self.kwargs["name"])

    @extend_schema(request=dict, responses={201: OnlineEndpointSerializer})
    def create(self, request):
        values, warnings = specs.parse_endpoint(request.data)
        endpoint = services.create_endpoint(values, request.user)
        body = {**self.get_serializer(endpoint).data, "warnings": warnings}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses=OnlineEndpointSerializer)
    def partial_update(self, request, name=None):
        values, warnings = specs.parse_endpoint(request.data, partial=True)
        endpoint = services.update_endpoint(self.get_object(), values, request.user)
        return Response({**self.get_serializer(endpoint).data, "warnings": warnings})

    @extend_schema(responses={202: DeletionAcceptedSerializer})
    def destroy(self, request, name=None):
        endpoint = self.get_object()
        job = services.delete_endpoint(endpoint, request.user)
        return _accepted(job, {"name": endpoint.name}, request)

    @extend_schema(request=None, responses=dict)
    def credentials(self, request, name=None):
        return Response(services.get_credentials(self.get_object(), request.user))

    @extend_schema(request=dict, responses={204: None})
    def regenerate_keys(self, request, name=None):
        body = request.data if isinstance(request.data, dict) else {}
        services.regenerate_key(self.get_object(), body.get("keyType", ""), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OnlineDeploymentViewSet(viewsets.GenericViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = OnlineDeploymentSerializer
    lookup_field = "name"
    parser_classes = [JSONParser, YAMLParser]
    pagination_class = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return OnlineDeployment.objects.none()
        endpoint = _endpoint(self.kwargs["endpoint_name"])
        return endpoint.deployments.select_related("endpoint", "model_version__model", "environment_version")

    def get_object(self):
        return get_object_or_404(self.get_queryset(), name=self.kwargs["name"])

    def _spec(self, data, partial: bool) -> specs.DeploymentSpec:
        spec = specs.parse_deployment(data, partial=partial)
        # A new deployment without `target:` is a local one, which this installation may not allow.
        target = spec.values.get("target") or (None if partial else TargetChoices.LOCAL)
        if target:
            try:
                targets.check_usable(target)
            except targets.TargetUnavailable as exc:
                raise ValidationError({"target": [str(exc)]}) from None
        return spec

    @extend_schema(
        request=dict,
        parameters=[
            OpenApiParameter("all_traffic", bool, description="send 100% of traffic to it once created")
        ],
        responses={202: OnlineDeploymentSerializer},
    )
    def create(self, request, endpoint_name=None):
        endpoint = _endpoint(endpoint_name)
        name = request.data.get("name") if isinstance(request.data, dict) else None
        if not name:
            raise ValidationError({"name": ["is required."]})
        all_traffic = str(request.query_params.get("all_traffic", "")).lower() in ("1", "true", "yes")
        try:
            job = services.create_deployment(
                endpoint, name, self._spec(request.data, partial=False), request.user, all_traffic
            )
        except TargetUnavailable as exc:
            raise ValidationError({"target": [str(exc)]}) from None
        deployment = OnlineDeployment.objects.get(pk=job.deployment_id)
        return _accepted(job, self.get_serializer(deployment).data, request)

    @extend_schema(request=dict, responses={200: OnlineDeploymentSerializer, 202: OnlineDeploymentSerializer})
    def partial_update(self, request, endpoint_name=None, name=None):
        deployment = self.get_object()
        data = request.data
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if key not in ("name", "endpoint_name")}
        job = services.update_deployment(deployment, self._spec(data, partial=True), request.user)
        deployment.refresh_from_db()
        body = self.get_serializer(deployment).data
        return _accepted(job, body, request) if job else Response(body)

    @extend_schema(responses={202: DeletionAcceptedSerializer})
    def destroy(self, request, endpoint_name=None, name=None):
        deployment = self.get_object()
        job = services.delete_deployment(deployment, request.user)
        return _accepted(job, {"name": deployment.name}, request)

    @extend_schema(parameters=[OpenApiParameter("lines", int)], responses={200: dict})
    def logs(self, request, endpoint_name=None, name=None):
        deployment = self.get_object()
        try:
            lines = max(1, min(int(request.query_params.get("lines", 100)), 10_000))
        except ValueError:
            raise ValidationError({"lines": ["must be a whole number."]}) from None
        try:
            replicas = reconcile.replica_logs(deployment, lines)
        except TargetUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
        return Response({"deployment": deployment.name, "replicas": replicas})


class JobViewSet(viewsets.GenericViewSet, mixins.RetrieveModelMixin):
    queryset = Job.objects.all()
    serializer_class = JobSerializer
    # A batch job is read with its endpoint's key or token too (endpoints.api.batch).
    authentication_classes = batch.AUTHENTICATION
    permission_classes = [batch.BatchCredentialPermission]
    credential_methods = ("GET",)

    @extend_schema(responses=batch.ANY_JOB)
    def retrieve(self, request, pk=None):
        """A job of either kind: an online deployment's, or a batch job (its own shape, `type: batch`)."""
        found = BatchJob.objects.select_related("created_by").filter(pk=pk).first()
        if found is not None:
            return Response(batch.BatchJobSerializer(found, context={"request": request}).data)
        return super().retrieve(request, pk=pk)

    @extend_schema(responses={(200, "application/gzip"): bytes})
    def download(self, request, pk=None):
        """The build context a succeeded package job wrote."""
        source, filename = packaging.download(self.get_object())
        audit(request.user, AuditActionChoices.DOWNLOADED, "build context", filename)
        return FileResponse(source, as_attachment=True, filename=filename, content_type="application/gzip")


class CodeUploadView(APIView):
    """Upload scoring code once (an archive of its folder); it is kept by content digest."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"archive": {"type": "string", "format": "binary"}},
            }
        },
        responses={201: dict, 200: dict},
    )
    def post(self, request):
        upload = request.data.get("archive")
        if upload is None:
            raise ValidationError({"archive": ["send the code folder as a .zip or .tar.gz archive."]})
        with transaction.atomic():
            snapshot, created = upload_code(upload, request.user)
        body = {
            "id": str(snapshot),
            "digest": snapshot.digest,
            "files": snapshot.files,
            "size": snapshot.size,
        }
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PackageView(APIView):
    """Start a package job for a model version or a deployment (Contributors): a build context to `docker
    build` anywhere, downloaded from the job once it succeeds, or an image built on the workers' engine."""

    @extend_schema(
        request={"application/json": {"type": "object", "properties": {"mode": {"enum": packaging.MODES}}}},
        parameters=[
            OpenApiParameter(
                "mode",
                str,
                enum=list(packaging.MODES),
                description="offline (default): every wheel is in the context, so the image builds with "
                "no network; online: pinned requirements only, fetched by pip at build time; image: build "
                "the image on the Docker engine of Studio's workers. Also accepted in the body.",
            )
        ],
        responses={202: PackageAcceptedSerializer},
    )
    def post(self, request, model_name=None, version=None, endpoint_name=None, name=None):
        body = request.data if isinstance(request.data, dict) else {}
        mode = str(body.get("mode") or request.query_params.get("mode") or "offline")
        if mode not in packaging.MODES:
            raise ValidationError({"mode": [f"must be one of {', '.join(packaging.MODES)}."]})
        try:
            with transaction.atomic():
                if endpoint_name is not None:
                    deployment = _deployment(endpoint_name, name)
                    packaging.check_deployment(deployment)
                    label = str(deployment)
                    job = jobs.start_package_job(label, mode, request.user, deployment=deployment)
                else:
                    found = find_version(ModelVersion.objects.select_related("model"), model_name, version)
                    packaging.check_model_version(found)
                    label = f"{found.model.name}:{found.version}"
                    job = jobs.start_package_job(label, mode, request.user, model_version_id=found.pk)
                audit(request.user, AuditActionChoices.CREATED, "package job", label, mode=mode)
        except packaging.PackagingError as exc:
            raise ValidationError(str(exc)) from None
        return _accepted(job, {"package": label, "mode": mode}, request)

    @extend_schema(exclude=True)
    def get(self, request, **kwargs):
        raise MethodNotAllowed(
            "GET",
            "Packaging runs as a job: POST to this URL (Contributor role), then download the build context "
            "from the job's download URL once it has succeeded (studio online-deployment package does both).",
        )


def _deployment(endpoint_name: str, name: str) -> OnlineDeployment:
    endpoint = _endpoint(endpoint_name)
    try:
        related = ("endpoint", "model_version__model", "environment_version")
        return endpoint.deployments.select_related(*related).get(name=name)
    except OnlineDeployment.DoesNotExist:
        raise NotFound(f"Endpoint {endpoint_name!r} has no deployment {name!r}.") from None
