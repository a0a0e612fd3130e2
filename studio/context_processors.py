from django.conf import settings

from studio.roles import has_role, role_of


def studio(request) -> dict:
    user = getattr(request, "user", None)
    return {
        "studio_role": role_of(user),
        "can_contribute": has_role(user, "Contributor"),
        "is_team_admin": has_role(user, "Admin"),
        "gateway_url": settings.STUDIO_GATEWAY_URL,
    }
