"""Deployment lifecycle events reach a webhook: created, succeeded, failed, deleted and traffic changes,
each once, in order per subject, from deployments that really run (jobs run in-process)."""

import pytest

from endpoints.tests.support import ENDPOINTS, deploy, register, upload_code
from registry.tests.factories import zip_bytes
from studio.tests.webhook_receiver import loopback_receiver

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]


@pytest.fixture
def receiver(settings):
    with loopback_receiver(settings, failures=2) as receiver:  # 500, 500, then 200 for every event
        yield receiver


def test_deployment_and_traffic_events_reach_a_webhook_once_each_in_order(
    team, receiver, mlflow_model_zip, azure_sample_zips
):
    created = team.admin.client().post(
        "/api/v1/webhooks/",
        {"name": "ops", "url": receiver.url, "events": ["studio.deployment.*", "studio.traffic.changed"]},
        format="json",
    )
    receiver.secret = created.json()["secret"]
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    register(client, "regression", azure_sample_zips[0])
    client.post(ENDPOINTS, {"name": "shop"}, format="json")
    assert deploy(client, "shop", {"name": "blue", "model": "azureml:clf:1"})["job"]["state"] == "succeeded"
    broken = zip_bytes(
        {"score.py": b"def init():\n    raise RuntimeError('corrupt')\n\ndef run(d):\n    return d\n"}
    )
    spec = {
        "name": "red",
        "model": "azureml:regression:1",
        "code_configuration": {"code": upload_code(client, broken), "scoring_script": "score.py"},
        "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 5},
    }
    assert deploy(client, "shop", spec, all_traffic=False)["job"]["state"] == "failed"
    assert client.delete(f"{ENDPOINTS}shop/deployments/red/").status_code == 202
    # Setting the traffic it already has is no change, and no event.
    assert client.patch(f"{ENDPOINTS}shop/", {"traffic": {"blue": 100}}, format="json").status_code == 200

    got = [(event["subject"], event["type"]) for event in receiver.accepted]
    blue, red = "online-endpoints/shop/deployments/blue", "online-endpoints/shop/deployments/red"
    assert [item for item in got if item[0] == blue] == [
        (blue, "studio.deployment.created"),
        (blue, "studio.deployment.succeeded"),
    ]
    assert [item for item in got if item[0] == red] == [
        (red, "studio.deployment.created"),
        (red, "studio.deployment.failed"),
        (red, "studio.deployment.deleted"),
    ]
    assert [item for item in got if item[0] == "online-endpoints/shop"] == [
        ("online-endpoints/shop", "studio.traffic.changed")
    ]
    traffic = next(event for event in receiver.accepted if event["type"] == "studio.traffic.changed")
    assert traffic["data"]["traffic"] == {"blue": 100}
    failed = next(event for event in receiver.accepted if event["type"] == "studio.deployment.failed")
    assert "corrupt" in failed["data"]["error"]
    assert all(attempt.verified for attempt in receiver.attempts)
    assert [attempt.status for attempt in receiver.attempts].count(500) == 2 * len(got)
