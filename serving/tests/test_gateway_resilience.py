"""The gateway under load while things break: a replica killed, the control plane gone, traffic moved,
and the gateway itself killed with SIGKILL (telemetry of every answered request survives)."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from serving.tests import gateway_support as gs


@pytest.fixture(scope="module")
def reps() -> gs.Replicas:
    started = gs.replicas()
    for name in ("victim-0", "victim-1"):
        started.start(name, "victim")
    started.ready("blue-0", "blue-1", "green-0", "victim-0", "victim-1")
    return started


def table(reps: gs.Replicas, traffic: dict[str, int]) -> dict:
    return {
        "fraud": gs.endpoint(
            {
                "blue": gs.deployment(reps.url("blue-0"), reps.url("blue-1")),
                "green": gs.deployment(reps.url("green-0")),
            },
            traffic,
        ),
        "steady": gs.endpoint(
            {"victim": gs.deployment(reps.url("victim-0"), reps.url("victim-1"))}, {"victim": 100}
        ),
    }


@pytest.fixture(scope="module")
def gateway(plane, reps, tmp_path_factory):
    version = plane.publish(table(reps, {"blue": 100}))
    gw = gs.Gateway(tmp_path_factory.mktemp("resilience"), "steady", ["--control-plane-url", plane.url])
    gw.wait_version(version, timeout=120)
    yield gw
    gw.stop()


def test_a_replica_killed_under_load_costs_a_handful_of_requests(gateway, reps):
    victim = reps.servers["victim-0"]
    with gs.Load(gateway, "steady", threads=6) as load:
        time.sleep(1.5)
        killed_at = time.monotonic()
        for pid in [victim.process.pid, *victim.worker_pids()]:
            os.kill(pid, signal.SIGKILL)
        victim.process.wait()
        time.sleep(4.0)
    assert load.count(killed_at - 1.5) > 50, "too little load to mean anything"
    assert len(load.failures()) <= 6, load.failures()
    assert {status for _, status, _, _ in load.failures()} <= {502}
    recovered = killed_at + 1.0
    assert load.failures(since=recovered) == []
    assert load.count(since=recovered) > 30
    assert load.transport_errors == 0
    assert gateway.metric("studio_gateway_replica_ejections_total") >= 1


def test_serving_continues_while_the_control_plane_is_down(gateway, plane):
    with gs.Load(gateway, "fraud", threads=4) as load:
        time.sleep(0.5)
        plane.stop()
        stopped_at = time.monotonic()
        assert gs.wait_until(lambda: gateway.health()["status"] == "degraded", 10)
        time.sleep(1.5)
        health = gateway.health()
        assert health["source"]["reachable"] is False and health["route_table"]["version"] == plane.version
        assert "serving from the last route table" in health["reasons"][0]
        plane.start()
        assert gs.wait_until(lambda: gateway.health()["status"] == "ok", 15)
    assert load.failures() == [] and load.transport_errors == 0
    assert load.count(since=stopped_at) > 30


def test_a_traffic_change_under_load_fails_no_request(gateway, plane, reps):
    with gs.Load(gateway, "fraud", threads=6) as load:
        for traffic in ({"blue": 100}, {"blue": 50, "green": 50}, {"green": 100}):
            time.sleep(1.0)
            gateway.wait_version(plane.publish(table(reps, traffic)))
        switched = time.monotonic()
        time.sleep(1.0)
    assert load.failures() == [] and load.transport_errors == 0
    assert {dep for t, _, dep, _ in load.results if t > switched + 0.1} == {"green"}
    assert {dep for _, _, dep, _ in load.results} == {"blue", "green"}


def test_telemetry_of_every_answered_request_survives_kill_9(plane, reps, tmp_path):
    plane.publish(table(reps, {"blue": 50, "green": 50}))
    gw = gs.Gateway(
        tmp_path,
        "doomed",
        ["--control-plane-url", plane.url],
        {"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "1"},
    )
    try:
        gw.wait_version(plane.version, timeout=120)
        with gs.Load(gw, "fraud", threads=6) as load:
            time.sleep(3.0)
            gw.kill()
            time.sleep(0.3)
        answered = {rid for _, _, _, rid in load.results}
        assert len(answered) > 100
        names = sorted(p.name for p in gw.spool.iterdir() if ".jsonl" in p.name)
        assert any(n.endswith(".jsonl") for n in names), names  # rotated by age during the load
        assert names[-1].endswith(".jsonl.open")  # the one being written when the process died
        events = gw.events()
        assert answered <= {e["request_id"] for e in events}
        assert all(e["mirrored"] is False and e["status"] == 200 for e in events)

        # A new process of the same gateway closes what the dead one left open and numbers on.
        gw.start()
        gw.wait_version(plane.version, timeout=120)
        with gs.Load(gw, "fraud", threads=1) as load:
            time.sleep(0.3)
        after = sorted(p.name for p in gw.spool.iterdir() if ".jsonl" in p.name)
        assert not any(n.endswith(".open") and n in names for n in after)
        sequences = [int(re.search(r"-(\d{12})-", n).group(1)) for n in after]
        assert len(sequences) == len(set(sequences)) and max(sequences) > len(names)
        assert {rid for _, _, _, rid in load.results} <= {e["request_id"] for e in gw.events()}
    finally:
        gw.stop()


def test_a_restarted_gateway_serves_from_its_saved_table_while_the_control_plane_is_down(
    plane, reps, tmp_path
):
    version = plane.publish(table(reps, {"blue": 100}))
    gw = gs.Gateway(tmp_path, "restarted", ["--control-plane-url", plane.url])
    try:
        gw.wait_version(version, timeout=120)
        assert gs.wait_until(lambda: (gw.spool / "restarted.route-table").exists(), 10)
        gw.kill()
        plane.stop()
        gw.start()
        # The table it applied last is back at once, although nobody can tell it so.
        gw.wait_version(version, timeout=30)
        with httpx.Client(timeout=10) as client:
            assert gs.score(client, gw, "fraud").status_code == 200
        health = gw.health()
        assert health["status"] == "degraded" and health["source"]["reachable"] is False
        plane.start()
        assert gs.wait_until(lambda: gw.health()["status"] == "ok", 15)

        # A saved table that does not verify against the gateway's secret is not served.
        gw.kill()
        saved = gw.spool / "restarted.route-table"
        signature, _, content = saved.read_bytes().partition(b"\n")
        saved.write_bytes(signature + b"\n" + content.replace(b'"blue"', b'"blux"', 1))
        plane.stop()
        gw.start()
        assert gs.wait_until(lambda: _answers(gw), 30)
        assert gw.health()["status"] == "no route table"
        assert "signature does not match" in gw.log_path.read_text()
    finally:
        gw.stop()
        if plane._server is None:  # the module's other tests need it up
            plane.start()


def _answers(gw: gs.Gateway) -> bool:
    try:
        gw.health()
    except httpx.TransportError:
        return False
    return True
