"""The address of the client that sent a request to the control plane: what failed sign-ins and failed
tokens are counted against.

REMOTE_ADDR is the peer that connected; `X-Forwarded-For` is believed only when that peer is one of
STUDIO_TRUSTED_PROXIES. The rules are `serving.proxies`', the gateway's own, so one value of the variable
means the same to both.
"""

from django.conf import settings
from django.http import HttpRequest

UNKNOWN = "unknown"


def client_address(request: HttpRequest | None) -> str:
    """The client's IP address as text, or "unknown" when the connection names none."""
    if request is None:
        return UNKNOWN
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return settings.STUDIO_TRUSTED_PROXIES.client(
        request.META.get("REMOTE_ADDR") or None, [forwarded] if forwarded else []
    )
