"""One FilterSet per resource, shared by the pages, the API and so the CLI.

Filter syntax: `tag=key=value` (repeatable, all must hold), `name`, `type`, `q` (free text).
"""

import django_filters
from django import forms
from django.db.models import Q, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from drf_spectacular.utils import extend_schema_field

from registry.choices import ModelTypeChoices
from registry.models import TAG_KEY_RE, Environment, ModelVersion, RegisteredModel


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
        return qs.filter(pk__in=self.parent.versions_with_tags(value))


def with_tags(queryset, pairs: list[tuple[str, str]]):
    """The rows of `queryset` whose `tags` hold every key=value pair."""
    for index, (key, value) in enumerate(pairs):
        alias = f"tag_{index}"
        # KeyTransform takes the key as data, so no key can be read as a lookup path.
        queryset = queryset.alias(**{alias: KeyTransform(key, "tags")}).filter(**{alias: value})
    return queryset


def versions_with_tags(pairs: list[tuple[str, str]]):
    """Versions whose tags hold every key=value pair."""
    return with_tags(ModelVersion.objects.all(), pairs)


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

    def versions_with_tags(self, pairs):
        return versions_with_tags(pairs).values("pk")

    def search(self, qs, name, value):
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

    def versions_with_tags(self, pairs):
        return versions_with_tags(pairs).values("model_id")

    def by_type(self, qs, name, value):
        return qs.filter(versions__type=value).distinct()

    def search(self, qs, name, value):
        return qs.filter(
            Q(name__icontains=value)
            | Q(description__icontains=value)
            | Q(versions__description__icontains=value)
        ).distinct()


class EnvironmentFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter()
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Search")

    class Meta:
        model = Environment
        fields = ["name", "q"]
