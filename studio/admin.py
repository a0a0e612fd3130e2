"""The team admin console at /admin/: users and their roles, access tokens, and the audit log."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, User
from django.utils import timezone

from studio.choices import AuditActionChoices, RoleChoices
from studio.models import AccessToken, AuditEvent, audit
from studio.roles import has_role, role_of, set_role

admin.site.site_header = "Studio team console"
admin.site.site_title = "Studio team console"
admin.site.index_title = "Team"
admin.site.site_url = "/"


def _admins_only(request) -> bool:
    return has_role(request.user, RoleChoices.ADMIN)


# Only the team's Admins may enter, whatever other flags an account carries.
admin.site.has_permission = _admins_only
admin.site.unregister(Group)
admin.site.unregister(User)


class TeamUserChangeForm(forms.ModelForm):
    role = forms.ChoiceField(choices=[("", "No role")] + list(RoleChoices.choices), required=False)

    class Meta:
        model = User
        fields = ["username", "first_name", "last_name", "email", "is_active"]

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
        role = form.cleaned_data.get("role")
        if role and role != role_of(obj):
            set_role(obj, role)
            audit(request.user, AuditActionChoices.UPDATED, "user", obj.username, role=role)

    def _give(self, request, queryset, role):
        for user in queryset:
            set_role(user, role)
            audit(request.user, AuditActionChoices.UPDATED, "user", user.username, role=role)
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
        audit(request.user, AuditActionChoices.TOKEN_CREATED, "token", str(token), owner=obj.user.username)
        self.message_user(
            request,
            f"Token for {obj.user.username}: {raw} — copy it now; it will not be shown again.",
            messages.WARNING,
        )

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
