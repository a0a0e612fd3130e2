"""Readiness, metrics, timeouts and crashes across worker processes."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from serving.tests.conftest import SCRIPTS

SLOW_INIT = ["--code", str(SCRIPTS), "--scoring-script", "score_slow_init.py"]


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_readiness_reports_every_worker(slow_server):
    response = httpx.get(f"{slow_server.url}/health/ready")
    assert response.status_code == 200
    assert [w["state"] for w in response.json()["workers"]] == ["ready", "ready"]
    assert httpx.get(f"{slow_server.url}/").text == "Healthy"
    assert httpx.get(f"{slow_server.url}/health/live").status_code == 200


def test_metrics_add_up_across_workers(slow_server):
    before = slow_server.metric("studio_requests_total")
    errors_before = slow_server.metric('studio_request_errors_total{kind="model_error"}')
    # A new connection each time, so both workers take some of the requests.
    answered_by = {httpx.post(f"{slow_server.url}/score", json={}).json()["pid"] for _ in range(30)}
    httpx.post(f"{slow_server.url}/score", json={"fail": True})
    assert len(answered_by) == 2, "the kernel gave every connection to one worker"
    text = httpx.get(f"{slow_server.url}/metrics").text
    assert slow_server.metric("studio_requests_total") - before == 31
    assert slow_server.metric('studio_request_errors_total{kind="model_error"}') - errors_before == 1
    assert "studio_request_duration_seconds_bucket" in text
    assert "studio_requests_in_flight" in text and "studio_requests_queued" in text
    assert slow_server.metric("studio_worker_ready") == 2


def test_answers_never_cross_between_concurrent_callers(slow_server):
    with httpx.Client(timeout=30) as client:

        def call(n):
            return n, client.post(f"{slow_server.url}/score", json={"echo": n, "sleep": 0.002}).json()["echo"]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(80)))
    assert all(sent == answered for sent, answered in results)


def test_a_run_past_the_timeout_is_408_and_the_stuck_worker_is_replaced(slow_server):
    restarts = slow_server.metric("studio_worker_restarts_total")
    started = time.monotonic()
    response = httpx.post(f"{slow_server.url}/score", json={"sleep": 4}, timeout=30)
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "RequestTimeout"
    assert time.monotonic() - started < 3
    assert wait_until(lambda: slow_server.metric("studio_worker_restarts_total") == restarts + 1)
    assert any(line.get("event") == "stuck" for line in slow_server.logs())
    slow_server.wait_ready()


def test_a_killed_worker_is_replaced(slow_server):
    slow_server.wait_ready()
    restarts = slow_server.metric("studio_worker_restarts_total")
    victim = slow_server.worker_pids()[-1]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: slow_server.metric("studio_worker_restarts_total") == restarts + 1)
    slow_server.wait_ready()
    assert victim not in slow_server.worker_pids()
    assert len(slow_server.worker_pids()) == 2
    assert httpx.post(f"{slow_server.url}/score", json={"echo": 1}).json()["echo"] == 1


def test_bad_requests_never_take_a_worker_down(slow_server):
    slow_server.wait_ready()
    pids_before = slow_server.worker_pids()
    for body in (b"{not json", b"\xff\xfe", b'{"fail": true}', b""):
        response = httpx.post(f"{slow_server.url}/score", content=body, timeout=10)
        assert response.status_code in (400, 500)
        assert response.headers["content-type"] == "application/json"
    assert httpx.post(f"{slow_server.url}/score", json={"echo": "still here"}).json()["echo"] == "still here"
    assert slow_server.worker_pids() == pids_before


def test_it_answers_503_until_init_finishes(start_server):
    server = start_server(
        "slow-init",
        ["--code", str(SCRIPTS), "--scoring-script", "score_slow_init.py"],
        {"TEST_INIT_SLEEP": "3"},
    )
    assert wait_until(lambda: _alive(server.url), timeout=60)
    not_ready = httpx.get(f"{server.url}/health/ready")
    assert not_ready.status_code == 503
    early = httpx.post(f"{server.url}/score", content=b"x")
    assert early.status_code == 503 and "x-ms-run-fn-exec-ms" in early.headers
    server.wait_ready()
    assert httpx.post(f"{server.url}/score", content=b"x").json() == "ok"


def test_a_failing_init_keeps_the_server_unready_and_says_why(start_server):
    server = start_server(
        "bad-init",
        ["--code", str(SCRIPTS), "--scoring-script", "score_slow_init.py"],
        {"TEST_INIT_FAIL": "1"},
    )
    assert wait_until(lambda: any(line.get("event") == "load_failed" for line in server.logs()), timeout=60)
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 503
    assert "cannot find the model file" in ready.json()["error"]["message"]
    score = httpx.post(f"{server.url}/score", content=b"x")
    assert score.status_code == 503 and "cannot find the model file" in score.json()["error"]["message"]


def test_it_refuses_to_start_without_a_model(start_server, tmp_path):
    server = start_server("no-model", ["--model-dir", str(tmp_path)])
    assert server.process.wait(60) == 2
    assert "No MLmodel file" in server.log_path.read_text()


def _alive(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
