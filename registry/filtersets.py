"""One FilterSet per resource, shared by the pages, the API and so the CLI.

Filter syntax: `tag=key=value` (repeatable, all must hold), `name`, `type`, `q` (free text).

Every filter of the model and version lists is a semi-join (EXISTS or IN) on an index: tags through
the `ModelVersionTag` rows, `q` through a trigram index on PostgreSQL and a narrow index on SQLite (see
registry's migration 0002). None joins rows into the list, so no list needs DISTINCT.
"""

import django_filters
from django import forms
from django.db import connections
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from drf_spectacular.utils import extend_schema_field

from registry.choices import DataTypeChoices, ModelTypeChoices
from registry.models import (
    TAG_KEY_RE,
    DataAsset,
    DataVersion,
    Environment,
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
)


def parse_tag_filter(text: str) -> tuple[str, str]:
    """`key=value` to (key, value); the value may itself contain '='."""
    key, sep, value = text.partition("=")
    # The text goes in as a parameter, never into the message itself: a '%' in it must stay a '%'.
    if not sep or not key:
        raise forms.ValidationError(
            "Tag filter %(text)s is not of the form key=value, for example tag=stage=prod.",
            params={"text": repr(text)},
        )
    if not TAG_KEY_RE.match(key):
        raise forms.ValidationError(
            "Tag filter key %(key)s is not valid: use letters, digits and _ . : / - (at most 128).",
            params={"key": repr(key)},
        )
    return key, value


class TagListField(forms.Field):
    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        if not value:
            return []
        values = value if isinstance(value, (list, tuple)) else [value]
        return [parse_tag_filter(item) for item in values if item != ""]


@extend_schema_field({"type": "array", "items": {"type": "string", "example": "stage=prod"}})
class TagFilter(django_filters.Filter):
    """`tag=key=value`, repeatable; every pair must hold."""

    field_class = TagListField

    def filter(self, qs, value):
        if not value:
            return qs
        return qs.filter(self.parent.tagged(value))


def _holding(key: str, value: str, **where) -> Exists:
    return Exists(ModelVersionTag.objects.filter(key=key, value=value, **where))


def _as_tags(pairs: list[tuple[str, str]]) -> dict[str, str] | None:
    """The pairs as one set of tags, or None when two give one key different values: no version has both."""
    tags: dict[str, str] = {}
    for key, value in pairs:
        if tags.setdefault(key, value) != value:
            return None
    return tags


def versions_tagged(pairs: list[tuple[str, str]]) -> Q:
    """True for a version whose tags hold every key=value pair."""
    tags = _as_tags(pairs)
    if tags is None:
        return Q(pk__in=[])
    return Q(*(_holding(key, value, version=OuterRef("pk")) for key, value in tags.items()))


def models_tagged(pairs: list[tuple[str, str]]) -> Q:
    """True for a model with a version whose tags hold every key=value pair.

    With several pairs, each is first asked of the model as a whole, an index probe that most models fail
    at once. The search for one version holding them all names the model at every level (the version
    implies it), so that the database may start it from whichever pair the model has fewest rows of:
    without that, PostgreSQL reads every version of a broad pair (stage=prod) of every model.
    """
    tags = _as_tags(pairs)
    if tags is None:
        return Q(pk__in=[])
    condition = Q(*(_holding(key, value, model=OuterRef("pk")) for key, value in tags.items()))
    (key, value), *others = tags.items()
    if others:
        rows = ModelVersionTag.objects.filter(key=key, value=value, model=OuterRef("pk"))
        for other_key, other_value in others:
            rows = rows.filter(
                _holding(other_key, other_value, version=OuterRef("version"), model=OuterRef("model"))
            )
        condition &= Exists(rows)
    return condition


def with_tags(queryset, pairs: list[tuple[str, str]]):
    """The rows of `queryset` whose `tags` JSON holds every key=value pair (resources with few rows)."""
    for index, (key, value) in enumerate(pairs):
        alias = f"tag_{index}"
        # KeyTransform takes the key as data, so no key can be read as a lookup path.
        queryset = queryset.alias(**{alias: KeyTransform(key, "tags")}).filter(**{alias: value})
    return queryset


class ModelVersionFilterSet(django_filters.FilterSet):
    tag = TagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter(field_name="model__name")
    type = django_filters.ChoiceFilter(choices=ModelTypeChoices.choices)
    q = django_filters.CharFilter(method="search", label="Search")
    archived = django_filters.BooleanFilter()
    ordering = django_filters.OrderingFilter(
        fields=(("created_at", "created_at"), ("version", "version"), ("model__name", "name"))
    )

    class Meta:
        model = ModelVersion
        fields = ["tag", "name", "type", "q", "archived"]

    def tagged(self, pairs):
        return versions_tagged(pairs)

    def search(self, qs, name, value):
        # Within one model's versions (the only list of them), so a scan of its rows at most.
        return qs.alias(tags_text=Cast("tags", TextField())).filter(
            Q(model__name__icontains=value)
            | Q(description__icontains=value)
            | Q(version__iexact=value)
            | Q(tags_text__icontains=value)
        )


class RegisteredModelFilterSet(django_filters.FilterSet):
    """Models that have at least one version matching every filter given."""

    tag = TagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=ModelTypeChoices.choices, method="by_type")
    q = django_filters.CharFilter(method="search", label="Search")
    ordering = django_filters.OrderingFilter(fields=(("name", "name"), ("updated_at", "updated_at")))

    class Meta:
        model = RegisteredModel
        fields = ["tag", "name", "type", "q"]

    def tagged(self, pairs):
        return models_tagged(pairs)

    def by_type(self, qs, name, value):
        return qs.filter(Exists(ModelVersion.objects.filter(model=OuterRef("pk"), type=value)))

    def search(self, qs, name, value):
        versions = ModelVersion.objects.filter(description__icontains=value)
        if connections[qs.db].vendor == "postgresql":
            # EXISTS lets PostgreSQL choose per search: the matching versions found once through the
            # trigram index (a rare word), or each model's versions read until a match (a common one).
            described = Exists(versions.filter(model=OuterRef("pk")))
        else:
            # SQLite would read each model's versions one model at a time; IN reads them all once, through
            # the narrow (model_id, description) index, which costs the same for any word.
            described = Q(pk__in=versions.values("model_id"))
        return qs.filter(Q(name__icontains=value) | Q(description__icontains=value) | described)


class EnvironmentFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter()
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Search")

    class Meta:
        model = Environment
        fields = ["name", "q"]


def data_versions_tagged(pairs: list[tuple[str, str]]):
    """The data versions whose tags hold every key=value pair: read from their `tags` JSON, since data
    assets are few enough that no tag table is needed."""
    return with_tags(DataVersion.objects.all(), pairs)


class DataVersionFilterSet(django_filters.FilterSet):
    tag = TagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter(field_name="asset__name")
    type = django_filters.ChoiceFilter(choices=DataTypeChoices.choices)
    q = django_filters.CharFilter(method="search", label="Search")
    archived = django_filters.BooleanFilter()
    ordering = django_filters.OrderingFilter(
        fields=(("created_at", "created_at"), ("version", "version"), ("asset__name", "name"))
    )

    class Meta:
        model = DataVersion
        fields = ["tag", "name", "type", "q", "archived"]

    def tagged(self, pairs):
        return Q(pk__in=data_versions_tagged(pairs).values("pk"))

    def search(self, qs, name, value):
        return qs.alias(tags_text=Cast("tags", TextField())).filter(
            Q(asset__name__icontains=value)
            | Q(description__icontains=value)
            | Q(version__iexact=value)
            | Q(path__icontains=value)
            | Q(tags_text__icontains=value)
        )


class DataAssetFilterSet(django_filters.FilterSet):
    """Data assets that have at least one version matching every filter given."""

    tag = TagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=DataTypeChoices.choices, method="by_type")
    q = django_filters.CharFilter(method="search", label="Search")
    ordering = django_filters.OrderingFilter(fields=(("name", "name"), ("updated_at", "updated_at")))

    class Meta:
        model = DataAsset
        fields = ["tag", "name", "type", "q"]

    def tagged(self, pairs):
        return Q(pk__in=data_versions_tagged(pairs).values("asset_id"))

    def by_type(self, qs, name, value):
        return qs.filter(Exists(DataVersion.objects.filter(asset=OuterRef("pk"), type=value)))

    def search(self, qs, name, value):
        described = DataVersion.objects.filter(description__icontains=value).values("asset_id")
        return qs.filter(Q(name__icontains=value) | Q(description__icontains=value) | Q(pk__in=described))
