"""The online endpoint's one FilterSet, shared by the list page, the API and so the CLI.

Filter syntax, the registry's: `tag=key=value` (repeatable, all must hold), `name`, `auth_mode`, `state`,
`health` (Healthy or Degraded, as the pages show it), `q` (free text). A filter that cannot be read answers
400 with the message that says what to fix.
"""

import django_filters
from django.db.models import Q

from endpoints.choices import AuthModeChoices, EndpointHealthChoices, ProvisioningStateChoices
from endpoints.models import BatchEndpoint, OnlineEndpoint
from registry.filtersets import TagFilter, with_tags


class EndpointTagFilter(TagFilter):
    """`tag=key=value`, read and reported as the registry's, matched on the endpoint's own tags."""

    def filter(self, qs, value):
        return with_tags(qs, value) if value else qs


class OnlineEndpointFilterSet(django_filters.FilterSet):
    tag = EndpointTagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter()
    q = django_filters.CharFilter(method="search", label="Search")
    auth_mode = django_filters.ChoiceFilter(choices=AuthModeChoices.choices)
    state = django_filters.ChoiceFilter(
        field_name="provisioning_state", choices=ProvisioningStateChoices.choices
    )
    # Derived, never stored (OnlineEndpoint.health): read from the endpoints the other filters leave.
    health = django_filters.ChoiceFilter(choices=EndpointHealthChoices.choices, method="with_health")
    ordering = django_filters.OrderingFilter(fields=(("name", "name"), ("updated_at", "updated_at")))

    class Meta:
        model = OnlineEndpoint
        fields = ["tag", "name", "q", "auth_mode", "state", "health"]

    def with_health(self, qs, name, value):
        degraded = [
            endpoint.pk
            for endpoint in OnlineEndpoint.objects.filter(pk__in=qs.values("pk")).prefetch_related(
                "deployments__replicas"
            )
            if endpoint.health_reasons
        ]
        if value == EndpointHealthChoices.DEGRADED:
            return qs.filter(pk__in=degraded)
        return qs.exclude(pk__in=degraded)

    def search(self, qs, name, value):
        return qs.filter(
            Q(name__icontains=value) | Q(description__icontains=value) | Q(deployments__name__icontains=value)
        ).distinct()


class BatchEndpointFilterSet(django_filters.FilterSet):
    """The batch endpoint list's filters, the online list's syntax: `tag=key=value`, `name`, `auth_mode`,
    `q` (free text over names, descriptions and deployment names)."""

    tag = EndpointTagFilter(label="Tags (key=value)")
    name = django_filters.CharFilter()
    q = django_filters.CharFilter(method="search", label="Search")
    auth_mode = django_filters.ChoiceFilter(choices=AuthModeChoices.choices)
    ordering = django_filters.OrderingFilter(fields=(("name", "name"), ("created_at", "created_at")))

    class Meta:
        model = BatchEndpoint
        fields = ["tag", "name", "q", "auth_mode"]

    def search(self, qs, name, value):
        return qs.filter(
            Q(name__icontains=value) | Q(description__icontains=value) | Q(deployments__name__icontains=value)
        ).distinct()
