"""The team admin console at /admin/: users and their roles, access tokens, the audit log, and webhooks.

Every change to who may do what leaves an audit row: a user created, edited, deleted or given a role, a
password set, a token issued or revoked. Sign-in here is throttled like the pages' (studio.signin), and a
token issued for someone is shown once, in the answer to its creation, never in a message or a cookie.
"""

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group, User
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from studio import webhooks
from studio.choices import AuditActionChoices, RoleChoices
from studio.errors import Refused
from studio.models import AccessToken, AuditEvent, WebhookDelivery, WebhookSubscription, audit
from studio.roles import has_role, role_of, set_role
from studio.signin import ConsoleSignInForm, refused_when_throttled
from studio.webhook_hosts import HostRefused, check_url

admin.site.site_header = "Studio team console"
admin.site.site_title = "Studio team console"
admin.site.index_title = "Team"
admin.site.site_url = "/"


def _admins_only(request) -> bool:
    return has_role(request.user, RoleChoices.ADMIN)


# Only the team's Admins may enter, whatever other flags an account carries.
admin.site.has_permission = _admins_only
admin.site.login_form = ConsoleSignInForm
_console_login = admin.site.login
_console_password_change = admin.site.password_change


def _login(request: HttpRequest, extra_context=None) -> HttpResponse:
    return refused_when_throttled(_console_login(request, extra_context))


def _password_change(request: HttpRequest, extra_context=None) -> HttpResponse:
    """An Admin changing their own password, audited when the password did change."""
    before = request.user.password
    response = _console_password_change(request, extra_context)
    if request.method == "POST" and request.user.password != before:
        audit(request.user, AuditActionChoices.PASSWORD_CHANGED, "user", request.user.username)
    return response


admin.site.login = _login
admin.site.password_change = _password_change
admin.site.unregister(Group)
admin.site.unregister(User)


class TeamUserChangeForm(UserChangeForm):
    """The password is shown as its algorithm only and changed on its own page, never edited as a hash."""

    role = forms.ChoiceField(choices=[("", "No role")] + list(RoleChoices.choices), required=False)

    class Meta(UserChangeForm.Meta):
        fields = ["username", "password", "first_name", "last_name", "email", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["role"].initial = role_of(self.instance) or ""


@admin.register(User)
class TeamUserAdmin(UserAdmin):
    form = TeamUserChangeForm
    list_display = ["username", "email", "role", "is_active", "last_login", "date_joined"]
    list_filter = ["groups", "is_active"]
    fieldsets = [
        (None, {"fields": ["username", "password"]}),
        ("Person", {"fields": ["first_name", "last_name", "email"]}),
        ("Access", {"fields": ["role", "is_active"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    readonly_fields = ["last_login", "date_joined"]
    actions = ["make_reader", "make_contributor", "make_admin"]

    @admin.display(description="Role")
    def role(self, user) -> str:
        return role_of(user) or "—"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            audit(request.user, AuditActionChoices.CREATED, "user", obj.username)
            return
        fields = sorted(name for name in form.changed_data if name not in ("role", "password"))
        if fields:
            audit(request.user, AuditActionChoices.UPDATED, "user", obj.username, fields=fields)
        if "role" in form.changed_data:
            previous = form.fields["role"].initial or None
            _change_role(request, obj, previous, form.cleaned_data["role"] or None)

    def delete_model(self, request, obj):
        username = obj.username
        super().delete_model(request, obj)
        audit(request.user, AuditActionChoices.DELETED, "user", username)

    def delete_queryset(self, request, queryset):
        usernames = list(queryset.values_list("username", flat=True))
        super().delete_queryset(request, queryset)
        for username in usernames:
            audit(request.user, AuditActionChoices.DELETED, "user", username)

    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, unquote(id))
        before = user.password if user else None
        response = super().user_change_password(request, id, form_url)
        if user is not None and request.method == "POST":
            user.refresh_from_db(fields=["password"])
            if user.password != before:
                audit(request.user, AuditActionChoices.PASSWORD_CHANGED, "user", user.username)
        return response

    def _give(self, request, queryset, role):
        for user in queryset:
            previous = role_of(user)
            if previous != role:
                _change_role(request, user, previous, role)
        self.message_user(request, f"{queryset.count()} user(s) now have the {role} role.")

    @admin.action(description="Give the Reader role")
    def make_reader(self, request, queryset):
        self._give(request, queryset, RoleChoices.READER)

    @admin.action(description="Give the Contributor role")
    def make_contributor(self, request, queryset):
        self._give(request, queryset, RoleChoices.CONTRIBUTOR)

    @admin.action(description="Give the Admin role")
    def make_admin(self, request, queryset):
        self._give(request, queryset, RoleChoices.ADMIN)


def _change_role(request, user: User, previous: str | None, role: str | None) -> None:
    set_role(user, role)
    audit(request.user, AuditActionChoices.ROLE_CHANGED, "user", user.username, role=role, previous=previous)


class AccessTokenForm(forms.ModelForm):
    class Meta:
        model = AccessToken
        fields = ["user", "name", "expires_at"]


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    form = AccessTokenForm
    list_display = ["name", "user", "hint", "state", "created_at", "expires_at", "last_used_at"]
    list_filter = ["user"]
    search_fields = ["name", "user__username", "hint"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return (
            ["user", "name", "hint", "created_at", "expires_at", "last_used_at", "revoked_at"] if obj else []
        )

    def save_model(self, request, obj, form, change):
        if change:
            return
        token, raw = AccessToken.issue(obj.user, obj.name, obj.expires_at)
        obj.pk = token.pk
        # Kept on this request's object only, for the answer below.
        obj.issued = (token, raw)
        audit(request.user, AuditActionChoices.TOKEN_CREATED, "token", str(token), owner=obj.user.username)

    def response_add(self, request, obj, post_url_continue=None):
        """The new token, shown once in this answer: not in a message, whose cookie would carry it."""
        token, raw = obj.issued
        context = {
            **self.admin_site.each_context(request),
            "title": f"Token for {token.user.username}",
            "opts": self.opts,
            "token": token,
            "raw": raw,
        }
        response = TemplateResponse(request, "admin/studio/accesstoken/issued.html", context, status=201)
        # A secret: no browser or proxy cache may keep it.
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()
            audit(
                request.user, AuditActionChoices.TOKEN_REVOKED, "token", str(token), owner=token.user.username
            )
        self.message_user(request, "Revoked.")

    def delete_model(self, request, obj):
        obj.revoke()

    def delete_queryset(self, request, queryset):
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


class ReadOnlyAdmin(admin.ModelAdmin):
    """A log: rows are listed and filtered, never added, edited or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type", "actor"]
    search_fields = ["object_repr", "actor__username"]
    date_hierarchy = "at"


class WebhookSubscriptionForm(forms.ModelForm):
    """URL and event filter checked by the same rules as the API's (studio.webhooks)."""

    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="https",
        help_text="Where events are POSTed: http(s), on a host the allow-list permits.",
        widget=forms.URLInput(attrs={"class": "vURLField"}),
    )
    events = forms.CharField(
        initial="*",
        help_text="Event types or patterns, comma-separated: studio.deployment.*, studio.model.registered; "
        "* for every event.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "events", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["events"] = ", ".join(self.instance.events)

    def clean_url(self):
        try:
            check_url(self.cleaned_data["url"])
        except HostRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return self.cleaned_data["url"]

    def clean_events(self):
        patterns = [item.strip() for item in self.cleaned_data["events"].split(",") if item.strip()]
        try:
            return webhooks.check_patterns(patterns)
        except Refused as exc:
            raise forms.ValidationError(exc.errors.get("events") or exc.message) from None


class WebhookDeliveryInline(admin.TabularInline):
    """The subscription's delivery log, newest first: the last 50 here, all under Webhook deliveries."""

    model = WebhookDelivery
    fields = ["event_type", "subject", "state", "attempts", "response_code", "latency_ms", "error",
              "last_attempt_at"]  # fmt: skip
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Event")
    def event_type(self, delivery) -> str:
        return delivery.event.type

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("event")
        parent = (request.resolver_match.kwargs if request.resolver_match else {}).get("object_id")
        if parent is None:
            return queryset
        # An inline's queryset cannot be sliced: bound the page by the newest rows' ids instead.
        newest = WebhookDelivery.objects.filter(subscription_id=unquote(parent)).order_by("-id")
        return queryset.filter(pk__in=list(newest.values_list("pk", flat=True)[:50]))


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["name", "url", "event_filter", "active", "failing_since", "owner", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "url"]
    readonly_fields = [
        "secret_hint",
        "owner",
        "created_at",
        "failing_since",
        "disabled_reason",
        "delivery_log",
    ]
    inlines = [WebhookDeliveryInline]
    actions = ["send_test", "enable"]

    @admin.display(description="Events")
    def event_filter(self, subscription) -> str:
        return ", ".join(subscription.events)

    @admin.display(description="Delivery log")
    def delivery_log(self, subscription) -> str:
        url = reverse("admin:studio_webhookdelivery_changelist")
        return format_html(
            '<a href="{}?subscription__id__exact={}">All {} deliveries</a> (the newest 50 are below)',
            url,
            subscription.pk,
            subscription.deliveries.count(),
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "url", "events", "active"]
        return ["name", "url", "events", "active", "secret_hint", "owner", "created_at", "failing_since",
                "disabled_reason", "delivery_log"]  # fmt: skip

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_model(self, request, obj, form, change):
        values = {key: form.cleaned_data[key] for key in ("name", "url", "events", "active")}
        if change:
            existing = WebhookSubscription.objects.get(pk=obj.pk)
            webhooks.update_subscription(existing, values, request.user)
            return
        subscription, secret = webhooks.create_subscription(values, request.user)
        obj.pk = subscription.pk
        # Kept on this request's object only, for the answer below.
        obj.issued = (subscription, secret)

    def response_add(self, request, obj, post_url_continue=None):
        """The new secret, shown once in this answer, as a new token is."""
        subscription, secret = obj.issued
        context = {
            **self.admin_site.each_context(request),
            "title": f"Webhook {subscription.name}",
            "opts": self.opts,
            "subscription": subscription,
            "secret": secret,
        }
        response = TemplateResponse(
            request, "admin/studio/webhooksubscription/created.html", context, status=201
        )
        response["Cache-Control"] = "no-store"
        return response

    def delete_model(self, request, obj):
        webhooks.delete_subscription(obj, request.user)

    def delete_queryset(self, request, queryset):
        for subscription in queryset:
            webhooks.delete_subscription(subscription, request.user)

    @admin.action(description="Send a test event")
    def send_test(self, request, queryset):
        for subscription in queryset:
            webhooks.send_test(subscription)
        self.message_user(request, "Test events queued; their deliveries are listed on each webhook's page.")

    @admin.action(description="Enable again")
    def enable(self, request, queryset):
        for subscription in queryset.filter(active=False):
            webhooks.update_subscription(subscription, {"active": True}, request.user)
        self.message_user(request, "Enabled.")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Every delivery, to every subscription: read only."""

    list_display = ["created_at", "subscription", "event_type", "subject", "state", "attempts",
                    "response_code", "latency_ms", "error"]  # fmt: skip
    list_filter = ["state", "subscription"]
    search_fields = ["subject", "event__type", "error"]
    list_select_related = ["subscription", "event"]

    @admin.display(description="Event")
    def event_type(self, delivery) -> str:
        return delivery.event.type
