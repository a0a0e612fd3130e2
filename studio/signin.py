"""Password sign-in for the pages (/login/) and the team console (/admin/login/), with failed passwords
throttled.

Failures are counted (studio.throttling) per account, meaning the username presented, whether or not
such an account exists, and per client address (studio.client_address). Once an account has had
STUDIO_LOGIN_FAILURES_PER_ACCOUNT failures in STUDIO_LOGIN_FAILURE_WINDOW_S, no password is tried for it,
the right one included, until the window closes; once one address has had
STUDIO_LOGIN_FAILURES_PER_CLIENT failures, its wrong passwords are answered with a 429 saying when to try
again, while a right one still signs in: people sharing an address (a NAT, a proxy) are never refused
because somebody else there failed. Failures on other accounts never lock an account.
A successful sign-in clears its account's failures, not its address's: an account one controls must not
buy an address a fresh budget for guessing others.
"""

import logging

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse

from serving import proxies
from studio.client_address import client_address
from studio.throttling import FailureLimit, wait_in_words

logger = logging.getLogger(__name__)


def _limits() -> tuple[FailureLimit, FailureLimit]:
    window = settings.STUDIO_LOGIN_FAILURE_WINDOW_S
    return (
        FailureLimit("signin-account", settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT, window),
        FailureLimit("signin-client", settings.STUDIO_LOGIN_FAILURES_PER_CLIENT, window),
    )


class ThrottledSignInMixin:
    """For an AuthenticationForm: refuse throttled accounts and addresses before trying the password.

    `retry_after` is the seconds to wait when the form refused for that reason, else 0.
    """

    retry_after = 0

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()
        per_account, per_client = _limits()
        # Usernames differing only in case are one account to the throttle, whatever the database thinks.
        account = username.casefold()
        address = client_address(self.request)
        client = proxies.client_subject(address)
        wait_account = per_account.retry_after(account)
        if wait_account:
            self._refuse(wait_account, "for this account")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            # A right password the form still refuses (an inactive account, a non-Admin at the console)
            # is not a guess.
            if self.get_user() is None:
                self._note_failure(per_account, account, per_client, client, username, address)
                # The right password gets through whatever others sharing the address did; wrong ones
                # from a busy address are answered with when to try again.
                if wait_client := per_client.retry_after(client):
                    self._refuse(wait_client, "from your address")
            raise
        per_account.forget(account)
        return cleaned

    def _refuse(self, wait: int, what: str) -> None:
        self.retry_after = wait
        raise forms.ValidationError(
            f"Too many failed sign-in attempts {what}. Try again {wait_in_words(wait)}.", code="throttled"
        )

    @staticmethod
    def _note_failure(
        per_account: FailureLimit, account: str, per_client: FailureLimit, client: str, username, address
    ) -> None:
        if per_account.note_failure(account) == per_account.limit:
            logger.warning(
                "Sign-in to %r is refused for %d s after %d failed passwords (the last from %s).",
                username,
                per_account.window_s,
                per_account.limit,
                address,
            )
        if per_client.note_failure(client) == per_client.limit:
            logger.warning(
                "Sign-in from %s is refused for %d s after %d failed passwords.",
                address,
                per_client.window_s,
                per_client.limit,
            )


class SignInForm(ThrottledSignInMixin, AuthenticationForm):
    pass


class ConsoleSignInForm(ThrottledSignInMixin, AdminAuthenticationForm):
    pass


def refused_when_throttled(response: HttpResponse) -> HttpResponse:
    """A sign-in page refused by the throttle answers 429 with Retry-After, so scripts stop too."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    wait = getattr(form, "retry_after", 0)
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


class SignInView(auth_views.LoginView):
    authentication_form = SignInForm
    template_name = "studio/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form: SignInForm) -> HttpResponse:
        return refused_when_throttled(super().form_invalid(form))
