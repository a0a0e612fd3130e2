from django.db import IntegrityError, transaction
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import data, optimize, profile, services
from registry.api.serializers import (
    DataAssetSerializer,
    DataVersionSerializer,
    DataVersionUpdateSerializer,
    EnvironmentVersionSerializer,
    EnvironmentVersionUpdateSerializer,
    ModelVersionSerializer,
    ModelVersionUpdateSerializer,
    RegisterDataSerializer,
    RegisteredModelSerializer,
    RegisterModelSerializer,
)
from registry.choices import ContentKindChoices
from registry.filtersets import (
    DataAssetFilterSet,
    DataVersionFilterSet,
    EnvironmentFilterSet,
    ModelVersionFilterSet,
    RegisteredModelFilterSet,
)
from registry.models import (
    DataAsset,
    DataVersion,
    Environment,
    EnvironmentVersion,
    ModelVersion,
    RegisteredModel,
)
from studio.api.errors import Conflict
from studio.api.parsers import FormParser, JSONParser, MultiPartParser
from studio.choices import AuditActionChoices
from studio.models import audit


def _refused(exc: services.RegistrationError):
    return Conflict(str(exc)) if exc.status == 409 else ValidationError(str(exc))


class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Registered models by name; POST registers a new version (multipart)."""

    serializer_class = RegisteredModelSerializer
    filterset_class = RegisteredModelFilterSet
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        # A list is paged first and summarized after (paginate_queryset); one model is summarized at once.
        models = RegisteredModel.objects.all()
        return models if self.action == "list" else models.with_summary()

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return None if page is None else RegisteredModel.objects.summarize(page)

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
        # The version existed with this very content: nothing was created.
        reused = getattr(version, "reused", False)
        return Response(body, status=status.HTTP_200_OK if reused else status.HTTP_201_CREATED)


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
        # Newest first without the default ordering's join on the model's name: they all have the same.
        return (
            ModelVersion.objects.filter(model__name=self.kwargs["model_name"])
            .select_related("model", "created_by")
            .prefetch_related("deployments__endpoint", "batch_deployments__endpoint")
            .order_by("-created_at", "-pk")
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


def job_accepted(job, body: dict, request) -> Response:
    """A 202 for a model job just started: `body`, the job, and its address in Location."""
    from endpoints.api.serializers import JobSerializer

    job.refresh_from_db()
    answer = {**body, "job": JobSerializer(job, context={"request": request}).data}
    response = Response(answer, status=status.HTTP_202_ACCEPTED)
    response["Location"] = answer["job"]["url"]
    return response


class ModelJobView(APIView):
    """A model version's job of one kind (Contributors start it): POST starts one with the settings
    (`accepts`) the runner's `start` takes, answered 202 with the job; GET answers the newest one."""

    action = ""  # the URL's last word, and the key naming the version in the 202's body
    kind = ""
    runner = None  # the module whose start(version, user, **accepted) records the job
    accepts: tuple[str, ...] = ()
    accepted_extra: dict = {}
    never_done = ""

    def post(self, request, model_name: str, version: str):
        body = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(body) - set(self.accepts))
        if unknown:
            article = "an" if self.action[0] in "aeiou" else "a"
            raise ValidationError({name: [f"is not {article} {self.action} setting."] for name in unknown})
        with transaction.atomic():
            found = find_version(ModelVersion.objects.select_related("model"), model_name, version)
            job = self.runner.start(found, request.user, **body)
        return job_accepted(job, {self.action: str(found), **self.accepted_extra}, request)

    @extend_schema(responses={200: dict})
    def get(self, request, model_name: str, version: str):
        from endpoints.api.serializers import JobSerializer
        from endpoints.jobs import latest_model_job

        found = find_version(ModelVersion.objects.select_related("model"), model_name, version)
        job = latest_model_job(found, self.kind)
        if job is None:
            raise NotFound(f"{found} has {self.never_done}; POST to this URL to start it.")
        return Response(JobSerializer(job, context={"request": request}).data)


class ModelVersionProfileView(ModelJobView):
    """Profile a model version (Contributors): a job that measures it under instance types' limits and
    recommends how to deploy it. GET answers the version's newest profile job."""

    action, kind, runner = "profile", "profile_model", profile
    accepts = ("instance_types", "duration", "target_rps", "request")
    never_done = "not been profiled"

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {
                    "instance_types": {"type": "array", "items": {"type": "string"}},
                    "duration": {"type": "string", "description": "per load level: 20s, 500ms, 1m"},
                    "target_rps": {"type": "number"},
                    "request": {"type": "object", "description": "a scoring request's body"},
                },
            }
        },
        responses={202: dict},
    )
    def post(self, request, model_name: str, version: str):
        return super().post(request, model_name, version)


class ModelVersionOptimizeView(ModelJobView):
    """Optimize a model version (Contributors): a job converts it to ONNX, checks that it answers as the
    original does, and registers it as the model's next version. GET answers the newest optimize job."""

    action, kind, runner = "optimize", "optimize_model", optimize
    accepts = ("to", "tolerance", "request")
    accepted_extra = {"to": "onnx"}
    never_done = "not been optimized"

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {
                    "to": {"enum": list(optimize.TARGETS)},
                    "tolerance": {
                        "type": "number",
                        "description": "how far a converted score may be from the original's: "
                        "|onnx - original| <= tolerance x max(1, |original|); labels must be equal",
                    },
                    "request": {"type": "object", "description": "a scoring request's body to check on"},
                },
            }
        },
        responses={202: dict},
    )
    def post(self, request, model_name: str, version: str):
        return super().post(request, model_name, version)


class DataAssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Data assets by name (`az ml data`); POST registers a new version: multipart with `file` or
    `archive`, or a `path` in the artifact store (multipart, form or JSON)."""

    serializer_class = DataAssetSerializer
    filterset_class = DataAssetFilterSet
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        return DataAsset.objects.order_by("name")

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return None if page is None else data.summarize_assets(page)

    def get_object(self):
        found = data.summarize_assets(DataAsset.objects.filter(name=self.kwargs["name"]))
        if not found:
            raise NotFound(f"There is no data asset named {self.kwargs['name']!r}.")
        return found[0]

    @extend_schema(request=RegisterDataSerializer, responses={201: DataVersionSerializer})
    def create(self, request):
        form = RegisterDataSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        spec = data.NewData(
            name=fields["name"],
            version=fields.get("version") or None,
            type=fields["type"],
            description=fields["description"],
            tags=fields["tags"],
            properties=fields["properties"],
        )
        if fields.get("path"):
            version = data.register_reference(spec, fields["path"], request.user)
        else:
            upload = fields.get("file") or fields["archive"]
            kind = ContentKindChoices.FILE if fields.get("file") else ContentKindChoices.FOLDER
            with upload.open("rb") as stream:
                version = data.register_upload(spec, stream, upload.name, kind, request.user)
        body = DataVersionSerializer(version, context={"request": request}).data
        # The version existed with this very content: nothing was created.
        reused = getattr(version, "reused", False)
        return Response(body, status=status.HTTP_200_OK if reused else status.HTTP_201_CREATED)


def find_data_version(queryset, name: str, version: str) -> DataVersion:
    """The data version (`latest` allowed), or a 404 that says whether the asset or the version is missing."""
    try:
        return queryset.resolve(name, version)
    except DataVersion.DoesNotExist:
        if not DataAsset.objects.filter(name=name).exists():
            raise NotFound(f"There is no data asset named {name!r}.") from None
        raise NotFound(f"Data asset {name!r} has no version {version!r}.") from None


class DataVersionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The versions of one data asset, newest first. `{version}` may be `latest`."""

    serializer_class = DataVersionSerializer
    filterset_class = DataVersionFilterSet
    lookup_field = "version"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return DataVersion.objects.none()
        return (
            DataVersion.objects.filter(asset__name=self.kwargs["data_name"])
            .select_related("asset", "created_by")
            .order_by("-created_at", "-pk")
        )

    def list(self, request, *args, **kwargs):
        if not DataAsset.objects.filter(name=kwargs["data_name"]).exists():
            raise NotFound(f"There is no data asset named {kwargs['data_name']!r}.")
        return super().list(request, *args, **kwargs)

    def get_object(self):
        found = find_data_version(self.get_queryset(), self.kwargs["data_name"], self.kwargs["version"])
        self.check_object_permissions(self.request, found)
        return found

    @extend_schema(request=DataVersionUpdateSerializer, responses=DataVersionSerializer)
    def partial_update(self, request, *args, **kwargs):
        version = self.get_object()
        changes = DataVersionUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        with transaction.atomic():
            data.update_version(version, request.user, **changes.validated_data)
        return Response(self.get_serializer(version).data)

    def destroy(self, request, *args, **kwargs):
        data.delete_version(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={(200, "application/zip"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        version = self.get_object()
        audit(request.user, AuditActionChoices.DOWNLOADED, "data version", str(version))
        response = StreamingHttpResponse(data.download_stream(version), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{version.asset.name}-{version.version}.zip"'
        response["X-Content-Digest"] = f"sha256:{version.digest}"
        return response

    @extend_schema(
        parameters=[OpenApiParameter("path", str, description="A CSV or parquet file of the version")],
        responses={200: dict},
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, *args, **kwargs):
        """The first rows of one CSV or parquet file of the version: {path, columns, rows}."""
        version = self.get_object()
        path = request.query_params.get("path") or ""
        if not path:
            tables = [item["path"] for item in version.files if data.previewable(item["path"])]
            if not tables:
                raise ValidationError({"path": ["Say which file to preview: ?path=<a CSV or parquet file>."]})
            path = tables[0]
        return Response(data.preview(version, path))
