"""The team admin console at /admin/: only Admins enter; roles, tokens and the audit log are there."""

import re

import pytest
from django.contrib.auth.models import User

from registry.tests.factories import register
from studio.models import AccessToken, AuditEvent
from studio.roles import role_of

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("persona", ["contributor", "reader", "outsider"])
def test_only_admins_enter_the_console(team, client, persona):
    client.force_login(team.people[persona].user)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_an_admin_sees_users_with_their_roles(team, client):
    client.force_login(team.admin.user)
    page = client.get("/admin/auth/user/")
    assert page.status_code == 200
    assert b"Contributor" in page.content and b"Reader" in page.content


def test_an_admin_changes_a_role_and_it_is_audited(team, client):
    client.force_login(team.admin.user)
    response = client.post(
        "/admin/auth/user/",
        {"action": "make_contributor", "_selected_action": [team.reader.user.pk]},
    )
    assert response.status_code == 302
    assert role_of(User.objects.get(pk=team.reader.user.pk)) == "Contributor"
    event = AuditEvent.objects.get(action="role_changed", object_repr="reader")
    assert event.actor == team.admin.user
    assert event.details == {"role": "Contributor", "previous": "Reader"}


def test_an_admin_issues_a_token_shown_once_and_revokes_it(team, client):
    client.force_login(team.admin.user)
    response = client.post("/admin/studio/accesstoken/add/", {"user": team.reader.user.pk, "name": "ci"})
    # Shown once, in the answer itself: no redirect, no message (whose cookie would carry the token).
    assert response.status_code == 201 and "no-store" in response["Cache-Control"]
    raw = re.search(r'<code id="new-token">([^<]+)</code>', response.content.decode()).group(1)
    assert "messages" not in response.cookies
    assert raw not in client.get("/admin/studio/accesstoken/").content.decode()
    assert client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    token = AccessToken.objects.get(name="ci")
    client.post("/admin/studio/accesstoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert AccessToken.objects.get(name="ci").state == "revoked"
    assert client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert list(AuditEvent.objects.filter(object_type="token").values_list("action", flat=True)) == [
        "token_revoked",
        "token_created",
    ]


def test_the_audit_log_lists_who_did_what_and_cannot_be_edited(team, client):
    register("iris", team.contributor.user)
    client.force_login(team.admin.user)
    page = client.get("/admin/studio/auditevent/")
    assert page.status_code == 200
    assert b"iris:1" in page.content and b"registered" in page.content
    event = AuditEvent.objects.get()
    assert client.post(f"/admin/studio/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.count() == 1
