"""`studio webhook ...`: where Studio POSTs its lifecycle events (Admins only)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

# How long `test` waits for the first attempt: the worker may be busy, but not for minutes.
WAIT_S = 60

WEBHOOK_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda w: w["name"]),
    output.Column("URL", lambda w: w["url"], wrap=True),
    output.Column("Events", lambda w: ", ".join(w.get("events") or []), wrap=True),
    output.Column("Active", lambda w: "yes" if w.get("active") else "no"),
    output.Column("Failing since", lambda w: output.when(w.get("failing_since"))),
    output.Column("Owner", lambda w: w.get("owner")),
]


def show_webhook(webhook: dict) -> None:
    output.emit_record(
        [
            ("Name", webhook["name"]),
            ("Id", webhook["id"]),
            ("URL", webhook["url"]),
            ("Events", ", ".join(webhook.get("events") or [])),
            ("Active", "yes" if webhook.get("active") else "no"),
            ("Disabled because", webhook.get("disabled_reason")),
            ("Secret", webhook.get("secret") or webhook.get("secret_hint")),
            ("Owner", webhook.get("owner")),
            ("Created", output.when(webhook.get("created_at"))),
        ]
    )


def _path(name: str) -> str:
    return f"/webhooks/{quote(name, safe='')}/"


@click.group()
def webhook() -> None:
    """Send Studio's lifecycle events (CloudEvents 1.0, signed) to other systems. Admins only."""


@webhook.command()
@click.option("-n", "--name", required=True, help="A name for the subscription, starting with a letter.")
@click.option(
    "--url", required=True, help="The http(s) URL events are POSTed to; the allow-list must permit it."
)
@click.option(
    "--event",
    "events",
    multiple=True,
    help="An event type or pattern, e.g. studio.deployment.* (repeatable). Default: every event.",
)
@click.option(
    "--secret-file",
    type=click.File("r", encoding="utf-8"),
    help="A file holding the signing secret (at least 32 characters), or - for standard input; never on "
    "the command line, where other users and shell history would see it. Default: a new random one, "
    "shown once.",
)
@output.output_option
@pass_client
def create(
    client: Client, name: str, url: str, events: tuple[str, ...], secret_file, output_format: str
) -> None:
    """Subscribe a URL to events. The signing secret is shown this once: keep it in the receiver."""
    body: dict = {"name": name, "url": url, "events": list(events) or ["*"]}
    if secret_file is not None:
        secret = secret_file.read().strip()
        if not secret:
            raise CliError(f"{secret_file.name} holds no secret.")
        body["secret"] = secret
    created = client.request("POST", "/webhooks/", json=body)
    if output_format == "table":
        output.note(f"Created webhook {created['name']}. Its secret is shown only now: {created['secret']}")
    output.emit(created, output_format, show_webhook)


@webhook.command("list")
@output.output_option
@pass_client
def list_(client: Client, output_format: str) -> None:
    """List webhook subscriptions. With -o json, a JSON array of the server's items."""
    webhooks = client.collect("/webhooks/")
    output.emit(
        webhooks,
        output_format,
        lambda rows: output.emit_table(
            rows,
            WEBHOOK_COLUMNS,
            empty="No webhook. Create one with `studio webhook create --name N --url U`.",
        ),
    )


@webhook.command()
@click.option("-n", "--name", required=True, help="The subscription's name (or id).")
@pass_client
def delete(client: Client, name: str) -> None:
    """Delete a subscription; deliveries still waiting are dropped."""
    client.request("DELETE", _path(name))
    output.note(f"Deleted webhook {name}.")


@webhook.command()
@click.option("-n", "--name", required=True, help="The subscription's name (or id).")
@click.option("--no-wait", is_flag=True, help="Return once the delivery is queued.")
@output.output_option
@pass_client
def test(client: Client, name: str, no_wait: bool, output_format: str) -> None:
    """Send a studio.webhook.test event to this subscription only, and show how its first attempt went.

    Fails (non-zero exit) when the receiver did not accept it; Studio keeps retrying with backoff, and the
    webhook's page shows every attempt.
    """
    delivery = client.request("POST", f"{_path(name)}test/")
    deadline = time.monotonic() + WAIT_S
    while not no_wait and not _tried(delivery) and time.monotonic() < deadline:
        time.sleep(0.25)
        recent = client.get(f"{_path(name)}deliveries/", params={"page_size": 50})["results"]
        delivery = next((row for row in recent if row["id"] == delivery["id"]), delivery)
    output.emit(
        delivery,
        output_format,
        lambda d: output.emit_record(
            [
                ("Event", d["event"]),
                ("State", d["state"]),
                ("Attempts", d["attempts"]),
                ("Response", d.get("response_code")),
                ("Latency (ms)", d.get("latency_ms")),
                ("Error", d.get("error")),
            ]
        ),
    )
    if delivery.get("error") and delivery["state"] != "succeeded":
        raise CliError(f"The test delivery to {name} failed: {delivery['error']}")
    if not _tried(delivery) and not no_wait:
        raise CliError(
            f"The test delivery to {name} was not attempted within {WAIT_S} s: is a worker running?"
        )


def _tried(delivery: dict) -> bool:
    """Whether the delivery's first attempt is over: it is finished, or waits to be retried."""
    return delivery["state"] != "sending" and (delivery["state"] != "pending" or delivery["attempts"] > 0)
