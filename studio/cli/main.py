"""The `studio` command: `login`, `up`, and the `model`, `environment`, `online-endpoint` and
`online-deployment` groups."""

import importlib
import os

import click

from studio.cli import output
from studio.cli.alert import alert
from studio.cli.batch import batch_deployment, batch_endpoint
from studio.cli.config import Config, normalize_url, save_config
from studio.cli.data import data
from studio.cli.deployment import online_deployment
from studio.cli.endpoint import online_endpoint
from studio.cli.environment import environment
from studio.cli.errors import CliError
from studio.cli.job import job
from studio.cli.manifests import manifests
from studio.cli.model import model
from studio.cli.options import StudioGroup
from studio.cli.webhook import webhook


@click.group(
    cls=StudioGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="studio", message="studio %(version)s")
def cli() -> None:
    """Studio: register, deploy and watch models from the command line.

    Commands talk to a Studio server over its REST API. Sign in once with `studio login`, or set
    STUDIO_URL and STUDIO_TOKEN (they override the configuration file that `login` writes, found at
    $STUDIO_CONFIG or ~/.config/studio/config.json).
    """


@cli.command()
@click.option("--url", required=True, help="The Studio server, e.g. http://127.0.0.1:8000.")
@click.option(
    "--token",
    prompt=True,
    hide_input=True,
    help="A personal access token from your Tokens page. Asked for when left out, so it stays out of "
    "your shell history.",
)
def login(url: str, token: str) -> None:
    """Check the token against the server, then save the URL and token for later commands.

    The configuration file is readable by you alone (mode 0600).
    """
    from studio.cli.client import Client

    config = Config(url=normalize_url(url), token=token.strip())
    client = Client(config)
    try:
        client.get("/models/", params={"page_size": 1})
    finally:
        client.close()
    path = save_config(config)
    output.note(f"Signed in to {config.url}. Saved to {path}.")


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise CliError(f"{name} must be a port number, not {value!r}.") from None


@cli.command()
@click.option(
    "--port", type=int, help="Port of the control plane (pages, API). Default: $STUDIO_PORT or 8000."
)
@click.option(
    "--gateway-port", type=int, help="Port of the scoring gateway. Default: $STUDIO_GATEWAY_PORT or 8080."
)
@click.option(
    "--keep-replicas",
    is_flag=True,
    default=None,
    help="When Studio stops, leave the local deployments' replicas serving, for the next `studio up` to "
    "take over (a quick restart). Default: $STUDIO_KEEP_REPLICAS or false: they stop with Studio.",
)
def up(port: int | None, gateway_port: int | None, keep_replicas: bool | None) -> None:
    """Run Studio on this machine: control plane, worker and gateway, supervised as one group.

    Ctrl-C stops them all, and the replicas of local deployments with them (unless --keep-replicas);
    the next `studio up` starts those again.
    """
    port = port if port is not None else _env_port("STUDIO_PORT", 8000)
    gateway_port = gateway_port if gateway_port is not None else _env_port("STUDIO_GATEWAY_PORT", 8080)
    try:
        # Imported on use: the supervisor brings Django and the servers, which other commands never need.
        supervisor = importlib.import_module("studio.supervisor")
    except ModuleNotFoundError as exc:
        if exc.name != "studio.supervisor":
            raise
        raise CliError(
            "`studio up` is not available in this installation (studio.supervisor is missing)."
        ) from None
    raise SystemExit(supervisor.run(port=port, gateway_port=gateway_port, keep_replicas=keep_replicas))


cli.add_command(model)
cli.add_command(environment)
cli.add_command(data)
cli.add_command(online_endpoint)
cli.add_command(online_deployment)
online_endpoint.add_command(importlib.import_module("studio.cli.compare").compare)
online_deployment.add_command(importlib.import_module("studio.cli.compare").replay)
online_deployment.add_command(manifests)
online_deployment.add_command(importlib.import_module("studio.cli.rollout").rollout)
cli.add_command(batch_endpoint)
cli.add_command(batch_deployment)
cli.add_command(job)
cli.add_command(alert)
cli.add_command(webhook)


def main() -> None:
    """The console script's entry point (`studio = "studio.cli.main:main"`)."""
    cli(prog_name="studio")


if __name__ == "__main__":
    main()
