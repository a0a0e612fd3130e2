"""Studio's own pages: the dashboard and a person's access tokens; and the mixin every page uses."""

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views import View
from django.views.generic import TemplateView
from django_htmx.http import HttpResponseClientRedirect

from registry.models import ModelVersion, RegisteredModel
from studio import dashboard
from studio.choices import AuditActionChoices, RoleChoices
from studio.models import AccessToken, AuditEvent, Event, audit
from studio.roles import has_role

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class StudioPageMixin(LoginRequiredMixin):
    """Pages need a signed-in user with `required_role` to read and `write_role` to change anything.

    The roles match the API's (studio.roles.RolePermission), so a page never shows what the API would
    refuse, nor lets anyone do what the API would refuse. `required_role = None` admits anyone signed in.
    """

    required_role: str | None = RoleChoices.READER
    write_role: str | None = RoleChoices.CONTRIBUTOR

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        needed = self.write_role if request.method not in SAFE_METHODS else self.required_role
        if needed is not None and not has_role(request.user, needed):
            raise PermissionDenied(_refusal(needed))
        return super().dispatch(request, *args, **kwargs)

    def handle_no_permission(self) -> HttpResponse:
        # An htmx request would swap the sign-in page into a table; send the whole window there instead.
        if self.request.htmx and not self.request.user.is_authenticated:
            return HttpResponseClientRedirect(
                f"{reverse('studio:login')}?next={self.request.get_full_path()}"
            )
        return super().handle_no_permission()


def _refusal(role: str) -> str:
    if role == RoleChoices.READER:
        return "Your account has no role in this workspace yet. Ask a team Admin to give you one."
    return f"This needs the {role} role. Ask a team Admin if you should have it."


class DashboardView(StudioPageMixin, TemplateView):
    """Whether anything is broken (endpoints, failed deployments, jobs under way), then what the team has
    and what happened lately."""

    template_name = "studio/dashboard.html"
    required_role = None
    recent_count = 12

    def get_context_data(self, **kwargs) -> dict:
        context = super().get_context_data(**kwargs)
        context["my_tokens"] = AccessToken.objects.filter(user=self.request.user).usable().count()
        if not has_role(self.request.user, RoleChoices.READER):
            return context
        now = timezone.now()
        week_ago = now - timedelta(days=7)
        versions = ModelVersion.objects.all()
        endpoint_rows, endpoint_total = dashboard.endpoint_health(now)
        context.update(
            endpoint_rows=endpoint_rows,
            endpoint_total=endpoint_total,
            broken_count=sum(1 for row in endpoint_rows if row.broken),
            failing=dashboard.failing_deployments(),
            running_jobs=dashboard.running_jobs(),
        )
        context.update(
            model_count=RegisteredModel.objects.count(),
            version_count=versions.filter(archived=False).count(),
            archived_count=versions.filter(archived=True).count(),
            week_count=versions.filter(created_at__gte=week_ago).count(),
            recent_versions=versions.select_related("model", "created_by").order_by("-created_at", "-pk")[:6],
            activity=AuditEvent.objects.select_related("actor")[: self.recent_count],
            lifecycle_events=Event.objects.public()[: self.recent_count],
        )
        return context


class AccessTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What it is for, so you can tell tokens apart: 'laptop CLI', 'CI deploys'."
    )
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label="Expires on",
        help_text="The token stops working at the start of this day (UTC).",
    )

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError(
                "Choose a day after today, or leave it empty for a token that does not expire."
            )
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=UTC) if day else None


class TokenListView(StudioPageMixin, View):
    """A person's own access tokens: list, create (the token is shown once, on the answer) and revoke."""

    template_name = "studio/token_list.html"
    required_role = None
    write_role = None

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(request, AccessTokenForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = AccessTokenForm(request.POST)
        if not form.is_valid():
            return self.render(request, form, status=400)
        token, raw = AccessToken.issue(request.user, form.cleaned_data["name"], form.expires_at())
        audit(
            request.user, AuditActionChoices.TOKEN_CREATED, "token", str(token), owner=request.user.username
        )
        # Shown in this answer only, never stored or put in a redirect: the row keeps just a digest.
        response = self.render(request, AccessTokenForm(), new_token=raw, new_token_row=token)
        # A secret: no browser or proxy cache may keep it.
        response["Cache-Control"] = "no-store"
        return response

    def render(self, request: HttpRequest, form: AccessTokenForm, status: int = 200, **extra) -> HttpResponse:
        tokens = AccessToken.objects.filter(user=request.user)
        return render(request, self.template_name, {"form": form, "tokens": tokens, **extra}, status=status)


class TokenRevokeView(StudioPageMixin, View):
    required_role = None
    write_role = None

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        # Only one's own tokens: anyone else's is simply not found. Admins revoke others' in the console.
        token = get_object_or_404(AccessToken, pk=pk, user=request.user)
        if token.revoked_at is None:
            token.revoke()
            audit(
                request.user,
                AuditActionChoices.TOKEN_REVOKED,
                "token",
                str(token),
                owner=request.user.username,
            )
        if request.htmx:
            return render(request, "studio/inc/token_row.html", {"token": token})
        messages.success(request, f"Token “{token.name}” is revoked; it no longer works.")
        return redirect("studio:token_list")


class ObjectListView(StudioPageMixin, View):
    """A filtered, sorted, paged list: the whole page, or for an htmx request only its results.

    Filtering goes through the resource's FilterSet, the same one its API uses. Invalid filters show the
    FilterSet's message and no rows (a filter that cannot be applied must not silently match everything).
    """

    filterset_class: type
    table_class: type
    template_name: str
    results_template = "inc/results.html"
    # Shown when there is nothing at all yet (as opposed to nothing matching the filters).
    empty_template = "inc/empty.html"
    filter_params: tuple[str, ...] = ("q", "type", "tag")

    def get_queryset(self):
        raise NotImplementedError

    def get_extra_context(self) -> dict:
        return {}

    def get(self, request: HttpRequest, **kwargs) -> HttpResponse:
        filterset = self.filterset_class(request.GET, queryset=self.get_queryset(), request=request)
        valid = filterset.is_valid()
        table = self.table_class(filterset.qs if valid else filterset.queryset.none(), request)
        context = {
            "filterset": filterset,
            "filter_errors": [message for messages_ in filterset.errors.values() for message in messages_],
            "filters": {
                "q": request.GET.get("q", ""),
                "type": request.GET.get("type", ""),
                "tags": [value for value in request.GET.getlist("tag") if value],
            },
            "has_filters": any(value for param in self.filter_params for value in request.GET.getlist(param)),
            "table": table,
            **self.get_extra_context(),
        }
        # A history restore after a cache miss asks for the whole page, though it comes from htmx.
        partial = bool(request.htmx) and not request.htmx.history_restore_request
        context.update(partial=partial, empty_template=self.empty_template)
        template = self.results_template if partial else self.template_name
        response = render(request, template, context, status=200 if valid else 400)
        # The same URL answers with a page or a fragment; caches must keep them apart.
        patch_vary_headers(response, ["HX-Request"])
        return response
