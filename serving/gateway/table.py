"""The route table: parsed once into immutable objects, and kept fresh from the control plane or a file.

A table is compiled when it arrives (weights into cumulative ranges, the token key into a key object), so
the hot path only reads attributes. The holder swaps in a whole new table with one assignment, which is
atomic for every request: a request uses the table it started with from start to end.
See docs/route-table.md for the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from serving import replica_key
from serving.envparse import ConfigError
from serving.gateway.collector import Collector, compile_collector
from serving.gateway.compare import DEFAULT_POLICY, ComparePolicy, compile_policy
from serving.logs import JsonLog

MAX_WAIT_S = 60


class TableError(ValueError):
    """The document is not a valid version-1 route table; the message says where."""


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica address as the table publishes it."""

    id: str
    url: str
    host: str
    port: int
    ready: bool


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment's replicas and request settings."""

    endpoint: str
    name: str
    replicas: tuple[Replica, ...]  # only the ready ones: the unready get no traffic
    timeout_s: float
    max_concurrent_per_instance: int
    max_body_bytes: int
    data_collector: Collector | None  # compiled from the table's `data_collector` (collector.py)
    # What every request to these replicas presents (serving.replica_key); b"" when the table gives none.
    replica_key: bytes = field(default=b"", repr=False)

    @property
    def max_in_flight(self) -> int:
        """Azure's limit: 2 x max_concurrent_requests_per_instance x (ready) instances."""
        return 2 * self.max_concurrent_per_instance * len(self.replicas)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint's auth, traffic and deployments."""

    name: str
    auth_mode: str
    key_digests: tuple[str, ...]
    # Tokens are bound to these: one issued for an endpoint since deleted (a new one by the same name has
    # another id), or before a key regeneration or auth-mode switch (a lower generation), is refused. An
    # endpoint without an id (a table from an older control plane) accepts no token at all.
    id: str | None
    key_generation: int
    traffic: tuple[tuple[float, str], ...]  # (cumulative upper bound in [0, 100), deployment)
    mirror: tuple[tuple[str, float], ...]  # (deployment, share in [0, 1])
    cors_origins: frozenset[str]
    deployments: dict[str, Deployment]
    comparison: ComparePolicy = DEFAULT_POLICY  # how mirrored answers are compared (compare.py)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    algorithm: str
    issuer: str
    public_key: Any
    fingerprint: str  # sha256 of the PEM: names the key in the gateway's cache of verified tokens


@dataclass(slots=True)
class RouteTable:
    """One compiled version of the table."""

    version: int
    generated_at: str
    token: TokenSettings | None
    endpoints: dict[str, Endpoint]
    loaded_at: float = field(default_factory=time.monotonic)


def _need(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise TableError(f"{where}: missing {key!r}.")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise TableError(f"{where}.{key}: unexpected type {type(value).__name__}.")
    return value


def _percentages(raw: Any, where: str, names: dict[str, Any]) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TableError(f"{where}: expected an object of percentages.")
    out = {}
    for name, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
            raise TableError(f"{where}.{name}: expected an integer percentage 0..100.")
        if name not in names:
            raise TableError(f"{where}.{name}: no such deployment.")
        if value:
            out[name] = value
    return out


def _deployment(endpoint: str, name: str, raw: Any, where: str) -> Deployment:
    replicas = []
    for i, item in enumerate(_need(raw, "replicas", list, where)):
        spot = f"{where}.replicas[{i}]"
        url = _need(item, "url", str, spot)
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            port = 0
        if parts.scheme != "http" or not parts.hostname or not port:
            raise TableError(f"{spot}.url: expected http://host[:port], got {url!r}.")
        replicas.append(
            Replica(
                id=str(item.get("id") or url),
                url=url.rstrip("/"),
                host=parts.hostname,
                port=port,
                ready=bool(item.get("ready", True)),
            )
        )
    key = raw.get("replica_key") or ""
    if not isinstance(key, str):
        raise TableError(f"{where}.replica_key: expected a string.")
    try:
        key_bytes = replica_key.parse(f"{where}.replica_key", key) if key else b""
    except ConfigError as exc:
        raise TableError(str(exc)) from None
    settings = raw.get("request_settings") or {}
    if not isinstance(settings, dict):
        raise TableError(f"{where}.request_settings: expected an object.")

    def setting(key: str, default: int) -> int:
        value = settings.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TableError(f"{where}.request_settings.{key}: expected a positive integer.")
        return value

    return Deployment(
        endpoint=endpoint,
        name=name,
        replicas=tuple(r for r in replicas if r.ready),
        timeout_s=setting("request_timeout_ms", 5000) / 1000.0,
        max_concurrent_per_instance=setting("max_concurrent_requests_per_instance", 1),
        max_body_bytes=setting("max_body_bytes", 100 * 1024 * 1024),
        data_collector=compile_collector(raw.get("data_collector")),
        replica_key=key_bytes,
    )


def _endpoint(name: str, raw: Any) -> Endpoint:
    where = f"endpoints.{name}"
    auth_mode = _need(raw, "auth_mode", str, where)
    if auth_mode not in ("key", "aml_token"):
        raise TableError(f"{where}.auth_mode: expected 'key' or 'aml_token', got {auth_mode!r}.")
    digests = tuple(str(d).lower() for d in raw.get("key_digests") or ())
    endpoint_id = raw.get("endpoint_id")
    if endpoint_id is not None and (not isinstance(endpoint_id, str) or not endpoint_id):
        raise TableError(f"{where}.endpoint_id: expected a non-empty string.")
    generation = raw.get("key_generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise TableError(f"{where}.key_generation: expected a whole number >= 0.")
    deployments = {
        dep: _deployment(name, dep, value, f"{where}.deployments.{dep}")
        for dep, value in _need(raw, "deployments", dict, where).items()
    }
    traffic = _percentages(raw.get("traffic"), f"{where}.traffic", deployments)
    if traffic and sum(traffic.values()) != 100:
        raise TableError(f"{where}.traffic: live traffic must sum to 0 or 100, not {sum(traffic.values())}.")
    bounds, total = [], 0.0
    for dep, weight in sorted(traffic.items()):
        total += weight
        bounds.append((total, dep))
    mirror = _percentages(raw.get("mirror_traffic"), f"{where}.mirror_traffic", deployments)
    origins = raw.get("cors_origins") or []
    if not isinstance(origins, list):
        raise TableError(f"{where}.cors_origins: expected a list of origins.")
    return Endpoint(
        name=name,
        auth_mode=auth_mode,
        key_digests=digests,
        id=endpoint_id,
        key_generation=generation,
        traffic=tuple(bounds),
        mirror=tuple((dep, share / 100.0) for dep, share in sorted(mirror.items())),
        cors_origins=frozenset(str(o).rstrip("/") for o in origins),
        deployments=deployments,
        comparison=compile_policy(raw.get("comparison")),
    )


def parse_table(document: Any) -> RouteTable:
    """Compile a decoded route table document; raises TableError saying what is wrong."""
    version = _need(document, "version", int, "table")
    token = None
    raw_token = document.get("token")
    if raw_token:
        key_pem = _need(raw_token, "public_key", str, "table.token")
        try:
            key = load_pem_public_key(key_pem.encode())
        except ValueError as exc:
            raise TableError(f"table.token.public_key: not a PEM public key ({exc}).") from None
        token = TokenSettings(
            algorithm=str(raw_token.get("algorithm") or "EdDSA"),
            issuer=str(raw_token.get("issuer") or "studio"),
            public_key=key,
            fingerprint=hashlib.sha256(key_pem.encode()).hexdigest(),
        )
    endpoints = {
        name: _endpoint(name, raw) for name, raw in _need(document, "endpoints", dict, "table").items()
    }
    return RouteTable(
        version=version,
        generated_at=str(document.get("generated_at") or ""),
        token=token,
        endpoints=endpoints,
    )


class TableHolder:
    """Holds the current table and what the gateway knows about where it came from."""

    def __init__(self) -> None:
        self.table: RouteTable | None = None
        self.source = ""
        self.reachable = False
        self.last_contact: float | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self.fetch_errors = 0

    def swap(self, table: RouteTable) -> None:
        """Make `table` current; one assignment, so concurrent requests see either the old or the new."""
        self.table = table
        self.swaps += 1

    def failed(self, message: str) -> None:
        self.reachable = False
        self.last_error = message
        self.fetch_errors += 1

    def contact(self) -> None:
        self.reachable = True
        self.last_error = None
        self.last_contact = time.monotonic()


class ControlPlaneSource:
    """Long-polls `{url}/internal/route-table/` with ETag; keeps the last good table when it fails.

    Every poll names the gateway (`X-Studio-Gateway`) and, in `If-None-Match`, the version it has applied:
    the control plane records that as this gateway's acknowledgement, and retires a replica only once every
    live gateway has applied a table without it.
    """

    def __init__(
        self,
        holder: TableHolder,
        url: str,
        secret: bytes,
        log: JsonLog,
        wait_s: int = 30,
        gateway_id: str | None = None,
        saved: Path | None = None,
    ) -> None:
        self.holder = holder
        self.url = f"{url}/internal/route-table/"
        self.secret = secret
        self.log = log
        self.wait_s = min(wait_s, MAX_WAIT_S)
        self.gateway_id = gateway_id
        self.saved = saved
        holder.source = url

    def load_saved(self) -> None:
        """Serve from the last table this gateway applied, kept on disk, until the control plane answers:
        a restarted gateway routes at once instead of answering 503. A file whose signature does not match
        (tampered with, or another secret's) is ignored and reported."""
        if self.saved is None or not self.saved.exists():
            return
        try:
            table = parse_table(orjson.loads(read_signed(self.saved, self.secret)))
        except (OSError, ValueError) as exc:
            self.log.warning(f"Saved route table {self.saved} not used: {exc}", event="route_table_error")
            return
        self.holder.swap(table)
        self.log.info("Route table loaded from disk", event="route_table", version=table.version)

    async def run(self) -> None:
        """Poll forever (cancel to stop). While the control plane fails, polls again after 0.25 s, doubling
        to 5 s, except before the first answer since start: then every 0.25 s, so a gateway started with
        (or before) the control plane catches up at once."""
        backoff = 0.25
        headers = {"authorization": f"Bearer {self.secret.decode()}"}
        if self.gateway_id:
            headers["x-studio-gateway"] = self.gateway_id
        timeout = httpx.Timeout(self.wait_s + 15.0, connect=3.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                table = self.holder.table
                if table is not None:
                    headers["if-none-match"] = f'"{table.version}"'
                # While the control plane is unreachable, ask without waiting: an answer held for 30 s
                # would hide for 30 s that it is back.
                wait = self.wait_s if self.holder.reachable else 0
                try:
                    response = await client.get(self.url, params={"wait": wait}, headers=headers)
                    if self._handle(response) and self.saved is not None:
                        await asyncio.to_thread(write_signed, self.saved, response.content, self.secret)
                    backoff = 0.25
                    continue
                except (httpx.HTTPError, TableError, ValueError) as exc:
                    message = str(exc) or type(exc).__name__
                    if self.holder.reachable or self.holder.last_error != message:
                        self.log.warning(
                            f"Route table fetch failed; serving from the last table: {message}",
                            event="route_table_error",
                        )
                    self.holder.failed(message)
                except OSError as exc:
                    # The table applied, but could not be saved (a full disk): serving goes on.
                    self.log.warning(
                        f"Route table not saved to {self.saved}: {exc}", event="route_table_error"
                    )
                    continue
                await asyncio.sleep(backoff)
                if self.holder.last_contact is not None:
                    backoff = min(backoff * 2, 5.0)

    def _handle(self, response: httpx.Response) -> bool:
        """Apply an answer; True when a new table was swapped in."""
        if response.status_code == 304:
            self.holder.contact()
            return False
        if response.status_code == 401:
            raise ValueError("the control plane refused the gateway secret (401)")
        if response.status_code != 200:
            raise ValueError(f"the control plane answered {response.status_code}")
        table = parse_table(orjson.loads(response.content))
        self.holder.contact()
        current = self.holder.table
        if current is None or table.version != current.version:
            self.holder.swap(table)
            self.log.info("Route table loaded", event="route_table", version=table.version)
            return True
        return False


def write_signed(path: Path, content: bytes, secret: bytes) -> None:
    """Save a table whole or not at all, signed with the gateway secret (HMAC-SHA256 on the first line).

    Readable by this user only (0600): the table holds the deployments' replica keys."""
    signature = hmac.new(secret, content, hashlib.sha256).hexdigest().encode()
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a partial file left by a killed writer kept the mode it was made with
    with open(fd, "wb") as handle:
        handle.write(signature + b"\n" + content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read_signed(path: Path, secret: bytes) -> bytes:
    """The content of a file `write_signed` wrote; ValueError if its signature does not match."""
    signature, _, content = path.read_bytes().partition(b"\n")
    expected = hmac.new(secret, content, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(signature, expected):
        raise ValueError("its signature does not match this gateway's secret")
    return content


class FileSource:
    """Reads a route table file, and again whenever its modification time or size changes."""

    def __init__(self, holder: TableHolder, path: Path, log: JsonLog, interval_s: float = 0.2) -> None:
        self.holder = holder
        self.path = path
        self.log = log
        self.interval_s = interval_s
        self._seen: tuple[int, int] | None = None
        holder.source = str(path)

    def load(self) -> None:
        """Read the file now if it changed; a bad file keeps the current table (and is reported)."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self.holder.failed(f"cannot read {self.path}: {exc.strerror}")
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            self.holder.contact()
            return
        self._seen = seen
        try:
            table = parse_table(orjson.loads(self.path.read_bytes()))
        except (OSError, ValueError) as exc:
            self.holder.failed(f"{self.path}: {exc}")
            self.log.warning(f"Route table file rejected: {exc}", event="route_table_error")
            return
        self.holder.contact()
        self.holder.swap(table)
        self.log.info("Route table loaded", event="route_table", version=table.version, file=str(self.path))

    async def run(self) -> None:
        """Watch the file forever (cancel to stop): a stat every interval, a read only on change."""
        while True:
            with contextlib.suppress(Exception):
                self.load()
            await asyncio.sleep(self.interval_s)
