"""Sampled payloads: shipped under their own kind, never counted as requests, listed and downloaded."""

import gzip

import orjson
import pytest

from monitoring import rollup, shipper
from monitoring.models import ArchivedObject, MetricMinute
from monitoring.tests.factories import event, payload, recent, write_segment
from studio.testkit import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def sampled(endpoints, spool, telemetry_store):
    requests = [event(recent(m)) for m in range(6)]
    lines = list(requests)
    for item in requests[:3]:
        lines.append(payload(item, "model_inputs", '{"input_data": [[0.0, 1.0]]}'))
        lines.append(payload(item, "model_outputs", "[0]"))
    write_segment(spool, lines)
    shipper.ship_spool(spool, telemetry_store, rollup.register_shipped)
    rollup.rollup_pending(telemetry_store)
    return requests


def test_payloads_go_under_their_own_kind_and_are_not_counted_as_requests(sampled, telemetry_store):
    kinds = {key.split("/")[2] for key in telemetry_store.keys("")}
    assert kinds == {"requests", "model_inputs", "model_outputs"}
    assert sum(MetricMinute.objects.values_list("requests", flat=True)) == 6
    # Objects are partitioned by the hour: the six minutes may straddle one.
    inputs = ArchivedObject.objects.filter(kind="model_inputs").values_list("events", flat=True)
    assert sum(inputs) == 3


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_the_tab_lists_collected_payloads_and_downloads_a_range(client, team, sampled):
    client.login(username="reader", password=PASSWORD)
    page = client.get("/endpoints/fraud/monitoring/").content.decode()
    assert "Collected data" in page
    assert "/model_inputs/date=" in page

    response = client.get("/endpoints/fraud/monitoring/collected/", {"kind": "model_outputs", "range": "day"})
    assert response.status_code == 200
    assert response["content-disposition"].startswith('attachment; filename="fraud-model_outputs-')
    lines = [
        orjson.loads(line) for line in gzip.decompress(b"".join(response.streaming_content)).splitlines()
    ]
    assert sorted(line["request_id"] for line in lines) == sorted(e["request_id"] for e in sampled[:3])
    assert {line["payload"] for line in lines} == {"[0]"}
    refused = client.get("/endpoints/fraud/monitoring/collected/", {"kind": "requests"})
    assert refused.status_code == 400


def test_the_tab_says_how_to_collect_when_nothing_does(client, team, endpoints):
    client.login(username="reader", password=PASSWORD)
    assert "data_collector:" in client.get("/endpoints/fraud/monitoring/").content.decode()
