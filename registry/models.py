"""Registered models, their immutable versions, environments, and data assets."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse

from registry.choices import ContentKindChoices, DataTypeChoices, ModelTypeChoices

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


class RegisteredModelQuerySet(models.QuerySet):
    def with_summary(self) -> "RegisteredModelQuerySet":
        """Each model with `version_count`, `latest_version`, `latest_type` and `latest_description` (of its
        newest active version).

        Subqueries, not joins: a join would multiply the rows that a filter on versions counts.
        """
        versions = ModelVersion.objects.filter(model=OuterRef("pk"))
        latest = versions.filter(archived=False).order_by("-created_at", "-pk")
        count = versions.order_by().values("model").annotate(n=Count("pk")).values("n")
        return self.annotate(
            version_count=Coalesce(Subquery(count, output_field=IntegerField()), 0),
            latest_version=Subquery(latest.values("version")[:1]),
            latest_type=Subquery(latest.values("type")[:1]),
            latest_description=Subquery(latest.values("description")[:1]),
        )

    def summarize(self, page: list) -> list:
        """The models of one page of a list, in its order, with the fields of `with_summary()`.

        A list is paged first and summarized after, so that the summaries cost the same on every page:
        annotated on the whole list, PostgreSQL computes them for each row an OFFSET skips too.
        """
        found = self.with_summary().in_bulk([model.pk for model in page])
        return [found[model.pk] for model in page if model.pk in found]


class RegisteredModel(NamedAsset):
    objects = RegisteredModelQuerySet.as_manager()

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
        # A model's versions newest first, and so its latest active one, without sorting them all.
        indexes = [models.Index(fields=["model", "-created_at", "-id"], name="modelversion_model_newest")]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.version}"

    def save(self, *args, **kwargs) -> None:
        """Saves the row and, when its tags are among what is saved, the tag rows the filters read."""
        update_fields = kwargs.get("update_fields")
        with transaction.atomic():
            adding = self._state.adding
            super().save(*args, **kwargs)
            if update_fields is None or "tags" in update_fields:
                if not adding:
                    self.tag_rows.all().delete()
                ModelVersionTag.objects.bulk_create(ModelVersionTag.rows_of([self]))

    def get_absolute_url(self) -> str:
        return reverse("registry:modelversion", args=[self.model.name, self.version])

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def asset_id(self) -> str:
        """How deployment YAML refers to it: azureml:name:version."""
        return f"azureml:{self.model.name}:{self.version}"


class ModelVersionTag(models.Model):
    """One key=value of a version's `tags`, kept beside them so that tag filters are index lookups.

    `ModelVersion.tags` stays what the API shows and what is changed; `ModelVersion.save()` rewrites these
    rows with it. A JSON column has no index SQLite can use for any key, and this table serves both
    databases alike. Whoever writes versions in bulk (`bulk_create`, `update(tags=...)`) writes their rows
    too, with `rows_of`. `model` is the version's, copied, so the model list's filter never joins versions.
    """

    # Both looked up through the indexes below, which they lead.
    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="tag_rows", db_index=False
    )
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=128)
    value = models.CharField(max_length=512)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "key"], name="unique_version_tag_key")]
        indexes = [models.Index(fields=["model", "key", "value"], name="modelversiontag_model_pair")]

    def __str__(self) -> str:
        return f"{self.version_id} {self.key}={self.value}"

    @classmethod
    def rows_of(cls, versions) -> list["ModelVersionTag"]:
        """Unsaved rows for the tags of saved versions."""
        return [
            cls(version_id=version.pk, model_id=version.model_id, key=key, value=value)
            for version in versions
            for key, value in version.tags.items()
        ]


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


class DataAsset(NamedAsset):
    """A named data asset (Azure ML's `az ml data`): versions of a file, a folder or an MLTable folder."""

    class Meta(NamedAsset.Meta):
        pass

    def get_absolute_url(self) -> str:
        return reverse("registry:dataasset", args=[self.name])


class DataVersionQuerySet(models.QuerySet):
    def resolve(self, name: str, version: str) -> "DataVersion":
        """The version named, where `latest` is the newest version that is not archived."""
        scoped = self.filter(asset__name=name)
        if version == "latest":
            found = scoped.filter(archived=False).order_by("-created_at", "-pk").first()
            if found is None:
                raise self.model.DoesNotExist(f"Data asset {name!r} has no active version.")
            return found
        return scoped.get(version=version)


class DataVersion(models.Model):
    """One immutable version of a data asset.

    Its files are objects in the artifact store under `storage_prefix`: uploaded there when it was
    registered from local files (`uploaded`, removed with the version), or already there when it was
    registered by reference to an `s3://` location of the configured store (left alone). `files` lists
    them as they were at registration, relative to the prefix; a `uri_file` has exactly one.
    """

    asset = models.ForeignKey(DataAsset, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64, validators=[validate_version])
    type = models.CharField(max_length=16, choices=DataTypeChoices.choices)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    properties = models.JSONField(default=dict, blank=True)
    # The path as users see and give it: the s3:// URI referenced, or the store location of an upload.
    path = models.CharField(max_length=1000)
    uploaded = models.BooleanField(default=True)
    storage_prefix = models.CharField(max_length=500)
    files = models.JSONField(default=list, help_text="[{path, size}] under storage_prefix, sorted by path")
    size = models.BigIntegerField(default=0)
    digest = models.CharField(max_length=64, blank=True, help_text="sha256 over the files' paths and bytes")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    archived = models.BooleanField(default=False)

    objects = DataVersionQuerySet.as_manager()

    class Meta:
        ordering = ["asset__name", "-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["asset", "version"], name="unique_data_version")]
        indexes = [models.Index(fields=["asset", "-created_at", "-id"], name="dataversion_asset_newest")]

    def __str__(self) -> str:
        return f"{self.asset.name}:{self.version}"

    def get_absolute_url(self) -> str:
        return reverse("registry:dataversion", args=[self.asset.name, self.version])

    @property
    def name(self) -> str:
        return self.asset.name

    @property
    def azureml_id(self) -> str:
        """How batch invocations and YAML refer to it: azureml:name:version.

        Not `asset_id` as on model and environment versions: that is the `asset` foreign key's column."""
        return f"azureml:{self.asset.name}:{self.version}"

    def store_keys(self) -> list[tuple[str, str]]:
        """(relative path, artifact store key) of each file, in path order."""
        prefix = self.storage_prefix.rstrip("/")
        return [(item["path"], f"{prefix}/{item['path']}" if prefix else item["path"]) for item in self.files]
