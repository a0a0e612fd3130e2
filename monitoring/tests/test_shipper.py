"""Shipping closed spool segments into the telemetry store (file and S3)."""

import gzip
from datetime import timedelta

import orjson
import pytest

from monitoring import shipper
from monitoring.tests.factories import event, recent, write_segment


def _lines(store, key):
    with store.open(key) as stream:
        return [orjson.loads(line) for line in gzip.decompress(stream.read()).splitlines()]


def test_it_splits_a_segment_by_endpoint_deployment_and_hour(spool, telemetry_store):
    start = recent(90).replace(minute=59, second=58)
    events = [
        event(start, deployment="blue"),
        event(start + timedelta(seconds=3), deployment="blue"),  # the next hour
        event(start, deployment="green", mirrored=True),
        event(start, endpoint="other", deployment=None, status=401),
    ]
    write_segment(spool, events, gateway="gw-a", seq=7)

    report = shipper.ship_spool(spool, telemetry_store)

    assert (report.segments, report.objects, report.events) == (1, 4, 4)
    day, hour = f"{start:%Y-%m-%d}", f"{start:%H}"
    later = start + timedelta(seconds=3)
    segment = "gw-a-000000000007.jsonl.gz"
    assert sorted(telemetry_store.keys("")) == sorted(
        [
            f"fraud/blue/requests/date={day}/hour={hour}/{segment}",
            f"fraud/blue/requests/date={later:%Y-%m-%d}/hour={later:%H}/{segment}",
            f"fraud/green/requests/date={day}/hour={hour}/{segment}",
            f"other/_unrouted/requests/date={day}/hour={hour}/{segment}",
        ]
    )
    assert _lines(telemetry_store, f"fraud/green/requests/date={day}/hour={hour}/{segment}") == [events[2]]
    assert list(spool.glob("*.jsonl")) == []


def test_it_leaves_open_segments_alone(spool, telemetry_store):
    write_segment(spool, [event(recent())], seq=1, closed=False)
    assert shipper.ship_spool(spool, telemetry_store).segments == 0
    assert list(telemetry_store.keys("")) == []
    assert (spool / "gw-000000000001.jsonl.open").exists()


def test_a_crash_after_upload_keeps_the_segment_and_a_resend_writes_identical_objects(
    spool, telemetry_store, monkeypatch
):
    write_segment(spool, [event(recent()) for _ in range(5)], seq=3)

    def crash(path):
        raise SystemExit("killed after the upload, before the delete")

    monkeypatch.setattr(shipper, "remove_segment", crash)
    with pytest.raises(SystemExit):
        shipper.ship_spool(spool, telemetry_store)
    (key,) = telemetry_store.keys("")
    first = telemetry_store.open(key).read()
    assert (spool / "gw-000000000003.jsonl").exists()

    monkeypatch.undo()
    report = shipper.ship_spool(spool, telemetry_store)
    assert report.events == 5
    assert list(telemetry_store.keys("")) == [key]
    assert telemetry_store.open(key).read() == first
    assert not (spool / "gw-000000000003.jsonl").exists()


def test_a_store_failure_keeps_the_segment(spool, telemetry_store, monkeypatch):
    write_segment(spool, [event(recent())], seq=1)
    monkeypatch.setattr(
        telemetry_store, "put_new", lambda key, data: (_ for _ in ()).throw(OSError("store down"))
    )
    with pytest.raises(OSError):
        shipper.ship_spool(spool, telemetry_store)
    assert (spool / "gw-000000000001.jsonl").exists()


def test_it_skips_a_cut_short_last_line(spool, telemetry_store):
    path = write_segment(spool, [event(recent()), event(recent())], seq=1)
    with path.open("ab") as handle:
        handle.write(b'{"ts": "2026-11-22T0')
    report = shipper.ship_spool(spool, telemetry_store)
    assert (report.events, report.skipped_lines) == (2, 1)


def test_only_one_shipper_works_a_spool_at_a_time(spool, telemetry_store):
    write_segment(spool, [event(recent())], seq=1)
    with shipper.spool_lock(spool) as held:
        assert held
        assert shipper.ship_spool(spool, telemetry_store).segments == 0
    assert shipper.ship_spool(spool, telemetry_store).segments == 1


def test_compression_is_deterministic():
    lines = [orjson.dumps(event(recent())) + b"\n" for _ in range(3)]
    assert shipper.compress(lines) == shipper.compress(list(lines))


def test_an_archive_object_is_never_overwritten_and_its_segment_is_kept_aside(spool, telemetry_store):
    """A segment name used twice (a gateway that lost its spool state) must not replace what the archive
    holds: the archive is the system of record and its objects are counted already."""
    first = [event(recent(), deployment="blue") for _ in range(3)]
    write_segment(spool, first, gateway="gw-a", seq=1)
    assert shipper.ship_spool(spool, telemetry_store).events == 3
    (key,) = telemetry_store.keys("")
    stored = _lines(telemetry_store, key)

    again = [event(recent(), deployment="blue")]
    write_segment(spool, again, gateway="gw-a", seq=1)
    report = shipper.ship_spool(spool, telemetry_store)
    assert report.objects == 0
    assert _lines(telemetry_store, key) == stored, "the stored object is untouched"
    assert list(spool.glob("*.jsonl")) == []
    (kept,) = (spool / shipper.CONFLICTS).glob("*.jsonl")
    assert kept.name == "gw-a-000000000001.jsonl", "the colliding segment is kept for a person to look at"


def test_a_resend_of_the_same_segment_is_not_a_conflict(spool, telemetry_store):
    events = [event(recent(), deployment="blue") for _ in range(2)]
    write_segment(spool, events, gateway="gw-a", seq=4)
    shipper.ship_spool(spool, telemetry_store)
    write_segment(spool, events, gateway="gw-a", seq=4)
    report = shipper.ship_spool(spool, telemetry_store)
    assert report.objects == 1 and not (spool / shipper.CONFLICTS).exists()
