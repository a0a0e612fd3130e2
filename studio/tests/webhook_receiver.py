"""A webhook receiver for tests: a real HTTP server on loopback that checks each delivery the way
docs/webhooks.md tells receivers to, and can answer 500 to the first attempts at each event."""

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Attempt:
    event: dict
    headers: dict
    status: int
    verified: bool
    at: float


@dataclass
class WebhookReceiver:
    """Answers 500 to the first `failures` attempts at each event id (all of them with `failures=None`)."""

    failures: int | None = 0
    secret: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._answer(body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/studio"
        # What STUDIO_WEBHOOK_ALLOWED_HOSTS must hold for deliveries to reach it: loopback, on its port.
        self.allow_entry = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def verify(self, body: bytes, headers: dict) -> bool:
        """What a receiver does: the HMAC of timestamp + "." + body, and a timestamp under 5 minutes old."""
        timestamp = headers.get("X-Studio-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        )
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, headers.get("X-Studio-Signature", ""))

    def _answer(self, body: bytes, headers: dict) -> int:
        event = json.loads(body)
        verified = self.verify(body, headers)
        with self._lock:
            tried = sum(1 for attempt in self.attempts if attempt.event["id"] == event["id"])
            failing = self.failures is None or tried < self.failures
            status = 401 if not verified else 500 if failing else 200
            self.attempts.append(Attempt(event, headers, status, verified, time.monotonic()))
        return status

    @property
    def accepted(self) -> list[dict]:
        """The events answered 200, in the order they arrived."""
        with self._lock:
            return [attempt.event for attempt in self.attempts if attempt.status == 200]

    def attempts_at(self, event_id: str) -> list[Attempt]:
        with self._lock:
            return [attempt for attempt in self.attempts if attempt.event["id"] == event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def loopback_receiver(settings, failures: int | None = 0):
    """A receiver, with its loopback port let through the allow-list for this test only, and retries
    without backoff (eager jobs retry at once, not after the backoff)."""
    receiver = WebhookReceiver(failures=failures)
    settings.STUDIO_WEBHOOK_ALLOWED_HOSTS = [receiver.allow_entry]
    settings.STUDIO_WEBHOOK_RETRY_BASE_MS = 0
    try:
        yield receiver
    finally:
        receiver.close()


class SlowReceiver:
    """A receiver on loopback that answers as slowly as it likes: `drip` sends the status line and headers
    a byte at a time, `pause` s apart; `endless` answers 200 at once, then sends its body for as long as
    it is read (up to `ENDLESS_S`, so a client that reads it all still finishes, late)."""

    ENDLESS_S = 10

    def __init__(self, mode: str, pause: float = 0.2, status: int = 200):
        self.mode, self.pause, self.status = mode, pause, status
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.allow_entry = f"127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        head = f"HTTP/1.1 {self.status} Whatever\r\nContent-Type: text/plain\r\n".encode()
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            if self.mode == "drip":
                for byte in head + b"Content-Length: 0\r\n\r\n":
                    if self.stopped.wait(self.pause):
                        return
                    connection.sendall(bytes([byte]))
            else:
                connection.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                until = time.monotonic() + self.ENDLESS_S
                while not self.stopped.wait(0.01) and time.monotonic() < until:
                    connection.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
