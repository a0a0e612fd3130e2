"""One walk through Studio in a real headless Chromium: sign in, then filter a model's versions by tag.

Needs /usr/bin/chromium. Without it the test is skipped, unless STUDIO_REQUIRE_BROWSER=1 (CI), where a
missing browser is a failure. With STUDIO_SCREENSHOT_DIR set, it saves screenshots of the pages there.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import PASSWORD
from registry.tests.factories import register

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

pytestmark = pytest.mark.browser


def _require_browser():
    required = os.environ.get("STUDIO_REQUIRE_BROWSER") == "1"
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem and required:
        pytest.fail(f"STUDIO_REQUIRE_BROWSER=1 but {problem}.")
    if problem:
        pytest.skip(f"browser test skipped: {problem}; set STUDIO_REQUIRE_BROWSER=1 to make this a failure.")


@pytest.fixture
def versions(team):
    """Versions of one model: two tagged stage=prod, one stage=dev; the newest is an MLflow model."""
    user = team.contributor.user
    register("fraud-detector", user, tags={"stage": "prod", "team": "risk"}, description="Baseline.")
    register("fraud-detector", user, tags={"stage": "dev", "team": "risk"}, description="New features.")
    mlmodel = (
        "flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}\n"
        "  sklearn: {serialization_format: skops, sklearn_version: 1.9.1}\n"
        "mlflow_version: 3.17.2\nrun_id: 9f8e7d6c5b4a\nmodel_uuid: 0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f\n"
        "signature:\n"
        '  inputs: \'[{"type": "double", "name": "amount", "required": true}, '
        '{"type": "long", "name": "merchant_id", "required": true}, '
        '{"type": "string", "name": "country", "required": false}]\'\n'
        '  outputs: \'[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]\'\n'
    )
    return register(
        "fraud-detector",
        user,
        files={
            "MLmodel": mlmodel.encode(),
            "model.skops": b"\0" * 4096,
            "requirements.txt": b"scikit-learn\n",
        },
        type="mlflow_model",
        tags={"stage": "prod", "team": "payments"},
        description="Gradient boosting on 2026 transactions.",
        source="runs:/9f8e7d6c5b4a/model",
    )


def test_a_person_signs_in_and_filters_versions_by_tag(live_server, versions, team, monkeypatch):
    _require_browser()
    # Playwright's sync API runs an event loop in this thread; the ORM work here is all done already.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect, sync_playwright

    screenshots = os.environ.get("STUDIO_SCREENSHOT_DIR")
    console_errors: list[str] = []
    foreign_requests: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on(
                "console", lambda message: message.type == "error" and console_errors.append(message.text)
            )
            page.on("pageerror", lambda error: console_errors.append(str(error)))

            def check_host(request):
                if urlsplit(request.url).hostname not in LOOPBACK and not request.url.startswith("data:"):
                    foreign_requests.append(request.url)

            page.on("request", check_host)

            page.goto(f"{live_server.url}/models/fraud-detector/")
            assert "/login/" in page.url
            if screenshots:
                page.screenshot(path=f"{screenshots}/studio-login.png")
            page.fill("#id_username", "reader")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server.url}/models/fraud-detector/")

            rows = page.locator("#results tbody tr")
            expect(rows).to_have_count(3)
            if screenshots:
                page.screenshot(path=f"{screenshots}/studio-versions.png", full_page=True)

            tag_input = page.locator("#tag-filters input[name=tag]").last
            tag_input.fill("stage=prod")
            tag_input.press("Enter")
            page.wait_for_url("**/models/fraud-detector/?*tag=stage%3Dprod*")
            expect(rows).to_have_count(2)
            expect(page.locator("#results")).not_to_contain_text("New features.")
            # Only the results were swapped: the filter bar kept the filter and offers a blank for another.
            expect(page.locator("#tag-filters input[name=tag]")).to_have_count(2)
            expect(page.locator("#tag-filters input[name=tag]").first).to_have_value("stage=prod")

            second = page.locator("#tag-filters input[name=tag]").last
            second.fill("team=payments")
            second.press("Enter")
            page.wait_for_url("**team%3Dpayments*")
            expect(rows).to_have_count(1)
            if screenshots:
                page.screenshot(path=f"{screenshots}/studio-versions-filtered.png", full_page=True)

            rows.first.locator("a").first.click()
            page.wait_for_url(f"{live_server.url}{versions.get_absolute_url()}")
            expect(page.locator("h1")).to_contain_text("fraud-detector")
            expect(page.get_by_role("cell", name="merchant_id")).to_be_visible()
            if screenshots:
                page.screenshot(path=f"{screenshots}/studio-version.png", full_page=True)

            page.go_back()
            page.wait_for_url("**team%3Dpayments*")
            expect(rows).to_have_count(1)

            if screenshots:
                for name, path in (("dashboard", "/"), ("models", "/models/"), ("tokens", "/tokens/")):
                    page.goto(f"{live_server.url}{path}")
                    page.screenshot(path=f"{screenshots}/studio-{name}.png", full_page=True)
        finally:
            browser.close()

    assert console_errors == []
    assert foreign_requests == []
