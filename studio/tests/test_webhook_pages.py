"""Webhooks in the team console (create with the secret shown once, the delivery log, actions) and
lifecycle events on the dashboard."""

import re

import pytest

from studio.events import emit
from studio.models import AuditEvent, WebhookDelivery, WebhookSubscription
from studio.tests.webhook_receiver import loopback_receiver

CONSOLE = "/admin/studio/webhooksubscription/"


@pytest.fixture
def receiver(settings):
    with loopback_receiver(settings) as receiver:
        yield receiver


@pytest.mark.django_db(transaction=True)
def test_an_admin_creates_a_webhook_in_the_console_and_reads_its_delivery_log(
    team, client, receiver, eager_jobs
):
    client.force_login(team.admin.user)
    form = {
        "name": "ci",
        "url": receiver.url,
        "events": "studio.model.*, studio.webhook.test",
        "active": "on",
    }
    response = client.post(f"{CONSOLE}add/", form)
    assert response.status_code == 201 and "no-store" in response["Cache-Control"]
    receiver.secret = re.search(r'<code id="new-secret">([^<]+)</code>', response.content.decode()).group(1)
    hook = WebhookSubscription.objects.get(name="ci")
    assert hook.events == ["studio.model.*", "studio.webhook.test"] and hook.owner == team.admin.user
    assert receiver.secret not in client.get(f"{CONSOLE}{hook.pk}/change/").content.decode()

    client.post(CONSOLE, {"action": "send_test", "_selected_action": [hook.pk]})
    assert [event["type"] for event in receiver.accepted] == ["studio.webhook.test"]
    assert receiver.attempts[0].verified
    page = client.get(f"{CONSOLE}{hook.pk}/change/").content.decode()
    assert "studio.webhook.test" in page and "succeeded" in page and "All 1 deliveries" in page
    log = client.get(f"/admin/studio/webhookdelivery/?subscription__id__exact={hook.pk}")
    assert log.status_code == 200 and "webhooks/ci" in log.content.decode()
    assert AuditEvent.objects.filter(object_type="webhook", action="created", object_repr="ci").exists()


@pytest.mark.django_db
def test_the_console_refuses_private_urls_and_bad_event_filters(team, client):
    client.force_login(team.admin.user)
    page = client.post(f"{CONSOLE}add/", {"name": "x", "url": "http://192.168.1.5/hook", "events": "*"})
    assert page.status_code == 200 and "private, loopback or link-local" in page.content.decode()
    page = client.post(f"{CONSOLE}add/", {"name": "x", "url": "https://hooks.example.com/", "events": "a b"})
    assert "is not an event type or pattern" in page.content.decode()
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["contributor", "reader"])
def test_only_admins_see_webhooks_in_the_console(team, client, persona):
    client.force_login(team.people[persona].user)
    assert client.get(CONSOLE).status_code == 302


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_lists_recent_lifecycle_events(team, client):
    emit("studio.deployment.failed", "online-endpoints/shop/deployments/red", {"error": "corrupt"})
    emit("studio.model.registered", "models/iris/versions/1", {"name": "iris"})
    client.force_login(team.reader.user)
    page = client.get("/").content.decode()
    feed = page[page.index('id="lifecycle-events"') :]
    assert feed.index("studio.model.registered") < feed.index("studio.deployment.failed"), "newest first"
    assert 'badge-danger">studio.deployment.failed' in feed
    assert "online-endpoints/shop/deployments/red" in feed
    assert not WebhookDelivery.objects.exists(), "no subscription, no delivery"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_feed_and_the_console_delivery_log_in_a_browser(
    live_server, team, receiver, browser_page, eager_jobs
):
    from playwright.sync_api import expect

    from studio.testkit import PASSWORD

    hook = team.admin.client().post(
        "/api/v1/webhooks/", {"name": "ci", "url": receiver.url, "events": ["*"]}, format="json"
    )
    receiver.secret = hook.json()["secret"]
    emit("studio.deployment.created", "online-endpoints/shop/deployments/blue", {"deployment": "blue"})
    emit("studio.deployment.failed", "online-endpoints/shop/deployments/blue", {"error": "corrupt"})
    page = browser_page.page
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    feed = page.locator("#lifecycle-events li")
    expect(feed).to_have_count(2)
    expect(feed.first).to_contain_text("studio.deployment.failed")
    browser_page.screenshot("dashboard-lifecycle-events")

    page.click("#lifecycle-events >> text=Webhooks →")
    page.click("text=ci")
    expect(page.locator(".inline-group")).to_contain_text("studio.deployment.failed")
    browser_page.screenshot("console-webhook-deliveries")
    # The console's pages ask for /favicon.ico, which Studio does not serve; nothing else may fail.
    assert [error for error in browser_page.console_errors if "404" not in error] == []
    assert len(receiver.accepted) == 2
