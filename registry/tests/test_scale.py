"""The registry's lists at scale: a list's SQL does not grow with its rows, and its filters read the tag
rows and summaries that make them fast, so those must always agree with the versions themselves.

`bench/registry.py` measures the same lists at 100,000 versions; these tests pin what the figures rest on.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from endpoints.models import OnlineDeployment, OnlineEndpoint
from registry.tests.factories import register
from studio.testing import signed_in

pytestmark = pytest.mark.django_db

MODEL_LISTS = [
    "/api/v1/models/",
    "/api/v1/models/?tag=stage=prod",
    "/api/v1/models/?tag=stage=prod&tag=team=risk",
    "/api/v1/models/?q=fraud",
    "/api/v1/models/?type=custom_model",
    "/api/v1/models/?ordering=-updated_at&page_size=40",
    "/models/",
    "/models/?tag=stage=prod",
    "/models/?tag=stage=prod&tag=team=risk",
    "/models/?q=fraud",
    "/models/?ordering=-updated_at",
]
VERSION_LISTS = [
    "/api/v1/models/fraud-0/versions/",
    "/api/v1/models/fraud-0/versions/?tag=stage=prod",
    "/api/v1/models/fraud-0/versions/?q=retrained",
    "/models/fraud-0/",
    "/models/fraud-0/?tag=stage=prod",
    "/models/fraud-0/?q=retrained",
]


def _grow(team, models: range, versions: range) -> None:
    """Versions of models fraud-N, every one tagged stage=prod and team=risk; each deployed once."""
    endpoint, _ = OnlineEndpoint.objects.get_or_create(
        name="scoring", defaults={"primary_key": "p", "secondary_key": "s"}
    )
    for m in models:
        for v in versions:
            version = register(
                f"fraud-{m}",
                team.contributor.user,
                version=str(v),
                description=f"Retrained on week {v}.",
                tags={"stage": "prod", "team": "risk"},
            )
            OnlineDeployment.objects.create(endpoint=endpoint, name=f"d-{m}-{v}", model_version=version)


def _listed(team, url: str) -> tuple[int, int]:
    """(SQL statements run, rows listed) for one request of a list, by a Reader."""
    client = team.reader.client() if url.startswith("/api/") else signed_in(team.reader.user)
    client.get(url)  # the first use of a token or a session writes to it; that is not the list's SQL
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, (url, response.content[:500])
    if url.startswith("/api/"):
        rows = len(response.json()["results"])
    else:
        rows = len(re.findall(r"<tr>", response.content.decode())) - 1  # less the header's row
    return len(captured), rows


@pytest.mark.parametrize("url", MODEL_LISTS)
def test_a_model_list_runs_the_same_sql_for_many_models_as_for_few(team, url):
    _grow(team, range(2), range(1, 3))
    few = _listed(team, url)
    _grow(team, range(2, 8), range(1, 4))
    many = _listed(team, url)
    assert many[1] > few[1], "the list must show more rows once there are more models"
    assert many[0] == few[0], f"{url} ran {few[0]} statements for {few[1]} rows but {many[0]} for {many[1]}"


@pytest.mark.parametrize("url", VERSION_LISTS)
def test_a_version_list_runs_the_same_sql_for_many_deployed_versions_as_for_few(team, url):
    _grow(team, range(1), range(1, 3))
    few = _listed(team, url)
    _grow(team, range(1), range(3, 12))
    many = _listed(team, url)
    assert many[1] > few[1], "the list must show more rows once there are more versions"
    assert many[0] == few[0], f"{url} ran {few[0]} statements for {few[1]} rows but {many[0]} for {many[1]}"


def test_a_version_lists_the_deployments_that_use_it(team):
    _grow(team, range(1), range(1, 3))
    listed = team.reader.client().get("/api/v1/models/fraud-0/versions/").json()["results"]
    assert {row["version"]: row["deployments"] for row in listed} == {
        "2": ["scoring/d-0-2"],
        "1": ["scoring/d-0-1"],
    }


def test_every_pair_of_a_tag_filter_must_hold_on_one_and_the_same_version(team):
    register("split", team.contributor.user, tags={"stage": "prod"})
    register("split", team.contributor.user, tags={"team": "risk"})
    register("whole", team.contributor.user, tags={"stage": "prod", "team": "risk", "extra": "x"})
    client = team.reader.client()

    def names(query: str) -> list[str]:
        return [row["name"] for row in client.get(f"/api/v1/models/?{query}").json()["results"]]

    assert names("tag=stage=prod&tag=team=risk") == ["whole"]
    assert names("tag=stage=prod") == ["split", "whole"]
    assert names("tag=stage=prod&tag=stage=dev") == []
    versions = client.get("/api/v1/models/split/versions/?tag=stage=prod&tag=team=risk").json()
    assert versions["count"] == 0


def test_the_filters_find_a_version_by_its_changed_tags_and_no_longer_by_its_old_ones(team):
    register("churn", team.contributor.user, tags={"stage": "staging", "team": "growth"})
    client = team.contributor.client()

    changed = client.patch(
        "/api/v1/models/churn/versions/1/", {"tags": {"stage": "prod", "owner": "ana"}}, format="json"
    )

    assert changed.status_code == 200, changed.json()
    assert client.get("/api/v1/models/?tag=stage=staging").json()["count"] == 0
    assert client.get("/api/v1/models/?tag=team=growth").json()["count"] == 0
    assert client.get("/api/v1/models/?tag=stage=prod&tag=owner=ana").json()["count"] == 1
    assert client.get("/api/v1/models/churn/versions/?tag=owner=ana").json()["count"] == 1
    page = signed_in(team.reader.user).get("/models/churn/?tag=stage=staging")
    assert "No versions match these filters" in page.content.decode()


def test_a_model_is_found_by_the_description_of_any_of_its_versions(team):
    register("iris", team.contributor.user, description="First cut.")
    register("iris", team.contributor.user, description="Retrained on the spring census.")
    register("wine", team.contributor.user, description="Acidity model.")

    listed = team.reader.client().get("/api/v1/models/?q=CENSUS").json()

    assert [row["name"] for row in listed["results"]] == ["iris"]
    assert listed["count"] == 1


def test_every_page_of_the_model_list_carries_each_models_count_and_latest_version(team):
    for name, versions in (("a-model", 3), ("b-model", 1), ("c-model", 2)):
        for _ in range(versions):
            register(name, team.contributor.user)
    team.contributor.client().patch("/api/v1/models/c-model/versions/2/", {"archived": True}, format="json")
    client = team.reader.client()

    pages = [client.get(f"/api/v1/models/?page_size=1&page={n}").json() for n in (1, 2, 3)]

    summaries = [
        (p["results"][0]["name"], p["results"][0]["version_count"], p["results"][0]["latest_version"])
        for p in pages
    ]
    assert summaries == [("a-model", 3, "3"), ("b-model", 1, "1"), ("c-model", 2, "1")]
    assert client.get("/api/v1/models/c-model/").json()["latest_version"] == "1"
    html = signed_in(team.reader.user).get("/models/?page=1").content.decode()
    assert 'href="/models/c-model/versions/1/"' in html
