"""API authentication with personal access tokens: `Authorization: Bearer <token>`.

Failed tokens are throttled (studio.throttling) per presented token and per client address, each at
STUDIO_AUTH_FAILURES_PER_MINUTE failures in a 60-second window. A valid token is always accepted: the
throttle answers only requests that would have failed anyway, so other people's failures from the same
address (one office behind one NAT) never lock anyone out, and guessing gains nothing from it either,
since tokens are 256-bit random strings.
"""

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from serving import proxies
from studio.client_address import client_address
from studio.models import AccessToken, token_digest
from studio.throttling import FailureLimit

WINDOW_S = 60


def _limits() -> tuple[FailureLimit, FailureLimit]:
    per_window = settings.STUDIO_AUTH_FAILURES_PER_MINUTE
    return FailureLimit("api-token", per_window, WINDOW_S), FailureLimit("api-client", per_window, WINDOW_S)


class AccessTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        digest = token_digest(header[1].decode(errors="replace"))
        token = AccessToken.objects.usable().select_related("user").filter(digest=digest).first()
        if token is None or not token.user.is_active:
            self._refuse(request, digest)
        now = timezone.now()
        # Written at most once a minute per token: an API client's every request need not be a write.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def _refuse(self, request, digest: str) -> None:
        """Count the failure, or answer 429 when this token or this address already failed too often."""
        per_token, per_client = _limits()
        client = proxies.client_subject(client_address(request))
        wait_token, wait_client = per_token.retry_after(digest), per_client.retry_after(client)
        if wait_token or wait_client:
            source = "from this address" if wait_client >= wait_token else "with this token"
            raise exceptions.Throttled(
                wait=max(wait_token, wait_client), detail=f"Too many failed sign-in attempts {source}."
            )
        per_token.note_failure(digest)
        per_client.note_failure(client)
        raise exceptions.AuthenticationFailed(
            "The token is not valid: it may be mistyped, expired or revoked. Create a new one on "
            "your Tokens page."
        )

    def authenticate_header(self, request) -> str:
        return self.keyword
