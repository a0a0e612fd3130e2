"""What every app's browser tests share: where Chromium is, how it starts, and a page that records
console errors and requests to anywhere but this machine.

Without /usr/bin/chromium (or the playwright package) a browser test is skipped, unless
STUDIO_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from studio.tests import installation as installation_module

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


def require_browser() -> None:
    """Skip the calling test when there is no browser to drive, or fail it where one is required."""
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


@dataclass
class BrowserPage:
    """A Chromium page, what went wrong in it, and where screenshots go (None: nowhere)."""

    page: object
    screenshots: str | None
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> None:
        if self.screenshots:
            self.page.screenshot(path=f"{self.screenshots}/{name}.png", full_page=True)


@pytest.fixture
def browser_page(live_server, monkeypatch) -> Iterator[BrowserPage]:
    """A page in headless Chromium; screenshots go to STUDIO_SCREENSHOT_DIR when it is set."""
    require_browser()
    # Playwright's sync API runs an event loop in this thread; the ORM work here is all done already.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            recorded = BrowserPage(page, os.environ.get("STUDIO_SCREENSHOT_DIR"))
            page.on(
                "console",
                lambda message: message.type == "error" and recorded.console_errors.append(message.text),
            )
            page.on("pageerror", lambda error: recorded.console_errors.append(str(error)))

            def check_host(request):
                if urlsplit(request.url).hostname not in LOOPBACK and not request.url.startswith("data:"):
                    recorded.foreign_requests.append(request.url)

            page.on("request", check_host)
            yield recorded
        finally:
            browser.close()


# A Studio installation of the test's own (studio/tests/installation.py), and `studio up` running on it.
@pytest.fixture
def installation(tmp_path):
    made = installation_module.Installation(tmp_path)
    yield made
    made.close()


@pytest.fixture
def studio_up(installation):
    process, output = installation.up()
    yield process, output, installation.port, installation.env
