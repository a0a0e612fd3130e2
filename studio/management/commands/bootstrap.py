"""Make sure the first Admin exists. Idempotent: run on every start.

With STUDIO_ADMIN_USER (and optionally STUDIO_ADMIN_PASSWORD, STUDIO_ADMIN_TOKEN) the account is made,
with that password and the Admin role, the first time only: once it exists, its password and role belong
to the team and are never reset from the environment (a forgotten password is reset with
`manage.py changepassword NAME`). STUDIO_ADMIN_TOKEN is issued to the account if it never was, so
automation and CI can use a known token; a weak one (under 32 characters, or with little variety) stops
the start naming the variable, before anything is written. Without STUDIO_ADMIN_USER, and only when no
user exists yet, an `admin` account is made with a generated password that is printed once.
"""

import secrets

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from studio.choices import AuditActionChoices, RoleChoices
from studio.env import env_secret, env_str
from studio.models import AccessToken, audit, token_digest
from studio.roles import ensure_role_groups, set_role

MIN_TOKEN_LENGTH = 32
MIN_TOKEN_DISTINCT_CHARACTERS = 10
_MAKE_ONE = "make one with: python -c \"import secrets; print('stu_' + secrets.token_urlsafe(32))\""


def token_weakness(token: str) -> str | None:
    """Why `token` is too weak to let anyone in, or None when it is strong enough."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters long; it needs at least {MIN_TOKEN_LENGTH}"
    distinct = len(set(token))
    if distinct < MIN_TOKEN_DISTINCT_CHARACTERS:
        return f"uses only {distinct} different characters; it needs at least {MIN_TOKEN_DISTINCT_CHARACTERS}"
    # "abcabcabc...": a short pattern repeated, however many characters it has.
    if any(token[period:] == token[:-period] for period in range(1, len(token) // 3 + 1)):
        return "repeats a short pattern"
    return None


class Command(BaseCommand):
    help = "Create the first Admin from STUDIO_ADMIN_USER / _PASSWORD / _TOKEN, once."

    def handle(self, *args, **options):
        username = env_str("STUDIO_ADMIN_USER")
        password = env_secret("STUDIO_ADMIN_PASSWORD")
        token = env_secret("STUDIO_ADMIN_TOKEN")
        if token and (weakness := token_weakness(token)):
            raise CommandError(f"STUDIO_ADMIN_TOKEN {weakness}: {_MAKE_ONE}.")
        with transaction.atomic():
            ensure_role_groups()
            if username:
                self._named_admin(username, password, token)
            elif not User.objects.exists():
                self._first_admin()

    def _named_admin(self, username: str, password: str | None, token: str | None) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = _create_admin(username, password)
            self.stdout.write(f"Created the Admin {username!r}.")
        else:
            self.stdout.write(
                f"{username!r} exists; its password and role are left as they are "
                f"(reset a password with `manage.py changepassword {username}`)."
            )
        if token and not AccessToken.objects.filter(digest=token_digest(token)).exists():
            row, _ = AccessToken.issue(user, "STUDIO_ADMIN_TOKEN", raw=token)
            audit(None, AuditActionChoices.TOKEN_CREATED, "token", str(row), owner=username, by="bootstrap")

    def _first_admin(self) -> None:
        username, password = "admin", secrets.token_urlsafe(12)
        _create_admin(username, password)
        self.stdout.write(
            self.style.WARNING(
                f"Created the first Admin. Sign in as {username!r} with password {password!r} (shown "
                f"once; change it under /admin/, or reset it with `manage.py changepassword {username}`)."
            )
        )


def _create_admin(username: str, password: str | None) -> User:
    user = User(username=username)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    set_role(user, RoleChoices.ADMIN)
    audit(None, AuditActionChoices.CREATED, "user", username, role=RoleChoices.ADMIN, by="bootstrap")
    return user
