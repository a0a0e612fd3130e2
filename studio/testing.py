"""A generic base for page tests: a resource declares its pages and its changes, and inherits the checks
that signed-out people are sent to sign in, that each role sees what it may and is refused the rest, that
list pages answer htmx with only their results, and that no page fetches anything from elsewhere.
"""

import re

import pytest
from django.test import Client

from studio.choices import RoleChoices

LOGIN_URL = "/login/"
# Attributes holding an address a browser would fetch, follow or send to.
_REFERENCES = re.compile(r"""(?:src|href|action|hx-get|hx-post)\s*=\s*["']([^"']*)["']""")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


class PageChecks:
    """Subclass in a test module and fill in the hooks below; every test_* here then runs for it."""

    # Who may read the pages: a role, or None for anyone signed in.
    read_role: str | None = RoleChoices.READER
    # Who may make the changes in `writes`.
    write_role: str | None = RoleChoices.CONTRIBUTOR

    def make(self, team) -> None:
        """Create what the pages show."""

    def pages(self) -> list[str]:
        """URLs that everyone who may read gets with a 200."""
        raise NotImplementedError

    def contributor_pages(self) -> list[str]:
        """URLs of pages that are themselves forms for a change (a Reader gets a 403)."""
        return []

    def list_pages(self) -> list[str]:
        """URLs of filtered lists: an htmx request gets only their results."""
        return []

    def writes(self) -> list[tuple[str, dict]]:
        """(url, data) of POSTs that change something; made in this order, so a delete goes last."""
        return []

    def test_a_signed_out_visitor_is_sent_to_sign_in(self, team, client):
        self.make(team)
        for url in self.pages() + self.contributor_pages():
            response = client.get(url)
            assert response.status_code == 302, url
            assert response.url.startswith(f"{LOGIN_URL}?next="), url
        for url, data in self.writes():
            response = client.post(url, data)
            assert response.status_code == 302, url
            assert response.url.startswith(LOGIN_URL), url

    def test_a_reader_sees_every_page(self, team):
        self.make(team)
        reader = signed_in(team.reader.user)
        for url in self.pages():
            response = reader.get(url)
            assert response.status_code == 200, url
            assert b"<html" in response.content, url

    def test_a_user_without_a_role_is_refused_or_welcome_as_declared(self, team):
        self.make(team)
        outsider = signed_in(team.outsider.user)
        expected = 200 if self.read_role is None else 403
        for url in self.pages():
            assert outsider.get(url).status_code == expected, url

    def test_a_reader_is_refused_every_change(self, team):
        if self.write_role is None:
            pytest.skip("anyone signed in may make these changes")
        self.make(team)
        reader = signed_in(team.reader.user)
        for url in self.contributor_pages():
            response = reader.get(url)
            assert response.status_code == 403, url
            assert b"Contributor" in response.content, url
        for url, data in self.writes():
            assert reader.post(url, data).status_code == 403, url

    def test_a_contributor_makes_every_change(self, team):
        self.make(team)
        contributor = signed_in(team.contributor.user)
        for url in self.contributor_pages():
            assert contributor.get(url).status_code == 200, url
        for url, data in self.writes():
            response = contributor.post(url, data)
            assert response.status_code in (200, 302), (url, response.status_code)

    def test_an_htmx_request_gets_only_the_results(self, team):
        self.make(team)
        reader = signed_in(team.reader.user)
        for url in self.list_pages():
            response = reader.get(url, HTTP_HX_REQUEST="true")
            assert response.status_code == 200, url
            assert b"<html" not in response.content, url
            assert b'id="results"' in response.content, url
            assert "HX-Request" in response.headers.get("Vary", ""), url

    def test_pages_fetch_nothing_from_elsewhere(self, team):
        self.make(team)
        contributor = signed_in(team.contributor.user)
        for url in self.pages() + self.contributor_pages():
            html = contributor.get(url).content.decode()
            external = [ref for ref in _REFERENCES.findall(html) if "//" in ref.split("?")[0]]
            assert external == [], url


def page_resource(cls):
    """Mark a subclass of PageChecks as a test class that needs the database."""
    return pytest.mark.django_db(cls)
