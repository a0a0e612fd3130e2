"""The team admin console at /admin/: users and their roles, access tokens, and the audit log.

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
from django.utils import timezone

from studio.choices import AuditActionChoices, RoleChoices
from studio.models import AccessToken, AuditEvent, audit
from studio.roles import has_role, role_of, set_role
from studio.signin import ConsoleSignInForm, refused_when_throttled

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


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type", "actor"]
    search_fields = ["object_repr", "actor__username"]
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
