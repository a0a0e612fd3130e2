from django.urls import reverse
from rest_framework import serializers

from endpoints.models import Job, OnlineDeployment, OnlineEndpoint


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "state",
            "endpoint_name",
            "deployment_name",
            "progress",
            "events",
            "error",
            "result",
            "task_id",
            "attempts",
            "heartbeat_at",
            "created_at",
            "started_at",
            "finished_at",
            "url",
        ]
        read_only_fields = fields

    def get_result(self, job) -> dict:
        """What the job produced; what it holds on the host while it runs (pids, paths) stays inside."""
        return {key: value for key, value in job.result.items() if key != "held"}

    def get_url(self, job) -> str:
        path = reverse("endpoints-api:job-detail", args=[job.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class DeletionAcceptedSerializer(serializers.Serializer):
    """A 202 for a deletion that runs as a job: what is being deleted, and the job deleting it."""

    name = serializers.CharField()
    job = JobSerializer()


class PackageAcceptedSerializer(serializers.Serializer):
    """A 202 for a package job: what is packaged, how, and the job packaging it."""

    package = serializers.CharField()
    mode = serializers.CharField()
    job = JobSerializer()


class OnlineEndpointSerializer(serializers.ModelSerializer):
    scoring_uri = serializers.CharField(read_only=True)
    openapi_uri = serializers.CharField(read_only=True)
    health = serializers.CharField(read_only=True)
    health_reasons = serializers.ListField(child=serializers.CharField(), read_only=True)
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = OnlineEndpoint
        fields = [
            "name",
            "description",
            "tags",
            "auth_mode",
            "traffic",
            "mirror_traffic",
            "cors_origins",
            "scoring_uri",
            "openapi_uri",
            "provisioning_state",
            "health",
            "health_reasons",
            "deployments",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_deployments(self, endpoint) -> list[str]:
        return [deployment.name for deployment in endpoint.deployments.all()]


class OnlineDeploymentSerializer(serializers.ModelSerializer):
    endpoint_name = serializers.CharField(source="endpoint.name")
    model = serializers.CharField(source="model_version.asset_id")
    code_configuration = serializers.SerializerMethodField()
    environment = serializers.SerializerMethodField()
    replicas = serializers.SerializerMethodField()
    job = serializers.SerializerMethodField()

    class Meta:
        model = OnlineDeployment
        fields = [
            "name",
            "endpoint_name",
            "description",
            "tags",
            "model",
            "code_configuration",
            "environment",
            "target",
            "instance_type",
            "instance_count",
            "scale_settings",
            "request_settings",
            "liveness_probe",
            "readiness_probe",
            "environment_variables",
            "data_collector",
            "provisioning_state",
            "generation",
            "observed_generation",
            "revision",
            "serving_revision",
            "pending_traffic",
            "warnings",
            "isolation",
            "replicas",
            "job",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_code_configuration(self, deployment) -> dict | None:
        if not deployment.code_digest:
            return None
        return {"code": f"azureml:code:{deployment.code_digest}", "scoring_script": deployment.scoring_script}

    def get_environment(self, deployment) -> str | dict | None:
        if deployment.environment_version is not None:
            return deployment.environment_version.asset_id
        return deployment.environment

    def get_replicas(self, deployment) -> list[dict]:
        return [{"id": r.replica_id, "url": r.url, "state": r.state} for r in deployment.replicas.all()]

    def get_job(self, deployment) -> dict | None:
        job = deployment.job
        return JobSerializer(job, context=self.context).data if job else None
