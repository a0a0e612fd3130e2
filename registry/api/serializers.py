import json

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from registry import requirements
from registry.choices import DataTypeChoices, ModelTypeChoices
from registry.models import (
    DataAsset,
    DataVersion,
    EnvironmentVersion,
    ModelVersion,
    RegisteredModel,
    validate_name,
    validate_tags,
    validate_version,
)
from registry.services import deployments_using
from studio import plainyaml
from studio.api.parsers import unstorable


def _django_validator(function):
    def run(value):
        try:
            function(value)
        except Exception as exc:  # django ValidationError -> DRF's
            raise serializers.ValidationError(getattr(exc, "messages", [str(exc)])) from None

    return run


def _storable(data):
    problem = unstorable(data)
    if problem:
        raise serializers.ValidationError(problem)
    return data


class NameField(serializers.CharField):
    """A name or version as sent: not trimmed, so "iris\n" is refused rather than quietly renamed."""

    def __init__(self, **kwargs):
        super().__init__(trim_whitespace=False, **kwargs)


class JSONObjectField(serializers.JSONField):
    """A JSON object, given as an object or, in multipart forms, as a JSON string."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError as exc:  # JSONDecodeError, or a number with too many digits to convert
                message = getattr(exc, "msg", "it holds a number with too many digits")
                raise serializers.ValidationError(f"must be a JSON object: {message}.") from None
            except RecursionError:
                raise serializers.ValidationError("must be a JSON object nested less deeply.") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError('must be a JSON object, for example {"stage": "prod"}.')
        return _storable(data)


class TagsField(JSONObjectField):
    def to_internal_value(self, data):
        tags = super().to_internal_value(data)
        _django_validator(validate_tags)(tags)
        return tags


class ModelVersionSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="model.name", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, default=None, allow_null=True
    )
    asset_id = serializers.CharField(read_only=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "name",
            "version",
            "type",
            "description",
            "tags",
            "properties",
            "source",
            "created_by",
            "created_at",
            "updated_at",
            "archived",
            "content_kind",
            "digest",
            "size",
            "files",
            "mlflow",
            "asset_id",
            "url",
            "download_url",
            "deployments",
        ]
        read_only_fields = fields

    def _url(self, view_name, obj):
        path = reverse(view_name, args=[obj.model.name, obj.version])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, obj) -> str:
        return self._url("registry-api:modelversion-detail", obj)

    def get_download_url(self, obj) -> str:
        return self._url("registry-api:modelversion-download", obj)

    def get_deployments(self, obj) -> list[str]:
        return deployments_using(obj)


class ModelVersionUpdateSerializer(serializers.Serializer):
    """What may change on a version. Content and properties are immutable."""

    description = serializers.CharField(required=False, allow_blank=True)
    tags = TagsField(required=False)
    archived = serializers.BooleanField(required=False)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Send an object of the fields to change: description, tags, archived."]}
            )
        immutable = sorted(set(data) & {"properties", "version", "name", "type", "digest", "files", "source"})
        if immutable:
            raise serializers.ValidationError(
                {field: "is immutable; register a new version to change it." for field in immutable}
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {field: "is not a field of a model version." for field in unknown}
            )
        return super().to_internal_value(data)


class RegisterModelSerializer(serializers.Serializer):
    """Multipart registration: the content as `file` (one file) or `archive` (.zip or .tar.gz of a folder)."""

    name = NameField(max_length=255, validators=[_django_validator(validate_name)])
    version = NameField(
        max_length=64, required=False, allow_blank=True, validators=[_django_validator(validate_version)]
    )
    type = serializers.ChoiceField(choices=ModelTypeChoices.choices, default=ModelTypeChoices.CUSTOM)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = TagsField(required=False, default=dict)
    properties = JSONObjectField(required=False, default=dict)
    source = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)
    file = serializers.FileField(required=False, allow_empty_file=True)
    archive = serializers.FileField(required=False)

    def validate(self, attrs):
        if bool(attrs.get("file")) == bool(attrs.get("archive")):
            raise serializers.ValidationError(
                "Send the model's content as exactly one of 'file' (a single file) or 'archive' "
                "(a .zip or .tar.gz of a folder)."
            )
        return attrs


class RegisteredModelSerializer(serializers.ModelSerializer):
    """A model as `RegisteredModel.objects.with_summary()` gives it: its count and latest come with it."""

    latest_version = serializers.CharField(
        read_only=True, allow_null=True, help_text="The newest version that is not archived"
    )
    version_count = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "latest_version", "version_count", "created_at", "updated_at", "url"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        path = reverse("registry-api:modelversion-list", args=[obj.name])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


@extend_schema_field({"type": "object", "description": "conda specification (or its YAML text)"})
class CondaField(serializers.Field):
    """A conda specification as an object, or as the YAML text of a conda file."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = plainyaml.load(data)
            except plainyaml.YAMLRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        if data is not None and not isinstance(data, dict):
            raise serializers.ValidationError("must be a conda specification (name, channels, dependencies).")
        return _storable(data)

    def to_representation(self, value):
        return value


class EnvironmentVersionSerializer(serializers.ModelSerializer):
    name = NameField(max_length=255, validators=[_django_validator(validate_name)])
    version = NameField(
        max_length=64, required=False, allow_blank=True, validators=[_django_validator(validate_version)]
    )
    tags = TagsField(required=False, default=dict)
    conda_file = CondaField(required=False, allow_null=True, default=None)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, default=None, allow_null=True
    )
    asset_id = serializers.CharField(read_only=True)

    class Meta:
        model = EnvironmentVersion
        fields = [
            "name",
            "version",
            "description",
            "tags",
            "image",
            "conda_file",
            "pip_requirements",
            "created_by",
            "created_at",
            "archived",
            "asset_id",
        ]
        read_only_fields = ["created_by", "created_at", "archived"]

    def validate(self, attrs):
        if not attrs.get("image") and not attrs.get("conda_file") and not attrs.get("pip_requirements"):
            raise serializers.ValidationError(
                "An environment needs an image, a conda_file or pip_requirements."
            )
        # Refused now, naming each line, rather than when a deployment's build meets it.
        requirements.environment(attrs.get("conda_file"), attrs.get("pip_requirements"), None)
        return attrs


class EnvironmentVersionUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = TagsField(required=False)
    archived = serializers.BooleanField(required=False)


FILES_LISTED = 1000


class DataVersionSerializer(serializers.ModelSerializer):
    """A data version as `az ml data show` prints it, plus Studio's content fields."""

    name = serializers.CharField(source="asset.name", read_only=True)
    id = serializers.CharField(source="azureml_id", read_only=True)
    creation_context = serializers.SerializerMethodField()
    files = serializers.SerializerMethodField()
    file_count = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DataVersion
        fields = [
            "name",
            "version",
            "type",
            "path",
            "description",
            "tags",
            "properties",
            "id",
            "creation_context",
            "files",
            "file_count",
            "size",
            "digest",
            "archived",
            "url",
            "download_url",
        ]
        read_only_fields = fields

    def get_creation_context(self, obj) -> dict:
        return {
            "created_at": serializers.DateTimeField().to_representation(obj.created_at),
            "created_by": obj.created_by.username if obj.created_by else None,
        }

    def get_files(self, obj) -> list[dict]:
        return obj.files[:FILES_LISTED]

    def get_file_count(self, obj) -> int:
        return len(obj.files)

    def _url(self, view_name, obj):
        path = reverse(view_name, args=[obj.asset.name, obj.version])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, obj) -> str:
        return self._url("registry-api:dataversion-detail", obj)

    def get_download_url(self, obj) -> str:
        return self._url("registry-api:dataversion-download", obj)


class DataVersionUpdateSerializer(serializers.Serializer):
    """What may change on a data version: description, tags, archived. Its files never change."""

    description = serializers.CharField(required=False, allow_blank=True)
    tags = TagsField(required=False)
    archived = serializers.BooleanField(required=False)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Send an object of the fields to change: description, tags, archived."]}
            )
        immutable = sorted(set(data) & {"properties", "version", "name", "type", "path", "digest", "files"})
        if immutable:
            raise serializers.ValidationError(
                {field: "is immutable; register a new version to change it." for field in immutable}
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {field: "is not a field of a data version." for field in unknown}
            )
        return super().to_internal_value(data)


class RegisterDataSerializer(serializers.Serializer):
    """Registration: multipart with the content as `file` or `archive` (.zip or .tar.gz of a folder), or
    a `path` in the artifact store (s3://, file://, azureml://datastores/workspaceblobstore/paths/...)."""

    name = NameField(max_length=255, validators=[_django_validator(validate_name)])
    version = NameField(
        max_length=64, required=False, allow_blank=True, validators=[_django_validator(validate_version)]
    )
    type = serializers.ChoiceField(choices=DataTypeChoices.choices, required=False)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = TagsField(required=False, default=dict)
    properties = JSONObjectField(required=False, default=dict)
    file = serializers.FileField(required=False, allow_empty_file=True)
    archive = serializers.FileField(required=False)
    path = serializers.CharField(required=False, max_length=1000, trim_whitespace=False)

    def validate(self, attrs):
        given = [key for key in ("file", "archive", "path") if attrs.get(key)]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Send the data as exactly one of 'file' (one file), 'archive' (a .zip or .tar.gz of a "
                "folder) or 'path' (where it is in the artifact store, e.g. s3://bucket/folder)."
            )
        if not attrs.get("type"):
            # Azure's default is uri_folder; one uploaded file is more likely meant as that file.
            attrs["type"] = DataTypeChoices.URI_FILE if attrs.get("file") else DataTypeChoices.URI_FOLDER
        return attrs


class DataAssetSerializer(serializers.ModelSerializer):
    """A data asset with `latest_version`, `latest_type` and `version_count`, as
    registry.data.summarize_assets gives them."""

    latest_version = serializers.CharField(
        read_only=True, allow_null=True, help_text="The newest version that is not archived"
    )
    latest_type = serializers.CharField(read_only=True, allow_null=True)
    version_count = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = DataAsset
        fields = [
            "name",
            "description",
            "latest_version",
            "latest_type",
            "version_count",
            "created_at",
            "updated_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        path = reverse("registry-api:dataversion-list", args=[obj.name])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path
