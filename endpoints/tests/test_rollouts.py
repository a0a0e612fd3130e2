"""Progressive rollout end to end: real replicas behind a real gateway, client load, the telemetry
pipeline shipping the gateway's spool, and rollouts driven as a worker drives them."""

import threading

import httpx
import pytest
from click.testing import CliRunner
from django.db import connection

from endpoints import rollouts
from endpoints.models import Rollout
from endpoints.tests.support import ENDPOINTS, deploy, register, steady_load, upload_code
from monitoring.layout import parse_ts
from monitoring.tasks import telemetry_store
from monitoring.window import deployment_window
from registry.tests.factories import zip_bytes
from studio.cli.main import cli
from studio.models import Event
from studio.testkit import GATEWAY_SECRET, GatewayProcess, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

GOOD = b"""
def init():
    pass


def run(raw_data):
    return {"answer": 1}
"""
# Fails one request in five, exactly (one worker per replica).
FLAKY = b"""
calls = 0


def init():
    pass


def run(raw_data):
    global calls
    calls += 1
    if calls % 5 == 0:
        raise RuntimeError("the new feature store client timed out")
    return {"answer": 1}
"""
SLOW = b"""
import time


def init():
    pass


def run(raw_data):
    time.sleep(0.25)
    return {"answer": 1}
"""
PAYLOAD = {"data": [[1.0, 2.0]]}


def _thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connection.close()

    return threading.Thread(target=run, daemon=True)


@pytest.fixture
def gateway(live_server, settings, monkeypatch, tmp_path):
    """A real gateway whose spool segments close within a second, and whose spool this process ships."""
    spool = tmp_path / "gateway-spool"
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    process = GatewayProcess(
        live_server.url, spool, extra_env={"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "0.3"}
    )
    settings.STUDIO_GATEWAY_URL = process.url
    settings.STUDIO_GATEWAY_SPOOL_DIR = spool
    process.start()
    yield process
    process.stop()


@pytest.fixture
def pipeline(gateway):
    """The telemetry beat, quicker: ship the spool to the archive and roll it up, again and again."""
    from monitoring.tasks import ship_telemetry

    stop = threading.Event()

    def beat():
        while not stop.is_set():
            ship_telemetry()
            stop.wait(0.2)

    worker = _thread(beat)
    worker.start()
    yield
    stop.set()
    worker.join(30)


@pytest.fixture
def drivers(monkeypatch, pipeline):
    """Rollouts are driven by threads of this process, as a worker's task drives them."""
    started = []

    def dispatch(rollout_id):
        driver = _thread(rollouts.drive, rollout_id)
        driver.start()
        started.append(driver)

    monkeypatch.setattr(rollouts, "dispatch", dispatch)
    yield started
    Rollout.objects.filter(state="running").update(state="aborted")
    for driver in started:
        driver.join(30)


def _studio(live_server, team, *args):
    env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": team.contributor.token}
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


def _blue_and(client, endpoint: str, green: bytes, azure_sample_zips) -> dict:
    """`endpoint` with blue (a good version) taking all traffic and green (`green`'s code) taking none."""
    register(client, "regression", azure_sample_zips[0])
    client.post(ENDPOINTS, {"name": endpoint}, format="json")
    for name, code, all_traffic in (("blue", GOOD, True), ("green", green, False)):
        spec = {
            "name": name,
            "model": "azureml:regression:1",
            "code_configuration": {
                "code": upload_code(client, zip_bytes({"score.py": code})),
                "scoring_script": "score.py",
            },
        }
        body = deploy(client, endpoint, spec, all_traffic=all_traffic)
        assert body["job"]["state"] == "succeeded", body["job"]["error"]
    shown = client.get(f"{ENDPOINTS}{endpoint}/").json()
    key = client.post(f"{ENDPOINTS}{endpoint}/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}
    assert until(
        lambda: httpx.post(shown["scoring_uri"], json=PAYLOAD, headers=headers).status_code == 200, 20
    )
    return {"uri": shown["scoring_uri"], "headers": headers}


def _events(rollout_id: int) -> list[str]:
    return list(
        Event.objects.filter(subject__endswith=f"/rollouts/{rollout_id}")
        .order_by("pk")
        .values_list("type", flat=True)
    )


def test_a_good_version_rolls_out_to_all_traffic_and_the_cli_exits_0(
    team, live_server, gateway, drivers, azure_sample_zips
):
    client = team.contributor.client()
    target = _blue_and(client, "shop", GOOD, azure_sample_zips)
    with steady_load(target["uri"], PAYLOAD, target["headers"]) as seen:
        result = _studio(
            live_server, team,
            "online-deployment", "rollout", "-e", "shop", "-n", "green", "--steps", "10,50,100",
            "--interval", "1.5s", "--max-error-rate", "1", "--max-p99-ms", "500",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Step 10%" in result.stderr and "within the SLO" in result.stderr
    assert seen["failures"] == [], seen["failures"][:5]
    assert client.get(f"{ENDPOINTS}shop/").json()["traffic"] == {"blue": 0, "green": 100}
    rollout = Rollout.objects.get()
    assert rollout.state == "succeeded"
    assert [f["step"] for f in rollout.figures] == ["10%", "50%", "100%"]
    assert all(f["complete"] and f["errors"] == 0 for f in rollout.figures)
    # Read from the events of the step's window alone: green answered about a tenth of that window's
    # requests, blue the rest, and no request of the window is missing from the two.
    first = rollout.figures[0]
    blue = deployment_window(
        telemetry_store(), "shop", "blue", parse_ts(first["start"]), parse_ts(first["end"])
    )
    share = first["requests"] / (first["requests"] + blue["requests"])
    print(
        f"\ngood green: at the 10% step it answered {first['requests']} of {first['requests'] + blue['requests']}"
    )
    assert 0.03 <= share <= 0.2, (first, blue)
    # The step was judged on the whole window: the archive holds no request of it the judgement missed.
    green = deployment_window(
        telemetry_store(), "shop", "green", parse_ts(first["start"]), parse_ts(first["end"])
    )
    assert first["requests"] == green["requests"], (first, green)
    assert _events(rollout.pk) == ["studio.rollout.started", "studio.rollout.succeeded"]


def test_a_version_failing_one_request_in_five_is_rolled_back_at_the_first_step(
    team, live_server, gateway, drivers, azure_sample_zips
):
    client = team.contributor.client()
    target = _blue_and(client, "flaky", FLAKY, azure_sample_zips)
    with steady_load(target["uri"], PAYLOAD, target["headers"]) as seen:
        before = seen["answered"] + len(seen["failures"])
        result = _studio(
            live_server, team,
            "online-deployment", "rollout", "-e", "flaky", "-n", "green", "--steps", "10,50,100",
            "--interval", "2s", "--max-error-rate", "1",
        )  # fmt: skip
        during = seen["answered"] + len(seen["failures"]) - before
        failed_during = len(seen["failures"])
        # After the rollback no client request reaches green any more.
        answered = seen["answered"]
        assert until(lambda: seen["answered"] > answered + 20, 20)
        assert len(seen["failures"]) == failed_during
    assert result.exit_code != 0
    assert "rolled back" in result.output and "error rate" in result.output
    rollout = Rollout.objects.get()
    assert rollout.state == "rolled_back"
    assert [f["step"] for f in rollout.figures] == ["10%"]
    step = rollout.figures[0]
    assert step["complete"] and step["errors"] > 0 and step["breaches"]
    assert client.get(f"{ENDPOINTS}flaky/").json()["traffic"] == {"blue": 100}
    # Failed client requests are bounded by the step's share (10%) of the fifth green fails.
    share = failed_during / during
    detection = (rollout.finished_at - rollout.step_started_at).total_seconds() - rollout.interval_s
    print(
        f"\nflaky green: {failed_during} of {during} client requests failed ({100 * share:.2f}%), "
        f"green's step error rate {step['error_rate_pct']}% of {step['requests']}; "
        f"rolled back {detection:.2f}s after the step's window closed"
    )
    assert 0 < share <= 0.10
    assert detection < 10
    assert _events(rollout.pk) == ["studio.rollout.started", "studio.rollout.rolled_back"]
    data = Event.objects.get(type="studio.rollout.rolled_back").data
    assert data["figures"]["errors"] == step["errors"]


def test_a_slower_version_breaches_the_p99_and_is_rolled_back(
    team, live_server, gateway, drivers, azure_sample_zips
):
    client = team.contributor.client()
    target = _blue_and(client, "slowpoke", SLOW, azure_sample_zips)
    with steady_load(target["uri"], PAYLOAD, target["headers"]) as seen:
        result = _studio(
            live_server, team,
            "online-deployment", "rollout", "-e", "slowpoke", "-n", "green", "--steps", "20,100",
            "--interval", "2s", "--max-p99-ms", "150",
        )  # fmt: skip
    assert result.exit_code != 0
    assert "p99 latency" in result.output
    rollout = Rollout.objects.get()
    assert rollout.state == "rolled_back"
    assert rollout.figures[0]["latency_p99_ms"] >= 250
    assert seen["failures"] == []
    assert client.get(f"{ENDPOINTS}slowpoke/").json()["traffic"] == {"blue": 100}


def test_a_manual_traffic_change_aborts_the_rollout(team, live_server, gateway, drivers, azure_sample_zips):
    client = team.contributor.client()
    _blue_and(client, "manual", GOOD, azure_sample_zips)
    started = client.post(
        f"{ENDPOINTS}manual/rollouts/",
        {"deployment": "green", "steps": [10, 100], "interval_s": 30, "slo": {"max_error_rate_pct": 1}},
        format="json",
    )
    assert started.status_code == 201, started.json()
    url = f"{ENDPOINTS}manual/rollouts/{started.json()['id']}/"
    assert until(lambda: client.get(url).json()["step_started_at"] is not None, 20)
    assert client.get(f"{ENDPOINTS}manual/").json()["traffic"] == {"blue": 90, "green": 10}
    second = client.post(
        f"{ENDPOINTS}manual/rollouts/",
        {"deployment": "green", "steps": [100], "interval_s": 1},
        format="json",
    )
    assert second.status_code == 409
    assert "one rollout at a time" in second.json()["error"]["message"]

    changed = client.patch(f"{ENDPOINTS}manual/", {"traffic": {"blue": 50, "green": 50}}, format="json")
    assert changed.status_code == 200
    shown = client.get(url).json()
    assert shown["state"] == "aborted"
    assert "changed by contributor" in shown["reason"]
    # The driver sees the row ended at its next look; the traffic stays as the person set it.
    assert until(lambda: all(not d.is_alive() for d in drivers), 10)
    assert client.get(f"{ENDPOINTS}manual/").json()["traffic"] == {"blue": 50, "green": 50}


def test_a_killed_worker_is_replaced_and_the_rollout_resumes_from_its_recorded_step(
    team, live_server, gateway, pipeline, azure_sample_zips, settings, tmp_path
):
    from endpoints import tasks
    from endpoints.tests.support import WorkerProcess
    from studio.celery import app

    client = team.contributor.client()
    target = _blue_and(client, "resume", GOOD, azure_sample_zips)
    # From here the rollout is driven by real Celery workers, through the broker.
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    env = {"STUDIO_ROLLOUT_LEASE_S": "3"}
    settings.STUDIO_ROLLOUT_LEASE_S = 3
    workers = [WorkerProcess(settings, **env).start(tmp_path / "worker-0.log")]
    try:
        with steady_load(target["uri"], PAYLOAD, target["headers"]) as seen:
            started = client.post(
                f"{ENDPOINTS}resume/rollouts/",
                {"deployment": "green", "steps": [10, 50, 100], "interval_s": 3},
                format="json",
            ).json()

            def in_second_window():
                row = Rollout.objects.get(pk=started["id"])
                return row if row.current_step == 1 and row.step_started_at is not None else None

            assert until(in_second_window, 60), (tmp_path / "worker-0.log").read_text()[-2000:]
            workers[0].kill()  # the whole worker, mid-step: its lease is never released
            killed = in_second_window()
            assert killed.state == "running" and len(killed.figures) == 1

            workers.append(WorkerProcess(settings, **env).start(tmp_path / "worker-1.log"))
            # The sweep (beat) queues a driver once the dead one's lease lapsed; the new worker takes it.
            assert until(lambda: tasks.sweep_rollouts() == [killed.pk], 15)
            assert until(lambda: Rollout.objects.get(pk=killed.pk).state != "running", 60), (
                tmp_path / "worker-1.log"
            ).read_text()[-2000:]
    finally:
        for worker in workers:
            worker.stop()
    resumed = Rollout.objects.get(pk=killed.pk)
    assert resumed.state == "succeeded", resumed.reason
    assert [f["step"] for f in resumed.figures] == ["10%", "50%", "100%"]
    # Resumed, not restarted: the judged step kept its figures, the open window its start.
    assert resumed.figures[0] == killed.figures[0]
    assert resumed.figures[1]["start"] == killed.step_started_at.isoformat()
    assert seen["failures"] == []
    assert client.get(f"{ENDPOINTS}resume/").json()["traffic"] == {"blue": 0, "green": 100}


def test_bad_rollouts_are_refused_with_what_to_fix(team, live_server, gateway, drivers, azure_sample_zips):
    client = team.contributor.client()
    _blue_and(client, "rules", GOOD, azure_sample_zips)
    url = f"{ENDPOINTS}rules/rollouts/"
    for body, status, words in (
        ({"deployment": "green", "steps": [10, 50], "interval_s": 1}, 400, "last step must be 100"),
        ({"deployment": "green", "steps": [50, 10, 100], "interval_s": 1}, 400, "must grow"),
        ({"deployment": "green", "steps": [10, 100], "interval_s": 0}, 400, "seconds above 0"),
        ({"deployment": "nope", "steps": [100], "interval_s": 1}, 400, "no deployment named 'nope'"),
        ({"deployment": "blue", "steps": [100], "interval_s": 1}, 409, "takes all live traffic"),
        ({"deployment": "green", "steps": [100], "interval_s": 1, "slo": {"p99": 3}}, 400, "unknown field"),
    ):
        answer = client.post(url, body, format="json")
        assert answer.status_code == status, answer.json()
        assert words in str(answer.json()["error"]), answer.json()
    assert not Rollout.objects.exists()
    assert (
        team.reader.client()
        .post(url, {"deployment": "green", "steps": [100], "interval_s": 1}, format="json")
        .status_code
        == 403
    )


DIFFERENT = b"""
def init():
    pass


def run(raw_data):
    return {"answer": 2}
"""


def test_a_version_that_answers_differently_is_caught_by_the_shadow_step_before_any_client_sees_it(
    team, live_server, gateway, drivers, azure_sample_zips
):
    client = team.contributor.client()
    target = _blue_and(client, "twin", DIFFERENT, azure_sample_zips)
    answered_by, stop = set(), threading.Event()

    def load():
        with httpx.Client(timeout=10) as session:
            while not stop.is_set():
                answer = session.post(target["uri"], json=PAYLOAD, headers=target["headers"])
                answered_by.add((answer.status_code, answer.headers.get("azureml-model-deployment")))

    clients = [threading.Thread(target=load) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        result = _studio(
            live_server, team,
            "online-deployment", "rollout", "-e", "twin", "-n", "green", "--steps", "shadow,10,100",
            "--interval", "2s", "--min-agreement", "99", "--max-error-rate", "1",
        )  # fmt: skip
    finally:
        stop.set()
        for thread in clients:
            thread.join(15)
    assert result.exit_code != 0
    assert "shadow agreement" in result.output
    rollout = Rollout.objects.get()
    assert rollout.state == "rolled_back"
    assert [f["step"] for f in rollout.figures] == ["shadow"]
    shadow = rollout.figures[0]
    assert shadow["compared"] > 0 and shadow["agreement_pct"] == 0
    # No client ever got an answer from green, and the mirror is gone again.
    assert answered_by == {(200, "blue")}
    shown = client.get(f"{ENDPOINTS}twin/").json()
    assert (shown["traffic"], shown["mirror_traffic"]) == ({"blue": 100}, {})


def test_an_aborted_rollout_puts_the_traffic_back(team, live_server, gateway, drivers, azure_sample_zips):
    client = team.contributor.client()
    _blue_and(client, "brake", GOOD, azure_sample_zips)
    started = client.post(
        f"{ENDPOINTS}brake/rollouts/",
        {"deployment": "green", "steps": [25, 100], "interval_s": 60},
        format="json",
    ).json()
    url = f"{ENDPOINTS}brake/rollouts/{started['id']}/"
    assert until(lambda: client.get(url).json()["step_started_at"] is not None, 20)
    assert client.get(f"{ENDPOINTS}brake/").json()["traffic"] == {"blue": 75, "green": 25}
    assert team.reader.client().post(f"{url}abort/").status_code == 403
    aborted = client.post(f"{url}abort/")
    assert aborted.status_code == 200, aborted.json()
    assert aborted.json()["state"] == "aborted"
    assert "Aborted by contributor" in aborted.json()["reason"]
    assert client.get(f"{ENDPOINTS}brake/").json()["traffic"] == {"blue": 100}
    again = client.post(f"{url}abort/")
    assert again.status_code == 409 and "ended already" in again.json()["error"]["message"]
    assert [r["id"] for r in client.get(f"{ENDPOINTS}brake/rollouts/").json()] == [started["id"]]
    assert _events(started["id"]) == ["studio.rollout.started", "studio.rollout.aborted"]
