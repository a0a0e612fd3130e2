"""The gateway's configuration: flags over environment variables, parsed strictly at start.

A value that does not parse stops the start with a `ConfigError` naming the flag or variable.
`STUDIO_TRUSTED_PROXIES` is parsed by serving.proxies, the one parser of that variable.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.envparse import ConfigError, boolean, number, whole_number
from serving.proxies import TrustedProxies, parse_trusted_proxies

DEFAULT_PORT = 8080
DEFAULT_CONTROL_PLANE = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs; the defaults are the embedded mode's."""

    secret: bytes
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    control_plane_url: str | None = DEFAULT_CONTROL_PLANE
    route_table_file: Path | None = None
    spool_dir: Path = Path(".studio/spool/gateway")
    gateway_id: str = "gateway"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    poll_wait_s: int = 30
    mirror_queue: int = 256
    mirror_workers: int = 8
    auth_failure_limit: int = 20
    auth_failure_window_s: float = 10.0
    spool_segment_bytes: int = 64 * 1024 * 1024
    spool_segment_seconds: float = 60.0
    trusted_proxies: TrustedProxies = TrustedProxies()
    metrics_public: bool = False
    # How often the in-flight counts go to the control plane's autoscaler (serving.gateway.load).
    load_report_s: float = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.gateway",
        description="Studio's scoring gateway: authenticated, load-balanced front door of online endpoints.",
    )
    parser.add_argument("--host", help="address to listen on (env STUDIO_GATEWAY_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help=f"port (env STUDIO_GATEWAY_PORT, default {DEFAULT_PORT})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--control-plane-url",
        help=f"control plane to long-poll (env STUDIO_CONTROL_PLANE_URL, default {DEFAULT_CONTROL_PLANE})",
    )
    source.add_argument("--route-table-file", help="serve a route table from this JSON file instead")
    parser.add_argument("--spool-dir", help="telemetry spool (env STUDIO_GATEWAY_SPOOL_DIR)")
    parser.add_argument(
        "--gateway-id",
        help="names this gateway to the control plane and its spool segments (env STUDIO_GATEWAY_ID)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate file: serve HTTPS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key file of --tls-cert")
    return parser


def read_secret(env: Mapping[str, str], home: Path) -> bytes:
    """The shared gateway secret: STUDIO_GATEWAY_SECRET, else the file STUDIO_GATEWAY_SECRET_FILE names,
    else `$STUDIO_HOME/gateway_secret`, created (mode 0600) on first use as the control plane does."""
    value = env.get("STUDIO_GATEWAY_SECRET", "").strip()
    if value:
        return value.encode()
    named = env.get("STUDIO_GATEWAY_SECRET_FILE", "").strip()
    path = Path(named) if named else home / "gateway_secret"
    if named and not path.is_file():
        raise ConfigError(f"STUDIO_GATEWAY_SECRET_FILE={named!r}: no such file.")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: when the control plane creates it at the same moment, its value wins and we read it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        except FileExistsError:
            pass
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"The gateway secret file {path} is empty.")
    return secret.encode()


def _default_gateway_id(port: int) -> str:
    # Stable across restarts (segment numbers continue) and distinct per gateway on one host.
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "gateway"
    return f"{host}-{port}"


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Configuration from flags (which win) and the environment; raises ConfigError naming a bad value."""
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    home = Path(env.get("STUDIO_HOME", "").strip() or ".studio")

    port_value = args.port or env.get("STUDIO_GATEWAY_PORT", "").strip()
    port = (
        whole_number("--port" if args.port else "STUDIO_GATEWAY_PORT", port_value, 0)
        if port_value
        else DEFAULT_PORT
    )
    table_file = Path(args.route_table_file) if args.route_table_file else None
    if table_file is not None and not table_file.is_file():
        raise ConfigError(f"--route-table-file {args.route_table_file!r}: no such file.")
    url = None
    if table_file is None:
        url = (
            args.control_plane_url or env.get("STUDIO_CONTROL_PLANE_URL", "").strip()
        ) or DEFAULT_CONTROL_PLANE
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"STUDIO_CONTROL_PLANE_URL={url!r} is not an http(s) URL.")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key.")
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if value and not Path(value).is_file():
            raise ConfigError(f"{flag} {value!r}: no such file.")
    spool = args.spool_dir or env.get("STUDIO_GATEWAY_SPOOL_DIR", "").strip()
    gateway_id = args.gateway_id or env.get("STUDIO_GATEWAY_ID", "").strip() or _default_gateway_id(port)
    # At most 100 characters: the control plane keeps each gateway's acknowledgement under its id.
    if len(gateway_id) > 100 or not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*", gateway_id):
        raise ConfigError(
            f"gateway id {gateway_id!r}: use at most 100 letters, digits, '.', '_' and single '-'."
        )

    def setting(name: str, default: float, minimum: float, whole: bool = True) -> float:
        value = env.get(name, "").strip()
        if not value:
            return default
        return whole_number(name, value, int(minimum)) if whole else number(name, value, minimum)

    return GatewayConfig(
        secret=read_secret(env, home),
        host=args.host or env.get("STUDIO_GATEWAY_HOST", "").strip() or "127.0.0.1",
        port=port,
        control_plane_url=url.rstrip("/") if url else None,
        route_table_file=table_file,
        spool_dir=Path(spool) if spool else home / "spool" / "gateway",
        gateway_id=gateway_id,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        mirror_queue=int(setting("STUDIO_GATEWAY_MIRROR_QUEUE", 256, 1)),
        auth_failure_limit=int(setting("STUDIO_GATEWAY_AUTH_FAILURE_LIMIT", 20, 1)),
        auth_failure_window_s=setting("STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S", 10.0, 0.1, whole=False),
        spool_segment_bytes=int(setting("STUDIO_GATEWAY_SPOOL_SEGMENT_BYTES", 64 * 1024 * 1024, 4096)),
        spool_segment_seconds=setting("STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS", 60.0, 0.1, whole=False),
        trusted_proxies=parse_trusted_proxies(env.get("STUDIO_TRUSTED_PROXIES")),
        metrics_public=boolean("STUDIO_GATEWAY_METRICS_PUBLIC", env.get("STUDIO_GATEWAY_METRICS_PUBLIC", "")),
        load_report_s=setting("STUDIO_GATEWAY_LOAD_REPORT_S", 1.0, 0.1, whole=False),
    )
