"""Concurrency and adaptive batching: every caller gets its own answer, in order; bad requests fail alone."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.tests.conftest import linear


def _rows(seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.randint(0, 1000) / 8, rng.randint(-1000, 1000) / 8] for _ in range(rng.randint(1, 4))]


def _fire(url: str, bodies: list[dict], threads: int = 16) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda body: client.post(f"{url}/score", json=body), bodies))


def test_concurrent_callers_each_get_their_own_predictions_without_batching(tensor_server):
    bodies = [{"inputs": _rows(n)} for n in range(150)]
    for body, response in zip(bodies, _fire(tensor_server.url, bodies), strict=True):
        assert response.status_code == 200
        assert response.json()["predictions"] == pytest.approx([linear(*row) for row in body["inputs"]])


def test_batched_answers_go_back_to_their_own_callers_in_order(batching_server):
    batches_before = batching_server.metric("studio_batches_total")
    batched_before = batching_server.metric("studio_batched_requests_total")
    conventions = ["inputs", "instances", "input_data"]
    bodies = [{conventions[n % 3]: _rows(n)} for n in range(300)]
    responses = _fire(batching_server.url, bodies, threads=24)
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        convention, rows = next(iter(body.items()))
        answer = response.json() if convention == "input_data" else response.json()["predictions"]
        assert answer == pytest.approx([linear(*row) for row in rows])
    batched = batching_server.metric("studio_batched_requests_total") - batched_before
    batches = batching_server.metric("studio_batches_total") - batches_before
    assert batched == 300
    assert batches < 300, "concurrent requests were never merged into one predict call"


def test_a_request_the_model_rejects_fails_alone_inside_a_batch(batching_server):
    # The model raises on a negative first value: the merged call fails, and is retried request by request.
    bodies = [{"inputs": [[-1.0, 0.0]]} if n % 10 == 0 else {"inputs": _rows(n)} for n in range(120)]
    responses = _fire(batching_server.url, bodies, threads=24)
    for body, response in zip(bodies, responses, strict=True):
        if body["inputs"][0][0] < 0:
            assert response.status_code == 500
            assert response.json()["error"]["code"] == "ModelError"
            assert "negative" not in response.text
        else:
            assert response.status_code == 200
            assert response.json()["predictions"] == pytest.approx([linear(*row) for row in body["inputs"]])


def test_schema_errors_are_answered_before_batching(batching_server):
    bodies = [{"inputs": [[1.0]]} if n % 5 == 0 else {"inputs": _rows(n)} for n in range(50)]
    responses = _fire(batching_server.url, bodies)
    assert [r.status_code for r in responses] == [400 if n % 5 == 0 else 200 for n in range(50)]
