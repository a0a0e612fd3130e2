"""The gateway's data collector: Azure's `data_collector` fields compiled, payload lines shaped and capped."""

import pytest

from serving.gateway.collector import MAX_PAYLOAD_BYTES, Collector, compile_collector

EVENT = {"ts": "2026-11-22T03:00:00.000Z", "request_id": "r1", "endpoint": "fraud", "deployment": "blue"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ({"collections": {}}, None),
        ({"collections": {"model_inputs": {"enabled": "False"}}}, None),
        (
            {"collections": {"model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": True}}},
            Collector(1.0, "model_inputs", "model_outputs"),
        ),
        (
            {"collections": {"request": {"enabled": "true"}}, "sampling_rate": 0.25},
            Collector(0.25, "request", None),
        ),
        (
            {"collections": {"response": {"enabled": True}}, "rolling_rate": "minute"},
            Collector(1.0, None, "response"),
        ),
        ({"collections": {"model_inputs": {"enabled": True}}, "sampling_rate": 0}, None),
        ({"collections": {"model_inputs": {"enabled": True}}, "sampling_rate": "often"}, None),
    ],
)
def test_it_compiles_azure_data_collector_fields(raw, expected):
    assert compile_collector(raw) == expected


def test_payload_lines_join_the_event_and_are_capped():
    collector = Collector(1.0, "model_inputs", "model_outputs")
    big = b"x" * (MAX_PAYLOAD_BYTES + 10)
    inputs, outputs = collector.lines(EVENT, big, b"[0]")
    assert (inputs["kind"], inputs["request_id"], inputs["deployment"]) == ("model_inputs", "r1", "blue")
    assert (len(inputs["payload"]), inputs["bytes"], inputs["truncated"]) == (
        MAX_PAYLOAD_BYTES,
        len(big),
        True,
    )
    assert (outputs["kind"], outputs["payload"], outputs["truncated"]) == ("model_outputs", "[0]", False)
