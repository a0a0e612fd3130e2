"""Roles: Admin, Contributor and Reader, kept as Django groups. Each role includes the ones below it."""

from django.contrib.auth.models import Group, Permission
from rest_framework.permissions import SAFE_METHODS, BasePermission

from studio.choices import RoleChoices

_RANK = {RoleChoices.READER: 1, RoleChoices.CONTRIBUTOR: 2, RoleChoices.ADMIN: 3}


def role_of(user) -> str | None:
    """The highest role the user holds, or None for anonymous users and users with no role."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return RoleChoices.ADMIN
    cached = getattr(user, "_studio_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))
    held = [role for role in _RANK if role in names]
    role = max(held, key=_RANK.__getitem__) if held else None
    user._studio_role = role
    return role


def has_role(user, role: str) -> bool:
    held = role_of(user)
    return held is not None and _RANK[held] >= _RANK[role]


def set_role(user, role: str | None) -> None:
    """Give the user exactly one role, or none; Admins also get the staff flag the admin console expects."""
    groups = Group.objects.filter(name__in=list(_RANK))
    user.groups.remove(*groups)
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == RoleChoices.ADMIN
    user.save(update_fields=["is_staff"])
    user.__dict__.pop("_studio_role", None)


def ensure_role_groups(**kwargs) -> None:
    """After migrate: the three groups exist, and Admin holds every permission the console checks."""
    for role in _RANK:
        Group.objects.get_or_create(name=role)
    Group.objects.get(name=RoleChoices.ADMIN).permissions.set(Permission.objects.all())


class RolePermission(BasePermission):
    """API access by role: Readers read, Contributors write, Admins do anything.

    A view narrows this with `required_role` (for every method) when it needs more.
    """

    message = "Your role does not allow this. Ask a team Admin for the Contributor role."

    def has_permission(self, request, view) -> bool:
        required = getattr(view, "required_role", None)
        if required is None:
            required = RoleChoices.READER if request.method in SAFE_METHODS else RoleChoices.CONTRIBUTOR
        return has_role(request.user, required)
