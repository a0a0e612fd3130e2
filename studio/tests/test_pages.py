"""Signing in, the dashboard and personal access tokens, through the pages."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from registry.tests.factories import register
from studio.choices import AuditActionChoices
from studio.models import AccessToken, AuditEvent, token_digest
from studio.testing import PageChecks, page_resource, signed_in
from studio.testkit import PASSWORD

pytestmark = pytest.mark.django_db


@page_resource
class TestStudioPages(PageChecks):
    read_role = None
    write_role = None

    def pages(self):
        return ["/", "/tokens/"]

    def writes(self):
        return [("/tokens/", {"name": "laptop"})]


# Signing in and out


def test_the_sign_in_page_signs_a_person_in_and_goes_to_the_dashboard(team):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post("/login/", {"username": "reader", "password": PASSWORD})
    assert response.status_code == 302 and response.url == "/"
    assert b"Welcome back, reader" in client.get("/").content


def test_after_sign_in_a_person_goes_back_where_they_were_headed(team):
    client = Client()
    response = client.post(
        "/login/?next=/models/", {"username": "reader", "password": PASSWORD, "next": "/models/"}
    )
    assert response.url == "/models/"


def test_a_wrong_password_is_refused_with_a_message(team):
    response = Client().post("/login/", {"username": "reader", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_sign_out_ends_the_session(team):
    client = signed_in(team.reader.user)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


# Dashboard and layout


def test_the_dashboard_counts_models_and_shows_recent_activity(team):
    register("iris", team.contributor.user)
    register("iris", team.contributor.user)
    register("churn", team.contributor.user)
    response = signed_in(team.reader.user).get("/")
    context = response.context
    assert (context["model_count"], context["version_count"], context["week_count"]) == (2, 3, 3)
    html = response.content.decode()
    assert "<strong>contributor</strong> registered" in html and "<code>churn:1</code>" in html
    assert 'href="/models/iris/versions/2/"' in html


def test_with_nothing_registered_the_dashboard_says_what_to_do_next(team):
    html = signed_in(team.contributor.user).get("/").content.decode()
    assert "No models yet" in html and 'href="/models/register/"' in html


def test_a_person_without_a_role_is_told_to_ask_an_admin(team):
    register("iris", team.contributor.user)
    response = signed_in(team.outsider.user).get("/")
    html = response.content.decode()
    assert "You have no role in this workspace yet" in html
    assert "iris" not in html and "model_count" not in response.context


def test_the_navigation_links_only_pages_that_exist_and_the_console_only_for_admins(team):
    reader_html = signed_in(team.reader.user).get("/").content.decode()
    admin_html = signed_in(team.admin.user).get("/").content.decode()
    assert 'href="/models/"' in reader_html and 'href="/tokens/"' in reader_html
    assert 'href="/admin/"' not in reader_html and 'href="/admin/"' in admin_html
    assert 'href="/endpoints/"' in reader_html
    # Every htmx request carries the CSRF token.
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", reader_html)


def test_static_assets_are_served_locally(team):
    client = signed_in(team.reader.user)
    for path in ("/static/vendor/htmx.min.js", "/static/css/studio.css", "/static/js/studio.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, path


def test_a_refusal_is_a_page_that_says_which_role_is_needed(team):
    response = signed_in(team.reader.user).get("/models/register/")
    assert response.status_code == 403
    assert "This needs the Contributor role" in response.content.decode()


# Personal access tokens


def test_a_new_token_is_shown_once_and_works_with_the_api(team):
    client = signed_in(team.reader.user)
    response = client.post("/tokens/", {"name": "laptop CLI"})
    assert response.status_code == 200
    raw = re.search(r'<code id="new-token">([^<]+)</code>', response.content.decode()).group(1)
    token = AccessToken.objects.get(name="laptop CLI")
    assert token.user == team.reader.user and token.digest == token_digest(raw) and token.expires_at is None
    assert raw not in client.get("/tokens/").content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/models/").status_code == 200
    event = AuditEvent.objects.get(action=AuditActionChoices.TOKEN_CREATED)
    assert event.actor == team.reader.user and event.object_repr == str(token)


def test_a_token_may_expire_on_a_chosen_day(team):
    day = (timezone.now() + timedelta(days=30)).date()
    signed_in(team.reader.user).post("/tokens/", {"name": "ci", "expires_on": day.isoformat()})
    token = AccessToken.objects.get(name="ci")
    assert token.expires_at.date() == day and token.expires_at.hour == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [({"name": ""}, "This field is required"), ({"name": "old", "expires_on": "2020-01-01"}, "after today")],
)
def test_a_bad_token_request_is_refused_with_the_reason(team, data, message):
    response = signed_in(team.reader.user).post("/tokens/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AccessToken.objects.filter(name=data["name"]).exists()


def test_the_token_list_shows_only_ones_own_tokens_with_their_state(team):
    html = signed_in(team.reader.user).get("/tokens/").content.decode()
    assert "reader token" in html and "admin token" not in html
    assert '<span class="badge badge-success">active</span>' in html
    assert f"<code>{team.reader.token[:8]}…</code>" in html


def test_revoking_a_token_with_htmx_answers_its_row_and_the_token_stops_working(team):
    token = AccessToken.objects.get(user=team.reader.user)
    response = signed_in(team.reader.user).post(f"/tokens/{token.pk}/revoke/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="token-{token.pk}">') and "revoked" in html
    token.refresh_from_db()
    assert token.state == "revoked"
    assert team.reader.client().get("/api/v1/models/").status_code == 401
    assert (
        AuditEvent.objects.filter(action=AuditActionChoices.TOKEN_REVOKED, actor=team.reader.user).count()
        == 1
    )


def test_revoking_without_htmx_returns_to_the_list(team):
    token = AccessToken.objects.get(user=team.reader.user)
    response = signed_in(team.reader.user).post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert "is revoked; it no longer works" in response.content.decode()


def test_no_one_revokes_someone_elses_token_here(team):
    admin_token = AccessToken.objects.get(user=team.admin.user)
    assert signed_in(team.reader.user).post(f"/tokens/{admin_token.pk}/revoke/").status_code == 404
    admin_token.refresh_from_db()
    assert admin_token.state == "active"
