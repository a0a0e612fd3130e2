"""Gateways acknowledge the route-table versions they apply; the reconciler waits for the live ones."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from endpoints import credentials, routetable
from endpoints.models import GatewayAck, RouteTableVersion
from endpoints.routetable import LIVE_FOR, unacknowledged, wait_acknowledged
from studio.testkit import until

ROUTE_TABLE = "/internal/route-table/"


class FakeTime:
    """A clock that moves only when the code under test sleeps; `at` runs actions once their time comes."""

    def __init__(self):
        self.now = timezone.now()
        self.start = self.now
        self.actions: list[tuple[float, object]] = []

    def clock(self):
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for due, action in list(self.actions):
            if self.elapsed >= due:
                self.actions.remove((due, action))
                action()

    @property
    def elapsed(self) -> float:
        return (self.now - self.start).total_seconds()

    def at(self, seconds: float, action) -> None:
        self.actions.append((seconds, action))


def _seen(gateway_id: str, version: int, when) -> None:
    GatewayAck.objects.update_or_create(gateway_id=gateway_id, defaults={"version": version, "seen_at": when})


def _poll(client, gateway_id=None, version=None, wait=0, by="header"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {credentials.gateway_secret()}"}
    if version is not None:
        headers["HTTP_IF_NONE_MATCH"] = f'"{version}"'
    query = f"?wait={wait}"
    if gateway_id is not None and by == "header":
        headers["HTTP_X_STUDIO_GATEWAY"] = gateway_id
    elif gateway_id is not None:
        query += f"&gateway={gateway_id}"
    return client.get(ROUTE_TABLE + query, **headers)


# --- the view records acknowledgements ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("by", ["header", "query"])
def test_a_poll_records_the_version_its_gateway_applied(client, by):
    RouteTableVersion.bump()
    RouteTableVersion.bump()
    response = _poll(client, "edge-1", version=1, by=by)
    assert response.status_code == 200
    ack = GatewayAck.objects.get()
    assert (ack.gateway_id, ack.version) == ("edge-1", 1)
    assert timezone.now() - ack.seen_at < timedelta(seconds=5)
    assert unacknowledged(2) == ["edge-1"]

    assert _poll(client, "edge-1", version=2).status_code == 304
    assert GatewayAck.objects.get().version == 2
    assert unacknowledged(2) == []


@pytest.mark.django_db
def test_a_gateway_without_a_table_has_applied_nothing(client):
    RouteTableVersion.bump()
    assert _poll(client, "fresh").status_code == 200
    assert GatewayAck.objects.get(gateway_id="fresh").version == 0
    assert unacknowledged(1) == ["fresh"]


@pytest.mark.django_db
def test_a_held_poll_is_recorded_again_when_it_ends(client):
    RouteTableVersion.bump()
    arrived = timezone.now()
    assert _poll(client, "edge-1", version=1, wait=0.3).status_code == 304
    assert GatewayAck.objects.get().seen_at - arrived >= timedelta(seconds=0.3)


@pytest.mark.django_db
def test_a_malformed_gateway_id_is_refused_and_no_id_is_not_recorded(client):
    RouteTableVersion.bump()
    for bad in ("two  spaces", "a--b", "x" * 101, "-lead"):
        response = _poll(client, bad, version=1)
        assert response.status_code == 400
        assert "Gateway id" in response.json()["error"]["message"]
    assert _poll(client, version=1).status_code == 304
    assert not GatewayAck.objects.exists()
    unauthenticated = client.get(ROUTE_TABLE, HTTP_X_STUDIO_GATEWAY="edge-1", HTTP_AUTHORIZATION="Bearer no")
    assert unauthenticated.status_code == 401
    assert not GatewayAck.objects.exists()


@pytest.mark.django_db
def test_gateways_not_seen_for_a_day_are_forgotten(client, monkeypatch):
    RouteTableVersion.bump()
    _seen("gone", 1, timezone.now() - routetable.FORGET_AFTER - timedelta(minutes=1))
    _seen("recent", 1, timezone.now() - timedelta(hours=1))
    monkeypatch.setattr(routetable, "_next_prune_at", 0.0)
    _poll(client, "edge-1", version=1)
    assert set(GatewayAck.objects.values_list("gateway_id", flat=True)) == {"recent", "edge-1"}


# --- liveness and waiting ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_unacknowledged_lists_live_gateways_behind_and_drops_silent_ones():
    now = timezone.now()
    _seen("behind", 5, now - timedelta(seconds=10))
    _seen("current", 7, now)
    _seen("silent", 3, now - LIVE_FOR - timedelta(seconds=1))
    assert unacknowledged(6, now=now) == ["behind"]
    assert unacknowledged(8, now=now) == ["behind", "current"]
    assert unacknowledged(5, now=now) == []
    # The same rows a little later: "behind" has not been seen within LIVE_FOR any more.
    assert unacknowledged(8, now=now + LIVE_FOR - timedelta(seconds=5)) == ["current"]
    assert unacknowledged(8, now=now + LIVE_FOR + timedelta(seconds=1)) == []


@pytest.mark.django_db(transaction=True)
def test_wait_acknowledged_returns_once_every_live_gateway_applied_the_version():
    time = FakeTime()
    _seen("a", 4, time.now)
    _seen("b", 5, time.now)
    time.at(3.0, lambda: _seen("a", 5, time.now))
    beats = []
    missing = wait_acknowledged(
        5, timeout=30, heartbeat=lambda: beats.append(time.elapsed), clock=time.clock, sleep=time.sleep
    )
    assert missing == []
    assert 3.0 <= time.elapsed < 3.0 + 2 * routetable.ACK_POLL_S
    assert beats == []  # under HEARTBEAT_EVERY_S of waiting


@pytest.mark.django_db(transaction=True)
def test_wait_acknowledged_names_the_gateways_that_did_not_in_time_and_heartbeats_meanwhile():
    time = FakeTime()
    _seen("a", 4, time.now)
    _seen("b", 4, time.now)
    _seen("c", 9, time.now)
    # Both keep polling (still live) but only b applies version 5.
    for second in range(1, 13):
        time.at(second, lambda: _seen("a", 4, time.now))
    time.at(2.0, lambda: _seen("b", 5, time.now))
    beats = []
    missing = wait_acknowledged(
        5, timeout=12, heartbeat=lambda: beats.append(round(time.elapsed)), clock=time.clock, sleep=time.sleep
    )
    assert missing == ["a"]
    assert time.elapsed == pytest.approx(12, abs=routetable.ACK_POLL_S)
    assert beats == [5, 10]


@pytest.mark.django_db(transaction=True)
def test_a_gateway_that_falls_silent_is_no_longer_waited_for():
    time = FakeTime()
    _seen("stopped", 4, time.now)
    missing = wait_acknowledged(5, timeout=600, clock=time.clock, sleep=time.sleep, heartbeat_every=60)
    assert missing == []
    assert LIVE_FOR.total_seconds() <= time.elapsed < LIVE_FOR.total_seconds() + 1


@pytest.mark.django_db
def test_wait_acknowledged_refuses_to_wait_inside_a_transaction():
    with pytest.raises(RuntimeError, match="outside a transaction"):
        wait_acknowledged(1, timeout=1)


# --- a real gateway process ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_gateway_process_acknowledges_each_version_it_applies(gateway):
    def applied(version: int) -> bool:
        return GatewayAck.objects.filter(gateway_id="gw-test", version__gte=version).exists()

    assert until(lambda: applied(0)), "the gateway's first poll is recorded"
    for _ in range(2):
        with transaction.atomic():
            RouteTableVersion.bump()
        version = RouteTableVersion.current()
        assert until(lambda v=version: applied(v), timeout=10), f"the gateway acknowledges version {version}"
        assert unacknowledged(version) == []

    with transaction.atomic():
        RouteTableVersion.bump()
    assert wait_acknowledged(RouteTableVersion.current(), timeout=10) == []

    # A gateway that stops is still waited for while it counts as live, then no more.
    gateway.kill()
    with transaction.atomic():
        RouteTableVersion.bump()
    version = RouteTableVersion.current()
    assert unacknowledged(version) == ["gw-test"]
    last_seen = GatewayAck.objects.get(gateway_id="gw-test").seen_at
    assert unacknowledged(version, now=last_seen + LIVE_FOR + timedelta(seconds=1)) == []
