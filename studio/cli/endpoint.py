"""`studio online-endpoint ...`: the stable, authenticated addresses that deployments serve behind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import credentials, output
from studio.cli.errors import CliError
from studio.cli.generic_update import apply, changes, generic_update_options
from studio.cli.jobs import follow
from studio.cli.options import pass_client
from studio.cli.specs import load_spec

if TYPE_CHECKING:
    from studio.cli.client import Client

# Azure ML's endpoint YAML fields that Studio honours; others (identity, public_network_access, ...) are
# reported as ignored by `load_spec`.
SPEC_FIELDS = {"name", "description", "tags", "auth_mode", "traffic", "mirror_traffic", "cors_origins"}
AUTH_MODES = ["key", "aml_token"]
# Scoring may wait on a slow model; connecting to the gateway should not take long.
SCORING_TIMEOUT_S = 300.0


def split_text(split: dict | None) -> str:
    """Traffic as `az ml` users type it: `blue=90 green=10`."""
    return " ".join(f"{name}={percent}" for name, percent in (split or {}).items())


ENDPOINT_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda e: e["name"]),
    output.Column("Auth", lambda e: e.get("auth_mode")),
    output.Column("State", lambda e: e.get("provisioning_state")),
    output.Column("Health", lambda e: e.get("health")),
    output.Column("Traffic", lambda e: split_text(e.get("traffic")), wrap=True),
    output.Column("Mirror", lambda e: split_text(e.get("mirror_traffic"))),
    output.Column("Scoring URI", lambda e: e.get("scoring_uri")),
]


def endpoint_path(name: str) -> str:
    return f"/online-endpoints/{quote(name, safe='')}/"


def show_endpoint(endpoint: dict) -> None:
    output.emit_record(
        [
            ("Name", endpoint["name"]),
            ("Description", endpoint.get("description")),
            ("Tags", output.tags_text(endpoint.get("tags"))),
            ("Auth mode", endpoint.get("auth_mode")),
            ("State", endpoint.get("provisioning_state")),
            ("Health", " ".join([endpoint.get("health") or "", *(endpoint.get("health_reasons") or [])])),
            ("Deployments", ", ".join(endpoint.get("deployments") or [])),
            ("Traffic", split_text(endpoint.get("traffic"))),
            ("Mirror traffic", split_text(endpoint.get("mirror_traffic"))),
            ("CORS origins", ", ".join(endpoint.get("cors_origins") or [])),
            ("Scoring URI", endpoint.get("scoring_uri")),
            ("OpenAPI URI", endpoint.get("openapi_uri")),
            ("Created", output.when(endpoint.get("created_at"))),
            ("Updated", output.when(endpoint.get("updated_at"))),
        ]
    )


def parse_split(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, int] | None:
    """`blue=90 green=10` (spaces or commas between) into {"blue": 90, "green": 10}."""
    if value is None:
        return None
    split: dict[str, int] = {}
    for item in value.replace(",", " ").split():
        name, sep, percent = item.partition("=")
        if not sep or not name or not percent.strip().isdigit():
            raise click.BadParameter(
                f'{item!r} is not of the form deployment=percent, for example "blue=90 green=10".'
            )
        split[name] = int(percent)
    return split


name_option = click.option("-n", "--name", required=True, help="The endpoint's name.")
# az ml's --local: an endpoint whose deployments run in local Docker. A Studio endpoint is the same
# whichever target its deployments run on, so endpoint verbs accept it and carry on as without it.
local_option = click.option(
    "--local",
    is_flag=True,
    help="As az ml's --local: accepted; an endpoint is the same wherever its deployments run "
    "(`online-deployment create --local` runs one in local Docker).",
)
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Return at once (creating or updating an endpoint never waits)."
)


@click.group("online-endpoint")
def online_endpoint() -> None:
    """Create and manage online endpoints: a scoring URI and keys that stay while deployments change."""


@online_endpoint.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML online endpoint YAML (name, auth_mode, description, tags, ...). Options given on "
    "the command line override it.",
)
@click.option("-n", "--name", help="The endpoint's name: 3-32 letters, digits and single dashes.")
@click.option("--auth-mode", type=click.Choice(AUTH_MODES), help="key (the default) or aml_token.")
@local_option
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def create(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    auth_mode: str | None,
    local: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Create an online endpoint, from a YAML file or from options.

    The endpoint takes no traffic until a deployment is created with --all-traffic or traffic is set
    with `studio online-endpoint update --traffic`.
    """
    body: dict[str, Any] = dict(load_spec(spec_file, SPEC_FIELDS).fields) if spec_file else {}
    if name:
        body["name"] = name
    if auth_mode:
        body["auth_mode"] = auth_mode
    body = apply(body, sets, adds, removes)
    if not body.get("name"):
        raise click.UsageError("Give the endpoint a name: --name, or `name:` in the YAML file.")
    created = client.request("POST", "/online-endpoints/", json=body)
    if output_format == "table":
        output.note(f"Created online endpoint {created['name']} ({created['auth_mode']} auth).")
    output.emit(created, output_format, show_endpoint)


@online_endpoint.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML online endpoint YAML; its fields replace the endpoint's (the name cannot change).",
)
@click.option("-n", "--name", help="The endpoint's name. Default: the YAML's name.")
@click.option(
    "--traffic",
    callback=parse_split,
    help='Live traffic per deployment, e.g. "blue=90 green=10"; must add up to 100 (or 0).',
)
@click.option(
    "--mirror-traffic",
    callback=parse_split,
    help='A copy of live traffic for one idle deployment, at most 50%, e.g. "green=10"; "green=0" stops it.',
)
@local_option
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def update(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    traffic: dict[str, int] | None,
    mirror_traffic: dict[str, int] | None,
    local: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Change an endpoint's traffic split, mirror traffic, description, tags or auth mode.

    Traffic changes take effect at once; the scoring URI and keys stay the same. Without -f, --set,
    --add and --remove change the endpoint as `show` prints it (e.g. --set tags.stage=prod).
    """
    patch: dict[str, Any] = dict(load_spec(spec_file, SPEC_FIELDS).fields) if spec_file else {}
    name = name or patch.get("name")
    if not name:
        raise click.UsageError("Say which endpoint: --name, or `name:` in the YAML file.")
    if spec_file:
        patch = apply(patch, sets, adds, removes)
    elif sets or adds or removes:
        current = client.get(endpoint_path(name))
        patch = changes(current, apply(current, sets, adds, removes))
    # The name identifies the endpoint; it is not something to change.
    patch.pop("name", None)
    if traffic is not None:
        patch["traffic"] = traffic
    if mirror_traffic is not None:
        patch["mirror_traffic"] = mirror_traffic
    if not patch and not (sets or adds or removes):
        raise click.UsageError(
            "Nothing to change: give --traffic, --mirror-traffic, --set/--add/--remove or -f endpoint.yml."
        )
    updated = (
        client.request("PATCH", endpoint_path(name), json=patch) if patch else client.get(endpoint_path(name))
    )
    if output_format == "table":
        output.note(f"Updated online endpoint {updated['name']}.")
    output.emit(updated, output_format, show_endpoint)


@online_endpoint.command()
@name_option
@local_option
@output.output_option
@pass_client
def show(client: Client, name: str, local: bool, output_format: str) -> None:
    """Show an endpoint: auth mode, traffic, deployments, scoring and OpenAPI URIs."""
    output.emit(client.get(endpoint_path(name)), output_format, show_endpoint)


@online_endpoint.command("list")
@local_option
@output.output_option
@pass_client
def list_(client: Client, local: bool, output_format: str) -> None:
    """List the online endpoints. With -o json, a JSON array of the server's items (all pages)."""
    endpoints = client.collect("/online-endpoints/")
    output.emit(
        endpoints,
        output_format,
        lambda rows: output.emit_table(
            rows,
            ENDPOINT_COLUMNS,
            empty="No online endpoint yet. Create one with `studio online-endpoint create -f endpoint.yml`.",
        ),
    )


@online_endpoint.command()
@name_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Return once the deletion has started.")
@local_option
@pass_client
def delete(client: Client, name: str, yes: bool, no_wait: bool, local: bool) -> None:
    """Delete an endpoint with all its deployments; their replicas are stopped.

    The endpoint stops answering at once. Waits until every replica is gone unless --no-wait.
    """
    if not yes:
        click.confirm(
            f"Delete online endpoint {name} and all its deployments? This cannot be undone",
            abort=True,
            err=True,
        )
    accepted = client.request("DELETE", endpoint_path(name))
    job = follow(client, accepted["job"], f"Deleting online endpoint {name}", wait=not no_wait)
    if job["state"] == "succeeded":
        output.note(f"Deleted online endpoint {name}.")


@online_endpoint.command("get-credentials")
@name_option
@output.output_option
@pass_client
def get_credentials(client: Client, name: str, output_format: str) -> None:
    """Print the endpoint's keys (key auth), or a fresh token with its expiry (aml_token auth).

    Either goes in the scoring request's header: `Authorization: Bearer <key or token>`.
    """
    credentials.show(client, endpoint_path(name), output_format)


@online_endpoint.command("regenerate-keys")
@name_option
@credentials.key_type_option
@pass_client
def regenerate_keys(client: Client, name: str, key_type: str) -> None:
    """Replace one of a key-auth endpoint's two keys; the old one stops working at once."""
    credentials.regenerate(client, endpoint_path(name), name, key_type, "online-endpoint")


@online_endpoint.command()
@name_option
@click.option(
    "-r",
    "--request-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The request body, sent as it is with Content-Type application/json.",
)
@click.option(
    "-d",
    "--deployment-name",
    "--deployment",
    "deployment_name",
    help="Send the request to this deployment, whatever the traffic split (never mirrored).",
)
@local_option
@output.output_option
@pass_client
def invoke(
    client: Client,
    name: str,
    request_file: Path,
    deployment_name: str | None,
    local: bool,
    output_format: str,
) -> None:
    """Score a request through the endpoint's scoring URI and print the answer's body.

    The credentials are fetched for you. An error answer exits non-zero with its status and body.
    With -o json the body is printed as one JSON string, as az does; -o tsv prints it as it is.
    """
    # Imported here: only this command talks to the gateway rather than to Studio's API.
    import httpx

    endpoint = client.get(endpoint_path(name))
    credentials = client.request("POST", endpoint_path(name) + "credentials/")
    secret = credentials.get("primaryKey") or credentials.get("accessToken")
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if deployment_name:
        headers["azureml-model-deployment"] = deployment_name
    uri = endpoint["scoring_uri"]
    # A client of its own: Studio's token must never travel to the gateway or a model.
    try:
        with httpx.Client(timeout=httpx.Timeout(SCORING_TIMEOUT_S, connect=10.0)) as scoring:
            answer = scoring.post(uri, content=request_file.read_bytes(), headers=headers)
    except httpx.TimeoutException:
        raise CliError(f"The endpoint did not answer within {SCORING_TIMEOUT_S:.0f}s ({uri}).") from None
    except httpx.TransportError as exc:
        raise CliError(
            f"Cannot reach the scoring URI {uri} ({exc or type(exc).__name__}). Is the gateway running "
            "(`studio up` runs one), and is the server's STUDIO_GATEWAY_URL its address?"
        ) from None
    if not answer.is_success:
        served_by = answer.headers.get("azureml-model-deployment")
        by = f" (deployment {served_by})" if served_by else ""
        raise CliError(
            f"The endpoint answered {answer.status_code} {answer.reason_phrase}{by}: {answer.text.strip()}"
        )
    output.emit(answer.text, output_format, click.echo)
