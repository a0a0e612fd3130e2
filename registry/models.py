"""Registered models, their immutable versions, and environments."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from registry.choices import ContentKindChoices, ModelTypeChoices

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")


# Page paths under /models/ that a model name would shadow.
RESERVED_NAMES = {"register"}


def validate_name(value: str) -> None:
    if value in RESERVED_NAMES:
        raise ValidationError(f"{value!r} is reserved; choose another name.")
    if not NAME_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid name: use letters, digits, '.', '_' and '-', starting with a letter "
            "or digit, at most 255 characters."
        )


def validate_version(value: str) -> None:
    if value == "latest" or not VERSION_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid version: use letters, digits, '.', '_' and '-' (and not 'latest')."
        )


def validate_tags(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Tags must be an object of key: value strings.")
    for key, item in value.items():
        if not TAG_KEY_RE.match(str(key)):
            raise ValidationError(
                f"Tag key {key!r} is not valid: use letters, digits and _ . : / - (at most 128)."
            )
        if not isinstance(item, str) or len(item) > 512:
            raise ValidationError(f"Tag {key!r} must have a string value of at most 512 characters.")


class NamedAsset(models.Model):
    """A name under which immutable versions are kept (`versions` is their reverse relation)."""

    name = models.CharField(max_length=255, unique=True, validators=[validate_name])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def next_version(self) -> str:
        """One more than the highest numeric version so far."""
        numbers = [int(v) for v in self.versions.values_list("version", flat=True) if v.isdigit()]
        return str(max(numbers, default=0) + 1)


class RegisteredModel(NamedAsset):
    class Meta(NamedAsset.Meta):
        pass

    def get_absolute_url(self) -> str:
        return reverse("registry:registeredmodel", args=[self.name])


class ModelVersionQuerySet(models.QuerySet):
    def resolve(self, name: str, version: str) -> "ModelVersion":
        """The version named, where `latest` is the newest version that is not archived."""
        scoped = self.filter(model__name=name)
        if version == "latest":
            found = scoped.filter(archived=False).order_by("-created_at", "-pk").first()
            if found is None:
                raise self.model.DoesNotExist(f"Model {name!r} has no active version.")
            return found
        return scoped.get(version=version)


class ModelVersion(models.Model):
    """One immutable version of a model: its content, digest and properties never change."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64, validators=[validate_version])
    type = models.CharField(max_length=32, choices=ModelTypeChoices.choices, default=ModelTypeChoices.CUSTOM)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    properties = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    archived = models.BooleanField(default=False)

    content_kind = models.CharField(max_length=16, choices=ContentKindChoices.choices)
    # Where the content lives in the artifact store; a unique prefix per upload, never reused.
    storage_prefix = models.CharField(max_length=500, unique=True)
    digest = models.CharField(max_length=64, help_text="sha256 over the content's paths and bytes")
    size = models.BigIntegerField()
    files = models.JSONField(default=list, help_text="[{path, size}] of the content, sorted by path")
    mlflow = models.JSONField(
        null=True, blank=True, help_text="What the MLmodel file says, for MLflow models"
    )

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["model__name", "-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_model_version")]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.version}"

    def get_absolute_url(self) -> str:
        return reverse("registry:modelversion", args=[self.model.name, self.version])

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def asset_id(self) -> str:
        """How deployment YAML refers to it: azureml:name:version."""
        return f"azureml:{self.model.name}:{self.version}"


class Environment(NamedAsset):
    class Meta(NamedAsset.Meta):
        pass


class EnvironmentVersion(models.Model):
    """A runtime for scoring code: a base image and/or conda or pip requirements (Azure ML's fields)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64, validators=[validate_version])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    image = models.CharField(max_length=500, blank=True)
    conda_file = models.JSONField(null=True, blank=True, help_text="The conda specification, parsed")
    pip_requirements = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["environment__name", "-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "version"], name="unique_environment_version")
        ]

    def __str__(self) -> str:
        return f"{self.environment.name}:{self.version}"

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def asset_id(self) -> str:
        return f"azureml:{self.environment.name}:{self.version}"
