"""Sign-in security: failed passwords and tokens throttled per account or token and per client, over a
real window; the client address behind proxies; the first Admin's bootstrap; what the audit log records.

Each test has a file cache of its own (the embedded default backend, where an increment used to stretch
every window to five minutes) and a clock it can move, so windows are crossed without waiting.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from serving.proxies import parse_trusted_proxies
from studio.models import AccessToken, AuditEvent, token_digest
from studio.roles import role_of, set_role
from studio.testkit import PASSWORD

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
MODELS = "/api/v1/models/"
OFFICE, HOME, CAFE = "198.51.100.7", "203.0.113.9", "192.0.2.44"
STRONG_TOKEN = "stu_Yp3kQ9vN2xW7rT5mZ8bL4cH6jD1fG0sA"


@pytest.fixture(autouse=True)
def own_cache(settings, tmp_path):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }


class Clock:
    """time.time() as the code under test sees it, moved forward on demand."""

    def __init__(self, monkeypatch):
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    return Clock(monkeypatch)


def sign_in(username: str, password: str, address: str = OFFICE, url: str = "/login/", **headers):
    client = Client(REMOTE_ADDR=address, **headers)
    return client, client.post(url, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def api_get(token: str, address: str = OFFICE, **headers):
    return Client(REMOTE_ADDR=address, **headers).get(MODELS, HTTP_AUTHORIZATION=f"Bearer {token}")


# Password sign-in


def test_an_account_is_refused_after_its_failures_even_with_the_right_password_until_the_window_ends(
    team, settings, clock
):
    settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.STUDIO_LOGIN_FAILURE_WINDOW_S = 900
    for address in (OFFICE, HOME, CAFE):
        _, response = sign_in("reader", "guess", address)
        assert response.status_code == 200 and "correct username and password" in response.content.decode()

    client, refused = sign_in("reader", PASSWORD, address="192.0.2.200")
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts for this account. Try again in 15 minutes." in (
        refused.content.decode()
    )
    assert 890 <= int(refused["Retry-After"]) <= 900
    assert not signed_in(client)

    clock.advance(898)
    _, still = sign_in("reader", PASSWORD, address="192.0.2.200")
    assert still.status_code == 429 and int(still["Retry-After"]) <= 2
    clock.advance(3)
    client, response = sign_in("reader", PASSWORD, address="192.0.2.200")
    assert response.status_code == 302 and signed_in(client)


def test_failures_on_other_accounts_from_other_addresses_never_refuse_a_right_password(team, settings):
    settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.STUDIO_LOGIN_FAILURES_PER_CLIENT = 4
    for username in ("admin", "contributor", "outsider", "nobody"):
        sign_in(username, "guess", HOME)
    # That address tried too many accounts: its wrong passwords are answered with when to try again...
    _, refused = sign_in("reader", "guess", HOME)
    assert refused.status_code == 429
    assert "from your address" in refused.content.decode()
    # ...while a right password, from there (a shared NAT) or anywhere else, signs in as usual.
    for address in (HOME, OFFICE):
        client, response = sign_in("reader", PASSWORD, address)
        assert response.status_code == 302 and signed_in(client)


def test_a_success_clears_the_accounts_failures(team, settings):
    settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT = 3
    sign_in("reader", "guess")
    sign_in("reader", "guess again")
    assert sign_in("reader", PASSWORD)[1].status_code == 302
    sign_in("reader", "typo")
    sign_in("reader", "typo")
    assert sign_in("reader", PASSWORD)[1].status_code == 302


def test_usernames_that_do_not_exist_are_throttled_alike(team, settings):
    settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT = 2
    sign_in("ghost", "guess")
    sign_in("ghost", "guess")
    _, refused = sign_in("ghost", "guess", CAFE)
    assert refused.status_code == 429 and "for this account" in refused.content.decode()


def test_the_console_sign_in_is_throttled_like_the_pages(team, settings):
    settings.STUDIO_LOGIN_FAILURES_PER_ACCOUNT = 2
    for _ in range(2):
        _, response = sign_in("admin", "guess", url="/admin/login/")
        assert response.status_code == 200
    # The two doors share the count: the pages refuse the account too.
    client, refused = sign_in("admin", PASSWORD, url="/admin/login/")
    assert refused.status_code == 429 and not signed_in(client)
    assert "Too many failed sign-in attempts for this account" in refused.content.decode()
    assert sign_in("admin", PASSWORD)[1].status_code == 429


# API tokens


def test_a_valid_token_is_accepted_from_an_address_throttled_for_failures(team, settings):
    settings.STUDIO_AUTH_FAILURES_PER_MINUTE = 3
    for attempt in range(3):
        assert api_get(f"stu_wrong-{attempt}").status_code == 401
    throttled = api_get("stu_wrong-again")
    assert throttled.status_code == 429
    assert "Too many failed sign-in attempts from this address" in throttled.json()["error"]["message"]
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert api_get(team.reader.token).status_code == 200


def test_a_failing_token_is_throttled_whatever_address_it_comes_from(team, settings):
    settings.STUDIO_AUTH_FAILURES_PER_MINUTE = 3
    for address in (OFFICE, HOME, CAFE):
        assert api_get("stu_leaked-and-revoked", address).status_code == 401
    throttled = api_get("stu_leaked-and-revoked", "192.0.2.200")
    assert throttled.status_code == 429
    assert "with this token" in throttled.json()["error"]["message"]
    assert api_get("stu_another-wrong-one", "192.0.2.200").status_code == 401


def test_the_api_window_is_the_sixty_seconds_it_states(team, settings, clock):
    settings.STUDIO_AUTH_FAILURES_PER_MINUTE = 3
    for _ in range(3):
        api_get("stu_wrong")
    assert api_get("stu_wrong").status_code == 429
    clock.advance(58)
    assert api_get("stu_wrong").status_code == 429
    clock.advance(3)
    assert api_get("stu_wrong").status_code == 401


# The client address


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(team, settings):
    settings.STUDIO_LOGIN_FAILURES_PER_CLIENT = 3
    for spoofed in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        sign_in(f"user-{spoofed}", "guess", OFFICE, HTTP_X_FORWARDED_FOR=spoofed)
    _, refused = sign_in("reader", "guess", OFFICE, HTTP_X_FORWARDED_FOR="203.0.113.4")
    assert refused.status_code == 429 and "from your address" in refused.content.decode()


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_apart(team, settings):
    settings.STUDIO_TRUSTED_PROXIES = parse_trusted_proxies("10.0.0.0/8, ::1")
    settings.STUDIO_AUTH_FAILURES_PER_MINUTE = 2
    proxy = "10.1.2.3"
    api_get("stu_wrong-1", proxy, HTTP_X_FORWARDED_FOR=f"{HOME}, 10.9.9.9")
    api_get("stu_wrong-2", proxy, HTTP_X_FORWARDED_FOR=HOME)
    # What the client writes left of its own address does not make it someone else.
    assert api_get("stu_wrong-3", proxy, HTTP_X_FORWARDED_FOR=f"{CAFE}, {HOME}").status_code == 429
    assert api_get("stu_wrong-3", proxy, HTTP_X_FORWARDED_FOR=OFFICE).status_code == 401
    # A peer that is not a trusted proxy is the client, whatever it forwards.
    assert api_get("stu_wrong-4", HOME, HTTP_X_FORWARDED_FOR=OFFICE).status_code == 429


def test_a_trusted_proxy_that_is_not_an_address_stops_the_start_naming_it(tmp_path):
    done = manage("check", home=tmp_path, STUDIO_TRUSTED_PROXIES="10.0.0.0/8, proxy.internal")
    assert done.returncode != 0
    assert "STUDIO_TRUSTED_PROXIES: 'proxy.internal' is not an IP address" in done.stderr


# Bootstrap


def manage(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=clean | {"STUDIO_HOME": str(home)} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_weak_admin_token_stops_the_start_naming_the_variable(tmp_path):
    done = manage("bootstrap", home=tmp_path, STUDIO_ADMIN_USER="ada", STUDIO_ADMIN_TOKEN="stu_short-token")
    assert done.returncode != 0
    assert "STUDIO_ADMIN_TOKEN is 15 characters long; it needs at least 32" in done.stderr
    assert "secrets.token_urlsafe(32)" in done.stderr


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("a" * 40, "uses only 1 different characters"),
        ("stu_" + "0101010101" * 4, "uses only 6 different characters"),
        ("abcdefghijk" * 4, "repeats a short pattern"),
    ],
)
def test_an_admin_token_with_little_variety_is_refused(monkeypatch, token, reason):
    monkeypatch.setenv("STUDIO_ADMIN_USER", "ada")
    monkeypatch.setenv("STUDIO_ADMIN_TOKEN", token)
    with pytest.raises(CommandError, match=f"STUDIO_ADMIN_TOKEN {reason}"):
        call_command("bootstrap")
    assert not User.objects.filter(username="ada").exists()


def test_bootstrap_sets_the_password_and_role_only_when_it_creates_the_account(monkeypatch, capsys):
    monkeypatch.setenv("STUDIO_ADMIN_USER", "ada")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "first-password-42")
    monkeypatch.setenv("STUDIO_ADMIN_TOKEN", STRONG_TOKEN)
    call_command("bootstrap")
    ada = User.objects.get(username="ada")
    assert ada.check_password("first-password-42") and role_of(ada) == "Admin"
    assert AccessToken.objects.filter(user=ada, digest=token_digest(STRONG_TOKEN)).exists()
    created = AuditEvent.objects.get(action="created", object_type="user")
    assert created.object_repr == "ada" and created.details == {"role": "Admin", "by": "bootstrap"}

    # The team changes both; the next start leaves them alone.
    ada.set_password("changed-by-ada-99")
    ada.save()
    set_role(ada, "Reader")
    call_command("bootstrap")
    assert "changepassword ada" in capsys.readouterr().out
    ada = User.objects.get(username="ada")
    assert role_of(ada) == "Reader"
    client, response = sign_in("ada", "changed-by-ada-99")
    assert response.status_code == 302 and signed_in(client)
    assert sign_in("ada", "first-password-42")[1].status_code == 200
    assert AccessToken.objects.filter(user=ada).count() == 1


# The audit log


def test_fetching_endpoint_credentials_is_audited_as_a_read(team):
    for name, mode in (("fraud", "key"), ("churn", "aml_token")):
        contributor = team.contributor.client()
        created = contributor.post(
            "/api/v1/online-endpoints/", {"name": name, "auth_mode": mode}, format="json"
        )
        assert created.status_code == 201, created.content
        response = contributor.post(f"/api/v1/online-endpoints/{name}/credentials/")
        assert response.status_code == 200
    assert not AuditEvent.objects.filter(action="credentials_changed").exists()
    viewed = AuditEvent.objects.get(action="keys_viewed")
    assert (viewed.actor, viewed.object_repr) == (team.contributor.user, "fraud")
    assert viewed.get_action_display() == "viewed keys"
    issued = AuditEvent.objects.get(action="scoring_token_issued")
    assert (issued.actor, issued.object_repr) == (team.contributor.user, "churn")


def console(team) -> Client:
    client = Client()
    client.force_login(team.admin.user)
    return client


def user_form(user: User, role: str) -> dict:
    return {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "role": role,
    }


def test_creating_a_user_in_the_console_is_audited(team):
    response = console(team).post(
        "/admin/auth/user/add/",
        {"username": "grace", "password1": "a-long-pass-phrase-7", "password2": "a-long-pass-phrase-7"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="created", object_type="user")
    assert (event.actor, event.object_repr) == (team.admin.user, "grace")


def test_giving_changing_and_removing_a_role_in_the_console_is_audited(team):
    admin = console(team)
    outsider = team.outsider.user
    url = f"/admin/auth/user/{outsider.pk}/change/"
    for role in ("Reader", "Contributor", ""):
        assert admin.post(url, user_form(outsider, role)).status_code == 302
    changes = AuditEvent.objects.filter(action="role_changed", object_repr="outsider").order_by("id")
    assert [(e.details["previous"], e.details["role"]) for e in changes] == [
        (None, "Reader"),
        ("Reader", "Contributor"),
        ("Contributor", None),
    ]
    assert all(e.actor == team.admin.user for e in changes)
    assert role_of(User.objects.get(pk=outsider.pk)) is None

    # Saving again without a change records nothing new; deactivating is recorded as such.
    form = user_form(outsider, "")
    del form["is_active"]
    admin.post(url, form)
    assert changes.count() == 3
    assert AuditEvent.objects.get(action="updated", object_repr="outsider").details == {
        "fields": ["is_active"]
    }


def test_setting_a_password_in_the_console_is_audited(team):
    reader = team.reader.user
    response = console(team).post(
        f"/admin/auth/user/{reader.pk}/password/",
        {"password1": "new-pass-phrase-31", "password2": "new-pass-phrase-31", "usable_password": "true"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="password_changed")
    assert (event.actor, event.object_repr) == (team.admin.user, "reader")
    assert sign_in("reader", "new-pass-phrase-31")[1].status_code == 302


def test_a_token_issued_in_the_console_travels_in_the_page_only(team):
    response = console(team).post(
        "/admin/studio/accesstoken/add/", {"user": team.reader.user.pk, "name": "ci"}
    )
    raw = re.search(r'<code id="new-token">([^<]+)</code>', response.content.decode()).group(1)
    assert response.status_code == 201
    assert all(raw not in morsel.value for morsel in response.cookies.values())
    assert api_get(raw).status_code == 200


def test_an_admin_changing_their_own_password_is_audited(team):
    response = console(team).post(
        "/admin/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "my-new-pass-phrase-8",
            "new_password2": "my-new-pass-phrase-8",
        },
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="password_changed")
    assert (event.actor, event.object_repr) == (team.admin.user, "admin")


def test_deleting_a_user_in_the_console_is_audited(team):
    response = console(team).post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [team.outsider.user.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not User.objects.filter(username="outsider").exists()
    event = AuditEvent.objects.get(action="deleted", object_type="user")
    assert (event.actor, event.object_repr) == (team.admin.user, "outsider")


def test_a_personal_token_is_shown_in_its_page_only_and_never_cached(team):
    client = Client()
    client.force_login(team.reader.user)
    response = client.post("/tokens/", {"name": "laptop"})
    raw = re.search(r"stu_[A-Za-z0-9_-]{40,}", response.content.decode()).group(0)
    assert AccessToken.objects.get(name="laptop").digest == token_digest(raw)
    assert response["Cache-Control"] == "no-store"
    assert all(raw not in morsel.value for morsel in response.cookies.values())
