from django.db import IntegrityError, transaction
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from registry import services
from registry.api.serializers import (
    EnvironmentVersionSerializer,
    EnvironmentVersionUpdateSerializer,
    ModelVersionSerializer,
    ModelVersionUpdateSerializer,
    RegisteredModelSerializer,
    RegisterModelSerializer,
)
from registry.choices import ContentKindChoices
from registry.filtersets import EnvironmentFilterSet, ModelVersionFilterSet, RegisteredModelFilterSet
from registry.models import Environment, EnvironmentVersion, ModelVersion, RegisteredModel
from studio.api.errors import Conflict
from studio.api.parsers import FormParser, JSONParser, MultiPartParser
from studio.choices import AuditActionChoices
from studio.models import audit


def _refused(exc: services.RegistrationError):
    return Conflict(str(exc)) if exc.status == 409 else ValidationError(str(exc))


class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Registered models by name; POST registers a new version (multipart)."""

    queryset = RegisteredModel.objects.prefetch_related("versions")
    serializer_class = RegisteredModelSerializer
    filterset_class = RegisteredModelFilterSet
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=RegisterModelSerializer, responses={201: ModelVersionSerializer})
    def create(self, request):
        form = RegisterModelSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        upload = data.get("file") or data["archive"]
        kind = ContentKindChoices.FILE if data.get("file") else ContentKindChoices.FOLDER
        spec = services.NewVersion(
            name=data["name"],
            version=data.get("version") or None,
            type=data["type"],
            description=data["description"],
            tags=data["tags"],
            properties=data["properties"],
            source=data["source"],
        )
        try:
            with upload.open("rb") as stream:
                version = services.register_version(spec, stream, upload.name, kind, request.user)
        except services.RegistrationError as exc:
            raise _refused(exc) from None
        body = ModelVersionSerializer(version, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)


def find_version(queryset, name: str, version: str) -> ModelVersion:
    """The version (`latest` allowed) or a 404 that says whether the model or the version is missing."""
    try:
        return queryset.resolve(name, version)
    except ModelVersion.DoesNotExist:
        if not RegisteredModel.objects.filter(name=name).exists():
            raise NotFound(f"There is no model named {name!r}.") from None
        raise NotFound(f"Model {name!r} has no version {version!r}.") from None


class ModelVersionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The versions of one model. `{version}` may be `latest`."""

    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    lookup_field = "version"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        return ModelVersion.objects.filter(model__name=self.kwargs["model_name"]).select_related(
            "model", "created_by"
        )

    def list(self, request, *args, **kwargs):
        if not RegisteredModel.objects.filter(name=kwargs["model_name"]).exists():
            raise NotFound(f"There is no model named {kwargs['model_name']!r}.")
        return super().list(request, *args, **kwargs)

    def get_object(self):
        found = find_version(self.get_queryset(), self.kwargs["model_name"], self.kwargs["version"])
        self.check_object_permissions(self.request, found)
        return found

    @extend_schema(request=ModelVersionUpdateSerializer, responses=ModelVersionSerializer)
    def partial_update(self, request, *args, **kwargs):
        version = self.get_object()
        changes = ModelVersionUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        with transaction.atomic():
            services.update_version(version, request.user, **changes.validated_data)
        return Response(self.get_serializer(version).data)

    def destroy(self, request, *args, **kwargs):
        version = self.get_object()
        try:
            services.delete_version(version, request.user)
        except services.VersionInUse as exc:
            raise Conflict({"detail": str(exc), "deployments": exc.users}) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={(200, "application/zip"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        version = self.get_object()
        audit(request.user, AuditActionChoices.DOWNLOADED, "model version", str(version))
        response = StreamingHttpResponse(services.download_stream(version), content_type="application/zip")
        filename = f"{version.model.name}-{version.version}.zip"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-Digest"] = f"sha256:{version.digest}"
        return response


class EnvironmentViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Environment versions, newest first; POST creates a version (auto-numbered unless given)."""

    queryset = EnvironmentVersion.objects.select_related("environment", "created_by")
    serializer_class = EnvironmentVersionSerializer
    filterset_class = None

    def get_queryset(self):
        queryset = super().get_queryset()
        names = EnvironmentFilterSet(self.request.query_params, queryset=Environment.objects.all())
        if not names.is_valid():
            raise ValidationError(names.errors)
        return queryset.filter(environment__in=names.qs)

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            with transaction.atomic():
                environment, _ = Environment.objects.get_or_create(name=data.pop("name"))
                data["version"] = data.get("version") or environment.next_version()
                created = EnvironmentVersion.objects.create(
                    environment=environment, created_by=request.user, **data
                )
                audit(request.user, AuditActionChoices.CREATED, "environment", str(created))
        except IntegrityError:
            raise Conflict(
                f"Version {data['version']} of environment {environment.name!r} exists already; "
                "versions are immutable."
            ) from None
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)


class EnvironmentVersionViewSet(mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = EnvironmentVersionSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return EnvironmentVersion.objects.none()
        return EnvironmentVersion.objects.filter(environment__name=self.kwargs["env_name"])

    def get_object(self):
        queryset = self.get_queryset()
        version = self.kwargs["version"]
        found = (
            queryset.filter(archived=False).order_by("-created_at", "-pk").first()
            if version == "latest"
            else queryset.filter(version=version).first()
        )
        if found is None:
            raise NotFound(f"Environment {self.kwargs['env_name']!r} has no version {version!r}.")
        return found

    @extend_schema(request=EnvironmentVersionUpdateSerializer, responses=EnvironmentVersionSerializer)
    def partial_update(self, request, *args, **kwargs):
        found = self.get_object()
        changes = EnvironmentVersionUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        for field, value in changes.validated_data.items():
            setattr(found, field, value)
        found.save()
        audit(
            request.user,
            AuditActionChoices.UPDATED,
            "environment",
            str(found),
            fields=list(changes.validated_data),
        )
        return Response(self.get_serializer(found).data)

    def perform_destroy(self, instance):
        label = str(instance)
        environment = instance.environment
        instance.delete()
        if not environment.versions.exists():
            environment.delete()
        audit(self.request.user, AuditActionChoices.DELETED, "environment", label)
