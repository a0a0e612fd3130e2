"""Batch endpoints, their deployments and their jobs over REST, in Azure ML's shapes.

Besides personal access tokens and the session, invoking a batch endpoint and reading that endpoint's own
jobs accept the endpoint's key (auth_mode key) or a token issued for it (aml_token), as scoring an online
endpoint does. A batch endpoint's token names it in an audience of its own, so it never opens an online
endpoint of the same name, nor the other way round. The views orchestrate: the rules live in
endpoints.batch_services, the YAML in endpoints.batch_specs, the running in endpoints.batch_execution.
"""

from types import SimpleNamespace

from django.contrib.auth.models import AnonymousUser
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints import batch_execution, batch_services, batch_specs
from endpoints.api.serializers import JobSerializer
from endpoints.choices import BatchJobStateChoices, MiniBatchStateChoices
from endpoints.filtersets import BatchEndpointFilterSet
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob, MiniBatch
from registry.services import artifact_store, download_stream
from studio.api.parsers import JSONParser, MultiPartParser, YAMLParser
from studio.authentication import AccessTokenAuthentication
from studio.roles import RolePermission

TRUE = ("1", "true", "yes")
MISSING_INPUT = (
    'is required: {"type": "uri_folder", "path": "azureml:name@latest"} (a data asset), an s3:// location '
    "inside the artifact store, or the files as a multipart `archive` or `file`."
)


class BatchEndpointCredential:
    """`request.auth` of a request that presented a batch endpoint's own key or token."""

    def __init__(self, endpoint: BatchEndpoint):
        self.endpoint = endpoint


def _endpoint_in(request) -> BatchEndpoint | None:
    """The batch endpoint a request's URL is about: named, or the endpoint of the job named."""
    kwargs = (getattr(request, "parser_context", None) or {}).get("kwargs") or {}
    if "endpoint_name" in kwargs:
        return BatchEndpoint.objects.filter(name=kwargs["endpoint_name"]).first()
    if "pk" in kwargs:
        job = BatchJob.objects.select_related("endpoint").filter(pk=kwargs["pk"]).first()
        return job.endpoint if job is not None else None
    return None


class BatchEndpointAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key | token>` of the batch endpoint in the URL. Anything else is left to
    the next authentication (personal access tokens), which answers 401 for what nobody accepts."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if len(header) != 2 or header[0].decode(errors="replace").lower() != self.keyword.lower():
            return None
        endpoint = _endpoint_in(request)
        if endpoint is None or not batch_services.accepts(endpoint, header[1].decode(errors="replace")):
            return None
        return AnonymousUser(), BatchEndpointCredential(endpoint)

    def authenticate_header(self, request) -> str:
        return self.keyword


class BatchEndpointCredentialScheme(OpenApiAuthenticationExtension):
    target_class = BatchEndpointAuthentication
    name = "batchEndpointCredential"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The batch endpoint's key (auth_mode key) or a token from its credentials "
            "(auth_mode aml_token): `Authorization: Bearer <key or token>`.",
        }


AUTHENTICATION = [BatchEndpointAuthentication, AccessTokenAuthentication, SessionAuthentication]


class BatchCredentialPermission(RolePermission):
    """A batch endpoint's credential may do what the view lists in `credential_methods` (invoke, read its
    jobs); people are checked by role as everywhere else."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, BatchEndpointCredential):
            return request.method in getattr(view, "credential_methods", ())
        return super().has_permission(request, view)


def _endpoint(name: str) -> BatchEndpoint:
    try:
        return BatchEndpoint.objects.get(name=name)
    except BatchEndpoint.DoesNotExist:
        raise NotFound(
            f"There is no batch endpoint named {name!r}; `studio batch-endpoint list` shows them."
        ) from None


def _batch_job(pk) -> BatchJob:
    try:
        return BatchJob.objects.select_related("created_by").get(pk=pk)
    except BatchJob.DoesNotExist:
        raise NotFound(f"There is no batch job {str(pk)!r}.") from None


def _flag(request, name: str) -> bool:
    return str(request.query_params.get(name, "")).lower() in TRUE


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationError("The body must be a mapping of fields (JSON or YAML).")
    return request.data


# Serializers


class BatchEndpointSerializer(serializers.ModelSerializer):
    defaults = serializers.SerializerMethodField()
    scoring_uri = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = BatchEndpoint
        fields = [
            "name",
            "description",
            "tags",
            "auth_mode",
            "defaults",
            "provisioning_state",
            "scoring_uri",
            "deployments",
            "created_at",
        ]
        read_only_fields = fields

    def get_defaults(self, endpoint) -> dict:
        return {"deployment_name": endpoint.default_deployment or None}

    def get_scoring_uri(self, endpoint) -> str:
        path = reverse("endpoints-api:batchendpoint-jobs", args=[endpoint.name])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_deployments(self, endpoint) -> list[str]:
        return [deployment.name for deployment in endpoint.deployments.all()]


class BatchDeploymentSerializer(serializers.ModelSerializer):
    endpoint_name = serializers.CharField(source="endpoint.name")
    type = serializers.SerializerMethodField()
    model = serializers.CharField(source="model_version.asset_id")
    code_configuration = serializers.SerializerMethodField()
    environment = serializers.SerializerMethodField()
    resources = serializers.SerializerMethodField()
    settings = serializers.SerializerMethodField()

    class Meta:
        model = BatchDeployment
        fields = [
            "name",
            "endpoint_name",
            "description",
            "tags",
            "type",
            "model",
            "code_configuration",
            "environment",
            "compute",
            "resources",
            "settings",
            "provisioning_state",
            "warnings",
        ]
        read_only_fields = fields

    def get_type(self, deployment) -> str:
        return "model"

    def get_code_configuration(self, deployment) -> dict | None:
        if not deployment.code_digest:
            return None
        return {"code": f"azureml:code:{deployment.code_digest}", "scoring_script": deployment.scoring_script}

    def get_environment(self, deployment) -> str | dict | None:
        if deployment.environment_version is not None:
            return deployment.environment_version.asset_id
        return deployment.environment

    def get_resources(self, deployment) -> dict:
        return {"instance_count": deployment.instance_count}

    def get_settings(self, deployment) -> dict:
        return {
            "max_concurrency_per_instance": deployment.max_concurrency_per_instance,
            "mini_batch_size": deployment.mini_batch_size,
            "output_action": deployment.output_action,
            "output_file_name": deployment.output_file_name,
            "retry_settings": {"max_retries": deployment.max_retries, "timeout": deployment.timeout_s},
            "error_threshold": deployment.error_threshold,
            "logging_level": deployment.logging_level,
            "environment_variables": deployment.environment_variables,
        }


def output_files(job: BatchJob) -> list[str]:
    """The names of the files in a job's output folder, as they are now."""
    if not job.output_prefix:
        return []
    return [key[len(job.output_prefix) :] for key in artifact_store().keys(job.output_prefix)]


class BatchJobSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)
    type = serializers.SerializerMethodField()
    status = serializers.CharField(source="state", read_only=True)
    outputs = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    creation_context = serializers.SerializerMethodField()
    start_time = serializers.DateTimeField(source="started_at", read_only=True, allow_null=True)
    end_time = serializers.DateTimeField(source="finished_at", read_only=True, allow_null=True)

    class Meta:
        model = BatchJob
        fields = [
            "name",
            "id",
            "type",
            "status",
            "endpoint_name",
            "deployment_name",
            "inputs",
            "outputs",
            "progress",
            "error",
            "events",
            "creation_context",
            "start_time",
            "end_time",
            "spec",
        ]
        read_only_fields = fields

    def get_type(self, job) -> str:
        return "batch"

    def get_outputs(self, job) -> dict:
        store = artifact_store()
        path = f"{store.url.rstrip('/')}/{job.output_prefix}" if job.output_prefix else None
        return {"score": {"path": path, "files": output_files(job)}}

    def get_progress(self, job) -> dict:
        return batch_execution.progress(job)

    def get_creation_context(self, job) -> dict:
        return {
            "created_at": job.created_at,
            "created_by": job.created_by.username if job.created_by else None,
        }


class MiniBatchSerializer(serializers.ModelSerializer):
    items = serializers.SerializerMethodField()

    class Meta:
        model = MiniBatch
        fields = ["index", "files", "state", "attempts", "error", "items", "rows", "seconds"]
        read_only_fields = fields

    def get_items(self, mini_batch) -> int:
        return len(mini_batch.files)


# What GET /api/v1/jobs/{id}/ answers: an online deployment's job, or a batch job.
ANY_JOB = PolymorphicProxySerializer(
    component_name="AnyJob",
    serializers=[JobSerializer, BatchJobSerializer],
    resource_type_field_name=None,
)


# Endpoints and deployments


class BatchEndpointViewSet(viewsets.GenericViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    filterset_class = BatchEndpointFilterSet
    queryset = BatchEndpoint.objects.prefetch_related("deployments")
    serializer_class = BatchEndpointSerializer
    lookup_field = "name"
    parser_classes = [JSONParser, YAMLParser]

    def get_object(self):
        return _endpoint(self.kwargs["name"])

    @extend_schema(request=dict, responses={201: BatchEndpointSerializer})
    def create(self, request):
        values, warnings = batch_specs.parse_batch_endpoint(_body(request))
        endpoint = batch_services.create_endpoint(values, request.user)
        body = {**self.get_serializer(endpoint).data, "warnings": warnings}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses=BatchEndpointSerializer)
    def partial_update(self, request, name=None):
        values, warnings = batch_specs.parse_batch_endpoint(_body(request), partial=True)
        endpoint = batch_services.update_endpoint(self.get_object(), values, request.user)
        return Response({**self.get_serializer(endpoint).data, "warnings": warnings})

    @extend_schema(responses={204: None})
    def destroy(self, request, name=None):
        batch_services.delete_endpoint(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=dict)
    def credentials(self, request, name=None):
        response = Response(batch_services.get_credentials(self.get_object(), request.user))
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(request=dict, responses={204: None})
    def regenerate_keys(self, request, name=None):
        body = request.data if isinstance(request.data, dict) else {}
        batch_services.regenerate_keys(self.get_object(), body.get("keyType", ""), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BatchDeploymentViewSet(viewsets.GenericViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = BatchDeploymentSerializer
    lookup_field = "name"
    parser_classes = [JSONParser, YAMLParser]
    pagination_class = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return BatchDeployment.objects.none()
        endpoint = _endpoint(self.kwargs["endpoint_name"])
        return endpoint.deployments.select_related("endpoint", "model_version__model", "environment_version")

    def get_object(self):
        try:
            return self.get_queryset().get(name=self.kwargs["name"])
        except BatchDeployment.DoesNotExist:
            raise NotFound(
                f"Batch endpoint {self.kwargs['endpoint_name']!r} has no deployment {self.kwargs['name']!r}."
            ) from None

    @extend_schema(
        request=dict,
        parameters=[OpenApiParameter("set_default", bool, description="make it the endpoint's default")],
        responses={201: BatchDeploymentSerializer},
    )
    def create(self, request, endpoint_name=None):
        endpoint = _endpoint(endpoint_name)
        deployment = batch_services.create_deployment(
            endpoint, _body(request), request.user, set_default=_flag(request, "set_default")
        )
        return Response(self.get_serializer(deployment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=dict,
        parameters=[OpenApiParameter("set_default", bool, description="make it the endpoint's default")],
        responses=BatchDeploymentSerializer,
    )
    def partial_update(self, request, endpoint_name=None, name=None):
        deployment = batch_services.update_deployment(
            self.get_object(), _body(request), request.user, set_default=_flag(request, "set_default")
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=deployment.pk)).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, endpoint_name=None, name=None):
        batch_services.delete_deployment(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Jobs


class BatchEndpointJobsView(generics.ListAPIView):
    """GET: the endpoint's jobs, newest first. POST: invoke it, with a data asset or store location
    (JSON) or with the files themselves (multipart: `archive`, a .zip or .tar.gz of a folder, or `file`)."""

    serializer_class = BatchJobSerializer
    parser_classes = [JSONParser, MultiPartParser]
    authentication_classes = AUTHENTICATION
    permission_classes = [BatchCredentialPermission]
    credential_methods = ("GET", "POST")

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return BatchJob.objects.none()
        endpoint = _endpoint(self.kwargs["endpoint_name"])
        return BatchJob.objects.filter(endpoint=endpoint).select_related("created_by").order_by("-created_at")

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {
                    "input": {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["uri_folder", "uri_file"]},
                            "path": {"type": "string"},
                        },
                    },
                    "deployment_name": {"type": "string"},
                    "output_file_name": {"type": "string"},
                    "mini_batch_size": {"type": "integer", "minimum": 1},
                    "instance_count": {"type": "integer", "minimum": 1},
                },
            },
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    "archive": {"type": "string", "format": "binary"},
                    "file": {"type": "string", "format": "binary"},
                    "input_type": {"enum": ["uri_folder", "uri_file"]},
                    "deployment_name": {"type": "string"},
                    "output_file_name": {"type": "string"},
                    "mini_batch_size": {"type": "integer", "minimum": 1},
                    "instance_count": {"type": "integer", "minimum": 1},
                },
            },
        },
        responses={202: BatchJobSerializer},
    )
    def post(self, request, endpoint_name=None):
        endpoint = _endpoint(endpoint_name)
        data = _body(request)
        options = {
            "deployment_name": data.get("deployment_name") or None,
            "output_file_name": data.get("output_file_name") or None,
        }
        for key, value in options.items():
            if value is not None and not isinstance(value, str):
                raise ValidationError({key: ["must be text."]})
        options["overrides"] = {key: data.get(key) for key in batch_specs.INVOCATION_SETTINGS}
        user = request.user
        if isinstance(request.auth, BatchEndpointCredential):
            options["credential"] = f"the endpoint's {endpoint.auth_mode.replace('aml_', '')}"
        upload, archive = request.FILES.get("file"), request.FILES.get("archive")
        if upload is not None or archive is not None:
            if upload is not None and archive is not None:
                raise ValidationError("Send either `file` (one file) or `archive` (a folder), not both.")
            given = {"type": data.get("input_type") or None}
            job = batch_services.invoke(endpoint, given, user=user, upload=upload, archive=archive, **options)
        else:
            given = data.get("input")
            if given is None:
                raise ValidationError({"input": [MISSING_INPUT]})
            job = batch_services.invoke(endpoint, given, user=user, **options)
        body = BatchJobSerializer(job, context={"request": request}).data
        response = Response(body, status=status.HTTP_202_ACCEPTED)
        response["Location"] = request.build_absolute_uri(reverse("endpoints-api:job-detail", args=[job.pk]))
        return response


class BatchJobListView(generics.ListAPIView):
    """Batch jobs, newest first: `?type=batch&endpoint=E&status=S`."""

    serializer_class = BatchJobSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("type", str, enum=["batch"]),
            OpenApiParameter("endpoint", str),
            OpenApiParameter("status", str, enum=list(BatchJobStateChoices.values)),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        jobs = BatchJob.objects.select_related("created_by").order_by("-created_at")
        if getattr(self, "swagger_fake_view", False):
            return jobs
        params = self.request.query_params
        kind = params.get("type", "batch")
        if kind != "batch":
            raise ValidationError(
                {"type": ["only batch jobs are listed; an online deployment's jobs are on the deployment."]}
            )
        if params.get("endpoint"):
            jobs = jobs.filter(endpoint_name=params["endpoint"])
        if params.get("status"):
            if params["status"] not in BatchJobStateChoices.values:
                raise ValidationError(
                    {"status": [f"must be one of {', '.join(BatchJobStateChoices.values)}."]}
                )
            jobs = jobs.filter(state=params["status"])
        return jobs


class BatchJobCancelView(APIView):
    @extend_schema(request=None, responses={202: BatchJobSerializer})
    def post(self, request, pk=None):
        job = batch_services.cancel_job(_batch_job(pk), request.user)
        job.refresh_from_db()
        return Response(
            BatchJobSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class BatchJobMiniBatchesView(generics.ListAPIView):
    """A job's mini-batches in index order; `?state=failed` for the failed ones."""

    serializer_class = MiniBatchSerializer
    authentication_classes = AUTHENTICATION
    permission_classes = [BatchCredentialPermission]
    credential_methods = ("GET",)

    @extend_schema(parameters=[OpenApiParameter("state", str, enum=list(MiniBatchStateChoices.values))])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return MiniBatch.objects.none()
        rows = MiniBatch.objects.filter(job=_batch_job(self.kwargs["pk"])).order_by("index")
        state = self.request.query_params.get("state")
        if state:
            if state not in MiniBatchStateChoices.values:
                raise ValidationError(
                    {"state": [f"must be one of {', '.join(MiniBatchStateChoices.values)}."]}
                )
            rows = rows.filter(state=state)
        return rows


class BatchJobLogsView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [BatchCredentialPermission]
    credential_methods = ("GET",)

    @extend_schema(parameters=[OpenApiParameter("lines", int)], responses={(200, "text/plain"): str})
    def get(self, request, pk=None):
        job = _batch_job(pk)
        try:
            lines = max(1, min(int(request.query_params.get("lines", 200)), 10_000))
        except ValueError:
            raise ValidationError({"lines": ["must be a whole number."]}) from None
        return HttpResponse(batch_execution.log_text(job, lines), content_type="text/plain; charset=utf-8")


class BatchJobOutputsView(APIView):
    """The job's output folder as a zip, or one file of it with `?path=`, streamed from the store."""

    authentication_classes = AUTHENTICATION
    permission_classes = [BatchCredentialPermission]
    credential_methods = ("GET",)

    @extend_schema(
        parameters=[
            OpenApiParameter("path", str, description="one file of the output, e.g. predictions.csv")
        ],
        responses={(200, "application/zip"): bytes, (200, "application/octet-stream"): bytes},
    )
    def get(self, request, pk=None):
        job = _batch_job(pk)
        store = artifact_store()
        names = output_files(job)
        if not names:
            raise NotFound(
                f"Job {job.name} has no output yet: it is {job.state}. Outputs are written when it finishes; "
                "`studio job stream --name <job>` waits for it."
            )
        wanted = request.query_params.get("path")
        if wanted is not None:
            if wanted not in names:
                raise NotFound(
                    f"Job {job.name}'s output has no file {wanted[:200]!r}; it has {', '.join(names)}."
                )
            filename = wanted.rpartition("/")[2]
            return FileResponse(
                store.open(f"{job.output_prefix}{wanted}"), as_attachment=True, filename=filename
            )
        content = SimpleNamespace(
            files=[{"path": name, "size": store.size(f"{job.output_prefix}{name}")} for name in names],
            storage_prefix=job.output_prefix.rstrip("/"),
        )
        response = StreamingHttpResponse(download_stream(content), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{job.name}-score.zip"'
        return response
