"""A generic base for API resource tests: a resource declares its data and inherits the checks that its
list, detail, create, edit and delete routes work for the roles that may use them, and refuse the rest.
"""

import pytest


class APIResourceChecks:
    """Subclass in a test module and fill in the hooks below; every test_* here then runs for it."""

    list_url: str

    def create_request(self, team) -> tuple[str, dict, str]:
        """(url, data, format) of a request that creates one resource."""
        raise NotImplementedError

    def make(self, team) -> str:
        """Create one resource directly and return its detail URL."""
        raise NotImplementedError

    patch_data: dict = {}
    missing_detail_url: str

    def test_anonymous_is_asked_to_authenticate(self, team, client):
        response = client.get(self.list_url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"

    def test_a_user_without_a_role_is_refused(self, team):
        assert team.outsider.client().get(self.list_url).status_code == 403

    def test_a_reader_lists_and_reads(self, team):
        url = self.make(team)
        listing = team.reader.client().get(self.list_url)
        assert listing.status_code == 200
        assert listing.json()["count"] >= 1
        assert team.reader.client().get(url).status_code == 200

    def test_a_reader_cannot_create_change_or_delete(self, team):
        url = self.make(team)
        reader = team.reader.client()
        create_url, data, fmt = self.create_request(team)
        assert reader.post(create_url, data, format=fmt).status_code == 403
        assert reader.patch(url, self.patch_data, format="json").status_code == 403
        assert reader.delete(url).status_code == 403

    def test_a_contributor_creates_changes_and_deletes(self, team):
        contributor = team.contributor.client()
        create_url, data, fmt = self.create_request(team)
        assert contributor.post(create_url, data, format=fmt).status_code == 201
        url = self.make(team)
        changed = contributor.patch(url, self.patch_data, format="json")
        assert changed.status_code == 200, changed.json()
        for key, value in self.patch_data.items():
            assert changed.json()[key] == value
        assert contributor.delete(url).status_code == 204
        assert contributor.get(url).status_code == 404

    def test_an_unknown_resource_is_a_404_in_the_error_envelope(self, team):
        response = team.reader.client().get(self.missing_detail_url)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"code", "message", "details"}


def api_resource(cls):
    """Mark a subclass of APIResourceChecks as a test class that needs the database."""
    return pytest.mark.django_db(cls)
