"""API authentication with personal access tokens: `Authorization: Bearer <token>`."""

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from studio.models import AccessToken, token_digest

_WINDOW_SECONDS = 60


def _client(request) -> str:
    return request.META.get("REMOTE_ADDR", "unknown")


def _failure_key(request) -> str:
    return f"auth-failures:{_client(request)}"


def _note_failure(request) -> None:
    key = _failure_key(request)
    if cache.add(key, 1, _WINDOW_SECONDS):
        return
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, _WINDOW_SECONDS)


class AccessTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        if cache.get(_failure_key(request), 0) >= settings.STUDIO_AUTH_FAILURES_PER_MINUTE:
            raise exceptions.Throttled(
                wait=_WINDOW_SECONDS, detail="Too many failed sign-in attempts from this address."
            )
        raw = header[1].decode(errors="replace")
        token = AccessToken.objects.usable().select_related("user").filter(digest=token_digest(raw)).first()
        if token is None or not token.user.is_active:
            _note_failure(request)
            raise exceptions.AuthenticationFailed(
                "The token is not valid: it may be mistyped, expired or revoked. Create a new one on "
                "your Tokens page."
            )
        now = timezone.now()
        # Written at most once a minute per token: an API client's every request need not be a write.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword
