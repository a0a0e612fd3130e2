"""One FilterSet per resource of the team app, shared by its pages and its API.

Event filters: `type` (an exact type, or a family such as `studio.deployment.*`), `subject` (exact, or a
prefix ending in `*`: `online-endpoints/shop/*`). Delivery filter: `state`.
"""

import django_filters

from studio.choices import WebhookDeliveryStateChoices
from studio.models import Event, WebhookDelivery


def _exact_or_prefix(queryset, field: str, value: str):
    """`value` exactly, or everything starting with it when it ends in `*` (a family or a folder)."""
    if value.endswith("*"):
        return queryset.filter(**{f"{field}__startswith": value.rstrip("*")})
    return queryset.filter(**{field: value})


class EventFilterSet(django_filters.FilterSet):
    type = django_filters.CharFilter(
        method="filter_type", help_text="An event type, or a family ending in *: studio.deployment.*"
    )
    subject = django_filters.CharFilter(
        method="filter_subject", help_text="A subject, or a prefix ending in *: online-endpoints/shop/*"
    )

    class Meta:
        model = Event
        fields = ["type", "subject"]

    def filter_type(self, queryset, name, value):
        return _exact_or_prefix(queryset, "type", value)

    def filter_subject(self, queryset, name, value):
        return _exact_or_prefix(queryset, "subject", value)


class WebhookDeliveryFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=WebhookDeliveryStateChoices.choices)

    class Meta:
        model = WebhookDelivery
        fields = ["state"]
