"""Studio's Redis cache stores JSON and never unpickles what it reads (studio/cache.py), on a real Redis.

The cache is the one the settings build from STUDIO_CACHE_URL, on a database of its own (not 0, the
broker's) and under a key prefix of this test's own, so runs beside each other never meet.
"""

import json
import os
import pickle
import uuid

import pytest
import redis
from rest_framework.test import APIClient

from studio.cache import caches_for

REDIS_URL = "redis://127.0.0.1:6379/13"


class Planted:
    """What someone with write access to Redis could leave there: unpickling it makes a folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def redis_server() -> redis.Redis:
    server = redis.Redis.from_url(REDIS_URL)
    try:
        server.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis answers on 127.0.0.1:6379 (CI runs one)")
    yield server
    server.close()


@pytest.fixture
def prefix(settings, tmp_path, redis_server) -> str:
    """Studio's cache on Redis, as STUDIO_CACHE_URL=redis://... configures it; its keys' prefix."""
    prefix = f"cache-test-{uuid.uuid4().hex}"
    caches = caches_for(REDIS_URL, tmp_path)
    caches["default"]["KEY_PREFIX"] = prefix
    settings.CACHES = caches
    yield prefix
    for key in redis_server.scan_iter(f"{prefix}:*"):
        redis_server.delete(key)


def plant_everywhere(server: redis.Redis, prefix: str, marker) -> list[bytes]:
    keys = list(server.scan_iter(f"{prefix}:*"))
    for key in keys:
        server.set(key, pickle.dumps(Planted(str(marker))))
    return keys


@pytest.mark.django_db
def test_a_pickle_planted_under_studios_keys_is_never_run(prefix, redis_server, tmp_path):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/api/v1/models/").status_code == 401  # the failure is counted in the cache
    marker = tmp_path / "the-pickle-ran"
    planted = plant_everywhere(redis_server, prefix, marker)
    assert planted, "Studio keeps its sign-in failures in the cache"

    answer = client.get("/api/v1/models/")

    assert answer.status_code == 401, answer.content
    assert not marker.exists(), "a pickle from Redis was unpickled"


@pytest.mark.django_db
def test_failed_tokens_are_counted_across_requests_in_redis(prefix, settings):
    settings.STUDIO_AUTH_FAILURES_PER_MINUTE = 3
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    answers = [client.get("/api/v1/models/").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]


def test_values_round_trip_as_json(prefix, redis_server):
    from django.core.cache import cache

    values = {"a-dict": {"name": "fraud", "weights": [90, 10]}, "text": "blue", "number": 2.5, "flag": True}
    for key, value in values.items():
        cache.set(key, value, 60)
    assert cache.get_many(list(values)) == values
    assert cache.get("missing", "default") == "default"
    assert cache.add("count", 1, 60) and not cache.add("count", 5, 60)
    assert cache.incr("count") == 2
    cache.set("pair", (1, 2), 60)
    assert cache.get("pair") == [1, 2], "JSON has lists, not tuples"
    stored = redis_server.get(cache.make_key("a-dict"))
    assert json.loads(stored) == values["a-dict"], "Redis holds JSON"
    with pytest.raises(TypeError):
        cache.set("an-object", object(), 60)


def test_a_planted_value_is_a_miss_for_every_read(prefix, redis_server, tmp_path):
    from django.core.cache import cache

    cache.set("kept", {"ok": 1}, 60)
    cache.set("planted", "placeholder", 60)
    marker = tmp_path / "the-pickle-ran"
    redis_server.set(cache.make_key("planted"), pickle.dumps(Planted(str(marker))))

    assert cache.get_many(["kept", "planted"]) == {"kept": {"ok": 1}}
    redis_server.set(cache.make_key("planted"), pickle.dumps(Planted(str(marker))))
    assert cache.get("planted", "fallback") == "fallback"
    assert not marker.exists()
    assert redis_server.get(cache.make_key("planted")) is None, "read once, the planted value is deleted"
