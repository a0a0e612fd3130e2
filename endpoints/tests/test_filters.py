"""The endpoint list's filters, through the API and the page: one FilterSet, the same answers in both."""

import pytest

from endpoints import services
from studio.testing import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoints(team):
    """Three endpoints whose tags overlap, so only both tags together pick one."""
    rows = {
        "fraud": ({"stage": "prod", "team": "a"}, "Scores card payments."),
        "churn": ({"stage": "prod", "team": "b"}, "Who may leave next month."),
        "ranker": ({"stage": "dev", "team": "a"}, "Orders search results."),
    }
    for name, (tags, description) in rows.items():
        services.create_endpoint({"name": name, "tags": tags, "description": description}, team.admin.user)


# The API


def api_names(team, query: str) -> list[str]:
    response = team.reader.client().get(f"/api/v1/online-endpoints/?{query}")
    assert response.status_code == 200, response.json()
    return sorted(item["name"] for item in response.json()["results"])


def test_the_api_filters_by_every_tag_given(team, endpoints):
    assert api_names(team, "") == ["churn", "fraud", "ranker"]
    assert api_names(team, "tag=stage=prod") == ["churn", "fraud"]
    assert api_names(team, "tag=stage=prod&tag=team=a") == ["fraud"]
    assert api_names(team, "tag=stage=staging") == []
    assert api_names(team, "tag=owner=a") == []


def test_a_tag_value_may_contain_an_equals_sign(team):
    body = {"name": "odd", "tags": {"rule": "x=1"}}
    created = team.contributor.client().post("/api/v1/online-endpoints/", body, format="json")
    assert created.status_code == 201, created.json()
    assert api_names(team, "tag=rule=x%3D1") == ["odd"]


def test_the_api_filters_by_name_and_by_free_text(team, endpoints):
    assert api_names(team, "name=churn") == ["churn"]
    assert api_names(team, "name=chu") == []
    assert api_names(team, "q=RANK") == ["ranker"]
    assert api_names(team, "q=payments") == ["fraud"]
    assert api_names(team, "q=payments&tag=stage=dev") == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("tag=novalue", "is not of the form key=value"),
        ("tag==prod", "is not of the form key=value"),
        ("tag=st%20age=prod", "is not valid"),
        ("state=Sleeping", "Sleeping"),
    ],
)
def test_a_malformed_api_filter_is_a_400_that_says_what_to_fix(team, endpoints, query, says):
    response = team.reader.client().get(f"/api/v1/online-endpoints/?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert says in error["message"]
    assert error["details"]


# The page


def page_names(response) -> list[str]:
    return [endpoint.name for endpoint in response.context["table"].page.object_list]


def test_the_page_filters_its_table_as_the_api_does(team, endpoints):
    reader = signed_in(team.reader.user)
    response = reader.get("/endpoints/?tag=stage=prod&tag=team=a")
    assert response.status_code == 200
    assert page_names(response) == ["fraud"]
    assert 'href="/endpoints/fraud/"' in response.content.decode()
    assert 'href="/endpoints/churn/"' not in response.content.decode()
    assert page_names(reader.get("/endpoints/?name=churn")) == ["churn"]
    assert page_names(reader.get("/endpoints/?q=payments")) == ["fraud"]


def test_an_htmx_request_gets_only_the_filtered_table(team, endpoints):
    response = signed_in(team.reader.user).get("/endpoints/?tag=stage=prod", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="results"' in html
    assert 'href="/endpoints/fraud/"' in html and 'href="/endpoints/churn/"' in html
    assert 'href="/endpoints/ranker/"' not in html
    assert "HX-Request" in response["Vary"]


def test_a_bad_tag_on_the_page_is_a_400_that_says_what_to_fix_and_shows_no_rows(team, endpoints):
    reader = signed_in(team.reader.user)
    response = reader.get("/endpoints/?tag=novalue")
    assert response.status_code == 400
    assert "is not of the form key=value, for example tag=stage=prod" in response.content.decode()
    # A filter that cannot be applied must not quietly show everything.
    assert page_names(response) == []
    partial = reader.get("/endpoints/?tag=bad%20key=x", HTTP_HX_REQUEST="true")
    assert partial.status_code == 400
    assert "<html" not in partial.content.decode() and "is not valid" in partial.content.decode()
