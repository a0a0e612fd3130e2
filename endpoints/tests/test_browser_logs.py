"""The Logs tab in headless Chromium: it follows a growing log, stays put while the reader reads further
up, shows JSON lines as time, level and message, searches and filters what it shows, and downloads the
whole log.
"""

import json
from pathlib import Path

import pytest

from endpoints import services
from endpoints.choices import ProvisioningStateChoices
from endpoints.models import OnlineDeployment, Replica
from endpoints.tests.test_browser_states import FILES, sign_in
from registry.tests.factories import register
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = pytest.mark.browser

LINES = 2500
AT_END = "box => box.scrollHeight - box.scrollTop - box.clientHeight < 8"
# The box's scroll position once a (smooth) scroll has come to rest.
SETTLED = """box => new Promise(resolve => {
  let last = -1;
  (function check() { if (box.scrollTop === last) resolve(last); else { last = box.scrollTop; setTimeout(check, 100); } })();
})"""


def log_line(n: int) -> str:
    """Line n of a replica's log: mostly JSON request lines, some warnings and errors, some plain text."""
    ts = f"2026-11-30T20:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"
    if n % 50 == 7:
        record = {
            "ts": ts,
            "level": "error",
            "message": f"Scoring failed for order-{n}: ValueError: bad input",
        }
        return json.dumps({**record, "event": "model_error", "request_id": f"order-{n}"})
    if n % 10 == 3:
        return json.dumps({"ts": ts, "level": "warning", "message": f"slow request order-{n} took 900ms"})
    if n % 25 == 0:
        return f"INFO  access: POST /score 200 order-{n}"
    record = {"ts": ts, "level": "info", "message": "POST /score 200", "request_id": f"order-{n}"}
    return json.dumps({**record, "latency_ms": 3.5})


@pytest.fixture
def shop(team, tmp_path):
    user = team.contributor.user
    version = register("basket", user, files=FILES, type="mlflow_model")
    endpoint = services.create_endpoint({"name": "shop"}, user)
    deployment = OnlineDeployment.objects.create(
        endpoint=endpoint,
        name="blue",
        model_version=version,
        provisioning_state=ProvisioningStateChoices.SUCCEEDED,
        observed_generation=1,
        serving_revision=1,
    )
    log = tmp_path / "blue-1-0.log"
    log.write_text("".join(log_line(n) + "\n" for n in range(LINES)))
    Replica.objects.create(
        deployment=deployment,
        revision=1,
        index=0,
        url="http://127.0.0.1:42300",
        state="ready",
        handle={"log": str(log), "pid": 0},
    )
    endpoint.traffic = {"blue": 100}
    endpoint.save()
    return log


def append(log, text: str) -> None:
    with log.open("a") as handle:
        handle.write(text + "\n")


def test_the_logs_tab_follows_the_end_until_the_reader_scrolls_up(live_server, shop, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    sign_in(page, f"{live_server.url}/endpoints/shop/logs/")
    box = page.locator("[data-log-lines]")
    lines = box.locator("[data-log-line]")
    expect(lines).to_have_count(100)

    # JSON lines read as time, level and message; their other fields fold under them.
    last_error = lines.filter(has_text="order-2457").first
    expect(last_error.locator(".log-time")).to_have_text("20:40:57.457")
    expect(last_error.locator(".log-level")).to_have_text("error")
    expect(last_error.locator(".log-message")).to_have_text(
        "Scoring failed for order-2457: ValueError: bad input"
    )
    expect(last_error.locator(".log-fields summary")).to_have_text("event · request_id")
    expect(last_error.locator(".log-fields dd").first).to_be_hidden()
    plain = lines.filter(has_text="INFO  access: POST /score 200 order-2475")
    expect(plain.locator(".log-message")).to_have_text("INFO  access: POST /score 200 order-2475")
    assert '{"ts"' not in box.inner_text()
    browser_page.screenshot("endpoint-logs-lines")

    # Following: the end is in view, and new lines arrive at it.
    assert box.evaluate(AT_END)
    follow = page.locator("[data-log-follow]")
    expect(follow).to_have_text("Following the end")
    page.evaluate(
        """() => { window.logPolls = 0; document.addEventListener("htmx:beforeRequest", event => {
             if (event.detail.elt.matches("[data-log-panel]")) window.logPolls += 1; }); }"""
    )
    append(shop, "INFO  access: POST /score 200 order-2500")
    expect(box).to_contain_text("order-2500", timeout=10_000)
    page.wait_for_function(f"() => ({AT_END})(document.querySelector('[data-log-lines]'))")

    # The reader scrolls up: the lines stop moving, however long they read.
    box.hover()
    page.mouse.wheel(0, -1500)
    expect(follow).to_have_text("Paused · resume following")
    expect(follow).to_have_attribute("aria-pressed", "false")
    top = box.evaluate(SETTLED)
    polls = page.evaluate("() => window.logPolls")
    append(shop, "INFO  access: POST /score 200 order-2501")
    page.wait_for_function(f"() => window.logPolls >= {polls + 2}", timeout=15_000)
    assert "order-2501" not in box.inner_text()
    assert box.evaluate("box => box.scrollTop") == top

    # Resuming reads the latest lines and goes to the end.
    follow.click()
    expect(follow).to_have_text("Following the end")
    expect(box).to_contain_text("order-2501", timeout=10_000)
    page.wait_for_function(f"() => ({AT_END})(document.querySelector('[data-log-lines]'))")

    # Search and level filter the lines shown, and say how many are left; a refresh keeps them applied.
    search = page.locator("[data-log-search]")
    search.fill("slow request")
    expect(box.locator("[data-log-line]:visible")).to_have_count(10)
    expect(page.locator("[data-log-count]")).to_have_text("10 of 100 lines shown")
    search.fill("")
    level = page.locator("[data-log-level]")
    level.select_option("warning")
    expect(box.locator("[data-log-line]:visible")).to_have_count(12)
    level.select_option("error")
    expect(box.locator("[data-log-line]:visible")).to_have_count(2)
    polls = page.evaluate("() => window.logPolls")
    page.wait_for_function(f"() => window.logPolls >= {polls + 1}", timeout=10_000)
    expect(box.locator("[data-log-line]:visible")).to_have_count(2)
    level.select_option("")

    # Wrapping is a toggle.
    expect(box).to_have_class("log-lines log-wrap")
    page.locator("[data-log-wrap]").uncheck()
    expect(box).to_have_class("log-lines")
    assert box.locator("[data-log-line]").last.evaluate("line => getComputedStyle(line).whiteSpace") == "pre"
    page.locator("[data-log-wrap]").check()
    assert (
        box.locator("[data-log-line]").last.evaluate("line => getComputedStyle(line).whiteSpace")
        == "pre-wrap"
    )

    # The download is the whole log, not the lines shown.
    with page.expect_download() as download:
        page.locator("[data-log-download]").click()
    assert download.value.suggested_filename == "shop-blue-1-0.log"
    assert Path(download.value.path()).read_text() == shop.read_text()
    assert shop.read_text().count("\n") == LINES + 2

    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []


def test_a_failed_revision_shows_the_log_its_replica_left(
    live_server,
    shop,
    browser_page,  # noqa: F811
    settings,
    tmp_path,
):
    from playwright.sync_api import expect

    from endpoints.reconcile import log_folder

    settings.STUDIO_HOME = str(tmp_path / "home")

    green = OnlineDeployment.objects.create(
        endpoint=OnlineDeployment.objects.get(name="blue").endpoint,
        name="green",
        model_version=OnlineDeployment.objects.get(name="blue").model_version,
        provisioning_state=ProvisioningStateChoices.FAILED,
        observed_generation=1,
    )
    kept = log_folder(green) / "green-1-0.log"
    kept.parent.mkdir(parents=True)
    kept.write_text(
        json.dumps({"ts": "2026-11-30T20:00:00.100Z", "level": "info", "message": "loading basket:1"})
        + "\n"
        + json.dumps(
            {
                "ts": "2026-11-30T20:00:00.200Z",
                "level": "error",
                "message": "Model load failed: ValueError: unknown serialization format",
                "event": "load_failed",
            }
        )
        + "\n"
    )
    page = browser_page.page
    sign_in(page, f"{live_server.url}/endpoints/shop/logs/?deployment=green")
    expect(page.locator("#log-replica option:checked")).to_have_text("green-1-0 · failed")
    expect(page.locator("[data-log-kept]")).to_be_visible()
    lines = page.locator("[data-log-line]")
    expect(lines).to_have_count(2)
    expect(lines.last.locator(".log-message")).to_have_text(
        "Model load failed: ValueError: unknown serialization format"
    )
    with page.expect_download() as download:
        page.locator("[data-log-download]").click()
    assert download.value.suggested_filename == "shop-green-1-0.log"
    assert Path(download.value.path()).read_text() == kept.read_text()
    assert browser_page.console_errors == []
