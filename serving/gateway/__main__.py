"""`python -m serving.gateway`: run the scoring gateway (one process, uvloop + httptools)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from serving.gateway.config import ConfigError, GatewayConfig, load_config
from serving.gateway.table import ControlPlaneSource, FileSource, TableHolder
from serving.logs import JsonLog

if TYPE_CHECKING:
    from serving.gateway.app import GatewayApp


def build_app(config: GatewayConfig, log: JsonLog) -> GatewayApp:
    """The ASGI app for `config`, with its route table source (not started: uvicorn's lifespan does)."""
    from serving.gateway.app import GatewayApp

    holder = TableHolder()
    if config.route_table_file is not None:
        source: FileSource | ControlPlaneSource = FileSource(holder, config.route_table_file, log)
        source.load()  # serve from the first request on, when the file is good
    else:
        assert config.control_plane_url is not None
        source = ControlPlaneSource(
            holder,
            config.control_plane_url,
            config.secret,
            log,
            config.poll_wait_s,
            config.gateway_id,
            saved=config.spool_dir / f"{config.gateway_id}.route-table",
        )
        config.spool_dir.mkdir(parents=True, exist_ok=True)
        source.load_saved()  # serve from the first request on, when this gateway saved a table before
    return GatewayApp(config, holder, source, log)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the configuration, then serve until SIGTERM or SIGINT."""
    os.umask(0o077)  # the spool, the saved route table and the secret it makes are this user's only
    log = JsonLog(component="gateway", pid=os.getpid())
    try:
        config = load_config(argv)
        app = build_app(config, log)
    except (ConfigError, OSError) as exc:
        log.error(str(exc), event="config_error")
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from serving.gateway.transport import CoalescingHttpToolsProtocol

    log.info(
        "Gateway starting",
        event="starting",
        host=config.host,
        port=config.port,
        gateway_id=config.gateway_id,
        source=str(config.route_table_file or config.control_plane_url),
        spool=str(config.spool_dir),
        tls=config.tls_cert is not None,
        trusted_proxies=[str(network) for network in config.trusted_proxies.networks],
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, with a response's writes coalesced
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # The client address is the gateway's to resolve (STUDIO_TRUSTED_PROXIES, serving.proxies): uvicorn
        # would otherwise believe X-Forwarded-For from FORWARDED_ALLOW_IPS (loopback by default).
        proxy_headers=False,
        timeout_keep_alive=75,
        backlog=2048,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
