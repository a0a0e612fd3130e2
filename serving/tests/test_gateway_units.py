"""Gateway parts that need no process: table validation, credentials, the throttle, the spool."""

from __future__ import annotations

import json
import os
import time

import pytest

from serving.gateway.auth import Authenticator, FailureThrottle
from serving.gateway.config import ConfigError, load_config
from serving.gateway.spool import Spool
from serving.gateway.table import TableError, parse_table
from serving.tests import gateway_support as gs


def _table(**endpoint_changes) -> dict:
    endpoint = gs.endpoint(
        {"blue": gs.deployment("http://127.0.0.1:5101"), "green": gs.deployment("http://127.0.0.1:5102")},
        {"blue": 90, "green": 10},
    )
    return {"version": 3, "endpoints": {"fraud": {**endpoint, **endpoint_changes}}}


def test_it_compiles_a_valid_table():
    table = parse_table(_table(mirror_traffic={"green": 20}))
    fraud = table.endpoints["fraud"]
    assert table.version == 3
    assert fraud.traffic == ((90.0, "blue"), (100.0, "green"))
    assert fraud.mirror == (("green", 0.2),)
    blue = fraud.deployments["blue"]
    assert blue.timeout_s == 5.0 and blue.max_in_flight == 2 * 50 * 1
    assert blue.replicas[0].port == 5101


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"traffic": {"blue": 90, "green": 20}}, "must sum to 0 or 100"),
        ({"traffic": {"purple": 100}}, "no such deployment"),
        ({"auth_mode": "password"}, "auth_mode"),
        ({"traffic": {"blue": 100.0}}, "integer percentage"),
    ],
)
def test_it_refuses_an_invalid_table(changes, message):
    with pytest.raises(TableError, match=message):
        parse_table(_table(**changes))


def test_unready_replicas_are_left_out_and_bad_urls_refused():
    document = _table()
    document["endpoints"]["fraud"]["deployments"]["blue"]["replicas"][0]["ready"] = False
    assert parse_table(document).endpoints["fraud"].deployments["blue"].replicas == ()
    document["endpoints"]["fraud"]["deployments"]["blue"]["replicas"][0]["url"] = "ftp://x"
    with pytest.raises(TableError, match="expected http"):
        parse_table(document)


def test_key_digests_match_the_control_planes_hmac():
    auth = Authenticator(gs.SECRET.encode())
    fraud = parse_table(_table()).endpoints["fraud"]
    assert auth.key_digest("key-primary") == gs.key_digest("key-primary")
    assert auth.check(fraud, None, "key-secondary") is None
    assert auth.check(fraud, None, "key-tertiary") is not None
    assert auth.check(fraud, None, None) is not None


def test_the_throttle_opens_again_when_the_window_ends():
    throttle = FailureThrottle(limit=3, window_s=0.2)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0.0
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") > 0
    assert throttle.retry_after("10.0.0.2") == 0.0
    time.sleep(0.25)
    assert throttle.retry_after("10.0.0.1") == 0.0


def test_the_spool_rotates_and_recovers_open_segments(tmp_path):
    spool = Spool(tmp_path, "gw-a", max_bytes=100, max_seconds=60)
    for i in range(5):
        spool.append({"request_id": str(i), "padding": "x" * 40})
    names = sorted(n for n in os.listdir(tmp_path) if ".jsonl" in n)
    assert names[-1].endswith(".jsonl.open") and all(n.endswith(".jsonl") for n in names[:-1])
    # a "crash": the open segment is left behind; the next process closes it and numbers on
    again = Spool(tmp_path, "gw-a", max_bytes=100, max_seconds=60)
    assert not any(n.endswith(".open") for n in os.listdir(tmp_path))
    again.append({"request_id": "5"})
    again.close()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".jsonl"))
    assert names[-1] == f"gw-a-{len(names):012d}-{again.boot}.jsonl"
    lines = [line for name in names for line in (tmp_path / name).read_text().splitlines()]
    assert [json.loads(line)["request_id"] for line in lines] == ["0", "1", "2", "3", "4", "5"]


def test_a_bad_setting_names_itself(tmp_path):
    env = {"STUDIO_HOME": str(tmp_path), "STUDIO_GATEWAY_PORT": "eighty"}
    with pytest.raises(ConfigError, match="STUDIO_GATEWAY_PORT"):
        load_config([], env)
    config = load_config(["--route-table-file", __file__], {"STUDIO_HOME": str(tmp_path)})
    assert (tmp_path / "gateway_secret").read_text().strip().encode() == config.secret
    assert config.spool_dir == tmp_path / "spool" / "gateway"


def test_a_gateway_id_the_control_plane_cannot_record_is_refused_at_start(tmp_path):
    env = {"STUDIO_HOME": str(tmp_path)}
    assert load_config(["--route-table-file", __file__, "--gateway-id", "edge-1"], env).gateway_id == "edge-1"
    for bad in ("x" * 101, "two words", "a--b"):
        with pytest.raises(ConfigError, match="gateway id"):
            load_config(["--route-table-file", __file__, "--gateway-id", bad], env)


def test_fractional_seconds_settings_are_read_as_numbers(tmp_path):
    env = {
        "STUDIO_HOME": str(tmp_path),
        "STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "0.5",
        "STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S": "2.5",
    }
    config = load_config(["--route-table-file", __file__], env)
    assert (config.spool_segment_seconds, config.auth_failure_window_s) == (0.5, 2.5)
    with pytest.raises(ConfigError, match="STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S"):
        load_config(["--route-table-file", __file__], {**env, "STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S": "soon"})


def test_segment_names_never_repeat_even_once_every_segment_was_shipped(tmp_path):
    first = Spool(tmp_path, "gw-a", max_bytes=10_000, max_seconds=60)
    first.append({"request_id": "0"})
    first.close()
    (shipped,) = [n for n in os.listdir(tmp_path) if n.endswith(".jsonl")]
    (tmp_path / shipped).unlink()  # the shipper deleted it: the spool holds no segment any more
    second = Spool(tmp_path, "gw-a", max_bytes=10_000, max_seconds=60)
    second.append({"request_id": "1"})
    second.close()
    (again,) = [n for n in os.listdir(tmp_path) if n.endswith(".jsonl")]
    assert again != shipped
    assert again > shipped, "still in write order"
    # Even with the counter lost, the boot id keeps the name new.
    (tmp_path / again).unlink()
    (tmp_path / "gw-a.seq").unlink()
    third = Spool(tmp_path, "gw-a", max_bytes=10_000, max_seconds=60)
    third.append({"request_id": "2"})
    third.close()
    (last,) = [n for n in os.listdir(tmp_path) if n.endswith(".jsonl")]
    assert last not in (shipped, again)


def test_a_write_the_disk_cuts_short_is_taken_back_and_counted(tmp_path, monkeypatch):
    spool = Spool(tmp_path, "gw-a", max_bytes=10_000, max_seconds=60)
    assert spool.append({"request_id": "whole"})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    assert not spool.append({"request_id": "cut"})
    monkeypatch.setattr(os, "write", real_write)
    assert spool.append({"request_id": "after"})
    spool.close()
    (segment,) = [n for n in os.listdir(tmp_path) if n.endswith(".jsonl")]
    lines = (tmp_path / segment).read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["whole", "after"]
    assert (spool.dropped, spool.errors) == (1, 1)


def test_an_outage_that_fails_thousands_of_times_never_overflows_the_ejection():
    from serving.gateway.balancer import EJECT_MAX_S, ReplicaState

    state = ReplicaState("127.0.0.1", 9)
    for _ in range(5000):
        state.eject()
    assert state.ejected_until - time.monotonic() <= EJECT_MAX_S


def test_health_is_degraded_past_the_poll_wait_of_silence_and_after_dropped_events(tmp_path):
    import dataclasses

    from serving.gateway.app import STALE_MARGIN_S, GatewayApp
    from serving.gateway.table import TableHolder
    from serving.logs import JsonLog

    config = load_config(["--route-table-file", __file__], {"STUDIO_HOME": str(tmp_path)})
    config = dataclasses.replace(config, spool_dir=tmp_path / "spool")
    holder = TableHolder()
    holder.swap(parse_table(_table()))
    holder.contact()
    app = GatewayApp(config, holder, None, JsonLog(component="test"))
    status, body = app.health()
    assert (status, body["status"], body["reasons"]) == (200, "ok", [])

    # A frozen control plane: connected, never answering. A held poll answers within the wait, so
    # silence past it plus the margin is staleness.
    holder.last_contact -= config.poll_wait_s + STALE_MARGIN_S + 1
    status, body = app.health()
    assert (status, body["status"]) == (200, "degraded")
    assert "the route table may be stale" in body["reasons"][0]

    holder.contact()
    app.spool._drop()
    status, body = app.health()
    assert body["status"] == "degraded" and "could not be spooled" in body["reasons"][0]
    assert "studio_gateway_spool_dropped_events_total 1" in app.render_metrics()
    assert "# TYPE studio_gateway_route_table_fetch_errors_total counter" in app.render_metrics()
