"""Rolling archived objects up into minute rows: each object counted once, whatever runs twice."""

import io
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from monitoring import histogram, rollup, shipper
from monitoring.models import ArchivedObject, MetricMinute
from monitoring.retention import enforce_retention
from monitoring.tests.factories import event, recent, write_segment

pytestmark = pytest.mark.django_db(transaction=True)


def _ship(spool, store):
    return shipper.ship_spool(spool, store, rollup.register_shipped)


def _counted(**filters) -> int:
    return sum(MetricMinute.objects.filter(**filters).values_list("requests", flat=True))


def test_running_the_rollup_twice_counts_each_object_once(spool, telemetry_store):
    write_segment(spool, [event(recent()) for _ in range(40)], seq=1)
    write_segment(spool, [event(recent(2)) for _ in range(60)], seq=2)
    _ship(spool, telemetry_store)

    first = rollup.rollup_pending(telemetry_store)
    second = rollup.rollup_pending(telemetry_store)

    assert (first.objects, first.events) == (2, 100)
    assert (second.objects, second.events) == (0, 0)
    assert _counted() == 100


def test_a_resent_segment_is_not_counted_again(spool, telemetry_store, monkeypatch):
    write_segment(spool, [event(recent()) for _ in range(25)], seq=1)
    monkeypatch.setattr(shipper, "remove_segment", lambda path: (_ for _ in ()).throw(SystemExit("crash")))
    with pytest.raises(SystemExit):
        _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)  # the rollup runs between the crash and the resend
    monkeypatch.undo()
    _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)
    assert _counted() == 25
    assert ArchivedObject.objects.count() == 1


def test_concurrent_rollups_count_each_object_once(spool, telemetry_store):
    for seq in range(1, 9):
        write_segment(spool, [event(recent(seq)) for _ in range(20)], seq=seq)
    _ship(spool, telemetry_store)
    reports, errors = [], []

    def run():
        try:
            reports.append(rollup.rollup_pending(telemetry_store))
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(r.objects for r in reports) == 8
    assert _counted() == 160


def test_a_claim_taken_over_after_a_crash_is_counted_by_the_new_owner_only(spool, telemetry_store):
    write_segment(spool, [event(recent()) for _ in range(10)], seq=1)
    _ship(spool, telemetry_store)
    item = ArchivedObject.objects.get()
    stale_token = rollup._claim(item.pk, timezone.now() - rollup.CLAIM_TIMEOUT - timedelta(seconds=1))
    assert stale_token is not None
    summary = rollup.read_object(telemetry_store, item.key)

    assert rollup.rollup_pending(telemetry_store).events == 10  # takes over the stale claim
    assert rollup._apply(item, stale_token, summary) is False  # the crashed worker wakes up: refused
    assert _counted() == 10


def test_repeated_request_ids_in_one_object_are_counted_once(spool, telemetry_store):
    one = event(recent(), request_id="same")
    mirror = {**one, "mirrored": True, "auth": "mirror"}
    write_segment(spool, [one, one, mirror], seq=1)
    _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)
    assert _counted(mirrored=False) == 1
    assert _counted(mirrored=True) == 1
    assert ArchivedObject.objects.get().duplicates == 1


def test_counts_errors_bytes_and_latency_buckets(spool, telemetry_store):
    when = recent()
    events = [
        event(when, status=200, latency_ms=2.0, bytes_in=10, bytes_out=3),
        event(when, status=424, latency_ms=20.0, bytes_in=10, bytes_out=50),
        event(when, status=503, latency_ms=200.0, bytes_in=10, bytes_out=40),
    ]
    write_segment(spool, events, seq=1)
    _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)
    row = MetricMinute.objects.get()
    assert (row.requests, row.errors_4xx, row.errors_5xx, row.bytes_in, row.bytes_out) == (3, 1, 1, 30, 93)
    assert row.minute == when.replace(second=0)
    assert sum(row.latency_buckets.values()) == 3
    assert histogram.percentile(row.latency_buckets, 1.0) == pytest.approx(
        200.0, rel=histogram.RELATIVE_ERROR
    )


def test_rebuild_metrics_recomputes_the_same_rows_from_the_archive(spool, telemetry_store):
    write_segment(spool, [event(recent(m), latency_ms=m + 0.5) for m in range(30)], seq=1)
    write_segment(spool, [event(recent(m), mirrored=True) for m in range(5)], seq=2)
    _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)
    before = list(MetricMinute.objects.order_by("minute", "mirrored").values())
    MetricMinute.objects.filter(mirrored=False).update(requests=999)  # damaged rows
    ArchivedObject.objects.all().delete()  # and lost rows: rebuilt from the store itself

    call_command("rebuild_metrics", stdout=io.StringIO())

    after = list(MetricMinute.objects.order_by("minute", "mirrored").values())
    strip = lambda rows: [{k: v for k, v in row.items() if k != "id"} for row in rows]  # noqa: E731
    assert strip(after) == strip(before)


def test_retention_deletes_old_minutes_and_old_objects(spool, telemetry_store):
    write_segment(spool, [event(recent(60 * 24 * 10))], seq=1)  # ten days ago
    write_segment(spool, [event(recent())], seq=2)
    _ship(spool, telemetry_store)
    rollup.rollup_pending(telemetry_store)

    report = enforce_retention(telemetry_store, metrics_days=5, telemetry_days=5)

    assert (report.minutes_deleted, report.objects_deleted) == (1, 1)
    assert MetricMinute.objects.count() == 1
    assert len(list(telemetry_store.keys(""))) == 1
    assert ArchivedObject.objects.count() == 1
