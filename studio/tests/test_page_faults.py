"""The small things every page shares, in a real browser: what a 404 and a 403 say, the skip link, the
menu on a phone, the Tokens page's buttons, and the team console wearing Studio's nav."""

import uuid

import httpx
import pytest

from endpoints import services
from studio.models import AccessToken
from studio.testkit import PASSWORD

pytestmark = pytest.mark.browser


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


@pytest.fixture
def endpoint(team):
    return services.create_endpoint({"name": "fraud", "auth_mode": "key"}, team.contributor.user)


def test_api_404s_name_what_was_not_found(live_server, team, endpoint):
    headers = {"Authorization": f"Bearer {team.reader.token}"}
    url = f"{live_server.url}/api/v1/online-endpoints/fraud/deployments/blue/"
    answer = httpx.get(url, headers=headers, timeout=60)
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "Endpoint 'fraud' has no deployment named 'blue'."
    assert answer.json()["error"]["code"] == "not_found"


def test_page_404s_and_403s_say_what_happened_in_words(live_server, team, endpoint, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page.page, live_server.url
    sign_in(page, base, "reader")
    missing = {
        "/models/no-such-model/": "There is no model named 'no-such-model'.",
        "/endpoints/ghost/details/": "There is no online endpoint named 'ghost'.",
        "/endpoints/ghost/monitoring/": "There is no online endpoint named 'ghost'.",
        f"/endpoints/jobs/{uuid.UUID(int=7)}/": f"There is no job {uuid.UUID(int=7)}.",
        "/models/no-such-model/versions/7/": "There is no model named 'no-such-model'.",
    }
    for path, words in missing.items():
        response = page.goto(f"{base}{path}")
        assert response.status == 404, path
        expect(page.locator("main")).to_contain_text(words)
        expect(page.locator("main")).not_to_contain_text("matches the given query")

    page.context.clear_cookies()
    sign_in(page, base, "outsider")
    response = page.goto(f"{base}/models/")
    assert response.status == 403
    icon = page.locator(".empty-icon svg")
    expect(icon).to_be_visible()
    assert icon.bounding_box()["width"] > 0
    assert browser_page.console_errors == [] or all(
        "404" in e or "403" in e for e in browser_page.console_errors
    )


def test_the_first_tab_reaches_the_skip_link_which_jumps_to_the_content(live_server, team, browser_page):
    page, base = browser_page.page, live_server.url
    sign_in(page, base, "reader")
    page.goto(f"{base}/models/")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.textContent.trim(), document.activeElement.getBoundingClientRect().top]"
    )
    assert focused[0] == "Skip to content"
    assert focused[1] >= 0  # shown on screen once focused
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.url.endswith("#main")


def test_on_a_phone_the_nav_folds_into_a_menu(live_server, team, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page.page, live_server.url
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, base, "admin")
    expect(page.locator("nav.mainnav")).to_be_hidden()
    expect(page.locator(".usermenu")).to_be_hidden()
    page.get_by_role("group").filter(has_text="Menu").locator("summary").click()
    menu = page.get_by_role("navigation", name="Main (narrow screens)")
    expect(menu.get_by_role("link", name="Admin console")).to_be_visible()
    menu.get_by_role("link", name="Endpoints", exact=True).click()
    page.wait_for_url(f"{base}/endpoints/")
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 390

    # At 768 px (a tablet) the same menu serves; at 1440 px the nav is in the bar.
    page.set_viewport_size({"width": 768, "height": 1024})
    expect(page.locator(".navmenu summary")).to_be_visible()
    page.set_viewport_size({"width": 1440, "height": 900})
    expect(page.locator(".navmenu summary")).to_be_hidden()
    expect(page.locator("nav.mainnav").get_by_role("link", name="Models")).to_be_visible()


def test_revoke_buttons_stay_whole_on_the_tokens_page(live_server, team, browser_page):
    from playwright.sync_api import expect

    for name in ("ci-pipeline-for-the-nightly-retrain", "laptop"):
        AccessToken.issue(team.admin.user, name)
    page, base = browser_page.page, live_server.url
    sign_in(page, base, "admin")
    for width in (1100, 1440, 768, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{base}/tokens/")
        card = page.locator("section.card").first.bounding_box()
        buttons = page.get_by_role("button", name="Revoke")
        expect(buttons).to_have_count(3)  # the admin persona's own token, and the two above
        for index in range(3):
            box = buttons.nth(index).bounding_box()
            assert box["x"] >= card["x"] and box["x"] + box["width"] <= card["x"] + card["width"] + 0.5, width
    page.on("dialog", lambda dialog: dialog.accept())  # "Revoke …? Anything using it stops working at once."
    buttons.first.click()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(2)


def test_the_team_console_carries_studios_nav(live_server, team, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page.page, live_server.url
    sign_in(page, base, "admin")
    page.goto(f"{base}/admin/studio/accesstoken/")
    nav = page.get_by_role("navigation", name="Main", exact=True)
    expect(nav.get_by_role("link", name="Admin console")).to_have_attribute("aria-current", "page")
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('header.topbar')).backgroundColor"
    )
    assert background == "rgb(17, 24, 39)"
    assert browser_page.console_errors == []
    nav.get_by_role("link", name="Models").click()
    page.wait_for_url(f"{base}/models/")
