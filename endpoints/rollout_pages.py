"""Rollout pages: the panel on an endpoint's Details tab (steps, live figures against the SLO, abort) and
the "Roll out" form beside the traffic sliders. The rules and the driver are endpoints/rollouts.py's."""

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views import View

from endpoints import rollouts
from endpoints.choices import ProvisioningStateChoices, RolloutStateChoices
from endpoints.forms import add_service_errors
from endpoints.models import OnlineEndpoint, Rollout
from endpoints.tables import BADGE_FOR_COLOUR
from endpoints.views import EndpointTabMixin, _endpoint
from studio.errors import Refused
from studio.views import StudioPageMixin

PANEL_TEMPLATE = "endpoints/inc/rollout_panel.html"


class RolloutForm(forms.Form):
    deployment = forms.ChoiceField(label="Deployment", help_text="The new version to move traffic to.")
    steps = forms.CharField(
        label="Steps",
        initial="10,50,100",
        help_text="Shares of live traffic, comma-separated, ending with 100. Start with 'shadow' to compare "
        "mirrored answers first (shadow,10,50,100).",
    )
    interval_s = forms.FloatField(
        label="Interval (seconds)", initial=30, min_value=0.1, help_text="How long each step is watched."
    )
    max_error_rate_pct = forms.FloatField(
        label="Max error rate (%)", required=False, min_value=0, max_value=100
    )
    max_p99_ms = forms.FloatField(label="Max p99 latency (ms)", required=False, min_value=0)
    min_agreement_pct = forms.FloatField(
        label="Min shadow agreement (%)", required=False, min_value=0, max_value=100
    )

    def __init__(self, *args, endpoint: OnlineEndpoint, **kwargs):
        super().__init__(*args, **kwargs)
        names = endpoint.deployments.exclude(
            provisioning_state=ProvisioningStateChoices.DELETING
        ).values_list("name", flat=True)
        choices = [(name, name) for name in names if endpoint.traffic.get(name, 0) < 100]
        self.fields["deployment"].choices = choices

    def values(self) -> dict:
        data = self.cleaned_data
        slo = {
            key: data[key]
            for key in ("max_error_rate_pct", "max_p99_ms", "min_agreement_pct")
            if data.get(key) is not None
        }
        return {
            "deployment": data["deployment"],
            "steps": [part.strip() for part in data["steps"].split(",") if part.strip()],
            "interval_s": data["interval_s"],
            "slo": slo,
        }


def _slo_rows(rollout: Rollout, figures: dict | None) -> list[dict]:
    """Each SLO bound beside the figure it is judged on (so far), and whether the figure keeps it."""
    figures = figures or {}
    rows = []
    for key, label, measured, unit, higher_is_worse in (
        ("max_error_rate_pct", "Error rate", "error_rate_pct", "%", True),
        ("max_p99_ms", "p99 latency", "latency_p99_ms", " ms", True),
        ("min_agreement_pct", "Shadow agreement", "agreement_pct", "%", False),
    ):
        if key not in rollout.slo:
            continue
        bound, value = rollout.slo[key], figures.get(measured)
        ok = None if value is None else (value <= bound if higher_is_worse else value >= bound)
        rows.append(
            {
                "label": label,
                "bound": f"{'≤' if higher_is_worse else '≥'} {bound:g}{unit}",
                "value": "—" if value is None else f"{value:g}{unit}",
                "ok": ok,
            }
        )
    return rows


def rollout_badge(state: str) -> SafeString:
    badge = BADGE_FOR_COLOUR[RolloutStateChoices.colour(state)]
    busy = " badge-busy" if state == RolloutStateChoices.RUNNING else ""
    return format_html(
        '<span class="badge badge-{}{}">{}</span>', badge, busy, RolloutStateChoices(state).label
    )


def panel_context(endpoint: OnlineEndpoint) -> dict:
    """What inc/rollout_panel.html draws: the running rollout, else the latest one."""
    rollout = endpoint.rollouts.select_related("endpoint", "created_by").first()
    if rollout is None:
        return {"rollout": None}
    live = rollouts.live_figures(rollout)
    judged = {figures["step"]: figures for figures in rollout.figures}
    steps = []
    for index, name in enumerate(rollout.step_names):
        if name in judged:
            status = "breached" if judged[name].get("breaches") else "passed"
        elif rollout.state == RolloutStateChoices.RUNNING and index == rollout.current_step:
            status = "current"
        else:
            status = "pending"
        steps.append({"name": name, "status": status, "figures": judged.get(name)})
    shown = live or (rollout.figures[-1] if rollout.figures else None)
    return {
        "rollout": rollout,
        "rollout_badge": rollout_badge(rollout.state),
        "rollout_steps": steps,
        "rollout_live": live,
        "rollout_slo": _slo_rows(rollout, shown),
        "rollout_shown": shown,
    }


class RolloutPanelView(StudioPageMixin, View):
    """The panel alone, which htmx polls while the rollout runs."""

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        if not request.htmx:
            return redirect("endpoints:onlineendpoint_details", endpoint.name)
        return render(request, PANEL_TEMPLATE, {"object": endpoint, **panel_context(endpoint)})


class RolloutStartView(EndpointTabMixin, StudioPageMixin, View):
    """GET the "Roll out" form, POST starts the rollout (refusals on the form, in the service's words)."""

    template_name = "endpoints/rollout_start.html"
    tab = "details"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        form = RolloutForm(endpoint=endpoint, initial={"deployment": request.GET.get("deployment")})
        return render(request, self.template_name, self.tab_context(endpoint, form=form))

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        form = RolloutForm(request.POST, endpoint=endpoint)
        if form.is_valid():
            try:
                rollout = rollouts.start_rollout(endpoint, form.values(), request.user)
            except Refused as exc:
                add_service_errors(
                    form,
                    exc,
                    {"slo": "max_error_rate_pct", "interval_s": "interval_s", "steps": "steps"},
                )
            else:
                messages.success(
                    request, f"Rollout of {rollout.deployment} started: {' → '.join(rollout.step_names)}."
                )
                return redirect("endpoints:onlineendpoint_details", endpoint.name)
        return render(request, self.template_name, self.tab_context(endpoint, form=form), status=400)


class RolloutAbortView(StudioPageMixin, View):
    def post(self, request: HttpRequest, name: str, pk: int) -> HttpResponse:
        endpoint = _endpoint(name)
        try:
            rollout = rollouts.abort(rollouts.get(endpoint, pk), request.user)
        except Refused as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Rollout {rollout.pk} aborted; the traffic is back as it was.")
        return redirect("endpoints:onlineendpoint_details", endpoint.name)
