"""Make sure the first Admin exists. Idempotent: run on every start.

With STUDIO_ADMIN_USER (and optionally STUDIO_ADMIN_PASSWORD, STUDIO_ADMIN_TOKEN) the account is made or
brought up to date, so automation and CI can sign in with known credentials. Without them, and only when
no user exists yet, an `admin` account is made with a generated password that is printed once.
"""

import secrets

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db import transaction

from studio.choices import RoleChoices
from studio.env import env_secret, env_str
from studio.models import AccessToken, token_digest
from studio.roles import ensure_role_groups, set_role


class Command(BaseCommand):
    help = "Create or update the first Admin from STUDIO_ADMIN_USER / _PASSWORD / _TOKEN."

    @transaction.atomic
    def handle(self, *args, **options):
        ensure_role_groups()
        username = env_str("STUDIO_ADMIN_USER")
        password = env_secret("STUDIO_ADMIN_PASSWORD")
        token = env_secret("STUDIO_ADMIN_TOKEN")
        if not username:
            if User.objects.exists():
                return
            username, password = "admin", secrets.token_urlsafe(12)
            self._admin(username, password)
            self.stdout.write(
                self.style.WARNING(
                    f"Created the first Admin. Sign in as {username!r} with password {password!r} "
                    "(shown once; change it under /admin/)."
                )
            )
            return
        user = self._admin(username, password)
        if token and not AccessToken.objects.filter(digest=token_digest(token)).exists():
            AccessToken.issue(user, "STUDIO_ADMIN_TOKEN", raw=token)
        self.stdout.write(f"Admin {username!r} is ready.")

    def _admin(self, username: str, password: str | None) -> User:
        user, created = User.objects.get_or_create(username=username)
        if password and (created or not user.check_password(password)):
            user.set_password(password)
            user.save()
        elif created:
            user.set_unusable_password()
            user.save()
        set_role(user, RoleChoices.ADMIN)
        return user
