"""`studio alert ...`: alert rules on an endpoint or one of its deployments, and their history.

The server checks every field (kind, window, deployment, addresses) and its message says what to fix;
the CLI only passes what was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.endpoint import endpoint_path
from studio.cli.errors import CliError
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

KINDS = [
    "error_rate",
    "latency_p99",
    "request_rate_low",
    "request_rate_high",
    "replica_restarts",
    "drift_score",
]

RULE_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda r: r["name"]),
    output.Column("Deployment", lambda r: r.get("deployment") or "(all)"),
    output.Column("Kind", lambda r: r["kind"]),
    output.Column("Threshold", lambda r: f"{r['threshold']:g}"),
    output.Column("Window", lambda r: r["window"]),
    output.Column("State", lambda r: r["state"]),
    output.Column("Value", lambda r: "" if r.get("value") is None else f"{r['value']:g}"),
    output.Column("Since", lambda r: output.when(r.get("state_since"))),
    output.Column("Notify", lambda r: ", ".join(r.get("notify") or []), wrap=True),
]

EVENT_COLUMNS: list[output.Column] = [
    output.Column("Time", lambda e: output.when(e["time"])),
    output.Column("Event", lambda e: e["kind"]),
    output.Column("Value", lambda e: "" if e.get("value") is None else f"{e['value']:g}"),
    output.Column("Threshold", lambda e: f"{e['threshold']:g}"),
    output.Column("Window", lambda e: e["window"]),
    output.Column("Email", lambda e: "sent" if e.get("email_sent_at") else e.get("email_error") or ""),
]

endpoint_option = click.option("--endpoint-name", "-e", required=True, help="The online endpoint.")


def alerts_path(endpoint_name: str) -> str:
    return f"{endpoint_path(endpoint_name)}alerts/"


def find_rule(client: Client, endpoint_name: str, name: str) -> dict:
    """The rule of that name, or a CliError listing the names there are."""
    rules = client.collect(alerts_path(endpoint_name))
    for rule in rules:
        if rule["name"] == name:
            return rule
    names = ", ".join(rule["name"] for rule in rules) or "none yet"
    raise CliError(f"Endpoint {endpoint_name} has no alert rule named {name!r} (its rules: {names}).")


def _notify(rule: dict) -> str:
    if rule.get("notify") is None:
        return "(shown to Contributors)"  # the server hides addresses from Readers
    return ", ".join(rule["notify"]) or "nobody (no recipients, creator has no email)"


def show_rule(rule: dict) -> None:
    output.emit_record(
        [
            ("Name", rule["name"]),
            ("Endpoint", rule["endpoint"]),
            ("Deployment", rule.get("deployment") or "(all deployments)"),
            ("Kind", rule["kind"]),
            ("Errors counted", rule["errors"] if rule["kind"] == "error_rate" else None),
            ("Threshold", f"{rule['threshold']:g}"),
            ("Window", rule["window"]),
            ("State", rule["state"]),
            ("Last value", None if rule.get("value") is None else f"{rule['value']:g}"),
            ("Evaluated", output.when(rule.get("evaluated_at"))),
            ("Notify", _notify(rule)),
        ]
    )


@click.group("alert")
def alert() -> None:
    """Alert rules: error rate, p99 latency, request rate, replica restarts or drift over a window.

    A rule fires when its value crosses the threshold (goes under it, for request_rate_low) and
    resolves when it is back; both are sent as events to webhooks and mailed to its recipients.
    """


@alert.command()
@endpoint_option
@click.option("--deployment-name", "-d", help="Watch one deployment; the whole endpoint when left out.")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What the rule measures.")
@click.option(
    "--threshold",
    required=True,
    type=float,
    help="error_rate in %, latency_p99 in ms, request rates in requests per minute, restarts as a count.",
)
@click.option("--window", default="5m", show_default=True, help="Whole minutes or hours: 5m, 30m, 1h.")
@click.option("--name", help="A name for the rule (default: from the kind and deployment).")
@click.option(
    "--errors",
    type=click.Choice(["5xx", "4xx", "any"]),
    help="error_rate: which answers are errors. Default 5xx, as Azure counts them; a model that raises is "
    "answered 424, so use 4xx or any to count failing models.",
)
@click.option(
    "--email",
    "emails",
    multiple=True,
    help="Mail this address, a Studio user's or in a domain an Admin allows with STUDIO_ALERT_EMAIL_DOMAINS "
    "(repeatable; default: the endpoint's creator).",
)
@output.output_option
@pass_client
def create(
    client: Client,
    endpoint_name: str,
    deployment_name: str | None,
    kind: str,
    threshold: float,
    window: str,
    name: str | None,
    errors: str | None,
    emails: tuple[str, ...],
    output_format: str,
) -> None:
    """Create an alert rule on an endpoint or one of its deployments."""
    body: dict = {"kind": kind, "threshold": threshold, "window": window}
    optional = {"deployment": deployment_name, "name": name, "errors": errors, "recipients": list(emails)}
    body.update({key: value for key, value in optional.items() if value})
    created = client.request("POST", alerts_path(endpoint_name), json=body)
    output.emit(created, output_format, show_rule)


@alert.command("list")
@endpoint_option
@output.output_option
@pass_client
def list_(client: Client, endpoint_name: str, output_format: str) -> None:
    """List an endpoint's alert rules with their state."""
    rules = client.collect(alerts_path(endpoint_name))
    output.emit(
        rules,
        output_format,
        lambda rows: output.emit_table(
            rows,
            RULE_COLUMNS,
            empty=f"Endpoint {endpoint_name} has no alert rule. Create one with `studio alert create "
            f"--endpoint-name {endpoint_name} --kind error_rate --threshold 5 --window 5m`.",
        ),
    )


@alert.command()
@endpoint_option
@click.option("--name", "-n", required=True, help="The rule.")
@output.output_option
@pass_client
def show(client: Client, endpoint_name: str, name: str, output_format: str) -> None:
    """Show a rule and its fired/resolved history, newest first."""
    rule = find_rule(client, endpoint_name, name)
    history = client.collect(f"{alerts_path(endpoint_name)}{rule['id']}/history/")
    if output_format == "json":
        output.emit_json({**rule, "history": history})
        return
    show_rule(rule)
    click.echo()
    output.emit_table(history, EVENT_COLUMNS, empty="It has not fired yet.")


@alert.command()
@endpoint_option
@click.option("--name", "-n", required=True, help="The rule.")
@pass_client
def delete(client: Client, endpoint_name: str, name: str) -> None:
    """Delete an alert rule with its history."""
    rule = find_rule(client, endpoint_name, name)
    client.request("DELETE", f"{alerts_path(endpoint_name)}{rule['id']}/")
    output.note(f"Deleted alert rule {name} of endpoint {endpoint_name}.")
