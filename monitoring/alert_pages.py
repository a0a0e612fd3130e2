"""The alerts section of an endpoint's Monitoring tab: its context, and adding or deleting a rule there.

The rules themselves are monitoring.alerts's: the form only gathers the fields, `create_rule` checks them
as it does for the API, and its refusals land on the fields they name. With htmx the section alone is
swapped; without, the tab is shown again with a message.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from endpoints.forms import add_service_errors
from endpoints.models import OnlineEndpoint
from endpoints.tables import BADGE_FOR_COLOUR
from monitoring import alerts
from monitoring.choices import AlertErrorsChoices, AlertEventKindChoices, AlertKindChoices, AlertStateChoices
from monitoring.models import AlertEvent
from studio.choices import AuditActionChoices
from studio.errors import Refused
from studio.models import audit
from studio.views import StudioPageMixin

RECENT_EVENTS = 20
SECTION_TEMPLATE = "monitoring/inc/alerts.html"


class AlertRuleForm(forms.Form):
    kind = forms.ChoiceField(choices=AlertKindChoices.choices)
    deployment = forms.ChoiceField(required=False, help_text="one deployment, or all of them")
    threshold = forms.CharField(
        max_length=32,
        help_text="error rate in %, p99 latency in ms, requests per minute, restarts, or a score",
    )
    window = forms.CharField(max_length=8, initial="5m", help_text="whole minutes or hours: 5m, 30m, 1h")
    # Not `errors`: templates would find the field where they look for the form's errors.
    counted_errors = forms.ChoiceField(
        label="Errors counted",
        choices=AlertErrorsChoices.choices,
        initial=AlertErrorsChoices.SERVER,
        help_text="error rate only; a model that raises is answered 424, a 4xx",
    )
    recipients = forms.CharField(
        required=False,
        max_length=1000,
        help_text="comma-separated addresses of Studio users; default: the endpoint's creator",
    )
    name = forms.CharField(required=False, max_length=64, help_text="default: from the kind and deployment")

    def __init__(self, *args, endpoint: OnlineEndpoint, **kwargs):
        super().__init__(*args, **kwargs)
        names = sorted(endpoint.deployments.values_list("name", flat=True))
        self.fields["deployment"].choices = [("", "all deployments"), *((name, name) for name in names)]

    def values(self) -> dict:
        """The API's body for these fields (blank optional fields left out)."""
        values = {key: value for key, value in self.cleaned_data.items() if value not in ("", None)}
        values["errors"] = values.pop("counted_errors", None)
        return values


def section_context(endpoint: OnlineEndpoint, form: AlertRuleForm | None = None) -> dict:
    """What the section shows: every rule with its state, the rules' last transitions, the add form."""
    rules = [
        {
            "rule": rule,
            "window": alerts.window_text(rule.window_minutes),
            "unit": alerts.KINDS[rule.kind].unit,
            "below": alerts.KINDS[rule.kind].below,
            "badge": BADGE_FOR_COLOUR[AlertStateChoices.colour(rule.state)],
            "notify": alerts.recipients(rule),
        }
        for rule in endpoint.alert_rules.select_related("endpoint__created_by", "deployment")
    ]
    recent = AlertEvent.objects.filter(rule__endpoint=endpoint).select_related("rule")[:RECENT_EVENTS]
    events = [
        {
            "event": event,
            "window": alerts.window_text(event.window_minutes),
            "unit": alerts.KINDS[event.rule.kind].unit,
            "badge": BADGE_FOR_COLOUR[AlertEventKindChoices.colour(event.kind)],
        }
        for event in recent
    ]
    return {
        "endpoint": endpoint,
        "rules": rules,
        "events": events,
        "alert_form": form or AlertRuleForm(endpoint=endpoint, auto_id="alert_%s"),
    }


def _answer(request: HttpRequest, endpoint: OnlineEndpoint, form=None, status: int = 200) -> HttpResponse:
    if request.htmx:
        return render(request, SECTION_TEMPLATE, section_context(endpoint, form), status=status)
    return redirect("monitoring:onlineendpoint_monitoring", endpoint.name)


class AlertRuleCreateView(StudioPageMixin, View):
    """POST a rule from the section's form (Contributors)."""

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        form = AlertRuleForm(request.POST, endpoint=endpoint, auto_id="alert_%s")
        if form.is_valid():
            try:
                rule = alerts.create_rule(endpoint, form.values(), request.user)
            except Refused as exc:
                add_service_errors(form, exc, {"errors": "counted_errors"})
            else:
                audit(request.user, AuditActionChoices.CREATED, "alert rule", str(rule), kind=rule.kind)
                if not request.htmx:
                    messages.success(request, f"Added alert rule {rule.name}; it is evaluated every minute.")
                return _answer(request, endpoint)
        if not request.htmx:
            messages.error(request, " ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return _answer(request, endpoint, form, status=400)


class AlertRuleDeleteView(StudioPageMixin, View):
    """POST deletes one rule with its history (Contributors)."""

    def post(self, request: HttpRequest, name: str, pk: int) -> HttpResponse:
        endpoint = get_object_or_404(OnlineEndpoint, name=name)
        rule = get_object_or_404(endpoint.alert_rules, pk=pk)
        audit(request.user, AuditActionChoices.DELETED, "alert rule", str(rule), kind=rule.kind)
        alerts.delete_rule(rule)
        if not request.htmx:
            messages.success(request, f"Deleted alert rule {rule.name}.")
        return _answer(request, endpoint)
