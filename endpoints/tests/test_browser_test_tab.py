"""The Test tab in headless Chromium against a real deployment behind the real gateway: the first body
comes from the OpenAPI document the scoring script's input schema gives, JSON is checked before anything
is sent, and an error's request id leads to the replica log lines about that request.
"""

import json

import httpx
import pytest

from endpoints.tests.support import deploy, register, upload_code
from registry.tests.factories import zip_bytes
from studio.testkit import PASSWORD, until
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
SCORE_PY = b"""
from serving.schema import StandardPythonParameterType, input_schema, output_schema


def init():
    pass


@input_schema("orders", StandardPythonParameterType([{"amount": 12.5, "country": "fr"}]))
@output_schema(StandardPythonParameterType([0.125]))
def run(orders):
    if any(order["amount"] < 0 for order in orders):
        raise ValueError("amount must not be negative")
    return [order["amount"] / 100 for order in orders]
"""


def test_the_test_tab_starts_from_the_served_schema_checks_json_and_links_errors_to_their_log(
    live_server,
    gateway,
    team,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    client = team.contributor.client()
    register(client, "orders", zip_bytes({"weights.txt": b"0.01\n"}))
    code = upload_code(client, zip_bytes({"score.py": SCORE_PY}))
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    created = deploy(
        client,
        "shop",
        {
            "name": "blue",
            "model": "azureml:orders:1",
            "code_configuration": {"code": code, "scoring_script": "score.py"},
        },
    )
    assert created["job"]["state"] == "succeeded", created["job"]["error"]
    key = client.post(f"{ENDPOINTS}shop/credentials/").json()["primaryKey"]
    swagger = f"{gateway.url}/endpoints/shop/swagger.json"
    assert until(
        lambda: httpx.get(swagger, headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    ), "the gateway serves the deployment's OpenAPI document"

    page = browser_page.page
    sent = []
    page.on(
        "request", lambda request: request.method == "POST" and "/test/" in request.url and sent.append(1)
    )
    page.goto(f"{live_server.url}/endpoints/shop/test/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/endpoints/shop/test/")

    body = page.locator("#id_body")
    assert json.loads(body.input_value()) == {"orders": [{"amount": 12.5, "country": "fr"}]}
    expect(page.locator("[data-sample-source]")).to_have_attribute("data-sample-source", "openapi")

    # A body that is not JSON never leaves the page.
    body.fill('{"orders": [{"amount": 3,}]}')
    page.click("#test-send")
    problem = page.locator("[data-json-error]")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("The body is not valid JSON, so nothing was sent:")
    assert sent == []

    body.fill('{"orders": [{"amount": 50, "country": "de"}]}')
    page.click("#test-send")
    expect(page.locator("#test-result .badge")).to_have_text("200 OK")
    expect(problem).to_be_hidden()
    expect(page.locator("#test-result pre")).to_contain_text("0.5")
    expect(page.locator("[data-request-log]")).to_have_count(0)
    assert len(sent) == 1

    # The model's error answers with a request id that leads to that request's lines in the replica log.
    body.fill('{"orders": [{"amount": -1, "country": "de"}]}')
    page.click("#test-send")
    expect(page.locator("#test-result .badge")).to_contain_text("424")
    request_id = page.locator("#test-result dd code").first.inner_text()
    assert request_id
    browser_page.screenshot("endpoint-test-error")
    page.click("[data-request-log]")
    page.wait_for_url(f"**/endpoints/shop/test/request/?request_id={request_id}*")
    lines = page.locator("#request-log [data-log-line]")
    expect(lines.first).to_be_visible()
    expect(page.locator("#request-log")).to_contain_text("amount must not be negative")
    fields = page.locator("#request-log .log-fields").evaluate_all("found => found.map(e => e.textContent)")
    assert fields and all(request_id in text for text in fields), fields
    browser_page.screenshot("endpoint-request-log")

    # Only the model error's 424 shows in the console.
    assert all("status of 424" in error for error in browser_page.console_errors), browser_page.console_errors
    assert browser_page.foreign_requests == []
