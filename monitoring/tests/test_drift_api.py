"""The drift monitors API: creating from a CSV, refusals that say what to fix and store nothing, runs of
collected data shipped from a spool, deletion."""

import numpy as np
import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from monitoring import tasks
from monitoring.models import Monitor
from monitoring.tests.factories import event, payload, recent, write_segment

MONITORS = "/api/v1/online-endpoints/fraud/monitors/"


def _csv(rows: int = 500, seed: int = 1, *, shift: float = 0.0, prediction: bool = True) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["amount,channel" + (",prediction" if prediction else "")]
    for n in range(rows):
        channel = "web" if rng.random() < 0.6 else "app"
        line = f"{rng.normal(100 + shift, 10):.3f},{channel}"
        lines.append(line + (f",{n % 2}" if prediction else ""))
    return ("\n".join(lines) + "\n").encode()


def _create(client, csv: bytes, **fields):
    data = {
        "deployment": "blue",
        "baseline": SimpleUploadedFile("baseline.csv", csv, "text/csv"),
        **{k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in fields.items()},
    }
    return client.post(MONITORS, data, format="multipart")


def _error(response, status: int) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["message"]


def _collect(spool, rows_per_request: int, requests: int, *, shift: float, seed: int = 2) -> None:
    """Collected inputs and outputs of fraud/blue in the spool, as the gateway's data collector writes them."""
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(requests):
        request = event(recent(10 - n * 0.01))
        rows = [
            [round(float(rng.normal(100 + shift, 10)), 3), "web" if rng.random() < 0.6 else "app"]
            for _ in range(rows_per_request)
        ]
        body = {"input_data": {"columns": ["amount", "channel"], "data": rows}}
        lines += [
            request,
            payload(request, "model_inputs", orjson.dumps(body).decode()),
            payload(
                request, "model_outputs", orjson.dumps([r % 2 for r in range(rows_per_request)]).decode()
            ),
        ]
    write_segment(spool, lines)
    tasks.ship_telemetry()


@pytest.mark.django_db
def test_a_monitor_from_a_csv_compares_collected_inputs_and_predictions(team, endpoints, spool):
    client = team.contributor.client()
    response = _create(
        client, _csv(), features=["amount", "channel"], metrics={"psi": 0.25, "wasserstein": None}
    )
    assert response.status_code == 201, response.json()
    monitor = response.json()
    assert monitor["baseline"] == {"file": "baseline.csv", "rows": 500}
    assert monitor["metrics"] == {"psi": 0.25, "wasserstein": 0.2}
    assert monitor["primary_metric"] == "psi"
    assert monitor["predictions"] == ["prediction"]
    assert monitor["window"] == "1h" and monitor["schedule"] == ""

    nothing = client.post(f"{MONITORS}{monitor['id']}/run/").json()
    assert nothing["state"] == "insufficient_data" and nothing["breached"] == [] and nothing["score"] is None

    _collect(spool, rows_per_request=50, requests=20, shift=25.0)
    run = client.post(f"{MONITORS}{monitor['id']}/run/").json()
    assert run["state"] == "succeeded", run
    assert (run["rows"], run["prediction_rows"]) == (1000, 1000)
    assert run["breached"] == ["amount"], run["features"]
    assert {(f["name"], f["metric"]) for f in run["features"]} == {
        ("amount", "psi"),
        ("amount", "wasserstein"),
        ("channel", "psi"),  # categorical: no Wasserstein distance
        ("prediction", "psi"),
        ("prediction", "wasserstein"),
    }
    assert run["features"][0]["name"] == "amount" and run["features"][0]["drifted"]
    assert run["score"] == max(f["value"] for f in run["features"] if f["metric"] == "psi")
    details = run["details"]["channel"]
    assert details["kind"] == "categorical" and details["target"] == "input"
    assert details["histogram"]["labels"] == ["web", "app", "(other)"]
    assert run["details"]["prediction"]["target"] == "prediction"

    listed = client.get(f"{MONITORS}{monitor['id']}/runs/").json()
    assert [r["id"] for r in listed["results"]] == [run["id"], nothing["id"]]
    events = team.reader.client().get("/api/v1/events/", {"type": "studio.drift.detected"}).json()["results"]
    assert [e["data"]["breached"] for e in events] == [["amount"]]
    assert events[0]["data"]["baseline"] == {"file": "baseline.csv", "rows": 500}


@pytest.mark.django_db
def test_it_lists_shows_and_deletes_monitors(team, endpoints):
    client = team.contributor.client()
    created = _create(client, _csv(), features="amount", schedule="1h").json()
    listed = team.reader.client().get(MONITORS).json()
    assert [m["id"] for m in listed["results"]] == [created["id"]]
    shown = team.reader.client().get(f"{MONITORS}{created['id']}/").json()
    assert shown["features"] == ["amount"] and shown["next_run_at"] is not None
    assert _error(team.reader.client().delete(f"{MONITORS}{created['id']}/"), 403)
    assert client.delete(f"{MONITORS}{created['id']}/").status_code == 204
    assert "no monitor" in _error(client.get(f"{MONITORS}{created['id']}/"), 404)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "csv", "field", "says"),
    [
        (
            {"deployment": "purple"},
            _csv(),
            "deployment",
            "no deployment 'purple' on fraud; it has: blue, green",
        ),
        ({"features": ["amount", "income"]}, _csv(), "features", "Unknown feature(s) income"),
        ({}, _csv(), "features", "has no signature naming its inputs"),
        (
            {"features": ["amount"]},
            b"amount,channel\n1,web\n2\n",
            "baseline",
            "Line 3 of the CSV has 1 value",
        ),
        ({"features": ["amount"]}, b"", "baseline", "The CSV is empty"),
        ({"features": ["amount"]}, _csv(rows=20), "baseline", "The baseline has 20 row(s)"),
        ({"features": ["amount"], "metrics": {"kl": 0.1}}, _csv(), "metrics", "Unknown metric(s) kl"),
        ({"features": ["amount"], "metrics": {"psi": -1}}, _csv(), "metrics", "must be a number above 0"),
        ({"features": ["amount"], "window": "soon"}, _csv(), "window", 'such as "30m"'),
        ({"features": ["amount"], "schedule": "1m"}, _csv(), "schedule", "at most every 5 minutes"),
    ],
)
def test_it_refuses_a_bad_monitor_saying_what_to_fix_and_stores_nothing(
    team, endpoints, fields, csv, field, says
):
    values = {"deployment": "blue", **fields}
    deployment = values.pop("deployment")
    data = {
        "deployment": deployment,
        "baseline": SimpleUploadedFile("b.csv", csv, "text/csv"),
        **{k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in values.items()},
    }
    response = team.contributor.client().post(MONITORS, data, format="multipart")
    message = _error(response, 400)
    assert says in message
    assert field in response.json()["error"]["details"]
    assert not Monitor.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_reference_window_without_collected_data_and_data_assets(team, endpoints):
    client = team.contributor.client()
    empty = {
        "deployment": "blue",
        "features": ["amount"],
        "baseline": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
    }
    assert "The baseline has 0 row(s)" in _error(client.post(MONITORS, empty, format="json"), 400)
    future = {**empty, "baseline": {"start": "2026-01-01T00:00:00Z", "end": "2999-01-01T00:00:00Z"}}
    assert "cannot be in the future" in _error(client.post(MONITORS, future, format="json"), 400)
    asset = {**empty, "baseline": {"data": "azureml:transactions@latest"}}
    assert "upload the data as a CSV" in _error(client.post(MONITORS, asset, format="json"), 400)
    missing = {"deployment": "blue", "features": ["amount"]}
    assert "Give a baseline" in _error(client.post(MONITORS, missing, format="json"), 400)
    assert not Monitor.objects.exists()


@pytest.mark.django_db
def test_unknown_endpoints_and_monitors_are_404_and_readers_cannot_create(team, endpoints):
    client = team.contributor.client()
    assert "no online endpoint named 'nope'" in _error(
        client.get("/api/v1/online-endpoints/nope/monitors/"), 404
    )
    assert _error(client.post(f"{MONITORS}999/run/"), 404)
    assert _error(client.get(f"{MONITORS}999/runs/"), 404)
    assert _error(_create(team.reader.client(), _csv(), features=["amount"]), 403)
    assert _error(_create(team.outsider.client(), _csv(), features=["amount"]), 403)
    assert not Monitor.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("eager_jobs")
def test_due_monitors_run_once_per_slot_and_old_runs_age_out(team, endpoints, spool, settings):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import MonitorRun

    client = team.contributor.client()
    scheduled = _create(client, _csv(), features=["amount"], schedule="2h").json()
    _create(client, _csv(), features=["amount"])  # on demand only: never queued
    _collect(spool, rows_per_request=50, requests=4, shift=0.0)
    assert tasks.run_due_monitors()["queued"] == 1
    assert tasks.run_due_monitors()["queued"] == 0
    monitor = Monitor.objects.get(pk=scheduled["id"])
    assert monitor.next_run_at > timezone.now() + timedelta(minutes=110)
    (run,) = monitor.runs.all()
    assert (run.trigger, run.state, run.rows) == ("schedule", "succeeded", 200)

    old = timezone.now() - timedelta(days=settings.STUDIO_METRICS_RETENTION_DAYS + 1)
    MonitorRun.objects.filter(pk=run.pk).update(started_at=old)
    Monitor.objects.filter(pk=monitor.pk).update(next_run_at=timezone.now())
    assert tasks.run_due_monitors() == {"queued": 1, "runs_deleted": 1}
    assert monitor.runs.count() == 1
