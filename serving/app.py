"""The ASGI application one worker process serves: scoring, health, OpenAPI and metrics routes.

Hand-written on purpose (no framework): every scoring request pays only for what it uses. User code,
model loading and batched predictions run in one model thread per worker, one call at a time, so the
event loop stays free for health probes, timeouts and, with batching, for gathering the next batch. A
native no-code model (scikit-learn, ONNX) without batching is called on the event loop itself while its
predict is short (it holds the GIL anyway, and the two thread switches cost more than they buy); once
its calls keep taking longer than INLINE_LIMIT_S they go to the model thread, so that a slow model
cannot stall the reading of other requests, the probes and the scoring timeout.

With a replica key configured (serving.replica_key), every request but the liveness probe is refused with
401 unless it presents the key: the check comes before routing, so an unauthenticated caller learns
nothing of the model, its schema, its readiness or its metrics.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from serving import compat, openapi, replica_key
from serving import metrics as shared
from serving.batching import Batcher
from serving.errors import BadInput, ModelFailed, NotReady, ServingError, TimedOut, TooLarge
from serving.logs import JsonLog
from serving.messages import Headers, ScoreRequest
from serving.scorer import JSON_TYPE, BatchScorer, Reply, Scorer
from serving.settings import Settings

#: A native model is called on the event loop unless each of its last INLINE_WINDOW calls took longer
#: than this: a slow one would hold up every other request of the worker, its health probes and its
#: timeouts, so it is called in the model thread (until a call is fast again). The least of several
#: durations, so that a call the OS merely preempted on a busy host moves nothing.
INLINE_LIMIT_S = 0.002
INLINE_WINDOW = 8
_TEXT_TYPE = b"text/plain; charset=utf-8"
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_ERROR_KIND = {400: "bad_request", 408: "timeout", 413: "too_large", 503: "not_ready"}
# Liveness answers anyone: "Healthy" says no more than the open port does, and probes need no secret.
_OPEN_PATHS = ("/", "/health/live")
_REFUSED = orjson.dumps(
    {
        "error": {
            "code": "Unauthorized",
            "message": "This replica answers only its deployment's gateway: send the request to the "
            "endpoint's scoring URI with the endpoint's key or token.",
        }
    }
)


class _BodyOnly:
    """What a no-code scorer reads from a request: only its body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _ClientGone(Exception):
    """The client disconnected before its body arrived; there is no one to answer."""


class ScoringApp:
    """ASGI app for one worker: loads the scorer at startup (in the model thread) and serves its routes."""

    def __init__(
        self, settings: Settings, scorer: Scorer, metrics: shared.WorkerMetrics, cells: Any, log: JsonLog
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.metrics = metrics
        self.cells = cells
        self.log = log
        self.ready = False
        self.load_error: str | None = None
        self.openapi_bodies: dict[str, bytes] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.batcher: Batcher | None = None
        self._timeout_s = settings.timeout_ms / 1000.0
        self._key = settings.replica_key
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: a native model's last predict times, which decide where it is called
        self._recent_s: deque[float] = deque(maxlen=INLINE_WINDOW)
        self._inline = True

    # --- ASGI entry -----------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lock = asyncio.Lock()
        if self.settings.batching and isinstance(self.scorer, BatchScorer):
            self.batcher = Batcher(
                self.scorer.score_many,
                self.executor,
                self.metrics,
                self.settings.max_batch_size,
                self.settings.max_batch_delay_ms / 1000.0,
            )
        # Load in the model thread so the server answers liveness probes while a slow init() runs.
        loop.run_in_executor(self.executor, self._load).add_done_callback(self._loaded)
        loop.create_task(self._watch_parent(os.getppid()))

    def _load(self) -> tuple[float, dict[str, bytes]]:
        started = time.perf_counter()
        self.scorer.load()
        document = self.scorer.openapi()
        return time.perf_counter() - started, openapi.published(document, self.settings.code_dir)

    def _loaded(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.load_error = f"{type(error).__name__}: {error}"
            self.metrics.set_state(shared.FAILED)
            trace = "".join(traceback.format_exception(error))
            self.log.error(f"Model load failed: {self.load_error}", event="load_failed", traceback=trace)
            return
        seconds, self.openapi_bodies = future.result()
        self.ready = True
        self.metrics.set_state(shared.READY)
        self.log.info("Model loaded", event="ready", kind=self.scorer.kind, load_seconds=round(seconds, 3))

    async def _watch_parent(self, parent: int) -> None:
        # A worker whose supervisor died must not linger holding the port.
        while True:
            await asyncio.sleep(1.0)
            if os.getppid() != parent:
                self.log.warning("Supervisor gone; worker stopping", event="orphaned")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    # --- HTTP -----------------------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        method = scope["method"]
        if self._key is not None and not self._admitted(scope, path, method):
            self.log.warning(
                "Refused a request without the replica key", event="unauthorized", method=method, path=path
            )
            await _send(send, 401, _REFUSED, JSON_TYPE)
            return
        if path == "/score":
            await self._score(scope, receive, send)
            return
        if method not in ("GET", "HEAD"):
            known = path in ("/", "/health/live", "/health/ready", "/swagger.json", "/metrics")
            status, body = (405, "Method not allowed: use GET.") if known else (404, f"No route {path}.")
            await self._send_error(send, status, "MethodNotAllowed" if known else "NotFound", body, b"")
            return
        if path in ("/", "/health/live"):
            await _send(send, 200, b"Healthy", _TEXT_TYPE)
        elif path == "/health/ready":
            await self._ready(send)
        elif path == "/swagger.json":
            try:
                version = openapi.requested_version(scope["query_string"])
            except BadInput as error:
                await self._send_error(send, 400, "BadRequest", error.message, b"")
                return
            if version in self.openapi_bodies:
                await _send(send, 200, self.openapi_bodies[version], JSON_TYPE)
            elif not self.ready:
                await self._send_error(send, 503, "ServiceUnavailable", "The model is not loaded yet.", b"")
            else:
                await self._send_error(send, 404, "NotFound", "This model declares no schema.", b"")
        elif path == "/metrics":
            await _send(send, 200, shared.render(self.cells).encode(), _METRICS_TYPE)
        else:
            await self._send_error(send, 404, "NotFound", f"No route {path}.", b"")

    def _admitted(self, scope: dict, path: str, method: str) -> bool:
        assert self._key is not None
        if path in _OPEN_PATHS and method in ("GET", "HEAD"):
            return True
        return replica_key.admits(scope["headers"], self._key)

    async def _ready(self, send: Any) -> None:
        states = shared.worker_states(self.cells)
        workers = [{"worker": i, "state": state} for i, state in enumerate(states)]
        if all(state == "ready" for state in states):
            await _send(send, 200, orjson.dumps({"status": "ready", "workers": workers}), JSON_TYPE)
            return
        failed = self.load_error or ("a worker failed to load the model" if "failed" in states else None)
        ready = states.count("ready")
        message = f"Not ready: {failed}." if failed else f"{ready} of {len(states)} workers ready."
        body = {"error": {"code": "ServiceUnavailable", "message": message, "details": {"workers": workers}}}
        await _send(send, 503, orjson.dumps(body), JSON_TYPE)

    async def _read_body(self, scope: dict, receive: Any, limit: int) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise TooLarge(f"The request body is larger than {limit} bytes.")
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise TooLarge(f"The request body is larger than {limit} bytes.")
            more = message.get("more_body", False)
        return body

    async def _score(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id" or name == b"x-ms-client-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or str(uuid.uuid4())
        rid = request_id.encode("latin-1")
        method = scope["method"]
        self.metrics.in_flight(1)
        run_s = 0.0
        body = b""
        try:
            if method != "POST" and not (method == "GET" and self.scorer.raw_request):
                await self._send_error(send, 405, "MethodNotAllowed", "Use POST to score.", rid)
                status, bytes_out = 405, 0
            else:
                try:
                    if not self.ready:
                        reason = f" Model load failed: {self.load_error}" if self.load_error else ""
                        raise NotReady(f"The model is not ready.{reason}")
                    body = await self._read_body(scope, receive, self.settings.max_body_bytes)
                    reply, run_s = await self._dispatch(scope, method, body, request_id)
                except _ClientGone:
                    return
                except ServingError as error:
                    reply = self._error_reply(error, request_id)
                headers = [
                    (b"content-type", reply.content_type),
                    (b"content-length", str(len(reply.body)).encode()),
                    (b"x-ms-run-fn-exec-ms", f"{run_s * 1000:.3f}".encode()),
                    (b"x-ms-request-id", rid),
                    (b"x-request-id", rid),
                    *reply.headers,
                ]
                await send({"type": "http.response.start", "status": reply.status, "headers": headers})
                await send({"type": "http.response.body", "body": reply.body})
                status, bytes_out = reply.status, len(reply.body)
        finally:
            self.metrics.in_flight(-1)
        elapsed = time.perf_counter() - started
        self.metrics.observe(status, elapsed)
        self.log.write(
            "info" if status < 500 else "error",
            "request",
            request_id=request_id,
            method=method,
            path="/score",
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            run_ms=round(run_s * 1000, 3),
            bytes_in=len(body),
            bytes_out=bytes_out,
        )

    async def _dispatch(self, scope: dict, method: str, body: bytes, request_id: str) -> tuple[Reply, float]:
        loop, lock = self._loop, self._lock
        assert loop is not None and lock is not None
        if self.batcher is None and self.scorer.inline and self._inline and not lock.locked():
            # A native model's short predict holds the GIL anyway: calling it here saves two thread
            # switches per request. Its own thread still serves batching and user code, and slow calls,
            # which this one never overlaps. Nothing is awaited, so no timeout could cut it short.
            outcome, run_s = _timed(self.scorer.score, _BodyOnly(body))
            self._timed_native(run_s)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome, run_s
        deadline = loop.time() + self._timeout_s
        try:
            async with compat.timeout_at(deadline):
                if self.batcher is not None:
                    item = self.scorer.parse(body)  # type: ignore[attr-defined]
                    result, run_s = await self.batcher.submit(item)
                    if isinstance(result, Exception):
                        raise result
                    return result, run_s
                request = ScoreRequest(
                    method=method,
                    path=scope["path"],
                    query_string=scope["query_string"].decode("latin-1"),
                    # The replica key is the gateway's business, never the scoring script's.
                    headers=Headers.from_asgi(
                        h for h in scope["headers"] if h[0] != replica_key.HEADER_BYTES
                    ),
                    data=body,
                )
                reply, run_s = await self._run_exclusive(request)
                if self.scorer.inline:
                    self._timed_native(run_s)
                return reply, run_s
        except TimeoutError:
            limit = self.settings.timeout_ms
            raise TimedOut(f"Scoring took longer than SCORING_TIMEOUT_MS ({limit} ms).") from None

    def _timed_native(self, run_s: float) -> None:
        self._recent_s.append(run_s)
        self._inline = len(self._recent_s) < INLINE_WINDOW or min(self._recent_s) < INLINE_LIMIT_S

    async def _run_exclusive(self, request: ScoreRequest) -> tuple[Reply, float]:
        """Run the scorer in the model thread once it is free; the lock is held until the call really ends,
        even when the caller gave up, so a late call is never overlapped by the next one."""
        loop = self._loop
        lock = self._lock
        assert loop is not None and lock is not None
        self.metrics.queued(1)
        try:
            await lock.acquire()
        finally:
            self.metrics.queued(-1)
        future = loop.run_in_executor(self.executor, _timed, self.scorer.score, request)
        future.add_done_callback(lambda _: lock.release())
        try:
            outcome, run_s = await asyncio.shield(future)
        except asyncio.CancelledError:
            loop.call_later(self._timeout_s, self._recycle_if_stuck, future)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, run_s

    def _recycle_if_stuck(self, future: asyncio.Future) -> None:
        if future.done():
            return
        # A call that outlives twice the timeout would hold the model thread forever: replace the process.
        self.ready = False
        self.metrics.set_state(shared.STARTING)
        self.log.error(
            f"run() still running {2 * self.settings.timeout_ms} ms after it started; restarting this worker",
            event="stuck",
        )
        assert self._loop is not None
        self._loop.call_later(0.05, os._exit, 75)

    def _error_reply(self, error: ServingError, request_id: str) -> Reply:
        kind = _ERROR_KIND.get(error.status, "model_error")
        self.metrics.error(kind)
        if isinstance(error, ModelFailed) and error.__cause__ is not None:
            trace = "".join(traceback.format_exception(error.__cause__))
            self.log.error(error.message, request_id=request_id, event="model_error", traceback=trace)
        elif not isinstance(error, BadInput | TooLarge | NotReady | TimedOut) and error.status >= 500:
            self.log.error(error.message, request_id=request_id, event="error")
        body = error.body()
        if error.status >= 500:
            body["error"]["request_id"] = request_id
        return Reply(orjson.dumps(body), error.status)

    async def _send_error(self, send: Any, status: int, code: str, message: str, rid: bytes) -> None:
        body = orjson.dumps({"error": {"code": code, "message": message}})
        headers = [] if not rid else [(b"x-ms-request-id", rid), (b"x-request-id", rid)]
        await _send(send, status, body, JSON_TYPE, headers)


def _timed(call: Any, request: ScoreRequest) -> tuple[Any, float]:
    started = time.perf_counter()
    try:
        outcome: Any = call(request)
    except Exception as exc:  # returned, not raised: the loop side decides what the caller sees
        outcome = exc if isinstance(exc, ServingError) else _unexpected(exc)
    return outcome, time.perf_counter() - started


def _unexpected(exc: Exception) -> ModelFailed:
    error = ModelFailed("Scoring failed; the server log has the details.")
    error.__cause__ = exc
    return error


async def _send(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-ms-run-fn-exec-ms", b"0"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
