"""Every template of Studio compiles, and none prints its own comments.

Django's `{# #}` comment ends at the end of its line: one that runs over several lines is not a comment
at all, and the page shows it as text. Longer comments are `{% comment %}` blocks.
"""

from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.template import engines
from django.template.base import Lexer, TokenType

from registry.tests.factories import register
from studio.testkit import PASSWORD

TEMPLATE_SUFFIXES = (".html", ".txt")


def template_folders() -> list[Path]:
    """The project's template folders: the shared one and each of Studio's own apps' (not Django's)."""
    base = Path(settings.BASE_DIR).resolve()
    folders = [Path(folder).resolve() for config in settings.TEMPLATES for folder in config.get("DIRS", [])]
    for config in apps.get_app_configs():
        folder = Path(config.path).resolve() / "templates"
        if folder.is_dir() and base in folder.parents and ".venv" not in folder.parts:
            folders.append(folder)
    return folders


def templates() -> list[tuple[Path, Path]]:
    return sorted(
        (folder, path)
        for folder in template_folders()
        for path in folder.rglob("*")
        if path.suffix in TEMPLATE_SUFFIXES and path.is_file()
    )


def test_the_template_folders_are_found():
    folders = {
        folder.relative_to(Path(settings.BASE_DIR).resolve()).as_posix() for folder in template_folders()
    }
    assert {"templates", "monitoring/templates"} <= folders
    assert len(templates()) > 40


def test_no_template_has_a_comment_that_runs_over_several_lines():
    printed = []
    for folder, path in templates():
        for token in Lexer(path.read_text()).tokenize():
            if token.token_type == TokenType.TEXT and "{#" in token.contents:
                printed.append(f"{path.relative_to(folder)} line {token.lineno}")
    assert printed == [], (
        "These `{#` comments span lines, so pages print them; use {% comment %} … {% endcomment %}: "
        + ", ".join(printed)
    )


def test_every_template_compiles():
    engine = engines["django"]
    for folder, path in templates():
        engine.get_template(path.relative_to(folder).as_posix())


@pytest.mark.browser
def test_list_pages_show_no_template_comment(live_server, team, browser_page):
    from playwright.sync_api import expect

    user = team.contributor.user
    register("house-price", user, tags={"stage": "prod"})
    register("house-price", user, tags={"stage": "dev"})
    page = browser_page.page
    page.goto(f"{live_server.url}/models/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/")
    for url in ("/models/", "/models/house-price/"):
        page.goto(f"{live_server.url}{url}")
        expect(page.locator("form.filters")).to_be_visible()
        text = page.locator("main, body").first.inner_text()
        assert "{#" not in text and "#}" not in text, url
        assert "The filter bar of a list page" not in text, url
    assert browser_page.console_errors == []
