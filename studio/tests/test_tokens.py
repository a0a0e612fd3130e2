"""Personal access tokens: hashed at rest, expiring, revocable, last use recorded.

Throttling of failed tokens is in test_security_auth.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from studio.models import AccessToken, token_digest

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models/"


def _get(client, token):
    return client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_token_is_kept_only_as_a_digest(team):
    row = AccessToken.objects.get(user=team.reader.user)
    assert row.digest == token_digest(team.reader.token)
    assert team.reader.token not in (row.digest, row.hint, row.name)
    assert row.hint == team.reader.token[:8]


def test_a_valid_token_authenticates_and_its_last_use_is_recorded(team, client):
    assert _get(client, team.reader.token).status_code == 200
    assert AccessToken.objects.get(user=team.reader.user).last_used_at is not None


def test_a_wrong_expired_or_revoked_token_is_a_401(team, client):
    assert _get(client, "stu_not-a-token").status_code == 401
    _, raw_expired = AccessToken.issue(team.reader.user, "old", timezone.now() - timedelta(seconds=1))
    assert _get(client, raw_expired).status_code == 401
    AccessToken.objects.get(digest=token_digest(team.reader.token)).revoke()
    response = _get(client, team.reader.token)
    assert response.status_code == 401
    assert "expired or revoked" in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_deactivated_users_token_stops_working(team, client):
    team.reader.user.is_active = False
    team.reader.user.save()
    assert _get(client, team.reader.token).status_code == 401


def test_a_malformed_authorization_header_says_how_it_should_look(team, client):
    response = client.get(MODELS, HTTP_AUTHORIZATION="Bearer two parts")
    assert response.status_code == 401
    assert "Bearer <token>" in response.json()["error"]["message"]
