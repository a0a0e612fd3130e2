"""Test support for the gateway: real model-server replicas, a fake control plane, gateway processes.

Replicas are `python -m serving.server` processes running a tiny scoring script (no model libraries, so
they start in a second or two), requiring REPLICA_KEY as Studio's replicas require theirs: every table
`deployment()` builds carries it, so each gateway test also checks that the gateway presents it. They are started once per test session, on first use, and stopped at
exit; every gateway test module shares them.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import hmac
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from serving import replica_key
from serving.tests.conftest import REPO, Server, free_port

SECRET = "gateway-test-secret"
REPLICA_KEY = "gateway-test-replica-key"
# What the health detail and the metrics need: the gateway secret as bearer.
OPERATOR = {"Authorization": f"Bearer {SECRET}"}
ISSUER = "studio"

SCORE_SCRIPT = """
import json
import os
import time

DEPLOYMENT = os.environ.get("GATEWAY_TEST_DEPLOYMENT")
SLEEP = float(os.environ.get("GATEWAY_TEST_SLEEP", "0"))
FAIL = os.environ.get("GATEWAY_TEST_FAIL") == "1"


def init():
    pass


def run(raw_data):
    request = json.loads(raw_data)
    if SLEEP:
        time.sleep(SLEEP)
    if request.get("sleep"):
        time.sleep(request["sleep"])
    if FAIL or request.get("fail"):
        raise RuntimeError("secret internal detail")
    return {"deployment": DEPLOYMENT, "echo": request.get("echo"), "pid": os.getpid()}
"""

SCHEMA_SCRIPT = """
from serving.schema import StandardPythonParameterType, input_schema, output_schema


def init():
    pass


@input_schema("data", StandardPythonParameterType([[1.0, 2.0]]))
@output_schema(StandardPythonParameterType([3.0]))
def run(data):
    return [sum(row) for row in data]
"""

# name -> (deployment it answers as, extra environment)
REPLICA_SPECS: dict[str, tuple[str, dict[str, str]]] = {
    "blue-0": ("blue", {}),
    "blue-1": ("blue", {}),
    "green-0": ("green", {}),
    "slow-0": ("slow", {"GATEWAY_TEST_SLEEP": "0.5"}),
    "failing-0": ("failing", {"GATEWAY_TEST_FAIL": "1"}),
    "schema-0": ("documented", {"GATEWAY_TEST_SCRIPT": "score_schema.py"}),
}


def key_digest(key: str, secret: str = SECRET) -> str:
    """What the control plane publishes for an endpoint key."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def wait_until(condition: Any, timeout: float = 60.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


class Replicas:
    """The session's replica processes, by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.code = root / "code"
        self.code.mkdir(parents=True, exist_ok=True)
        (self.code / "score_gateway.py").write_text(SCORE_SCRIPT)
        (self.code / "score_schema.py").write_text(SCHEMA_SCRIPT)
        self.servers: dict[str, Server] = {}
        for name, (deployment, env) in REPLICA_SPECS.items():
            self.start(name, deployment, env)

    def start(self, name: str, deployment: str, env: dict[str, str] | None = None) -> Server:
        """Start a replica (not waited for) answering as `deployment`."""
        script = (env or {}).get("GATEWAY_TEST_SCRIPT", "score_gateway.py")
        args = ["--code", str(self.code), "--scoring-script", script, "--workers", "1"]
        env = {"GATEWAY_TEST_DEPLOYMENT": deployment, replica_key.VARIABLE: REPLICA_KEY, **(env or {})}
        server = Server(name, args, env, self.root)
        self.servers[name] = server
        return server

    def ready(self, *names: str) -> list[Server]:
        return [self.servers[name].wait_ready() for name in names]

    def url(self, name: str) -> str:
        return self.servers[name].url

    def stop(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()


_replicas: Replicas | None = None
_root: Path | None = None


def session_root() -> Path:
    global _root
    if _root is None:
        import tempfile

        _root = Path(tempfile.mkdtemp(prefix="gateway-tests-"))
        atexit.register(shutil.rmtree, _root, True)  # runs after the replicas stop (atexit is LIFO)
    return _root


def replicas() -> Replicas:
    """The shared replicas, started on first call (every test module of the session shares them)."""
    global _replicas
    if _replicas is None:
        _replicas = Replicas(session_root() / "replicas")
        atexit.register(_replicas.stop)
    return _replicas


# --- route tables -------------------------------------------------------------------------------


def deployment(*urls: str, timeout_ms: int = 5000, max_concurrent: int = 50, max_body: int = 1 << 20) -> dict:
    return {
        "replicas": [
            {"id": f"r{i}-{url.rsplit(':', 1)[1]}", "url": url, "ready": True} for i, url in enumerate(urls)
        ],
        "request_settings": {
            "request_timeout_ms": timeout_ms,
            "max_concurrent_requests_per_instance": max_concurrent,
            "max_body_bytes": max_body,
        },
        "data_collector": None,
        "replica_key": REPLICA_KEY,
    }


def endpoint(
    deployments: dict[str, dict],
    traffic: dict[str, int],
    *,
    keys: tuple[str, ...] = ("key-primary", "key-secondary"),
    auth_mode: str = "key",
    mirror: dict[str, int] | None = None,
    cors: list[str] | None = None,
) -> dict:
    return {
        "auth_mode": auth_mode,
        "key_digests": [key_digest(k) for k in keys],
        "traffic": traffic,
        "mirror_traffic": mirror or {},
        "cors_origins": cors or [],
        "deployments": deployments,
    }


class TokenSigner:
    """An Ed25519 key pair standing in for the control plane's token key."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_pem = (
            self.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        )

    def token(
        self,
        audience: str,
        *,
        ttl: float = 3600,
        issuer: str = ISSUER,
        key: Any = None,
        endpoint_id: str | None = None,
        key_generation: int | None = 1,
    ) -> str:
        """A token for `audience`, bound as FakeControlPlane publishes it unless told otherwise (None
        leaves a binding claim out)."""
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "iat": now, "exp": now + int(ttl)}
        claims["endpoint_id"] = endpoint_id or f"id-{audience}"
        if key_generation is not None:
            claims["key_generation"] = key_generation
        return jwt.encode(claims, key or self.key, algorithm="EdDSA")


# --- the fake control plane ---------------------------------------------------------------------


class FakeControlPlane:
    """A real HTTP server on loopback serving the route table with the contract's semantics: bearer
    secret, ETag, long-poll (`wait`), 304. `stop()` / `start()` simulate an outage on the same port."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.version = 0
        self.document: dict[str, Any] = {}
        self.condition = threading.Condition()
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def publish(self, endpoints: dict[str, Any], token_pem: str | None = None) -> int:
        """Publish a new version; waiting long-polls answer at once. Returns the version."""
        with self.condition:
            self.version += 1
            self.document = {
                "version": self.version,
                "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "token": {"algorithm": "EdDSA", "issuer": ISSUER, "public_key": token_pem}
                if token_pem
                else None,
                "endpoints": copy.deepcopy(endpoints),
            }
            # Each endpoint's token binding, as the control plane publishes it (TokenSigner's default).
            for name, published in self.document["endpoints"].items():
                published.setdefault("endpoint_id", f"id-{name}")
                published.setdefault("key_generation", 1)
            self.condition.notify_all()
            return self.version

    def start(self) -> FakeControlPlane:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    super().handle()

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                plane.requests += 1
                if plane._server is None:
                    # Stopped: kept-alive connections die too, as they would with a real outage.
                    self.close_connection = True
                    return
                parts = urlsplit(self.path)
                if parts.path != "/internal/route-table/":
                    return self._reply(404, b'{"error": {"code": "NotFound"}}')
                if self.headers.get("Authorization") != f"Bearer {plane.secret}":
                    return self._reply(401, b'{"error": {"code": "Unauthorized"}}')
                wait = min(60.0, float(parse_qs(parts.query).get("wait", ["0"])[0]))
                held = (self.headers.get("If-None-Match") or "").strip('"')
                deadline = time.monotonic() + wait
                with plane.condition:
                    while (
                        str(plane.version) == held
                        and time.monotonic() < deadline
                        and plane._server is not None
                    ):
                        plane.condition.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    if plane._server is None:
                        self.close_connection = True
                        return None
                    if str(plane.version) == held or not plane.version:
                        return self._reply(304, b"")
                    body = json.dumps(plane.document).encode()
                    etag = f'"{plane.version}"'
                self._reply(200, body, etag)

            def _reply(self, status: int, body: bytes, etag: str | None = None) -> None:
                self.send_response(status)
                if etag:
                    self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the gateway hung up (stopped or killed): fine
                    self.wfile.write(body)

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: close the listening socket (new polls are refused) and wake held polls."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.condition:
            self.condition.notify_all()


# --- gateway processes --------------------------------------------------------------------------


class Gateway:
    """One `python -m serving.gateway` process on a free port, with its own spool folder."""

    def __init__(self, root: Path, name: str, source: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"{'https' if '--tls-cert' in source else 'http'}://127.0.0.1:{self.port}"
        # Trust exactly the gateway's own (self-signed) certificate when it serves TLS.
        self.verify: ssl.SSLContext | bool = True
        if "--tls-cert" in source:
            self.verify = ssl.create_default_context(cafile=source[source.index("--tls-cert") + 1])
        self.spool = root / f"spool-{name}"
        self.log_path = root / f"{name}.log"
        self.args = [
            sys.executable, "-m", "serving.gateway", "--port", str(self.port), *source,
            "--spool-dir", str(self.spool), "--gateway-id", name,
        ]  # fmt: skip
        base = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        self.env = {**base, "PYTHONUNBUFFERED": "1", "STUDIO_GATEWAY_SECRET": SECRET, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> Gateway:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
        )
        log.close()
        return self

    def health(self) -> dict:
        """The health detail, which needs the gateway secret."""
        return httpx.get(f"{self.url}/health", headers=OPERATOR, timeout=5, verify=self.verify).json()

    def wait_version(self, version: int, timeout: float = 60.0) -> None:
        """Wait until the gateway serves route table `version` (or newer)."""

        def current() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                table = self.health().get("route_table")
            except httpx.TransportError:
                return False
            return bool(table) and table["version"] >= version

        assert wait_until(current, timeout), f"gateway never loaded version {version}"

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics", headers=OPERATOR, timeout=5).text.splitlines():
            if not (line.startswith(name + " ") or line.startswith(name + "{")):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def events(self) -> list[dict]:
        """Every request event in the spool, closed and open segments alike (lines of other kinds, such
        as collected payloads, comparisons and watermarks, carry a `kind` and are left out)."""
        found = []
        if not self.spool.exists():
            return found
        for path in sorted(self.spool.iterdir()):
            if path.name.endswith((".jsonl", ".jsonl.open")):
                lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                found += [line for line in lines if "kind" not in line]
        return found

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def score(client: httpx.Client, gateway: Gateway, name: str, key: str | None = "key-primary", **kwargs: Any):
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload = kwargs.pop("json", {"echo": 1})
    return client.post(f"{gateway.url}/endpoints/{name}/score", json=payload, headers=headers, **kwargs)


class Load:
    """Background load: `threads` clients scoring in a loop until stopped; every answer is recorded as
    (monotonic time, status, answering deployment, x-request-id)."""

    def __init__(self, gateway: Gateway, name: str, threads: int = 6, **kwargs: Any) -> None:
        self.gateway = gateway
        self.name = name
        self.kwargs = kwargs
        self.results: list[tuple[float, int, str | None, str | None]] = []
        self.transport_errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = score(client, self.gateway, self.name, **self.kwargs)
                except httpx.TransportError:
                    self.transport_errors += 1
                    time.sleep(0.01)
                    continue
                self.results.append(
                    (
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("azureml-model-deployment"),
                        response.headers.get("x-request-id"),
                    )
                )

    def failures(self, since: float = 0.0) -> list[tuple[float, int, str | None, str | None]]:
        return [r for r in self.results if r[1] != 200 and r[0] >= since]

    def count(self, since: float = 0.0) -> int:
        return sum(1 for r in self.results if r[0] >= since)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
