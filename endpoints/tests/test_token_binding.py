"""Tokens handed out by the API work at the real gateway only for the endpoint they were issued for, as it
is now: not after a key regeneration, an auth-mode switch, or the endpoint's deletion and re-creation."""

import httpx
import pytest

from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
# The gateway's answer to an authenticated request for an endpoint with no deployment yet: the token
# got past authentication.
ACCEPTED = "no deployment with traffic"


def test_a_token_outlives_neither_a_regeneration_nor_a_switch_nor_its_endpoint(team, gateway):
    client = team.contributor.client()
    created = client.post(ENDPOINTS, {"name": "tokens", "auth_mode": "aml_token"}, format="json")
    assert created.status_code == 201, created.json()
    scoring_uri = created.json()["scoring_uri"]

    def token() -> str:
        return client.post(f"{ENDPOINTS}tokens/credentials/").json()["accessToken"]

    def answer(bearer: str) -> tuple[int, str]:
        response = httpx.post(scoring_uri, json={}, headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
        return response.status_code, response.json()["error"]["message"]

    def accepted(bearer: str) -> bool:
        status, message = answer(bearer)
        return status == 404 and ACCEPTED in message

    def refused(bearer: str, why: str) -> bool:
        status, message = answer(bearer)
        return status == 401 and why in message

    first = token()
    assert until(lambda: accepted(first)), answer(first)

    regenerated = client.post(f"{ENDPOINTS}tokens/regenerate-keys/", {"keyType": "secondary"}, format="json")
    assert regenerated.status_code == 204
    assert until(lambda: refused(first, "regenerated")), answer(first)
    second = token()
    assert until(lambda: accepted(second)), answer(second)

    for mode in ("key", "aml_token"):
        switched = client.patch(f"{ENDPOINTS}tokens/", {"auth_mode": mode}, format="json")
        assert switched.status_code == 200, switched.json()
    assert until(lambda: refused(second, "auth mode changed")), answer(second)
    third = token()
    assert until(lambda: accepted(third)), answer(third)

    assert client.delete(f"{ENDPOINTS}tokens/").status_code == 202
    assert until(lambda: client.get(f"{ENDPOINTS}tokens/").status_code == 404)
    again = client.post(ENDPOINTS, {"name": "tokens", "auth_mode": "aml_token"}, format="json")
    assert again.status_code == 201, again.json()
    assert until(lambda: refused(third, "deleted")), answer(third)
    assert until(lambda: accepted(token()))
