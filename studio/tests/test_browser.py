"""One walk through Studio in a real headless Chromium: sign in, then filter a model's versions by tag.

The browser comes from the `browser_page` fixture (studio/tests/conftest.py): skipped without Chromium
unless STUDIO_REQUIRE_BROWSER=1; with STUDIO_SCREENSHOT_DIR set, screenshots of the pages are saved there.
"""

import pytest

from registry.tests.factories import register
from studio.testkit import PASSWORD

pytestmark = pytest.mark.browser


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


def test_a_person_signs_in_and_filters_versions_by_tag(live_server, versions, team, browser_page):
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/models/fraud-detector/")
    assert "/login/" in page.url
    browser_page.screenshot("studio-login")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/fraud-detector/")

    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(3)
    browser_page.screenshot("studio-versions")

    tag_input = page.locator("#tag-filters input[name=tag]").last
    tag_input.fill("stage=prod")
    tag_input.press("Enter")
    page.wait_for_url("**/models/fraud-detector/?*tag=stage%3Dprod*")
    expect(rows).to_have_count(2)
    expect(page.locator("#results")).not_to_contain_text("New features.")
    # Only the results were swapped: the filter bar kept the filter and offers a blank for another.
    expect(page.locator("#tag-filters input[name=tag]")).to_have_count(2)
    expect(page.locator("#tag-filters input[name=tag]").first).to_have_value("stage=prod")

    page.wait_for_load_state("networkidle")
    second = page.locator("#tag-filters input[name=tag]").nth(1)
    second.fill("team=payments")
    expect(second).to_have_value("team=payments")
    second.press("Enter")
    page.wait_for_url("**team%3Dpayments*")
    expect(rows).to_have_count(1)
    browser_page.screenshot("studio-versions-filtered")

    rows.first.locator("a").first.click()
    page.wait_for_url(f"{live_server.url}{versions.get_absolute_url()}")
    expect(page.locator("h1")).to_contain_text("fraud-detector")
    expect(page.get_by_role("cell", name="merchant_id")).to_be_visible()
    browser_page.screenshot("studio-version")

    page.go_back()
    page.wait_for_url("**team%3Dpayments*")
    expect(rows).to_have_count(1)

    # Choosing a type filters at once, keeping the tag filters.
    page.select_option("select[name=type]", "custom_model")
    page.wait_for_url("**type=custom_model*team%3Dpayments*")

    if browser_page.screenshots:
        for name, path in (("dashboard", "/"), ("models", "/models/"), ("tokens", "/tokens/")):
            page.goto(f"{live_server.url}{path}")
            browser_page.screenshot(f"studio-{name}")

    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
