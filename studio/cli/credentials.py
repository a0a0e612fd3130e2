"""What online and batch endpoints' CLI groups share: showing an endpoint's credentials, replacing a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from studio.cli import output

if TYPE_CHECKING:
    from studio.cli.client import Client

KEY_TYPES = ["primary", "secondary"]

key_type_option = click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    required=True,
    help="The key to replace; the other keeps working, so clients can move over without downtime.",
)


def show(client: Client, endpoint_path: str, output_format: str) -> None:
    """Print the keys (key auth), or a fresh token with its expiry (aml_token auth), of the endpoint at
    `endpoint_path`."""
    found = client.request("POST", endpoint_path + "credentials/")
    output.emit(found, output_format, lambda c: output.emit_record(list(c.items())))


def regenerate(client: Client, endpoint_path: str, name: str, key_type: str, group: str) -> None:
    """Replace one key of endpoint `name`; the note says how the `group` CLI shows the new one."""
    client.request("POST", endpoint_path + "regenerate-keys/", json={"keyType": key_type})
    output.note(
        f"Regenerated the {key_type} key of {name}. "
        f"See it with `studio {group} get-credentials --name {name}`."
    )
