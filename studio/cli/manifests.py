"""`studio online-deployment manifests`: the Kubernetes objects the kubernetes target applies for a
deployment, to review, or to apply with a team's own tools (kubectl, Argo CD, Flux)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.deployment import _prepare, deployment_path
from studio.cli.endpoint import endpoint_path
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

WARNINGS_HEADER = "Studio-Warnings"


def _documents(listing: dict) -> str:
    """The List's items as a YAML stream, one document each, which kubectl applies as they are."""
    import yaml

    return "".join(
        "---\n" + yaml.safe_dump(item, sort_keys=False, default_flow_style=False) for item in listing["items"]
    )


@click.command()
@click.option("-n", "--name", help="The deployment (with --endpoint-name), or overrides the YAML's name.")
@click.option("-e", "--endpoint-name", help="Its endpoint, or overrides the YAML's endpoint_name.")
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A deployment YAML not created yet (target: kubernetes): its objects, with nothing recorded. A "
    "local model folder in it is registered, as create does, since the image is named by its content.",
)
@output.output_option
@pass_client
def manifests(
    client: Client, name: str | None, endpoint_name: str | None, spec_file: Path | None, output_format: str
) -> None:
    """Print the Kubernetes objects (Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler)
    that the kubernetes target applies for a deployment.

    YAML documents by default, ready for `kubectl apply -f -`; `-o json` prints a Kubernetes List. No
    cluster is needed. The replica key's Secret is written by Studio and never printed.
    """
    if spec_file is not None:
        endpoint_name, name, body = _prepare(client, spec_file, endpoint_name, name, None)
        response = client.send("POST", f"{endpoint_path(endpoint_name)}manifests", json=body)
    else:
        if not (name and endpoint_name):
            raise click.UsageError(
                "Say which deployment (--endpoint-name and --name), or give -f deployment.yml."
            )
        response = client.send("GET", deployment_path(endpoint_name, name) + "manifests")
    for warning in json.loads(response.headers.get(WARNINGS_HEADER) or "[]"):
        output.note(f"Warning: {warning}")
    output.emit(response.json(), output_format, lambda listing: click.echo(_documents(listing), nl=False))
