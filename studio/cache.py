"""Studio's cache holds JSON, never pickles.

Django's Redis cache pickles what it stores, and unpickling runs code: whoever can write one key in
Redis could make the web process run anything by planting a pickle under a key Studio reads. Here:

- values are stored as JSON; integers as plain numbers, so `incr` stays atomic in Redis;
- a stored value that is not JSON (planted, or left by another program) is never interpreted: reading
  it is a miss, it is deleted, and a warning names the key, so the caller goes on as if nothing was
  cached;
- only JSON types can be cached (dict with string keys, list, str, int, float, bool, None): anything
  else fails at `set` with TypeError, where the bug is. Tuples come back as lists.

The embedded default is a file cache under the private STUDIO_HOME (studio/home.py), which only
Studio's own user can write.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


class JSONSerializer:
    """What Django's Redis cache client calls to turn values into bytes and back."""

    def dumps(self, value: Any) -> bytes | int:
        # type(), not isinstance(): True is an int too, and must come back as True.
        if type(value) is int:
            return value
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        """The value in `data`; ValueError when `data` is not JSON."""
        try:
            return int(data)
        except ValueError:
            return json.loads(data)


class JSONRedisCacheClient(RedisCacheClient):
    """Django's client with JSON values, where a value that is not JSON reads as a miss."""

    def __init__(self, servers, **options):
        if "serializer" in options:
            raise ImproperlyConfigured(
                "Studio's Redis cache always stores JSON: remove OPTIONS['serializer']."
            )
        super().__init__(servers, serializer=JSONSerializer, **options)

    def _decoded(self, key: str, data: bytes, default: Any) -> Any:
        try:
            return self._serializer.loads(data)
        except ValueError:
            logger.warning("Cache key %r held a value that is not JSON; it was ignored and deleted.", key)
            self.get_client(key, write=True).delete(key)
            return default

    def get(self, key, default):
        data = self.get_client(key).get(key)
        return default if data is None else self._decoded(key, data, default)

    def get_many(self, keys):
        found = {}
        for key, data in zip(keys, self.get_client(None).mget(keys), strict=True):
            if data is not None and (value := self._decoded(key, data, _MISS)) is not _MISS:
                found[key] = value
        return found


_MISS = object()


class JSONRedisCache(RedisCache):
    """`django.core.cache.backends.redis.RedisCache` that stores JSON (see the module docstring)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = JSONRedisCacheClient


def caches_for(url: str, home: Path) -> dict:
    """Django's CACHES for STUDIO_CACHE_URL (`redis://[:password@]host:port/db`), or, when it is empty,
    a file cache under `home` that every process on this host shares."""
    if url.startswith(("redis://", "rediss://")):
        return {"default": {"BACKEND": "studio.cache.JSONRedisCache", "LOCATION": url}}
    if url:
        # Only the scheme: the rest may hold a password.
        raise ImproperlyConfigured(
            f"STUDIO_CACHE_URL={url.partition(':')[0] + ':...'!r} is not supported: "
            "use redis://[:password@]host:port/db."
        )
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(home / "cache"),
        }
    }
