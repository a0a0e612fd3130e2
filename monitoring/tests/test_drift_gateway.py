"""End to end: rows scored through a real gateway by a deployment that collects its data, shipped to the
archive, compared by drift monitors through the REST API; a breach is a `studio.drift.detected` event.

Three phases of 2,000 rows each (20 requests of 100 rows): a baseline, a calm phase drawn from the same
distributions, and a phase where `amount` and `age` moved. With 2,000 rows a side, sampling noise stays
well under the default thresholds (PSI about 0.03, Jensen-Shannon 0.07, Wasserstein 0.12 at worst in
hundreds of trials), while the moved features score many times over them.
"""

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from endpoints.tests.conftest import _zip_folder
from monitoring import tasks
from monitoring.tests.test_through_gateway import _deploy, gateway  # noqa: F401 -- the fixture, shared
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
FEATURES = ["amount", "age", "balance", "tenure"]
ROWS_PER_REQUEST = 100
REQUESTS_PER_PHASE = 20


@pytest.fixture(scope="session")
def named_columns_model_zip(tmp_path_factory) -> bytes:
    """An MLflow scikit-learn model whose signature names four double columns."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(_rows(rng, shifted=False, count=200), columns=FEATURES)
    labels = (frame["amount"] > 100).astype(int)
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    root = tmp_path_factory.mktemp("drift-model") / "model"
    mlflow.sklearn.save_model(
        model,
        str(root),
        serialization_format="skops",
        signature=infer_signature(frame, model.predict(frame)),
        pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],
    )
    return _zip_folder(root, "model")


def _rows(rng, *, shifted: bool, count: int) -> list[list[float]]:
    amount = rng.normal(130.0 if shifted else 100.0, 15.0, count)
    age = rng.uniform(40.0, 90.0, count) if shifted else rng.uniform(20.0, 70.0, count)
    balance = rng.lognormal(8.0, 1.0, count)
    tenure = rng.integers(0, 30, count).astype(float)
    return np.column_stack([amount, age, balance, tenure]).round(3).tolist()


def _phase(session: httpx.Client, uri: str, headers: dict, rng, *, shifted: bool) -> tuple[str, str]:
    """Score one phase's rows; returns the span (ISO times) that holds exactly their collected payloads."""
    # The gateway stamps a payload to the millisecond, cut down: an answer within the millisecond the
    # phase starts in is stamped before `now`. So the span starts at that millisecond.
    now = datetime.now(UTC)
    start = now.replace(microsecond=now.microsecond // 1000 * 1000).isoformat()
    for _ in range(REQUESTS_PER_PHASE):
        body = {
            "input_data": {"columns": FEATURES, "data": _rows(rng, shifted=shifted, count=ROWS_PER_REQUEST)}
        }
        response = session.post(uri, json=body, headers=headers)
        assert response.status_code == 200, response.text
    end = datetime.now(UTC)
    # Likewise one the next phase sends within this millisecond would fall inside this span. So the next
    # phase begins in the next millisecond.
    next_millisecond = end.replace(microsecond=end.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
    assert until(lambda: datetime.now(UTC) >= next_millisecond, timeout=1, every=0.001)
    return start, end.isoformat()


def _drift_events(client) -> list[dict]:
    response = client.get("/api/v1/events/", {"type": "studio.drift.detected"})
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def test_shifted_inputs_through_the_gateway_raise_drift_naming_the_shifted_features(
    team,
    gateway,  # noqa: F811
    named_columns_model_zip,
    spool,
):
    client = team.contributor.client()
    collector = {"collections": {"model_inputs": {"enabled": True}, "model_outputs": {"enabled": True}}}
    uri, headers = _deploy(team, named_columns_model_zip, mirror=False, data_collector=collector)
    probe = {"input_data": {"columns": FEATURES, "data": [[100.0, 30.0, 3000.0, 4.0]]}}
    assert until(
        lambda: httpx.post(uri, json=probe, headers=headers, timeout=10).status_code == 200, timeout=30
    )
    rng = np.random.default_rng(11)
    with httpx.Client(timeout=15) as session:
        baseline = _phase(session, uri, headers, rng, shifted=False)
        calm = _phase(session, uri, headers, rng, shifted=False)
        moved = _phase(session, uri, headers, rng, shifted=True)
    gateway.stop()  # closes the open spool segment, so the shipper takes it
    tasks.ship_telemetry()

    monitors = f"{ENDPOINTS}fraud/monitors/"
    created = {}
    for name, window in (("calm", calm), ("moved", moved)):
        response = client.post(
            monitors,
            {
                "deployment": "blue",
                "baseline": {"start": baseline[0], "end": baseline[1]},
                "window": {"start": window[0], "end": window[1]},
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        created[name] = response.json()
    monitor = created["calm"]
    assert monitor["features"] == FEATURES  # the signature's inputs
    assert monitor["predictions"] == ["prediction"]
    assert monitor["baseline"]["rows"] == REQUESTS_PER_PHASE * ROWS_PER_REQUEST
    assert monitor["metrics"] == {"psi": 0.2, "jensen_shannon": 0.1, "wasserstein": 0.2}

    calm_run = client.post(f"{monitors}{created['calm']['id']}/run/").json()
    assert calm_run["state"] == "succeeded", calm_run
    assert calm_run["rows"] == REQUESTS_PER_PHASE * ROWS_PER_REQUEST
    assert calm_run["prediction_rows"] == REQUESTS_PER_PHASE * ROWS_PER_REQUEST
    assert calm_run["breached"] == [], calm_run["features"]
    assert _drift_events(team.reader.client()) == []

    moved_run = client.post(f"{monitors}{created['moved']['id']}/run/").json()
    assert moved_run["state"] == "succeeded", moved_run
    breached_inputs = [name for name in moved_run["breached"] if name in FEATURES]
    assert sorted(breached_inputs) == ["age", "amount"], moved_run["features"]
    for item in moved_run["features"]:
        if item["name"] in ("age", "amount") and item["metric"] in ("psi", "wasserstein"):
            assert item["value"] > 2 * item["threshold"], item
    assert moved_run["details"]["age"]["out_of_range"] > 0  # ages over the baseline's maximum of 70

    events = _drift_events(team.reader.client())
    assert len(events) == 1
    event = events[0]
    assert event["subject"] == "online-endpoints/fraud/deployments/blue"
    assert event["data"]["run"] == moved_run["id"]
    named = {item["name"] for item in event["data"]["features"]}
    assert named & set(FEATURES) == {"age", "amount"}
    assert event["data"]["window"]["start"].startswith(moved[0][:19])

    runs = client.get(f"{monitors}{created['moved']['id']}/runs/").json()
    assert [run["id"] for run in runs["results"]] == [moved_run["id"]]

    # Celery beat: a scheduled monitor is claimed once per slot and run as a task (eager here).
    scheduled = client.post(
        monitors,
        {
            "deployment": "blue",
            "baseline": {"start": baseline[0], "end": baseline[1]},
            "window": {"start": moved[0], "end": moved[1]},
            "schedule": "1h",
        },
        format="json",
    ).json()
    assert tasks.run_due_monitors()["queued"] == 1
    assert tasks.run_due_monitors()["queued"] == 0  # the next slot is an hour away
    runs = client.get(f"{monitors}{scheduled['id']}/runs/").json()["results"]
    assert [(run["trigger"], sorted(set(run["breached"]) & set(FEATURES))) for run in runs] == [
        ("schedule", ["age", "amount"])
    ]
    assert len(_drift_events(team.reader.client())) == 2

    from endpoints.models import OnlineDeployment
    from monitoring.monitors import latest_drift_score

    score = latest_drift_score(OnlineDeployment.objects.get(endpoint__name="fraud", name="blue"))
    assert score == max(item["value"] for item in moved_run["features"] if item["metric"] == "psi")
