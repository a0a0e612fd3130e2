"""The gateway's ASGI application: scoring, swagger, health and metrics routes.

Hand-written (no framework) because this is the hot path: a scoring request costs one pass over its
headers, a dict lookup per table level, one upstream exchange on a pooled connection, one spool write.
Every answer is JSON with `{"error": {"code", "message"}}` on failure; nothing raised reaches a client.

What anyone can send is bounded before it is kept: a path longer than MAX_PATH_LENGTH is refused at once,
and a request for an endpoint the table does not hold is spooled under UNKNOWN_ENDPOINT (and counted under
no endpoint), never under the name it asked for. Only a bare liveness answer is public; the health detail
and the metrics (endpoint names, the control plane's address, errors) need the gateway secret as bearer,
unless STUDIO_GATEWAY_METRICS_PUBLIC publishes the metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import random
import time
import uuid
from http import HTTPStatus
from typing import Any

import orjson

from serving import openapi, proxies
from serving.gateway.auth import Authenticator, FailureThrottle, credential_fingerprint
from serving.gateway.balancer import Balancer
from serving.gateway.compare import COMPARISONS, Body, LiveAnswer, Pending, compare, timestamp, watermark_line
from serving.gateway.config import GatewayConfig
from serving.gateway.load import LoadReporter
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.mirror import Mirror, MirrorCopy
from serving.gateway.proxy import BROKEN, TIMEOUT, Outcome, Proxy
from serving.gateway.spool import Spool, finish_segment
from serving.gateway.table import Deployment, Endpoint, RouteTable, TableHolder
from serving.logs import JsonLog

JSON = b"application/json"
_TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
# Health: silence from the control plane past its poll wait plus this margin makes the table stale; a
# dropped telemetry event keeps the gateway degraded for this long.
STALE_MARGIN_S = 5.0
DROPS_RECENT_S = 300.0
# A compared copy waits this long past the live deployment's request timeout for the live answer.
LIVE_ANSWER_GRACE_S = 5.0
# The longest path worth reading: `/endpoints/{name}/swagger.json` with a 32-character name, with room to
# spare. Anything longer is refused before it is parsed, counted or spooled.
MAX_PATH_LENGTH = 256
# What the telemetry of a request for an endpoint the table does not hold records as its endpoint: the
# archive's own placeholder for names that are not endpoints (monitoring/layout.py, UNKNOWN_ENDPOINT).
UNKNOWN_ENDPOINT = "_unknown"
# An unknown name is echoed in the 404 up to the longest valid endpoint name.
_NAME_SHOWN = 32
# Request headers never forwarded to a replica: hop-by-hop ones, ones we set, and the credential (user
# code has no business seeing the endpoint's key or token).
_DROP_UPSTREAM = frozenset(
    {
        b"host", b"content-length", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
        b"te", b"trailer", b"upgrade", b"expect", b"authorization", b"proxy-authorization", b"x-request-id",
        b"azureml-model-deployment", b"x-studio-replica-key",
    }
)  # fmt: skip
# Replica response headers not passed on: hop-by-hop ones and ones the gateway sets itself.
_DROP_DOWNSTREAM = frozenset(
    {
        b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server",
        b"x-request-id", b"x-ms-request-id", b"azureml-model-deployment",
    }
)  # fmt: skip
_CORS_EXPOSE = (
    b"x-request-id, x-ms-request-id, x-ms-client-request-id, azureml-model-deployment, "
    b"ms-azureml-model-error-statuscode, ms-azureml-model-error-reason"
)
_CORS_ALLOW_HEADERS = b"authorization, content-type, azureml-model-deployment, x-ms-client-request-id"


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class Answer(Exception):
    """Raised inside a handler to answer at once with a gateway error."""

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.body = _error(code, message)
        self.headers = headers or []


class GatewayApp:
    """ASGI app of one gateway process. `source` keeps `holder` fresh (a ControlPlaneSource or FileSource)."""

    def __init__(self, config: GatewayConfig, holder: TableHolder, source: Any, log: JsonLog) -> None:
        self.config = config
        self.holder = holder
        self.source = source
        self.log = log
        self.metrics = GatewayMetrics()
        self.balancer = Balancer()
        self.proxy = Proxy(self.balancer, self.metrics)
        self.auth = Authenticator(config.secret)
        self.client_failures = FailureThrottle(config.auth_failure_limit, config.auth_failure_window_s)
        self.credential_failures = FailureThrottle(config.auth_failure_limit, config.auth_failure_window_s)
        self.spool = Spool(
            config.spool_dir, config.gateway_id, config.spool_segment_bytes, config.spool_segment_seconds
        )
        self.mirror: Mirror | None = None
        self.comparisons = Pending()  # mirrored copies whose comparison is not spooled yet
        # Segments being finished in a thread, each with the comparison watermark as it was when the
        # segment closed; a watermark is published only once its segment and all before it are closed.
        self._finishing: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._watermark = 0.0  # the newest watermark safe to publish
        self._published = 0.0  # the newest one spooled
        self._tasks: list[asyncio.Task] = []

    # --- ASGI entry -----------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except Exception as exc:  # last line of defence: a JSON 500, never a stack trace
                self.log.error(
                    f"Unexpected gateway error: {type(exc).__name__}: {exc}", event="gateway_error"
                )
                with contextlib.suppress(Exception):
                    await _send(send, 500, _error("InternalServerError", "The gateway failed; see its log."))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the table source, the mirror workers and the spool's rotation clock."""
        loop = asyncio.get_running_loop()

        # fsync + rename of a full segment happen in a thread: the event loop never waits on the disk.
        def finish_later(fd: int, path: Any) -> None:
            through = self.comparisons.through(time.time())
            future = loop.run_in_executor(None, _finish, self.spool, fd, path)
            self._finishing.append((through, future))

        self.spool.finisher = finish_later
        self.mirror = Mirror(
            self.proxy, self.balancer, self.metrics, self._record_mirror, self.config.mirror_queue,
            self.config.mirror_workers, self._compared, self._not_compared,
        )  # fmt: skip
        self.mirror.start()
        self._tasks = [asyncio.create_task(self.source.run()), asyncio.create_task(self._clock())]
        if self.config.control_plane_url:
            reporter = LoadReporter(
                self.config.control_plane_url, self.config.secret, self.config.gateway_id,
                self.balancer.in_flight, self._deployment_names, self.log, self.config.load_report_s,
            )  # fmt: skip
            self._tasks.append(asyncio.create_task(reporter.run()))

    def _deployment_names(self) -> list[tuple[str, str]]:
        table = self.holder.table
        if table is None:
            return []
        return [
            (name, deployment)
            for name, endpoint in table.endpoints.items()
            for deployment in endpoint.deployments
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.mirror is not None:
            await self.mirror.stop()
        self.balancer.close()
        self.spool.close()

    async def _clock(self) -> None:
        swaps = self.holder.swaps
        while True:
            await asyncio.sleep(1.0)
            self._publish_watermark()
            self.spool.tick()
            table = self.holder.table
            if table is not None and self.holder.swaps != swaps:
                swaps = self.holder.swaps
                self.balancer.retain(
                    {
                        replica.url
                        for endpoint in table.endpoints.values()
                        for deployment in endpoint.deployments.values()
                        for replica in deployment.replicas
                    }
                )

    def _publish_watermark(self) -> None:
        """Spool the comparison watermark (serving/gateway/compare.py) when it moved. It may pass a time
        only once every comparison of a request sent before it is in a closed segment: a segment's
        watermark counts once it and every segment before it are closed (their renames run in threads
        and may finish out of order); with nothing being closed and nothing in the open segment, every
        line so far is closed; the line may also go last into a segment this tick closes. The shipper
        ships closed segments in name order, so the archived watermark never passes a comparison that is
        not archived. Called right before `spool.tick()`, with no await between."""
        while self._finishing and self._finishing[0][1].done():
            through, _ = self._finishing.popleft()
            self._watermark = max(self._watermark, through)
        now = time.time()
        # Every earlier segment is closed, and the open one is empty or about to close with this line in
        # it: the watermark may be now (or the oldest comparison still pending).
        if not self._finishing and (not self.spool.holding or self.spool.closing()):
            self._watermark = max(self._watermark, self.comparisons.through(now))
        if self._watermark > self._published:
            self._published = self._watermark
            self.spool.append(watermark_line(self.config.gateway_id, self._watermark, now))

    # --- routing --------------------------------------------------------------------------------
    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if len(path) > MAX_PATH_LENGTH:
            message = f"The path is longer than {MAX_PATH_LENGTH} characters: no route is that long."
            await _send(send, 414, _error("URITooLong", message))
            return
        if path.startswith("/endpoints/"):
            name, _, action = path[11:].partition("/")
            if action == "score":
                if method == "OPTIONS":
                    await self._preflight(scope, send, name)
                else:
                    await self._score(scope, receive, send, name)
                return
            if action == "swagger.json":
                if method == "OPTIONS":
                    await self._preflight(scope, send, name)
                else:
                    await self._swagger(scope, send, name)
                return
        elif path == "/health" and method in ("GET", "HEAD"):
            operator = self._operator(scope)
            if operator is False:
                await self._refuse_operator(send, "The health detail")
                return
            status, body = self.health()
            # Without the secret: up or not, and nothing about the endpoints or the control plane.
            await _send(send, status, orjson.dumps(body if operator else {"status": body["status"]}))
            return
        elif path == "/metrics" and method in ("GET", "HEAD"):
            if not (self.config.metrics_public or self._operator(scope)):
                await self._refuse_operator(send, "The gateway's metrics")
                return
            await _send(send, 200, self.render_metrics().encode(), _TEXT_METRICS)
            return
        await _send(send, 404, _error("NotFound", f"No route {method} {path}."))

    # --- scoring --------------------------------------------------------------------------------
    async def _score(self, scope: dict, receive: Any, send: Any, name: str) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        rid = request_id.encode()
        bearer = target = origin = length = client_rid = None
        forward: list[tuple[bytes, bytes]] = [(b"x-request-id", rid)]
        for key, value in scope["headers"]:
            if key in _DROP_UPSTREAM:
                if key == b"authorization":
                    bearer = value
                elif key == b"azureml-model-deployment":
                    target = value
                elif key == b"content-length":
                    length = value
                continue
            if key == b"x-ms-client-request-id":
                client_rid = value
            elif key == b"origin":
                origin = value
            forward.append((key, value))
        headers: list[tuple[bytes, bytes]] = [(b"x-request-id", rid), (b"x-ms-request-id", rid)]
        if client_rid is not None:
            headers.append((b"x-ms-client-request-id", client_rid))
        table = self.holder.table
        endpoint = table.endpoints.get(name) if table is not None else None
        event: dict[str, Any] = {
            "ts": "",
            "request_id": request_id,
            "endpoint": name if endpoint is not None else UNKNOWN_ENDPOINT,
            "deployment": None,
            "replica": None,
            "status": 0,
            "model_status": None,
            "latency_ms": 0.0,
            "upstream_ms": None,
            "bytes_in": 0,
            "bytes_out": 0,
            "auth": "none",
            "mirrored": False,
        }
        if endpoint is not None and origin is not None:
            headers += _cors_headers(endpoint, origin)
        deployment: Deployment | None = None
        body: bytes | None = None
        live: LiveAnswer | None = None
        self.metrics.in_flight += 1
        try:
            if table is None:
                raise Answer(
                    503, "ServiceUnavailable", "The gateway has no route table yet; try again shortly."
                )
            if endpoint is None:
                raise Answer(404, "NotFound", _no_endpoint(name))
            method = scope["method"]
            if method not in ("POST", "GET"):
                raise Answer(405, "MethodNotAllowed", "Use POST to score.", [(b"allow", b"POST")])
            try:
                event["auth"] = self._authenticate(scope, endpoint, table, bearer)
            except Answer as refused:
                event["auth"] = "denied" if refused.status == 401 else "throttled"
                raise
            deployment = self._choose(endpoint, target)
            event["deployment"] = deployment.name
            if not deployment.replicas:
                raise Answer(
                    503, "ServiceUnavailable", f"Deployment {deployment.name!r} has no ready replica."
                )
            if not self.balancer.enter(deployment):
                limit = deployment.max_in_flight
                raise Answer(
                    429,
                    "TooManyRequests",
                    f"Deployment {deployment.name!r} already has {limit} requests in flight "
                    "(2 x max_concurrent_requests_per_instance x instances); retry with backoff.",
                )
            try:
                body = await _read_body(receive, length, deployment.max_body_bytes)
                event["bytes_in"] = len(body)
                query = scope["query_string"]
                path = b"/score?" + query if query else b"/score"
                on_sent = None
                if target is None and endpoint.mirror:
                    on_sent, live = self._mirror_hook(
                        endpoint, deployment, method.encode(), path, forward, body, request_id
                    )
                outcome = await self.proxy.forward(deployment, method.encode(), path, forward, body, on_sent)
            finally:
                self.balancer.leave(deployment)
            status, reply = self._reply(deployment, outcome, headers, event)
        except Answer as answer:
            status, reply = answer.status, answer.body
            headers += answer.headers
        except Exception as exc:
            # A defect of the gateway's own: answered, and counted and spooled like every other answer.
            self.log.error(f"Unexpected gateway error: {type(exc).__name__}: {exc}", event="gateway_error")
            status, reply = 500, _error("InternalServerError", "The gateway failed; see its log.")
        finally:
            self.metrics.in_flight -= 1
        if deployment is not None:
            headers.append((b"azureml-model-deployment", deployment.name.encode()))
        elapsed = time.perf_counter() - started
        event["ts"] = _timestamp()
        event["status"] = status
        event["latency_ms"] = round(elapsed * 1000.0, 3)
        event["bytes_out"] = len(reply)
        # Spooled before the answer goes out: whatever a client received is on record.
        self.spool.append(event)
        collector = deployment.data_collector if deployment is not None else None
        if collector is not None and body is not None and random.random() < collector.rate:
            for line in collector.lines(event, body, reply):
                self.spool.append(line)
        self.metrics.observe(
            name if endpoint is not None else "", deployment.name if deployment else "", status, elapsed
        )
        try:
            await _send(send, status, reply, headers=headers)
        finally:
            if live is not None:
                # Handed to the comparison only now: the client has had its answer.
                live_status = event["model_status"] or status
                live.settle(live_status, event["upstream_ms"], reply, live.policy.max_body_bytes)

    def _authenticate(self, scope: dict, endpoint: Endpoint, table: RouteTable, bearer: bytes | None) -> str:
        """The auth mode that let the request in; otherwise raises 401, or 429 for a client or credential
        over the failure limit. The credential is checked first: a valid one is never throttled."""
        credential = _credential(bearer)
        reason = self.auth.check(endpoint, table.token, credential)
        if reason is None:
            return endpoint.auth_mode
        counted = [(self.client_failures, proxies.client_subject(self._client(scope)))]
        if credential:
            counted.append((self.credential_failures, credential_fingerprint(credential)))
        wait = max(throttle.retry_after(key) for throttle, key in counted)
        if wait:
            raise Answer(
                429,
                "TooManyRequests",
                "Too many failed authentication attempts from this client or with this credential: check "
                "the key or token, and retry after the seconds in Retry-After (a valid one is accepted "
                "at any time).",
                [(b"retry-after", str(int(wait) + 1).encode())],
            )
        for throttle, key in counted:
            throttle.failed(key)
        raise Answer(401, "Unauthorized", reason, [(b"www-authenticate", b"Bearer")])

    def _client(self, scope: dict) -> str:
        """The client's address: the TCP peer, or what a trusted proxy says in X-Forwarded-For."""
        peer = scope["client"][0] if scope.get("client") else None
        trusted = self.config.trusted_proxies
        if not trusted.networks:
            return peer or "unknown"
        return trusted.client(
            peer, [value.decode("latin-1") for key, value in scope["headers"] if key == b"x-forwarded-for"]
        )

    def _operator(self, scope: dict) -> bool | None:
        """Whether the request presents the gateway secret as bearer: None when it presents nothing."""
        for key, value in scope["headers"]:
            if key == b"authorization":
                presented = _credential(value)
                return presented is not None and hmac.compare_digest(
                    presented.encode("latin-1"), self.config.secret
                )
        return None

    async def _refuse_operator(self, send: Any, what: str) -> None:
        message = (
            f"{what} needs 'Authorization: Bearer <gateway secret>' (STUDIO_GATEWAY_SECRET, shared with the "
            "control plane); GET /health without credentials answers whether the gateway is up."
        )
        await _send(send, 401, _error("Unauthorized", message), headers=[(b"www-authenticate", b"Bearer")])

    def _choose(self, endpoint: Endpoint, target: bytes | None) -> Deployment:
        if target is not None:
            name = target.decode("latin-1").strip()
            deployment = endpoint.deployments.get(name)
            if deployment is None:
                raise Answer(404, "NotFound", f"Endpoint {endpoint.name!r} has no deployment named {name!r}.")
            return deployment
        if not endpoint.traffic:
            raise Answer(404, "NotFound", f"Endpoint {endpoint.name!r} has no deployment with traffic.")
        point = random.random() * 100.0
        for bound, name in endpoint.traffic:
            if point < bound:
                return endpoint.deployments[name]
        return endpoint.deployments[endpoint.traffic[-1][1]]

    def _mirror_hook(
        self,
        endpoint: Endpoint,
        origin: Deployment,
        method: bytes,
        path: bytes,
        forward: list[tuple[bytes, bytes]],
        body: bytes,
        request_id: str,
    ) -> tuple[Any, LiveAnswer | None]:
        """What to call once the live request is on its way (it queues the copies), and the slot of the
        live answer when a copy is compared with it (the endpoint's `sample_rate` decides per copy)."""
        mirror = self.mirror
        chosen = [endpoint.deployments[name] for name, share in endpoint.mirror if random.random() < share]
        if not chosen or mirror is None:
            return None, None
        policy = endpoint.comparison
        compared = [random.random() < policy.sample_rate for _ in chosen]
        live = LiveAnswer(time.time(), policy) if any(compared) else None
        pending = self.comparisons

        def offer() -> None:
            started = time.time()
            if live is not None:
                live.started = started
            for deployment, sampled in zip(chosen, compared, strict=True):
                if sampled:
                    token = pending.add(started)
                    copy = MirrorCopy(
                        deployment, method, path, forward, body, request_id, live, token, origin
                    )
                else:
                    copy = MirrorCopy(deployment, method, path, forward, body, request_id)
                mirror.offer(copy)

        return offer, live

    def _comparison_line(self, copy: MirrorCopy) -> dict[str, Any]:
        assert copy.live is not None and copy.origin is not None
        deployment = copy.deployment
        return {
            "kind": COMPARISONS,
            "ts": timestamp(copy.live.started),
            "request_id": copy.request_id,
            "endpoint": deployment.endpoint,
            "deployment": deployment.name,
            "live_deployment": copy.origin.name,
            "gateway": self.config.gateway_id,
        }

    async def _compared(self, copy: MirrorCopy, outcome: Outcome) -> None:
        """Wait for the live answer (it is on its way to its client, or there already), compare the two
        and spool the comparison. Runs in a mirror worker, never on a client's path."""
        live, origin = copy.live, copy.origin
        assert live is not None and origin is not None
        if not await live.wait(origin.timeout_s + LIVE_ANSWER_GRACE_S):
            self._not_compared(copy, "the live answer never came")
            return
        try:
            policy = live.policy
            cap = policy.max_body_bytes
            response = outcome.response
            shadow_status = (
                response.status
                if response is not None
                else {TIMEOUT: 408, BROKEN: 502}.get(outcome.error or "", 503)
            )
            shadow = Body(response.body if response is not None else b"", cap)
            assert live.body is not None
            reason = compare(live.status, live.body, shadow_status, shadow, policy)
            line = self._comparison_line(copy)
            line["live"] = {"status": live.status, "ms": live.ms}
            line["shadow"] = {
                "status": shadow_status,
                "ms": outcome.upstream_ms if outcome.replica is not None else None,
            }
            line["agree"] = reason is None
            line["reason"] = reason
            if reason is not None:
                collectors = [c for c in (origin.data_collector, copy.deployment.data_collector) if c]
                # Payloads go only where the deployments' data collection takes them.
                if any(c.inputs for c in collectors):
                    line["input"] = copy.body[:cap].decode("utf-8", "replace")
                if any(c.outputs for c in collectors):
                    line["live_output"] = live.body.text(cap)
                    line["shadow_output"] = shadow.text(cap)
            self.spool.append(line)
        finally:
            self.comparisons.done(copy.token)

    def _not_compared(self, copy: MirrorCopy, reason: str) -> None:
        """A copy sampled for comparison that was dropped (queue full, mirror at its limit) or whose
        live answer never came: recorded as dropped, so the report counts it."""
        if copy.token is not None:
            # Spooled before the token goes: a segment closed by this append keeps the watermark before it.
            self.spool.append({**self._comparison_line(copy), "dropped": True, "reason": reason})
            self.comparisons.done(copy.token)
            copy.token = None

    def _reply(
        self, deployment: Deployment, outcome: Outcome, headers: list[tuple[bytes, bytes]], event: dict
    ) -> tuple[int, bytes]:
        replica = outcome.replica
        event["replica"] = replica.id if replica is not None else None
        event["upstream_ms"] = outcome.upstream_ms if replica is not None else None
        response = outcome.response
        if response is None:
            if outcome.error == TIMEOUT:
                ms = int(deployment.timeout_s * 1000)
                raise Answer(
                    408, "RequestTimeout", f"The model did not answer within request_timeout_ms ({ms} ms)."
                )
            if outcome.error == BROKEN:
                raise Answer(502, "BadGateway", "The replica closed the connection before answering; retry.")
            raise Answer(
                503,
                "ServiceUnavailable",
                f"No healthy replica of deployment {deployment.name!r}; retry shortly.",
            )
        event["model_status"] = response.status
        for key, value in response.headers:
            if key not in _DROP_DOWNSTREAM:
                headers.append((key, value))
        if 200 <= response.status < 300:
            return response.status, response.body
        if response.status == 503:
            raise Answer(
                503,
                "ServiceUnavailable",
                f"No ready replica of deployment {deployment.name!r}; retry shortly.",
            )
        # Azure's contract: any other answer from the model becomes 424, with the model's own status and
        # reason in headers and its body passed on (the model server's bodies never hold a stack trace).
        reason = response.reason.strip() or _phrase(response.status).encode()
        headers.append((b"ms-azureml-model-error-statuscode", str(response.status).encode()))
        headers.append((b"ms-azureml-model-error-reason", reason[:200]))
        return 424, response.body

    def _record_mirror(self, copy: MirrorCopy, outcome: Outcome) -> None:
        response = outcome.response
        status = (
            response.status if response is not None else {TIMEOUT: 408, BROKEN: 502}.get(outcome.error, 503)
        )
        deployment = copy.deployment
        self.metrics.observe_mirror(deployment.endpoint, deployment.name, status)
        self.spool.append(
            {
                "ts": _timestamp(),
                "request_id": copy.request_id,
                "endpoint": deployment.endpoint,
                "deployment": deployment.name,
                "replica": outcome.replica.id if outcome.replica is not None else None,
                "status": status,
                "model_status": response.status if response is not None else None,
                "latency_ms": outcome.upstream_ms,
                "upstream_ms": outcome.upstream_ms,
                "bytes_in": len(copy.body),
                "bytes_out": len(response.body) if response is not None else 0,
                "auth": "mirror",
                "mirrored": True,
            }
        )

    # --- swagger, preflight ---------------------------------------------------------------------
    async def _swagger(self, scope: dict, send: Any, name: str) -> None:
        """The OpenAPI document of the deployment that would take traffic (the largest share), or of the
        one `azureml-model-deployment` names. Same credentials as scoring."""
        headers: list[tuple[bytes, bytes]] = []
        bearer = target = origin = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                bearer = value
            elif key == b"azureml-model-deployment":
                target = value
            elif key == b"origin":
                origin = value
        table = self.holder.table
        try:
            if table is None:
                raise Answer(
                    503, "ServiceUnavailable", "The gateway has no route table yet; try again shortly."
                )
            endpoint = table.endpoints.get(name)
            if endpoint is None:
                raise Answer(404, "NotFound", _no_endpoint(name))
            if origin is not None:
                headers += _cors_headers(endpoint, origin)
            self._authenticate(scope, endpoint, table, bearer)
            if target is None and endpoint.traffic:
                shares = {n: 0.0 for n in endpoint.deployments}
                low = 0.0
                for bound, dep in endpoint.traffic:
                    shares[dep], low = bound - low, bound
                target = max(shares, key=shares.__getitem__).encode()
            deployment = self._choose(endpoint, target)
            headers.append((b"azureml-model-deployment", deployment.name.encode()))
            swagger = openapi.replica_target(scope.get("query_string", b""))  # ?version=2|3, as Azure's
            outcome = await self.proxy.forward(deployment, b"GET", swagger, [], b"")
            if outcome.response is None:
                raise Answer(503, "ServiceUnavailable", f"No ready replica of {deployment.name!r} answered.")
            status, body = outcome.response.status, outcome.response.body
        except Answer as answer:
            status, body = answer.status, answer.body
            headers += answer.headers
        await _send(send, status, body, headers=headers)

    async def _preflight(self, scope: dict, send: Any, name: str) -> None:
        origin = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
        table = self.holder.table
        endpoint = table.endpoints.get(name) if table is not None else None
        if endpoint is None:
            await _send(send, 404, _error("NotFound", _no_endpoint(name)))
            return
        allowed = _cors_headers(endpoint, origin) if origin is not None else []
        if not allowed:
            await _send(send, 403, _error("Forbidden", "This origin may not call this endpoint."))
            return
        allowed += [
            (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
            (b"access-control-allow-headers", _CORS_ALLOW_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": allowed})
        await send({"type": "http.response.body", "body": b""})

    # --- health, metrics ------------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        """The gateway's own health: which table it serves and whether its source is reachable."""
        holder = self.holder
        table = holder.table
        now = time.monotonic()
        reasons = []
        if table is not None:
            # A healthy source answers every held poll within poll_wait_s: silence past that is staleness.
            silent = None if holder.last_contact is None else now - holder.last_contact
            if not holder.reachable:
                reasons.append("the control plane does not answer: serving from the last route table")
            elif silent is None or silent > self.config.poll_wait_s + STALE_MARGIN_S:
                reasons.append(
                    "no answer from the control plane for "
                    + ("ever" if silent is None else f"{silent:.0f}s")
                    + ": the route table may be stale"
                )
            if self.spool.last_drop is not None and now - self.spool.last_drop < DROPS_RECENT_S:
                reasons.append(
                    f"{self.spool.dropped} telemetry event(s) could not be spooled (is the disk full?)"
                )
        status = "no route table" if table is None else ("degraded" if reasons else "ok")
        body: dict[str, Any] = {
            "status": status,
            "reasons": reasons,
            "gateway_id": self.config.gateway_id,
            "route_table": None
            if table is None
            else {
                "version": table.version,
                "generated_at": table.generated_at,
                "age_s": round(now - table.loaded_at, 3),
                "endpoints": len(table.endpoints),
            },
            "source": {
                "location": holder.source,
                "reachable": holder.reachable,
                "last_contact_s": None
                if holder.last_contact is None
                else round(now - holder.last_contact, 3),
                "error": holder.last_error,
            },
        }
        return (200 if table is not None else 503), body

    def render_metrics(self) -> str:
        table = self.holder.table
        gauges = [
            ("studio_gateway_route_table_version", "Version of the route table in use.", "",
             table.version if table else 0),
            ("studio_gateway_route_table_age_seconds", "Seconds since the table in use was loaded.", "",
             round(time.monotonic() - table.loaded_at, 3) if table else 0),
            ("studio_gateway_route_table_source_up", "1 when the table's source answered last time.", "",
             1 if self.holder.reachable else 0),
            ("studio_gateway_mirror_queue_depth", "Mirrored copies waiting.", "",
             self.mirror.queue.qsize() if self.mirror else 0),
            ("studio_gateway_comparisons_pending", "Mirrored copies whose comparison is not spooled yet.",
             "", len(self.comparisons)),
        ]  # fmt: skip
        counters = [
            ("studio_gateway_route_table_fetch_errors_total", "Failed route table fetches.",
             self.holder.fetch_errors),
            ("studio_gateway_spool_errors_total", "Spool write, rotation or close failures.",
             self.spool.errors),
            ("studio_gateway_spool_dropped_events_total", "Telemetry events not spooled (a full disk).",
             self.spool.dropped),
        ]  # fmt: skip
        for (endpoint, deployment), count in sorted(self.balancer.in_flight().items()):
            labels = f'endpoint="{endpoint}",deployment="{deployment}"'
            gauges.append(
                ("studio_gateway_deployment_in_flight", "Requests in flight per deployment.", labels, count)
            )
        return self.metrics.render(gauges, counters)


def _credential(authorization: bytes | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header; None for any other header."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return value.strip().decode("latin-1")


def _no_endpoint(name: str) -> str:
    shown = name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "..."
    return f"No endpoint named {shown!r}."


def _cors_headers(endpoint: Endpoint, origin: bytes) -> list[tuple[bytes, bytes]]:
    text = origin.decode("latin-1").rstrip("/")
    if text in endpoint.cors_origins or "*" in endpoint.cors_origins:
        return [
            (b"access-control-allow-origin", origin),
            (b"vary", b"Origin"),
            (b"access-control-expose-headers", _CORS_EXPOSE),
        ]
    return []


async def _read_body(receive: Any, length: bytes | None, limit: int) -> bytes:
    if length is not None and length.isdigit() and int(length) > limit:
        raise Answer(413, "PayloadTooLarge", f"The request body is larger than {limit} bytes.")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise Answer(413, "PayloadTooLarge", f"The request body is larger than {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Answer(400, "BadRequest", "The client went away before sending its whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Answer(413, "PayloadTooLarge", f"The request body is larger than {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _finish(spool: Spool, fd: int, path: Any) -> None:
    try:
        finish_segment(fd, path)
    except OSError:
        spool.errors += 1


async def _send(
    send: Any, status: int, body: bytes, content_type: bytes = JSON, headers: list | None = None
) -> None:
    if headers is None:
        headers = []
    has_type = False
    for key, _ in headers:
        if key == b"content-type":
            has_type = True
            break
    if not has_type:
        headers.append((b"content-type", content_type))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
