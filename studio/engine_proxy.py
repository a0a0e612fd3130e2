"""The engine proxy: in docker-compose, the only door to the Docker engine, open to the calls the docker
target makes and to nothing else.

Whoever reaches the engine's socket owns the host: one privileged container, or one bind mount of `/`,
is enough. So the socket is mounted into this proxy alone, on a network only the worker joins, and the
worker's DOCKER_HOST points here. Whatever a client asks, the proxy guarantees:

- Only the docker target's calls pass: ping, version, info; image inspect and pull; builds; container
  create, start, stop, wait, inspect, logs, remove and list. Everything else (exec, attach, archive,
  commit, volumes, networks, swarm, plugins, events, image removal, ...) is refused with 403 and a
  message naming the call.
- A build has no network (`networkmode=none`), runs on the classic builder, which mounts nothing from
  the host, and is tagged under `studio-model/` only, so it cannot replace an image the host runs;
  builds from a remote URL and BuildKit sessions are refused.
- A container is created only if it asks for nothing a model server does not need: no privileges,
  capabilities, devices, host namespaces, mounts, volumes or runtime of its own; attached to one of the
  allowed networks (`--network`) or to none; ports published only on allowed addresses
  (`--publish-address`, none unless given). A field the proxy does not know must be absent, null or
  false: a new engine feature stays refused until it is judged harmless and added here.
- Every container it creates carries the label `studio.engine-proxy`, and the container calls act only
  on containers that carry it, by their full id as inspected: the engine's other containers (the
  database, Redis, Studio's own) cannot be listed, read, stopped or removed through it.

One request per connection: the proxy asks the engine to close once it has answered, and passes the
answer through as it comes (build output and logs stream), so the client sees `Connection: close`.

Django-free and dependency-free: `python -m studio.engine_proxy --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from serving.logs import JsonLog

PROXY_LABEL = "studio.engine-proxy"
# Where the docker target tags model images (endpoints.packaging).
MODEL_REPOSITORY = "studio-model/"
MAX_HEAD_BYTES = 64 * 1024
MAX_JSON_BYTES = 1024 * 1024
MIN_API_VERSION = (1, 24)
_VERSION = re.compile(r"/v\d+(?:\.\d+)?(?=/)")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}

# What a replica's or a probe's container may set. docker-py sends every top-level field, null if unset.
CONTAINER_FIELDS = {
    "Hostname", "Domainname", "User", "Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout",
    "AttachStderr", "Env", "Cmd", "Image", "Entrypoint", "WorkingDir", "Labels", "StopSignal",
    "StopTimeout", "Healthcheck", "ExposedPorts", "NetworkDisabled", "MacAddress", "HostConfig",
    "NetworkingConfig",
}  # fmt: skip
HOST_CONFIG_FIELDS = {
    "Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuPeriod", "CpuQuota",
    "PidsLimit", "RestartPolicy", "Init", "AutoRemove", "ReadonlyRootfs", "CapDrop", "ShmSize", "Tmpfs",
    "SecurityOpt", "NetworkMode", "PortBindings",
}  # fmt: skip
# Security options that only take away: seccomp, AppArmor or SELinux relaxed would give back.
SECURITY_OPTIONS = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
BUILD_PARAMETERS = {
    "t", "q", "nocache", "rm", "forcerm", "pull", "dockerfile", "buildargs", "labels", "networkmode",
    "shmsize", "cachefrom", "target", "platform", "memory", "memswap", "cpushares", "cpusetcpus",
    "cpuperiod", "cpuquota", "extrahosts", "squash", "version",
}  # fmt: skip
PULL_PARAMETERS = {"fromImage", "tag", "platform"}
CREATE_PARAMETERS = {"name", "platform"}


class Refused(Exception):
    """The answer the proxy gives instead of the engine's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Policy:
    """What containers may be attached to and published on."""

    networks: frozenset[str]
    publish_addresses: frozenset[str]


@dataclass
class Request:
    method: str
    prefix: str  # the API version prefix, `/v1.41`, or ""
    path: str  # without the prefix
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name), None)

    def parameters(self) -> dict[str, str]:
        return dict(self.query)

    def call(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Forward:
    """Send the request on with `body`, or with the client's body streamed through (`stream`)."""

    path: str
    query: list[tuple[str, str]]
    body: bytes = b""
    stream: bool = False


# --- the calls ------------------------------------------------------------------------------------------


def _plain(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    return Forward(request.path, request.query)


def _pull(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    _only(request, PULL_PARAMETERS, "image pulls")
    if not request.parameters().get("fromImage"):
        raise Refused(403, "The engine proxy pulls images by name only (fromImage); imports are refused.")
    return Forward(request.path, request.query)


def _build(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    _only(request, BUILD_PARAMETERS, "builds")
    parameters = request.parameters()
    if parameters.get("networkmode") != "none":
        raise Refused(403, "The engine proxy builds images with no network only (networkmode=none).")
    if parameters.get("version", "1") != "1":
        raise Refused(403, "The engine proxy builds with the classic builder only (version=1), not BuildKit.")
    # Another name could replace an image the host runs: Studio's own, the database's.
    if not parameters.get("t", MODEL_REPOSITORY).startswith(MODEL_REPOSITORY):
        raise Refused(403, f"The engine proxy tags the images it builds under {MODEL_REPOSITORY} only.")
    return Forward(request.path, request.query, stream=True)


def _create(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    _only(request, CREATE_PARAMETERS, "container creation")
    try:
        config = json.loads(read_body() or b"null")
    except ValueError:
        raise Refused(400, "The container's configuration is not JSON.") from None
    if not isinstance(config, dict):
        raise Refused(400, "The container's configuration must be a JSON object.")
    try:
        check_container(config, policy)
    except (AttributeError, TypeError):  # a field of the wrong JSON type
        raise Refused(400, "The container's configuration does not have the engine's shape.") from None
    labels = config.get("Labels") or {}
    if not isinstance(labels, dict):
        raise Refused(400, "Labels must be a JSON object.")
    config["Labels"] = {**labels, PROXY_LABEL: "1"}
    return Forward(request.path, request.query, body=json.dumps(config).encode())


def _list(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    query = [(key, value) for key, value in request.query if key != "filters"]
    raw = request.parameters().get("filters") or "{}"
    try:
        filters = json.loads(raw)
        labels = filters.get("label") or []
    except (ValueError, AttributeError):
        raise Refused(400, "The container list's filters are not a JSON object.") from None
    if isinstance(labels, dict):  # the older form: {"label": {"a=b": true}}
        labels = [label for label, wanted in labels.items() if wanted]
    elif isinstance(labels, str):
        labels = [labels]
    filters["label"] = [*labels, PROXY_LABEL]
    return Forward(request.path, [*query, ("filters", json.dumps(filters))])


def _own(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    """A call on one container: only on one this proxy created, and by the id it was found under."""
    _, _, name, *rest = request.path.split("/", 3)
    status, answer = engine.get(f"{request.prefix}/containers/{name}/json")
    labels = (answer.get("Config") or {}).get("Labels") or {} if status == 200 else {}
    if status != 200 or PROXY_LABEL not in labels:
        raise Refused(404, f"No such container: {name} (among the containers made through the engine proxy)")
    return Forward("/".join(["", "containers", answer["Id"], *rest]), request.query)


ROUTES: list[tuple[str, re.Pattern, Callable]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/_ping", _plain),
        ("HEAD", r"/_ping", _plain),
        ("GET", r"/version", _plain),
        ("GET", r"/info", _plain),
        ("GET", r"/images/.+/json", _plain),
        ("POST", r"/images/create", _pull),
        ("POST", r"/build", _build),
        ("POST", r"/containers/create", _create),
        ("GET", r"/containers/json", _list),
        ("GET", r"/containers/[^/]+/(json|logs)", _own),
        ("POST", r"/containers/[^/]+/(start|stop|wait)", _own),
        ("DELETE", r"/containers/[^/]+", _own),
    ]
]


def _only(request: Request, allowed: set[str], what: str) -> None:
    extra = sorted({key for key, _ in request.query} - allowed)
    if extra:
        raise Refused(403, f"The engine proxy refuses {what} with {', '.join(extra)}.")


def _absent(value: object) -> bool:
    return value is None or value is False


def check_container(config: dict, policy: Policy) -> None:
    """Raise Refused unless a container with `config` (the engine's create body) is one a replica needs."""
    for key, value in config.items():
        if key not in CONTAINER_FIELDS and not _absent(value):
            raise Refused(403, f"The engine proxy refuses containers that set {key}.")
    host = config.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise Refused(400, "HostConfig must be a JSON object.")
    for key, value in host.items():
        if key not in HOST_CONFIG_FIELDS and not _absent(value):
            raise Refused(403, f"The engine proxy refuses containers that set HostConfig.{key}.")
    for option in host.get("SecurityOpt") or []:
        if option not in SECURITY_OPTIONS:
            raise Refused(403, f"The engine proxy refuses the security option {option!r}.")
    detached = config.get("NetworkDisabled") is True
    mode = host.get("NetworkMode") or "default"
    mode = "bridge" if mode == "default" else mode
    if not (mode == "none" or (detached and mode == "bridge") or mode in policy.networks):
        raise Refused(403, f"The engine proxy refuses network {mode!r}: {_allowed(policy.networks)}.")
    for name in _networks_named(config.get("NetworkingConfig")):
        if name not in policy.networks:
            raise Refused(403, f"The engine proxy refuses network {name!r}: {_allowed(policy.networks)}.")
    for bindings in (host.get("PortBindings") or {}).values():
        for binding in bindings or []:
            address = (binding or {}).get("HostIp") or "0.0.0.0"  # noqa: S104 (what an empty HostIp means)
            if address not in policy.publish_addresses:
                raise Refused(
                    403,
                    f"The engine proxy refuses ports published on {address}: "
                    f"{_allowed(policy.publish_addresses, 'addresses')}.",
                )


def _networks_named(networking: object) -> list[str]:
    if not networking:
        return []
    if not isinstance(networking, dict):
        raise Refused(400, "NetworkingConfig must be a JSON object.")
    # The engine reads EndpointsConfig; docker-py also sends {network: null} beside it.
    endpoints = networking.get("EndpointsConfig") or {}
    return [name for name in networking if name != "EndpointsConfig"] + list(endpoints)


def _allowed(names: frozenset[str], what: str = "networks") -> str:
    return f"the allowed {what} are {', '.join(sorted(names))}" if names else f"no {what} are allowed"


def route(request: Request, policy: Policy, engine: Engine, read_body: Callable[[], bytes]) -> Forward:
    """What to send the engine for `request`, or Refused."""
    for method, pattern, handler in ROUTES:
        if request.method == method and pattern.fullmatch(request.path):
            forward = handler(request, policy, engine, read_body)
            # Start once took a HostConfig in its body (API < 1.24): no call but create and build has one.
            if handler not in (_create, _build) and read_body():
                raise Refused(400, f"{request.call()} takes no request body.")
            return forward
    raise Refused(
        403, f"The engine proxy does not allow {request.call()}: the docker target does not use it."
    )


# --- the engine -------------------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Engine:
    """The engine's socket."""

    def __init__(self, path: str):
        self.path = path

    def get(self, path: str) -> tuple[int, dict]:
        """The engine's JSON answer to GET `path`."""
        connection = _UnixConnection(self.path, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(body) if body else {}
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}

    def open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        return sock


# --- HTTP -------------------------------------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request head (to the blank line) and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise Refused(431, "The request head is too large.")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> Request:
    """The request in `head`; Refused (400) for anything but a plain HTTP/1.x request."""
    line, *header_lines = head.decode("latin-1").split("\r\n")
    # The engine's parser also ends a line at a bare LF: a header must not smuggle another one in.
    if re.search(r"[\r\n\0]", "".join([line, *header_lines])) or not all(":" in h for h in header_lines):
        raise Refused(400, "The request head is not plain HTTP/1.x.")
    try:
        method, target, version = line.split(" ")
    except ValueError:
        raise Refused(400, "The request line is not plain HTTP/1.x.") from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise Refused(400, "The request line is not plain HTTP/1.x.")
    headers = [(key.strip(), value.strip()) for key, _, value in (h.partition(":") for h in header_lines)]
    parts = urlsplit(target)
    match = _VERSION.match(parts.path)
    prefix = match.group(0) if match else ""
    if match and tuple(int(n) for n in prefix[2:].split(".")) < MIN_API_VERSION:
        raise Refused(400, f"The engine proxy speaks API version 1.24 and later, not {prefix[1:]}.")
    path = parts.path[len(prefix) :]
    if re.search(r"//|/\.\.?(/|$)|%2[ef]", path, re.IGNORECASE):
        raise Refused(400, f"The path {path!r} is not in its plain form.")
    query = parse_qsl(parts.query, keep_blank_values=True)
    # The engine reads a parameter's first value, this proxy its last: a parameter is given once.
    if len({key for key, _ in query}) != len(query):
        raise Refused(400, "A query parameter is given more than once.")
    return Request(method, prefix, path, query, headers)


class _Body:
    """The request body, read whole when a call must look into it (bounded), else streamed on."""

    def __init__(self, sock: socket.socket, request: Request, already: bytes):
        self.sock, self.request, self.pending = sock, request, already
        self.read_whole: bytes | None = None

    def length(self) -> int | None:
        """The body's Content-Length; None when it is chunked."""
        if self.request.header("transfer-encoding") is not None:
            if self.request.header("content-length") is not None:
                raise Refused(400, "A request has a Content-Length or a Transfer-Encoding, not both.")
            return None
        value = self.request.header("content-length") or "0"
        if not value.isdigit():
            raise Refused(400, "The Content-Length is not a number.")
        return int(value)

    def read(self) -> bytes:
        """The whole body, at most MAX_JSON_BYTES."""
        if self.read_whole is not None:
            return self.read_whole
        length = self.length()
        if length is None:
            raise Refused(411, "Send this call's body with a Content-Length.")
        if length > MAX_JSON_BYTES:
            raise Refused(413, "The request body is too large.")
        data = self.pending
        while len(data) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed the connection")
            data += chunk
        self.read_whole, self.pending = data[:length], b""
        return self.read_whole


def _answer(sock: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode()
    reason = http.client.responses.get(status, "Refused")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.sendall(head.encode() + body)


def _pump(source: socket.socket, destination: socket.socket, pending: bytes = b"", limit: int | None = None):
    """Copy `pending`, then what `source` sends, to `destination`: `limit` bytes in all, or to the end."""
    remaining = limit
    with contextlib.suppress(OSError):
        if remaining is not None:
            pending = pending[:remaining]
            remaining -= len(pending)
        destination.sendall(pending)
        while remaining is None or remaining > 0:
            chunk = source.recv(65536 if remaining is None else min(65536, remaining))
            if not chunk:
                return
            destination.sendall(chunk)
            if remaining is not None:
                remaining -= len(chunk)


def _send(client: socket.socket, engine: Engine, request: Request, forward: Forward, body: _Body) -> None:
    framing = ("content-length", "transfer-encoding")
    headers = [
        (key, value)
        for key, value in request.headers
        if key.lower() not in _HOP_BY_HOP and (forward.stream or key.lower() not in framing)
    ]
    if not forward.stream:
        headers.append(("Content-Length", str(len(forward.body))))
    target = request.prefix + forward.path
    if forward.query:
        target += "?" + urlencode(forward.query)
    lines = [f"{request.method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    upstream = engine.open()
    try:
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + forward.body)
        if forward.stream:
            # A build's context streams through as the client sends it, while the engine answers; a
            # chunked one ends where the engine's parser says (it then closes, as asked).
            threading.Thread(
                target=_pump, args=(client, upstream, body.pending, body.length()), daemon=True
            ).start()
        _pump(upstream, client)
    finally:
        upstream.close()


class _Handler(socketserver.BaseRequestHandler):
    server: ProxyServer

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(60)
        try:
            head, rest = _read_head(client)
            request = parse_head(head)
            body = _Body(client, request, rest)
            forward = route(request, self.server.policy, self.server.engine, body.read)
            if forward.stream:
                body.length()  # refuses a body framed two ways before anything reaches the engine
            client.settimeout(None)  # a build or a log stream may be quiet for long
            _send(client, self.server.engine, request, forward, body)
        except Refused as refused:
            self.server.log.warning(refused.message, event="refused", status=refused.status)
            _answer(client, refused.status, refused.message)
        except (ConnectionError, TimeoutError):
            pass
        except OSError as exc:
            self.server.log.error(f"The Docker engine cannot be reached: {exc}", event="engine_unreachable")
            _answer(client, 502, f"The engine proxy cannot reach the Docker engine: {exc.strerror or exc}")


class ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], engine: Engine, policy: Policy, log: JsonLog):
        self.engine, self.policy, self.log = engine, policy, log
        super().__init__(address, _Handler)


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio.engine_proxy",
        description="A proxy to the Docker engine that lets through only what Studio's docker target needs.",
    )
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 2375), help="HOST:PORT to serve on")
    parser.add_argument("--engine", default="/var/run/docker.sock", help="the engine's unix socket")
    parser.add_argument(
        "--network", action="append", default=[], help="a network containers may join (repeatable)"
    )
    parser.add_argument(
        "--publish-address",
        action="append",
        default=[],
        help="a host address container ports may be published on (repeatable; none by default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    log = JsonLog(component="engine-proxy")
    policy = Policy(frozenset(args.network), frozenset(args.publish_address))
    try:
        server = ProxyServer(args.listen, Engine(args.engine), policy, log)
    except OSError as exc:
        print(f"error: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}", file=sys.stderr)
        return 2

    def stop(signum, frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # as PID 1 in a container, SIGTERM is ignored without a handler
    log.info(
        "Engine proxy listening",
        event="listening",
        listen=f"{args.listen[0]}:{args.listen[1]}",
        engine=args.engine,
        networks=sorted(policy.networks),
        publish_addresses=sorted(policy.publish_addresses),
    )
    with server, contextlib.suppress(SystemExit, KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
